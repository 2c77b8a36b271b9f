#!/usr/bin/env bash
# Benchmark civkitd against strfry and nostr-rs-relay in the same run,
# interleaved, each on a fresh store.
#
#   bash bench/run.sh            # 2 rounds each, 100k-event store
#   ROUNDS=1 STORE=1000000 IDLE=100 bash bench/run.sh
#
# Per relay: civkit-bench (32 pipelined clients: ingest rate and relay CPU
# per event; then it fills the store to STORE events and times REQ
# `limit:100` by kind, author, `#t` and a filter mixing them; then memory
# per idle connection), then nostr-bench (100 clients, one event at a time,
# NB_SECS seconds), then disk bytes per stored event.
#
# Peers are found, or skipped with a note: strfry is ../shared/peers/strfry
# (or $STRFRY, or `strfry` on PATH), measured when its runtime libraries are
# installed (apt-get install -y liblmdb0 libsecp256k1-1 libzstd1 libssl3
# zlib1g); nostr-rs-relay and nostr-bench come from `cargo install
# nostr-rs-relay nostr-bench` (nostr-rs-relay's build needs Debian's
# protobuf-compiler). Prints one JSON line per measure and a
# markdown table of ratios.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-2}
STORE=${STORE:-100000}
EVENTS=${EVENTS:-20000}
IDLE=${IDLE:-1000}
NB_SECS=${NB_SECS:-20}
source bench/common.sh
RESULTS="$WORK/results.jsonl"

# cpu_us PID: the process's user + system CPU time, in microseconds.
cpu_us() { awk -v t="$(getconf CLK_TCK)" '{ sub(/.*\) /, ""); print ($12 + $13) * 1000000 / t }' "/proc/$1/stat"; }

# measure NAME PORT PID DIR: every measure of one relay (listening on PORT,
# its store in DIR).
measure() {
  local name=$1 url="ws://127.0.0.1:$2" pid=$3 nb_accepted=0
  "$BIN/civkit-bench" --url "$url" --pid "$pid" --name "$name" --events "$EVENTS" --store "$STORE" --idle "$IDLE" >> "$RESULTS"
  if [ "$HAVE_NB" = 1 ]; then
    local out="$WORK/nb-$name.jsonl" c0 c1
    c0=$(cpu_us "$pid")
    timeout -s INT "$NB_SECS" nostr-bench event -c 100 --json "$url" > "$out" 2>/dev/null || true
    c1=$(cpu_us "$pid")
    nb_accepted=$(python3 - "$name" "$out" "$c0" "$c1" "$RESULTS" <<'PY'
import json, sys
name, out, c0, c1, results = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
lines = [json.loads(l) for l in open(out) if l.startswith("{")]
acc = lambda l: l["message_stats"]["complete"] - l["message_stats"]["error"]
if lines:
    last = lines[-1]
    # The rate over the steady part: from 5 s in (all 100 connected) to the end.
    first = next((l for l in lines if l["elapsed"] >= 5000), lines[0])
    secs = max((last["elapsed"] - first["elapsed"]) / 1000, 1e-9)
    row = {"name": name, "one_at_a_time_events_per_sec": (acc(last) - acc(first)) / secs,
           "one_at_a_time_cpu_us_per_event": (c1 - c0) / max(acc(last), 1),
           "one_at_a_time_rejected": last["message_stats"]["error"]}
    open(results, "a").write(json.dumps(row) + "\n")
    print(acc(last))
else:
    print(0)
PY
)
  fi
  echo "{\"name\": \"$name\", \"disk_bytes_per_event\": $(( $(du -sb "$4" | cut -f1) / (STORE + nb_accepted) ))}" >> "$RESULTS"
}

run_civkitd() {
  local dir="$WORK/civkitd-$1"; mkdir -p "$dir"
  relay_config "$dir" 7790 > "$dir/civkit.toml"
  "$BIN/civkitd" --config "$dir/civkit.toml" & local pid=$!
  wait_port 7790
  measure civkitd 7790 $pid "$dir/data"
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
  measure nostr-rs-relay 7791 $pid "$dir/db"
  kill -INT $pid; wait $pid || true
}

run_strfry() {
  local dir="$WORK/strfry-$1"; mkdir -p "$dir"
  start_strfry "$dir" 7793
  measure strfry 7793 $STRFRY_PID "$dir/strfry-db"
  kill -INT $STRFRY_PID; wait $STRFRY_PID || true
}

HAVE_NRR=0; command -v nostr-rs-relay >/dev/null && HAVE_NRR=1
HAVE_STRFRY=0; have_strfry && HAVE_STRFRY=1
HAVE_NB=0; command -v nostr-bench >/dev/null && HAVE_NB=1
[ $HAVE_STRFRY = 1 ] || echo "strfry not found at $STRFRY or its libraries are missing: skipped" >&2
[ $HAVE_NRR = 1 ] || echo "nostr-rs-relay not on PATH (apt-get install protobuf-compiler; cargo install nostr-rs-relay): skipped" >&2
[ $HAVE_NB = 1 ] || echo "nostr-bench not on PATH (cargo install nostr-bench): one-at-a-time ingest skipped" >&2
for r in $(seq 1 "$ROUNDS"); do
  run_civkitd "$r"
  [ $HAVE_STRFRY = 1 ] && run_strfry "$r"
  [ $HAVE_NRR = 1 ] && run_nrr "$r"
done
cat "$RESULTS"
python3 - "$RESULTS" "$STORE" <<'PY'
import json, sys, statistics as st
rows = [json.loads(l) for l in open(sys.argv[1])]
by = {}
for r in rows:
    for k, v in r.pop("req", {}).items():
        r[f"req_{k}_p50_ms"], r[f"req_{k}_p99_ms"] = v["p50_ms"], v["p99_ms"]
    by.setdefault(r["name"], []).append(r)
def med(name, k):
    v = [r[k] for r in by.get(name, []) if r.get(k) is not None]
    return st.median(v) if v else None
shapes = ["kind", "author", "tag", "mixed"]
# (key, label, format, higher is better)
measures = [("events_per_sec", "pipelined ingest, events/s", "%.0f", True),
            ("cpu_us_per_event", "pipelined relay CPU, µs/event", "%.0f", False),
            ("one_at_a_time_events_per_sec", "one-at-a-time ingest (100 clients), events/s", "%.0f", True),
            ("one_at_a_time_cpu_us_per_event", "one-at-a-time relay CPU, µs/event", "%.0f", False)]
for s in shapes:
    measures += [(f"req_{s}_p50_ms", f"REQ {s} p50, ms", "%.2f", False), (f"req_{s}_p99_ms", f"REQ {s} p99, ms", "%.2f", False)]
measures += [("idle_bytes_per_conn", "idle RSS per connection, B", "%.0f", False),
             ("disk_bytes_per_event", "disk per event, B", "%.0f", False)]
names = list(by)
peers = [n for n in names if n != "civkitd"]
rounds = max(sum("events_per_sec" in r for r in v) for v in by.values())
print(f"\n{sys.argv[2]}-event store, medians of {rounds} round(s). Ratio > 1: civkitd is better.\n")
print("| measure | " + " | ".join(names) + " | " + " | ".join(f"civkitd vs {p}" for p in peers) + " |")
print("|---" * (1 + len(names) + len(peers)) + "|")
for k, label, fmt, higher in measures:
    vals = [med(n, k) for n in names]
    if all(v is None for v in vals):
        continue
    cells = [(fmt % v) if v is not None else "n/a" for v in vals]
    c = med("civkitd", k)
    ratios = []
    for p in peers:
        pv = med(p, k)
        ratios.append("n/a" if not c or not pv else "%.2f×" % ((c / pv) if higher else (pv / c)))
    print(f"| {label} | " + " | ".join(cells) + " | " + " | ".join(ratios) + " |")
PY
