#!/usr/bin/env bash
# Hostile load: honest clients alone, then the same honest clients while
# attackers run against one release civkitd (see civkit-bench --hostile-secs:
# whole-store COUNTs, REQs with 1,000 authors, slow readers, a connection
# flood from 20 addresses, an onion flood), plus two BOLT8 peers (pyln-proto,
# from PyPI) that subscribe to everything and never read. Prints the honest
# clients' p50/p99 and the node's RSS for both phases, checks every
# acknowledged event afterwards, and that the node is still up.
#
#   bash bench/hostile.sh          # 20 s per phase
#   SECS=60 bash bench/hostile.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${SECS:-20}
ATTACKERS=${ATTACKERS:-count,authors,slow,flood,onion}
STALLED=${STALLED:-2}
source bench/common.sh
python3 -c "import pyln.proto.wire" 2>/dev/null || python3 -m pip install --quiet pyln-proto
dir="$WORK/hostile"; mkdir -p "$dir"
{ relay_config "$dir" 7793 "" defaults; cat <<TOML; } > "$dir/civkit.toml"
[transports.ln]
type = "bolt8"
listen = "127.0.0.1:9793"
stranger_export = [{}]
[transports.onion]
type = "onion-messages"
via = "ln"
TOML
"$BIN/civkitd" --config "$dir/civkit.toml" & pid=$!
wait_port 7793; wait_port 9793
ln=$("$BIN/civkit-cli" --data-dir "$dir/data" --json status | python3 -c "import json,sys; print(json.load(sys.stdin)['endpoints']['ln'][5:])")
id=${ln%@*}; addr=${ln#*@}
# Two BOLT8 peers that subscribe to everything and stop reading, again and
# again while the run lasts.
for _ in $(seq 1 "$STALLED"); do
  ( end=$((SECONDS + 2 * SECS + 30)); while [ $SECONDS -lt $end ]; do
      python3 transports/bolt8/tests/pyln_peer.py "$id" "$addr" stall '{}' > /dev/null 2>&1 || true
    done ) &
done
"$BIN/civkit-bench" --url ws://127.0.0.1:7793 --pid $pid --name civkitd \
  --hostile-secs "$SECS" --bolt8-peer "$ln" --attackers "$ATTACKERS" --attacker-nice "${NICE:-10}" | tee "$WORK/hostile.json"
kill -0 $pid && echo "civkitd is still running"
"$BIN/civkit-cli" --data-dir "$dir/data" peers list | tail -3 || true
kill -INT $pid; wait $pid || true
