# Sourced by the bench scripts (run from the repository root): raises the
# file limit, builds the release binaries, makes a work dir that is removed
# (with every relay still running) at exit, and defines the helpers below.
ulimit -n 65536 2>/dev/null || ulimit -n 8192 2>/dev/null || true
cargo build --release -q -p civkit-node --bins
BIN=target/release
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT

# wait_port PORT: until something listens on 127.0.0.1:PORT (10 s at most).
wait_port() { for _ in $(seq 1 200); do (echo > /dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.05; done; return 1; }

# relay_config DIR PORT [NODE_LINES]: a civkitd config with its data in
# DIR/data and a websocket relay on PORT, without an AUTH challenge, a
# per-IP connection cap, or an event or query rate limit (every bench client
# comes from 127.0.0.1, and strfry has none of these by default); NODE_LINES
# are added to [node]; PERSISTER chooses the store (lmdb unless set). With a
# fourth argument `defaults`, the relay keeps its
# default limits (the hostile-load run). Other tables may follow.
relay_config() {
  local caps="max_connections_per_ip = 0" rates="events_per_second = 0.0
queries_per_second = 0.0"
  if [ "${4:-}" = defaults ]; then caps=""; rates=""; fi
  cat <<TOML
[node]
data_dir = "$1/data"
log = "warn"
${3:-}
[persister]
type = "${PERSISTER:-lmdb}"
[admin]
listen = "127.0.0.1:0"
[transports.relay]
type = "nostr-ws"
listen = "127.0.0.1:$2"
auth_challenge = false
$caps
[transports.relay.limits]
$rates
TOML
}

# strfry, the peer relay of ../shared/peers (STRFRY overrides the path; else
# `strfry` on PATH), if it runs here. It needs Debian's liblmdb0 libsecp256k1-1
# libzstd1 libssl3 zlib1g.
STRFRY=${STRFRY:-../shared/peers/strfry}
[ -x "$STRFRY" ] || STRFRY=$(command -v strfry || echo "$STRFRY")
STRFRY=$(realpath -m "$STRFRY")
STRFRY_CONF=$(realpath -m "${STRFRY_CONF:-$(dirname "$STRFRY")/strfry.conf}")
have_strfry() { [ -x "$STRFRY" ] && [ -f "$STRFRY_CONF" ] && ! ldd "$STRFRY" | grep -q "not found"; }

# start_strfry DIR PORT: strfry with its LMDB in DIR/strfry-db on PORT, in the
# background; sets STRFRY_PID.
start_strfry() {
  mkdir -p "$1/strfry-db"
  (cd "$1" && exec "$STRFRY" --config="$STRFRY_CONF" --set relay.port="$2" relay > "$1/strfry.log" 2>&1) &
  STRFRY_PID=$!
  wait_port "$2"
}
