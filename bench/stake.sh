#!/usr/bin/env bash
# Web-of-Stakes costs: certificates verified per second against a local
# Esplora (the stand-in chain over loopback HTTP), with BIP-340 event
# verifications in the same run as the yardstick, and a board's admission
# cost per order with a remote rank service's tier cached, against the
# same board without tier rules. No peer relay has tiers to compare with.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p civkit-node --example stake_bench
./target/release/examples/stake_bench
