#!/usr/bin/env bash
# Publishing over the board's onion service beside its clearnet websocket,
# on the private Tor network (tests/tor/network.sh; needs Debian's tor).
set -euo pipefail
cd "$(dirname "$0")/.."
source .ci/tor.sh
tor_install
cargo build --release -q -p civkit-tor --example onion_bench
./target/release/examples/onion_bench
