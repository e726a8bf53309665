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
# Lints, after the tests: clippy's check build would compile RocksDB's C++ a second time (about
# 20 minutes on 2 cores), so it links against the library the test build just made, or the one
# ROCKSDB_LIB_DIR already names.
if [ -z "${ROCKSDB_LIB_DIR:-}" ]; then
  built=$(ls -t "$CARGO_TARGET_DIR"/debug/build/librocksdb-sys-*/out/librocksdb.a 2>/dev/null | head -n 1 || true)
  if [ -n "$built" ]; then
    export ROCKSDB_LIB_DIR="${built%/*}" ROCKSDB_STATIC=1
  fi
fi
cargo clippy --workspace --all-targets --locked -- -D warnings
