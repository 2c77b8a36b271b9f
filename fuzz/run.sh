#!/usr/bin/env bash
# Coverage-guided fuzzing of every input surface (libFuzzer, cargo-fuzz).
#
#   bash fuzz/run.sh          # 600 s per target
#   bash fuzz/run.sh 60       # a shorter round
#   TARGETS="session order" bash fuzz/run.sh
#
# Needs a nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`).
# Corpora start from the real fixtures (tests/fuzzing seeds) and grow in
# fuzz/corpus/<target>; crashes land in fuzz/artifacts/<target>. Prints the
# executions of each target at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-600}
TARGETS=${TARGETS:-"session bolt8_message onion_tlv order credential_tag mainstay config"}
cargo run -q -p civkit-fuzzing --bin seed-corpora -- fuzz/corpus
cd fuzz
cargo +nightly fuzz build -O
mkdir -p logs
for t in $TARGETS; do
  echo "== $t: ${SECS}s"
  cargo +nightly fuzz run -O "$t" "corpus/$t" -- -max_total_time="$SECS" -rss_limit_mb=4096 \
    > "logs/$t.log" 2>&1 || { echo "$t FAILED: see fuzz/logs/$t.log"; tail -30 "logs/$t.log"; exit 1; }
  grep -E "^Done [0-9]+ runs" "logs/$t.log" | tail -1 | sed "s/^/$t: /"
done
