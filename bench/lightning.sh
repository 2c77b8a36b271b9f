#!/usr/bin/env bash
# Lightning transports benchmark, against one release civkitd per round:
#  - BOLT8: handshakes per second, NIP-01 events per second over one connection;
#  - onion messages: events per second received, decrypted and admitted from one peer;
# each next to one websocket connection to the same civkitd in the same run.
#
#   bash bench/lightning.sh        # 3 rounds, fresh data dir each
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
EVENTS=${EVENTS:-20000}
HANDSHAKES=${HANDSHAKES:-500}
WINDOW=${WINDOW:-64}
source bench/common.sh
for r in $(seq 1 "$ROUNDS"); do
  dir="$WORK/r$r"; mkdir -p "$dir"
  { relay_config "$dir" 7792; cat <<TOML; } > "$dir/civkit.toml"
[transports.ln]
type = "bolt8"
listen = "127.0.0.1:9792"
[transports.onion]
type = "onion-messages"
via = "ln"
messages_per_sec_per_peer = 0.0
messages_per_sec_total = 0.0
TOML
  "$BIN/civkitd" --config "$dir/civkit.toml" & pid=$!
  wait_port 7792; wait_port 9792
  id=$("$BIN/civkit-cli" --data-dir "$dir/data" --json status | python3 -c "import json,sys; print(json.load(sys.stdin)['endpoints']['ln'][5:])")
  "$BIN/civkit-bench" --url ws://127.0.0.1:7792 --bolt8 "$id" --name civkitd \
    --events "$EVENTS" --handshakes "$HANDSHAKES" --window "$WINDOW" >> "$WORK/results.jsonl"
  "$BIN/civkit-bench" --url ws://127.0.0.1:7792 --onion "$id" --name civkitd \
    --events "$EVENTS" --window "$WINDOW" >> "$WORK/onion.jsonl"
  kill -INT $pid; wait $pid || true
done
cat "$WORK/results.jsonl" "$WORK/onion.jsonl"
python3 - "$WORK/results.jsonl" "$WORK/onion.jsonl" <<'PY'
import json, sys, statistics as st
rows = [json.loads(l) for l in open(sys.argv[1])]
m = lambda k: st.median(r[k] for r in rows)
print(f"\n| BOLT8 handshakes/s | BOLT8 events/s (one connection) | websocket events/s (one connection) | ratio BOLT8/websocket |")
print("|---|---|---|---|")
print(f"| {m('bolt8_handshakes_per_sec'):.0f} | {m('bolt8_events_per_sec'):.0f} | {m('ws_one_connection_events_per_sec'):.0f} | {m('bolt8_events_per_sec')/m('ws_one_connection_events_per_sec'):.2f} |")
rows = [json.loads(l) for l in open(sys.argv[2])]
print(f"\n| onion events/s (one peer) | websocket events/s (one connection) | ratio onion/websocket |")
print("|---|---|---|")
print(f"| {m('onion_events_per_sec'):.0f} | {m('ws_one_connection_events_per_sec'):.0f} | {m('onion_events_per_sec')/m('ws_one_connection_events_per_sec'):.2f} |")
PY
