#!/usr/bin/env bash
# civkitd on PostgreSQL, beside civkitd on LMDB and nostr-rs-relay on the
# same PostgreSQL server, in one run.
#
#   bash bench/postgres.sh                       # 100k-event store
#   STORE=1000000 ROUNDS=3 bash bench/postgres.sh
#
# It starts a throwaway PostgreSQL cluster (.ci/postgres.sh: Debian's
# packages, a unix socket, fsync on) and gives each relay a fresh database.
# civkit-bench measures pipelined ingest (32 clients), the relay's CPU per
# event and the PostgreSQL server's (every `postgres` process): ROUNDS rounds
# of civkitd and nostr-rs-relay, interleaved, each on a fresh database (the
# table gives medians; this machine's disk and CPU vary from minute to
# minute). Then REQ `limit:100` p50/p99 on a store of STORE events. civkitd's PostgreSQL
# store is filled to STORE by `civkitd migrate` from an LMDB store that
# civkit-bench filled, as an operator moving a board would (filling it over
# websockets at its ingest rate would take most of an hour); nostr-rs-relay's
# REQ figures are on the events its ingest phase stored. Last, two civkitd
# nodes on one database take the ingest load together (16 clients each)
# against one node alone. Prints one JSON line per measure and a table.
set -euo pipefail
cd "$(dirname "$0")/.."
STORE=${STORE:-100000}
EVENTS=${EVENTS:-20000}
ROUNDS=${ROUNDS:-3}
source bench/common.sh
source .ci/postgres.sh
pg_start
trap 'kill $(jobs -p) 2>/dev/null || true; pg_stop; rm -rf "$WORK"' EXIT
PSQL="$(pg_bin)/psql"
RESULTS="$WORK/results.jsonl"
newdb() { "$PSQL" -q "$TEST_POSTGRES_URL" -c "CREATE DATABASE $1" >/dev/null; echo "host=$PG_DIR user=civkit dbname=$1"; }

# civkitd DIR PORT [PERSISTER_LINES]: start civkitd; sets PID.
civkitd() {
  mkdir -p "$1"
  relay_config "$1" "$2" > "$1/civkit.toml"
  if [ -n "${3:-}" ]; then
    python3 - "$1/civkit.toml" "$3" <<'PY'
import sys
p, lines = sys.argv[1], sys.argv[2]
s = open(p).read().replace('[persister]\ntype = "lmdb"\n', '[persister]\n' + lines + '\n', 1)
open(p, 'w').write(s)
PY
  fi
  "$BIN/civkitd" --config "$1/civkit.toml" & PID=$!
  wait_port "$2"
}

bench() { "$BIN/civkit-bench" --db-process postgres --idle 0 "$@" >> "$RESULTS"; }

# 1. civkitd on LMDB: the embedded default, and the source of the 1M store.
civkitd "$WORK/lmdb" 7790
bench --url ws://127.0.0.1:7790 --pid $PID --name civkitd-lmdb --events "$EVENTS" --store "$STORE"
kill -INT $PID; wait $PID || true

# 2. Ingest on PostgreSQL, civkitd and nostr-rs-relay interleaved, each
#    round on fresh databases.
HAVE_NRR=0; command -v nostr-rs-relay >/dev/null && HAVE_NRR=1
[ $HAVE_NRR = 1 ] || echo "nostr-rs-relay not on PATH (apt-get install protobuf-compiler; cargo install nostr-rs-relay): skipped" >&2
for r in $(seq 1 "$ROUNDS"); do
  URL=$(newdb civkit_ingest_$r)
  civkitd "$WORK/pg-$r" 7791 "type = \"postgres\"
url = \"$URL\""
  bench --url ws://127.0.0.1:7791 --pid $PID --name civkitd-postgres --events "$EVENTS" --store "$EVENTS" --req-samples 1
  kill -INT $PID; wait $PID || true
  [ $HAVE_NRR = 1 ] || continue
  newdb nrr_$r >/dev/null
  mkdir -p "$WORK/nrr-$r"
  cat > "$WORK/nrr-$r/config.toml" <<TOML
[info]
relay_url = "ws://127.0.0.1:7793/"
name = "bench"
[database]
engine = "postgres"
connection = "postgres://civkit@localhost/nrr_$r?host=$PG_DIR"
[network]
address = "127.0.0.1"
port = 7793
[limits]
messages_per_sec = 100000
max_event_bytes = 131072
TOML
  (cd "$WORK/nrr-$r" && exec nostr-rs-relay --config "$WORK/nrr-$r/config.toml" > "$WORK/nrr-$r/log" 2>&1) & PID=$!
  wait_port 7793
  bench --url ws://127.0.0.1:7793 --pid $PID --name nostr-rs-relay-postgres --events "$EVENTS" --store "$EVENTS" --req-samples 1
  kill -INT $PID; wait $PID || true
done

# 3. REQ on a STORE-event civkitd store, moved from LMDB into PostgreSQL.
URL=$(newdb civkit_full)
mkdir -p "$WORK/pg-full"
relay_config "$WORK/pg-full" 7792 > "$WORK/pg-full/civkit.toml"
sed -i "s|^type = \"lmdb\"|type = \"postgres\"\nurl = \"$URL\"|" "$WORK/pg-full/civkit.toml"
T0=$(date +%s.%N)
"$BIN/civkitd" migrate --from "$WORK/lmdb/civkit.toml" --to "$WORK/pg-full/civkit.toml" | tail -1
echo "{\"name\": \"civkitd-postgres\", \"migrate_secs\": $(echo "$(date +%s.%N) - $T0" | bc)}" >> "$RESULTS"
"$PSQL" -q "host=$PG_DIR user=civkit dbname=civkit_full" -c "VACUUM ANALYZE" >/dev/null
"$BIN/civkitd" --config "$WORK/pg-full/civkit.toml" & PID=$!
wait_port 7792
# The store is full: a zero-event ingest phase, then REQ.
"$BIN/civkit-bench" --url ws://127.0.0.1:7792 --pid $PID --name civkitd-postgres-full --events 1 --store 1 --idle 0 >> "$RESULTS"
kill -INT $PID; wait $PID || true

# 4. Two civkitd nodes on one database against one: the same 32 clients,
#    split 16 and 16.
URL=$(newdb civkit_two)
SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
for n in a b; do
  mkdir -p "$WORK/two-$n/data"; chmod 700 "$WORK/two-$n/data"
  (umask 077; echo "$SECRET" > "$WORK/two-$n/data/node.key")
done
civkitd "$WORK/two-a" 7794 "type = \"postgres\"
url = \"$URL\""
PID_A=$PID
civkitd "$WORK/two-b" 7795 "type = \"postgres\"
url = \"$URL\""
PID_B=$PID
"$BIN/civkit-bench" --url ws://127.0.0.1:7794 --name two-nodes-a --clients 16 --events $((EVENTS / 2)) --store $((EVENTS / 2)) --idle 0 --req-samples 1 > "$WORK/two-a.json" &
"$BIN/civkit-bench" --url ws://127.0.0.1:7795 --name two-nodes-b --clients 16 --events $((EVENTS / 2)) --store $((EVENTS / 2)) --idle 0 --req-samples 1 > "$WORK/two-b.json"
wait %% 2>/dev/null || true
sleep 1
cat "$WORK/two-a.json" "$WORK/two-b.json" >> "$RESULTS"
kill -INT $PID_A $PID_B; wait $PID_A $PID_B || true

cat "$RESULTS"
python3 - "$RESULTS" "$STORE" <<'PY'
import json, sys
import statistics
rows = [json.loads(l) for l in open(sys.argv[1])]
by, runs = {}, {}
for r in rows:
    by.setdefault(r["name"], {}).update(r)
    runs.setdefault(r["name"], []).append(r)
def get(name, *path):
    v = by.get(name, {})
    for p in path:
        v = v.get(p) if isinstance(v, dict) else None
    return v
def med(name, key):
    v = [r[key] for r in runs.get(name, []) if r.get(key) is not None]
    return statistics.median(v) if v else None
lm, pg, full, nrr = "civkitd-lmdb", "civkitd-postgres", "civkitd-postgres-full", "nostr-rs-relay-postgres"
f = lambda v, fmt="%.0f": "n/a" if v is None else fmt % v
ratio = lambda a, b: "n/a" if not a or not b else "%.2f×" % (a / b)
print(f"\nIngest: medians of {len([r for r in runs.get(pg, []) if 'events_per_sec' in r])} interleaved rounds. Ratio > 1: civkitd is better.")
print("\n| measure | civkitd, PostgreSQL | civkitd, LMDB | nostr-rs-relay, PostgreSQL | PostgreSQL vs nostr-rs-relay |")
print("|---|---|---|---|---|")
for k, label in [("events_per_sec", "pipelined ingest, events/s"), ("cpu_us_per_event", "relay CPU, µs/event"),
                 ("db_cpu_us_per_event", "PostgreSQL server CPU, µs/event")]:
    a, b, c = med(pg, k), get(lm, k), med(nrr, k)
    better = ratio(a, c) if k == "events_per_sec" else ratio(c, a)
    print(f"| {label} | {f(a)} | {f(b)} | {f(c)} | {better} |")
for s in ["kind", "author", "tag", "mixed"]:
    for q in ["p50_ms", "p99_ms"]:
        a, b = get(full, "req", s, q), get(lm, "req", s, q)
        print(f"| REQ {s} {q[:3]} on {sys.argv[2]} events, ms | {f(a, '%.2f')} | {f(b, '%.2f')} | | |")
two = sum(get(n, "accepted") or 0 for n in ["two-nodes-a", "two-nodes-b"])
secs = max(get(n, "ingest_secs") or 0 for n in ["two-nodes-a", "two-nodes-b"])
if secs:
    agg = two / secs
    print(f"| two nodes on one database, aggregate ingest, events/s | {f(agg)} | | | {ratio(agg, med(pg, 'events_per_sec'))} of one node |")
each = lambda n: ", ".join(f(r["events_per_sec"]) for r in runs.get(n, []) if "events_per_sec" in r)
print(f"\ningest per round: civkitd {each(pg)}; nostr-rs-relay {each(nrr)}")
print(f"\nmigrate of the {sys.argv[2]}-event LMDB store into PostgreSQL: {f(get(pg, 'migrate_secs'), '%.1f')} s")
PY
