# Sourced by .ci/test: Debian's nginx for node/tests/load_balancer.rs, which
# starts and stops its own instance (the package's own service is kept from
# starting).
nginx_install() {
  [ -x /usr/sbin/nginx ] && return 0
  echo "installing nginx from Debian's packages" >&2
  local policy=/usr/sbin/policy-rc.d own=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy"; chmod +x "$policy"; own=1
  fi
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light >/dev/null
  [ "$own" = 1 ] && rm -f "$policy"
  return 0
}
