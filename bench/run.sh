#!/usr/bin/env bash
# Benchmark civkitd against nostr-rs-relay in the same run, interleaved.
#
#   bash bench/run.sh            # 2 rounds each, 100k-event store
#   ROUNDS=1 STORE=50000 bash bench/run.sh
#
# Needs nostr-rs-relay on PATH (`cargo install nostr-rs-relay`); without it
# only civkitd is measured. Prints one JSON line per run and a markdown table.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-2}
STORE=${STORE:-100000}
EVENTS=${EVENTS:-20000}
IDLE=${IDLE:-1000}
ulimit -n 65536 2>/dev/null || ulimit -n 4096 || true

cargo build --release -q -p civkit-node --bins
BIN=target/release
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
RESULTS="$WORK/results.jsonl"

wait_port() { for _ in $(seq 1 200); do (echo > /dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.05; done; return 1; }

run_civkitd() {
  local dir="$WORK/civkitd-$1"; mkdir -p "$dir"
  cat > "$dir/civkit.toml" <<TOML
[node]
data_dir = "$dir/data"
log = "warn"
[admin]
listen = "127.0.0.1:0"
[transports.relay]
type = "nostr-ws"
listen = "127.0.0.1:7790"
auth_challenge = false
[transports.relay.limits]
events_per_second = 0.0
TOML
  "$BIN/civkitd" --config "$dir/civkit.toml" & local pid=$!
  wait_port 7790
  "$BIN/civkit-bench" --url ws://127.0.0.1:7790 --pid $pid --name civkitd --events "$EVENTS" --store "$STORE" --idle "$IDLE" >> "$RESULTS"
  kill -INT $pid; wait $pid || true
}

run_nrr() {
  local dir="$WORK/nrr-$1"; mkdir -p "$dir/db"
  cat > "$dir/config.toml" <<TOML
[info]
relay_url = "ws://127.0.0.1:7791/"
name = "bench"
[database]
data_directory = "$dir/db"
[network]
address = "127.0.0.1"
port = 7791
[limits]
messages_per_sec = 100000
max_event_bytes = 131072
TOML
  (cd "$dir" && exec nostr-rs-relay --config "$dir/config.toml" > "$dir/log" 2>&1) & local pid=$!
  wait_port 7791
  "$BIN/civkit-bench" --url ws://127.0.0.1:7791 --pid $pid --name nostr-rs-relay --events "$EVENTS" --store "$STORE" --idle "$IDLE" >> "$RESULTS"
  kill -INT $pid; wait $pid || true
}

HAVE_NRR=0; command -v nostr-rs-relay >/dev/null && HAVE_NRR=1
for r in $(seq 1 "$ROUNDS"); do
  run_civkitd "$r"
  [ $HAVE_NRR = 1 ] && run_nrr "$r"
done
cat "$RESULTS"
python3 - "$RESULTS" <<'PY'
import json, sys, statistics as st
rows = [json.loads(l) for l in open(sys.argv[1])]
by = {}
for r in rows: by.setdefault(r["name"], []).append(r)
def med(name, k):
    v = [r[k] for r in by.get(name, []) if r.get(k) is not None]
    return st.median(v) if v else None
print("\n| relay | ingest ev/s (OK true) | relay CPU µs/event | REQ p50 ms | REQ p99 ms | idle RSS B/conn |")
print("|---|---|---|---|---|---|")
for n in by:
    f = lambda k, fmt: (fmt % med(n, k)) if med(n, k) is not None else "n/a"
    print(f"| {n} | {f('events_per_sec','%.0f')} | {f('cpu_us_per_event','%.0f')} | {f('req_p50_ms','%.2f')} | {f('req_p99_ms','%.2f')} | {f('idle_bytes_per_conn','%.0f')} |")
if "civkitd" in by and "nostr-rs-relay" in by:
    c, n = med("civkitd", "events_per_sec"), med("nostr-rs-relay", "events_per_sec")
    print(f"\ningest ratio civkitd / nostr-rs-relay: {c/n:.2f}x")
    cc, nc = med("civkitd", "cpu_us_per_event"), med("nostr-rs-relay", "cpu_us_per_event")
    if cc and nc: print(f"CPU per event ratio nostr-rs-relay / civkitd: {nc/cc:.2f}x")
PY
