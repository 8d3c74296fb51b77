#!/usr/bin/env bash
# Fuzzes image decoding and preprocessing (the pure-Rust core) with cargo fuzz (libFuzzer, nightly toolchain)
# for a bounded time. It starts from the test images and the hostile corpus; what it finds new is kept in
# fuzz/corpus/ (commit it); a crash is written to fuzz/artifacts/ and fails the run: add it to tests/fixtures/hostile with
# its expected outcome, fix it, and keep the regression test.
#   scripts/fuzz.sh [SECONDS]     default 120
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
seconds=${1:-120}
rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
cargo +nightly fuzz --version >/dev/null 2>&1 || cargo install cargo-fuzz --locked -j2 --quiet
corpus=fuzz/corpus/decode_preprocess
mkdir -p "$corpus"
log "fuzzing decode + preprocess for ${seconds}s"
CARGO_BUILD_JOBS=2 cargo +nightly fuzz run decode_preprocess "$corpus" tests/fixtures/images tests/fixtures/hostile -- \
  -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -max_len=262144
