#!/usr/bin/env bash
# Installs what a fresh Debian 12 machine lacks to build, test and run mfsha. Idempotent and
# quick when everything is already there. Needs root (or sudo) only when it installs packages.
set -euo pipefail

need_apt=()
have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
# libclang-dev + clang: RocksDB's bindings are generated with bindgen at build time.
# fuse3: fusermount3 and /etc/fuse.conf for the FUSE mount. fio: the FUSE benchmark.
# attr: getfattr/setfattr used by the xattr tests. pkg-config, build-essential: C/C++ builds.
# iproute2: `ip netns`/veth/bridge for the VIP tests and the lab; procps: `ps` in the tests.
# systemd: `systemd-analyze verify` of the units; lintian, adduser, man-db: the package test
# (scripts/deb.sh needs dpkg-dev and binutils, both in build-essential).
# prometheus: promtool and the server the metrics test scrapes the cluster with.
for pkg in build-essential pkg-config libclang-dev clang fuse3 fio attr iproute2 procps \
  systemd lintian adduser man-db prometheus; do
  have_pkg "$pkg" || need_apt+=("$pkg")
done
# chromium: the status page is tested in a real headless browser (tests/page.rs).
for pkg in chromium; do
  have_pkg "$pkg" || need_apt+=("$pkg")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  echo "setup: installing ${need_apt[*]}" >&2
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo not found. Install Rust (https://rustup.rs) and re-run." >&2
  exit 1
fi

# pjdfstest: the POSIX conformance suite run against the FUSE mount by the test suite.
if ! command -v pjdfstest >/dev/null 2>&1 && [ ! -x "$HOME/.cargo/bin/pjdfstest" ]; then
  echo "setup: installing pjdfstest (cargo install)" >&2
  cargo install --locked pjdfstest@0.2.2 >/dev/null 2>&1 || cargo install pjdfstest@0.2.2
fi
