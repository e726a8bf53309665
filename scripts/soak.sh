#!/usr/bin/env bash
# The soaks, in the release build (not in the test command; figures in docs/benchmarks.md):
#
# 1. the appliance drill: two masters, the witness, three chunkservers and a FUSE mount under
#    a mixed client workload, MFSHA_SOAK_ROUNDS rounds (default 100) dealing in turn a SIGKILL
#    and a SIGSTOP of the leader, a follower restart and a witness restart
#    (tests/ha/soak.rs; needs /dev/fuse and fusermount3);
# 2. the Raft simulator: MFSHA_SIM_SEEDS seeds (default 100000) of 3- and 5-node groups and
#    groups with a witness, with crashes, partitions and clock drift (crates/raft/tests/sim.rs).
#
# Usage: scripts/soak.sh [appliance|sim]   (both when no argument is given)
# MFSHA_SOAK_BUILD=debug uses the debug build (no release build of RocksDB needed); with
# MFSHA_BIN naming a release `mfsha` as well, the daemons and mount are that release binary
# under the debug harness (docs/benchmarks.md, "Soak drill").
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
what="${1:-all}"
case "${MFSHA_SOAK_BUILD:-release}" in
  release) build=(--release) ;;
  debug) build=() ;;
  *) echo "soak.sh: MFSHA_SOAK_BUILD must be release or debug, not '$MFSHA_SOAK_BUILD'" >&2; exit 2 ;;
esac
case "$what" in
  appliance|sim|all) ;;
  *) echo "soak.sh: unknown soak '$what' (appliance, sim, or nothing for both)" >&2; exit 2 ;;
esac
if [ "$what" != sim ]; then
  MFSHA_SOAK_ROUNDS="${MFSHA_SOAK_ROUNDS:-100}" \
    cargo test "${build[@]}" --workspace --locked --test system -- --nocapture --exact \
    ha::soak::soak_rotating_leader_kills_stops_and_follower_and_witness_restarts_lose_nothing
fi
if [ "$what" != appliance ]; then
  MFSHA_SIM_SEEDS="${MFSHA_SIM_SEEDS:-100000}" \
    cargo test "${build[@]}" --workspace --locked --test sim -- --nocapture
fi
