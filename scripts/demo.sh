#!/usr/bin/env bash
# Starts the mfsha appliance on loopback and mounts it: two masters, the metalogger as the
# voting witness, three chunkservers and a FUSE mount under ./mfsha-demo (mount point
# ./mfsha-demo/mnt). A daemon that dies is restarted; Ctrl-C stops everything.
# Installs what is missing first.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
"$here/scripts/setup.sh"
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release --locked --manifest-path "$here/Cargo.toml" -p mfsha
exec "${CARGO_TARGET_DIR:-$here/target}/release/mfsha" demo "$@"
