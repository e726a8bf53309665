#!/usr/bin/env bash
# Runs the whole mfsha test suite: formatting, lints, unit tests, and the process-level tests
# (real masters, chunkservers and FUSE mounts on loopback). Installs what is missing first.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
# Keep build output outside the clone so repeated runs rebuild incrementally.
if [ -z "${CARGO_TARGET_DIR:-}" ]; then
  if mkdir -p /var/cache/mfsha/target 2>/dev/null && [ -w /var/cache/mfsha/target ]; then
    export CARGO_TARGET_DIR=/var/cache/mfsha/target
  else
    export CARGO_TARGET_DIR="$PWD/target"
  fi
fi
echo "test: cargo target dir $CARGO_TARGET_DIR" >&2
cargo fmt --all -- --check
cargo test --workspace --locked
