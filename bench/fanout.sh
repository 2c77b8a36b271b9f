#!/usr/bin/env bash
# Fan-out cost: civkitd with the indexed subscription registry against the
# linear scan (node.fan_out = "linear") and against strfry (see common.sh),
# in the same run, interleaved, each with no held subscriptions and with SUBS
# held over CONNS connections.
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
source bench/common.sh
RESULTS="$WORK/results.jsonl"

run() { # mode subs round
  local dir="$WORK/$1-$2-$3"; mkdir -p "$dir"
  relay_config "$dir" 7792 "fan_out = \"$1\"" > "$dir/civkit.toml"
  "$BIN/civkitd" --config "$dir/civkit.toml" & local pid=$!
  wait_port 7792
  "$BIN/civkit-bench" --url ws://127.0.0.1:7792 --pid $pid --name "$1" \
      --events "$EVENTS" --fanout-subs "$2" --fanout-conns "$CONNS" >> "$RESULTS"
  kill -INT $pid; wait $pid || true
}

run_strfry() { # subs round
  local dir="$WORK/strfry-$1-$2"; mkdir -p "$dir"
  start_strfry "$dir" 7793
  "$BIN/civkit-bench" --url ws://127.0.0.1:7793 --pid $STRFRY_PID --name strfry \
      --events "$EVENTS" --fanout-subs "$1" --fanout-conns "$CONNS" >> "$RESULTS"
  kill -INT $STRFRY_PID; wait $STRFRY_PID || true
}

HAVE_STRFRY=0; have_strfry && HAVE_STRFRY=1
for r in $(seq 1 "$ROUNDS"); do
  for mode in indexed linear; do
    run "$mode" 0 "$r"
    run "$mode" "$SUBS" "$r"
  done
  if [ $HAVE_STRFRY = 1 ]; then
    run_strfry 0 "$r"
    run_strfry "$SUBS" "$r"
  fi
done

cat "$RESULTS"
python3 - "$RESULTS" <<'PY'
import json, sys, statistics
rows = [json.loads(l) for l in open(sys.argv[1])]
print("\n| fan-out | held subs | events/s | relay CPU µs/event |")
print("|---|---|---|---|")
for r in rows:
    print(f"| {r['name']} | {r['held_subscriptions']} | {r['events_per_sec']:.0f} | {r['cpu_us_per_event'] or float('nan'):.0f} |")
subs = max(r["held_subscriptions"] for r in rows)
cpu = lambda name, n: statistics.median(r["cpu_us_per_event"] for r in rows if r["name"] == name and r["held_subscriptions"] == n)
eps = lambda name, n: statistics.median(r["events_per_sec"] for r in rows if r["name"] == name and r["held_subscriptions"] == n)
names = [n for n in ("indexed", "linear", "strfry") if any(r["name"] == n for r in rows)]
for name in names:
    print(f"{name}: CPU per event with {subs} subscriptions / with none = {cpu(name, subs) / cpu(name, 0):.2f}x")
if "strfry" in names:
    for n in (0, subs):
        print(f"with {n} subscriptions: events/s indexed civkitd / strfry = {eps('indexed', n) / eps('strfry', n):.2f}x, "
              f"CPU per event strfry / indexed civkitd = {cpu('strfry', n) / cpu('indexed', n):.2f}x")
PY
