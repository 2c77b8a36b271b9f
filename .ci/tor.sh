# Sourced by .ci/test: Debian's tor (tor, tor-gencert) for the private Tor
# network the Tor tests build (tests/tor/network.sh); the package's own
# service is kept from starting.
tor_install() {
  [ -x /usr/sbin/tor ] && [ -x /usr/bin/tor-gencert ] && return 0
  echo "installing tor from Debian's packages" >&2
  local policy=/usr/sbin/policy-rc.d own=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy"; chmod +x "$policy"; own=1
  fi
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq tor >/dev/null
  [ "$own" = 1 ] && rm -f "$policy"
  return 0
}
