#!/usr/bin/env bash
# The fuzz soak: every target of crates/fuzz under libFuzzer (cargo-fuzz), RUNS inputs each
# (10,000,000 by default), then the corpus minimised back into fuzz/corpus/. Prints the inputs
# run, the time and the corpus size per target; fails on the first crash, hang (10 s) or
# allocation beyond the limits, leaving the input in fuzz/artifacts/<target>/.
#
#   scripts/fuzz.sh [RUNS] [TARGET...]
#
# The test command replays fuzz/corpus/ without the fuzzer (crates/fuzz/tests/corpus.rs).
# See docs/fuzzing.md.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
runs=${1:-10000000}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(client_port chunkserver_port data_port logger_port peer_port raft_entry snapshot chunk_header exports config)
fi

if ! command -v cargo-fuzz >/dev/null; then
  echo "fuzz: installing cargo-fuzz from crates.io" >&2
  cargo install cargo-fuzz --locked
fi
# cargo-fuzz passes the sanitizer and coverage flags as -Z options, which only a nightly
# compiler takes; this machine has the stable toolchain alone, which takes them with
# RUSTC_BOOTSTRAP=1 (the same compiler, its unstable flags unlocked).
export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR=${FUZZ_TARGET_DIR:-/var/cache/mfsha/fuzz-target}
# The targets link the master (exports, config), hence RocksDB: reuse the library the test
# build made rather than compiling its C++ again under the fuzzer's flags.
built=$(ls -t /var/cache/mfsha/target/debug/build/librocksdb-sys-*/out/librocksdb.a 2>/dev/null | head -n 1 || true)
if [ -n "$built" ]; then
  export ROCKSDB_LIB_DIR="${built%/*}" ROCKSDB_STATIC=1 RUSTFLAGS="${RUSTFLAGS:-} -C link-arg=-lstdc++"
fi

cd fuzz
cargo fuzz build --debug-assertions
printf '%-18s %12s %8s %10s %8s\n' target inputs seconds inputs/s corpus
for target in "${targets[@]}"; do
  mkdir -p "corpus/$target"
  log="artifacts/$target.log"
  mkdir -p artifacts
  start=$(date +%s)
  # -rss_limit_mb: the whole process; -malloc_limit_mb: any one allocation (a length prefix
  # believed). -max_len: larger than any frame the seeds hold, far below the 8 MiB limit.
  if ! cargo fuzz run --debug-assertions "$target" "corpus/$target" -- \
      -runs="$runs" -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=256 -max_len=65536 \
      -print_final_stats=1 >"$log" 2>&1; then
    echo "fuzz: $target failed; the input and the report are in fuzz/artifacts/$target/ and $log:" >&2
    tail -n 40 "$log" >&2
    exit 1
  fi
  seconds=$(( $(date +%s) - start ))
  executed=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo 0)
  # Keep only inputs that add coverage, so the committed corpus stays small.
  cargo fuzz cmin --debug-assertions "$target" "corpus/$target" >>"$log" 2>&1
  printf '%-18s %12s %8s %10s %8s\n' "$target" "$executed" "$seconds" \
    "$(( executed / (seconds > 0 ? seconds : 1) ))" "$(ls "corpus/$target" | wc -l)"
done
