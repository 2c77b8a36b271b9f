#!/usr/bin/env bash
# A private Tor network on loopback, from Debian's tor and tor-gencert:
# 3 directory authorities and 6 relays (guards, middles, exits, HSDirs),
# with the TestingTorNetwork settings chutney uses, and a C Tor client.
#
#   tests/tor/network.sh start DIR   build and start it in DIR; return once
#                                    the client has bootstrapped (prints the
#                                    seconds it took) and DIR/network.json
#                                    describes it for arti
#   tests/tor/network.sh stop DIR    stop everything it started in DIR
#
# Choices (see the pitfalls in docs/TOR.md):
# - the voting interval is 15 s: C Tor's onion-service time period under
#   TestingTorNetwork is 24 voting intervals (6 min), above arti's 5-minute
#   floor for hsdir_interval;
# - the authorities' first vote waits for the relays (a voting start offset);
# - guards, exits and HSDirs are flagged by fingerprint, not with `*`;
# - every relay has the same bandwidth (a V3BandwidthsFile).
set -euo pipefail

TOR=${TOR:-/usr/sbin/tor}
GENCERT=${GENCERT:-tor-gencert}
AUTHORITIES=3
RELAYS=6
INTERVAL=15
BASE=${TOR_NET_BASE_PORT:-0}

die() { echo "tor network: $*" >&2; exit 1; }

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# The pid in a tor.pid file, or nothing (tor removes it as it exits).
pid_of() { local p; p=$(cat "$1" 2>/dev/null || true); [[ "$p" =~ ^[0-9]+$ ]] && [ "$p" -gt 1 ] && echo "$p"; return 0; }

stop() {
  local dir=$1
  [ -d "$dir" ] || return 0
  local pids=() pid
  for pidfile in "$dir"/*/tor.pid; do
    [ -f "$pidfile" ] || continue
    pid=$(pid_of "$pidfile")
    [ -n "$pid" ] && pids+=("$pid")
  done
  [ "${#pids[@]}" = 0 ] && return 0
  kill "${pids[@]}" 2>/dev/null || true
  # Wait for them to go, then make sure.
  for _ in $(seq 50); do
    local alive=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.1
  done
  for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  rm -f "$dir"/*/tor.pid
}

start() {
  local dir=$1
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  local started=$SECONDS
  # A failed start leaves nothing running.
  trap 'stop "$dir"' ERR

  local names=() orports=() dirports=()
  for i in $(seq 0 $((AUTHORITIES + RELAYS - 1))); do
    if [ "$i" -lt "$AUTHORITIES" ]; then names+=("auth$i"); else names+=("relay$i"); fi
    orports+=("$(free_port)")
    dirports+=("$(free_port)")
  done

  # Authority keys and certificates.
  local dirauth_lines=""
  for i in $(seq 0 $((AUTHORITIES - 1))); do
    local d="$dir/${names[$i]}"
    mkdir -p "$d/keys"
    (cd "$d/keys" && echo "" | "$GENCERT" --create-identity-key --passphrase-fd 0 -m 12 \
        -a "127.0.0.1:${dirports[$i]}" >/dev/null 2>&1) || die "tor-gencert failed for ${names[$i]}"
    local v3ident
    v3ident=$(grep '^fingerprint' "$d/keys/authority_certificate" | awk '{print $2}')
    "$TOR" --list-fingerprint --DataDirectory "$d" --ORPort "${orports[$i]}" \
        --Nickname "${names[$i]}" --quiet >/dev/null 2>&1 || true
    local fp
    fp=$(awk '{print $2}' "$d/fingerprint" 2>/dev/null) || die "no fingerprint for ${names[$i]}"
    echo "$v3ident" > "$d/v3ident"
    dirauth_lines+="DirAuthority ${names[$i]} orport=${orports[$i]} no-v2 v3ident=$v3ident 127.0.0.1:${dirports[$i]} $fp"$'\n'
  done

  # Relay identities (for the flags and the bandwidth file).
  local relay_fps=()
  for i in $(seq "$AUTHORITIES" $((AUTHORITIES + RELAYS - 1))); do
    local d="$dir/${names[$i]}"
    mkdir -p "$d"
    "$TOR" --list-fingerprint --DataDirectory "$d" --ORPort "${orports[$i]}" \
        --Nickname "${names[$i]}" --quiet >/dev/null 2>&1 || true
    relay_fps+=("$(awk '{print $2}' "$d/fingerprint")")
  done
  local all_fps=()
  for i in $(seq 0 $((AUTHORITIES + RELAYS - 1))); do
    all_fps+=("$(awk '{print $2}' "$dir/${names[$i]}/fingerprint")")
  done
  local list
  list=$(IFS=,; echo "${relay_fps[*]}")
  local hsdirs
  hsdirs=$(IFS=,; echo "${all_fps[*]}")
  {
    date +%s
    for fp in "${all_fps[@]}"; do echo "node_id=\$$fp bw=1000"; done
  } > "$dir/bandwidths"

  # The first vote comes a few seconds after the relays have uploaded.
  local offset=$(( ( $(date +%s) + 10 ) % INTERVAL ))

  local common
  common="TestingTorNetwork 1
${dirauth_lines}ShutdownWaitLength 0
ProtocolWarnings 1
SafeLogging 0
AssumeReachable 1
ExitPolicyRejectPrivate 0
ConnLimit 60
DisableDebuggerAttachment 0
V3AuthVotingInterval $INTERVAL
V3AuthVoteDelay 3
V3AuthDistDelay 3
TestingV3AuthInitialVotingInterval $INTERVAL
TestingV3AuthInitialVoteDelay 3
TestingV3AuthInitialDistDelay 3
TestingV3AuthVotingStartOffset $offset
TestingDirAuthVoteGuard $list
TestingDirAuthVoteExit $list
TestingDirAuthVoteHSDir $hsdirs
TestingMinExitFlagThreshold 0
"
  for i in $(seq 0 $((AUTHORITIES + RELAYS - 1))); do
    local d="$dir/${names[$i]}"
    {
      echo "$common"
      echo "DataDirectory $d"
      echo "PidFile $d/tor.pid"
      echo "Log notice file $d/notice.log"
      echo "Nickname ${names[$i]}"
      echo "Address 127.0.0.1"
      echo "ORPort 127.0.0.1:${orports[$i]}"
      echo "DirPort 127.0.0.1:${dirports[$i]}"
      echo "SocksPort 0"
      echo "ContactInfo ${names[$i]}@civkit.test"
      if [ "$i" -lt "$AUTHORITIES" ]; then
        echo "AuthoritativeDirectory 1"
        echo "V3AuthoritativeDirectory 1"
        echo "V3BandwidthsFile $dir/bandwidths"
        echo "ExitPolicy reject *:*"
      else
        echo "ExitRelay 1"
        echo "ExitPolicy accept 127.0.0.0/8:*"
        echo "ExitPolicy reject *:*"
      fi
    } > "$d/torrc"
    "$TOR" -f "$d/torrc" --RunAsDaemon 1 >/dev/null 2>&1 || die "${names[$i]} did not start (see $d/notice.log)"
  done

  # The C Tor client: usable once it has bootstrapped.
  local c="$dir/client" socks
  socks=$(free_port)
  mkdir -p "$c"
  # Client authorization keys (<name>.auth_private), read again on SIGHUP.
  mkdir -m 700 -p "$c/onion-auth"
  {
    echo "TestingTorNetwork 1"
    echo -n "$dirauth_lines"
    echo "DataDirectory $c"
    echo "PidFile $c/tor.pid"
    echo "Log notice file $c/notice.log"
    echo "SocksPort 127.0.0.1:$socks"
    echo "ClientOnionAuthDir $c/onion-auth"
    echo "ShutdownWaitLength 0"
    echo "SafeLogging 0"
  } > "$c/torrc"
  "$TOR" -f "$c/torrc" --RunAsDaemon 1 >/dev/null 2>&1 || die "the client did not start (see $c/notice.log)"

  # Usable: the client has bootstrapped, and the consensus lists every
  # router, the relays as exits, every one as an HSDir (a consensus voted
  # before the relays uploaded lacks them, and onion services then stall).
  local deadline=$((SECONDS + ${TOR_NET_TIMEOUT:-180})) total=$((AUTHORITIES + RELAYS))
  local consensus="$dir/${names[0]}/cached-microdesc-consensus"
  complete() {
    grep -q "Bootstrapped 100%" "$c/notice.log" 2>/dev/null || return 1
    [ "$(grep -c '^r ' "$consensus" 2>/dev/null || echo 0)" -ge "$total" ] || return 1
    [ "$(grep -c '^s .*Exit' "$consensus" 2>/dev/null || echo 0)" -ge "$RELAYS" ] || return 1
    [ "$(grep -c '^s .*HSDir' "$consensus" 2>/dev/null || echo 0)" -ge "$total" ] || return 1
  }
  until complete; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      tail -5 "$c/notice.log" >&2 || true
      die "no complete consensus and bootstrapped client within ${TOR_NET_TIMEOUT:-180} s (logs in $dir)"
    fi
    sleep 1
  done

  # What arti needs: authorities' v3 identities and fallback caches.
  {
    echo '{'
    echo "  \"socks_port\": $socks,"
    echo '  "authorities": ['
    for i in $(seq 0 $((AUTHORITIES - 1))); do
      local sep=","; [ "$i" = $((AUTHORITIES - 1)) ] && sep=""
      echo "    \"$(cat "$dir/${names[$i]}/v3ident")\"$sep"
    done
    echo '  ],'
    echo '  "caches": ['
    for i in $(seq 0 $((AUTHORITIES + RELAYS - 1))); do
      local d="$dir/${names[$i]}" sep=","
      [ "$i" = $((AUTHORITIES + RELAYS - 1)) ] && sep=""
      echo "    {\"rsa_identity\": \"$(awk '{print $2}' "$d/fingerprint")\", \"ed_identity\": \"$(awk '{print $2}' "$d/fingerprint-ed25519")\", \"orport\": \"127.0.0.1:${orports[$i]}\"}$sep"
    done
    echo '  ]'
    echo '}'
  } > "$dir/network.json"
  trap - ERR
  echo "tor network usable after $((SECONDS - started)) s ($AUTHORITIES authorities, $RELAYS relays, client SOCKS 127.0.0.1:$socks)"
}

case "${1:-}" in
  start) start "${2:?usage: $0 start DIR}" ;;
  stop) stop "${2:?usage: $0 stop DIR}" ;;
  *) echo "usage: $0 start|stop DIR" >&2; exit 2 ;;
esac
