#!/usr/bin/env bash
# Benchmark civkitd against strfry and nostr-rs-relay in the same run, interleaved.
#
#   bash bench/run.sh            # 2 rounds each, 100k-event store
#   ROUNDS=1 STORE=50000 bash bench/run.sh
#
# strfry is ../shared/peers/strfry (or $STRFRY), measured when its runtime
# libraries are installed (apt-get install -y liblmdb0 libsecp256k1-1 libzstd1
# libssl3 zlib1g). nostr-rs-relay is measured when it is on PATH (`cargo
# install nostr-rs-relay`). Prints one JSON line per run and a markdown table.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-2}
STORE=${STORE:-100000}
EVENTS=${EVENTS:-20000}
IDLE=${IDLE:-1000}
source bench/common.sh
RESULTS="$WORK/results.jsonl"

# disk NAME DIR: bytes on disk per stored event (the store holds STORE events).
disk() { echo "{\"name\": \"$1\", \"disk_bytes_per_event\": $(( $(du -sb "$2" | cut -f1) / STORE ))}" >> "$RESULTS"; }

run_civkitd() {
  local dir="$WORK/civkitd-$1"; mkdir -p "$dir"
  relay_config "$dir" 7790 > "$dir/civkit.toml"
  "$BIN/civkitd" --config "$dir/civkit.toml" & local pid=$!
  wait_port 7790
  "$BIN/civkit-bench" --url ws://127.0.0.1:7790 --pid $pid --name civkitd --events "$EVENTS" --store "$STORE" --idle "$IDLE" >> "$RESULTS"
  kill -INT $pid; wait $pid || true
  disk civkitd "$dir/data"
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
  disk nostr-rs-relay "$dir/db"
}

run_strfry() {
  local dir="$WORK/strfry-$1"; mkdir -p "$dir"
  start_strfry "$dir" 7793
  "$BIN/civkit-bench" --url ws://127.0.0.1:7793 --pid $STRFRY_PID --name strfry --events "$EVENTS" --store "$STORE" --idle "$IDLE" >> "$RESULTS"
  kill -INT $STRFRY_PID; wait $STRFRY_PID || true
  disk strfry "$dir/strfry-db"
}

HAVE_NRR=0; command -v nostr-rs-relay >/dev/null && HAVE_NRR=1
HAVE_STRFRY=0; have_strfry && HAVE_STRFRY=1
for r in $(seq 1 "$ROUNDS"); do
  run_civkitd "$r"
  [ $HAVE_STRFRY = 1 ] && run_strfry "$r"
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
print("\n| relay | ingest ev/s (OK true) | relay CPU µs/event | REQ p50 ms | REQ p99 ms | idle RSS B/conn | disk B/event |")
print("|---|---|---|---|---|---|---|")
for n in by:
    f = lambda k, fmt: (fmt % med(n, k)) if med(n, k) is not None else "n/a"
    print(f"| {n} | {f('events_per_sec','%.0f')} | {f('cpu_us_per_event','%.0f')} | {f('req_p50_ms','%.2f')} | {f('req_p99_ms','%.2f')} | {f('idle_bytes_per_conn','%.0f')} | {f('disk_bytes_per_event','%.0f')} |")
for peer in ("strfry", "nostr-rs-relay"):
    if "civkitd" in by and peer in by:
        c, n = med("civkitd", "events_per_sec"), med(peer, "events_per_sec")
        print(f"\ningest ratio civkitd / {peer}: {c/n:.2f}x")
        cc, nc = med("civkitd", "cpu_us_per_event"), med(peer, "cpu_us_per_event")
        if cc and nc: print(f"CPU per event ratio {peer} / civkitd: {nc/cc:.2f}x")
        cr, nr = med("civkitd", "req_p50_ms"), med(peer, "req_p50_ms")
        print(f"REQ p50 ratio {peer} / civkitd: {nr/cr:.2f}x")
        cd, nd = med("civkitd", "disk_bytes_per_event"), med(peer, "disk_bytes_per_event")
        if cd and nd: print(f"disk per event ratio {peer} / civkitd: {nd/cd:.2f}x")
PY
