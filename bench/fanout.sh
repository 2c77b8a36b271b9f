#!/usr/bin/env bash
# Fan-out cost: civkitd with the indexed subscription registry against the
# linear scan (node.fan_out = "linear"), in the same run, interleaved, each
# with no held subscriptions and with SUBS held over CONNS connections.
#
#   bash bench/fanout.sh                 # 2 rounds, 10,000 subs on 1,000 conns
#   ROUNDS=1 SUBS=20000 bash bench/fanout.sh
#
# Prints one JSON line per run, then a table of events/s and relay CPU per
# event, and the ratio of CPU per event with SUBS held to that with none.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-2}
SUBS=${SUBS:-10000}
CONNS=${CONNS:-1000}
EVENTS=${EVENTS:-20000}
ulimit -n 65536 2>/dev/null || ulimit -n 8192 || true

cargo build --release -q -p civkit-node --bins
BIN=target/release
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
RESULTS="$WORK/results.jsonl"

wait_port() { for _ in $(seq 1 200); do (echo > /dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.05; done; return 1; }

run() { # mode subs round
  local dir="$WORK/$1-$2-$3"; mkdir -p "$dir"
  cat > "$dir/civkit.toml" <<TOML
[node]
data_dir = "$dir/data"
log = "warn"
fan_out = "$1"
[admin]
listen = "127.0.0.1:0"
[transports.relay]
type = "nostr-ws"
listen = "127.0.0.1:7792"
auth_challenge = false
[transports.relay.limits]
events_per_second = 0.0
TOML
  "$BIN/civkitd" --config "$dir/civkit.toml" & local pid=$!
  wait_port 7792
  "$BIN/civkit-bench" --url ws://127.0.0.1:7792 --pid $pid --name "$1" \
      --events "$EVENTS" --fanout-subs "$2" --fanout-conns "$CONNS" >> "$RESULTS"
  kill -INT $pid; wait $pid || true
}

for r in $(seq 1 "$ROUNDS"); do
  for mode in indexed linear; do
    run "$mode" 0 "$r"
    run "$mode" "$SUBS" "$r"
  done
done

cat "$RESULTS"
python3 - "$RESULTS" <<'PY'
import json, sys, statistics
rows = [json.loads(l) for l in open(sys.argv[1])]
print("\n| fan-out | held subs | events/s | relay CPU µs/event |")
print("|---|---|---|---|")
for r in rows:
    print(f"| {r['name']} | {r['held_subscriptions']} | {r['events_per_sec']:.0f} | {r['cpu_us_per_event'] or float('nan'):.0f} |")
for mode in ("indexed", "linear"):
    cpu = lambda n: statistics.median(r["cpu_us_per_event"] for r in rows if r["name"] == mode and r["held_subscriptions"] == n)
    subs = max(r["held_subscriptions"] for r in rows)
    print(f"{mode}: CPU per event with {subs} subscriptions / with none = {cpu(subs) / cpu(0):.2f}x")
PY
