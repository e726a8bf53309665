#!/usr/bin/env bash
# MooseFS CE beside mfsha, for `mfsha bench fuse --beside`: builds MooseFS from its own
# source (nothing of it is kept in this repository), then runs a master, three chunkservers
# and a mount on loopback, at MooseFS's defaults (storage class 2CP, no fsync of chunks).
#
#   scripts/moosefs-beside.sh build [SRC]   # SRC: a MooseFS source tree (default: clone
#                                           # github.com/moosefs/moosefs at $MOOSEFS_TAG)
#   scripts/moosefs-beside.sh start DIR     # master, 3 chunkservers, mount at DIR/mnt
#   scripts/moosefs-beside.sh stop DIR
#
# MooseFS's master and chunkserver refuse each other on 127.0.0.0/8 (a check in
# mfsmaster/matocsserv.c and one in mfschunkserver/masterconn.c); the build compiles those
# two checks out, as the issue describes, and changes nothing else. Ports: master 29419-29421,
# chunkservers 29422, 29432, 29442 (away from mfsha's 9419-9425).
set -euo pipefail
tag=${MOOSEFS_TAG:-v4.59.2}
prefix=${MOOSEFS_PREFIX:-/var/cache/mfsha/moosefs}

die() { echo "moosefs-beside: $*" >&2; exit 1; }

build() {
  local src=${1:-}
  if [ -z "$src" ]; then
    src=$(mktemp -d /var/tmp/moosefs-src.XXXXXX)
    git clone --quiet --depth 1 --branch "$tag" https://github.com/moosefs/moosefs "$src" \
      || die "cannot clone MooseFS $tag (pass a source tree instead)"
  fi
  [ -x "$src/configure" ] || die "$src is not a MooseFS source tree (no configure)"
  command -v pkg-config >/dev/null && pkg-config --exists fuse3 \
    || die "libfuse3-dev is missing (apt-get install libfuse3-dev zlib1g-dev)"
  # The two loopback refusals, compiled out.
  sed -i 's/if (((eptr->servip)&0xFF000000) == 0x7F000000) {/if (0 \&\& ((eptr->servip)\&0xFF000000) == 0x7F000000) {/' \
    "$src/mfsmaster/matocsserv.c"
  sed -i 's/if ((mip&0xFF000000)!=0x7F000000) {/if (1 || (mip\&0xFF000000)!=0x7F000000) {/' \
    "$src/mfschunkserver/masterconn.c"
  grep -q 'if (0 && ((eptr->servip)' "$src/mfsmaster/matocsserv.c" || die "the master's check was not found"
  grep -q 'if (1 || (mip' "$src/mfschunkserver/masterconn.c" || die "the chunkserver's check was not found"
  (cd "$src" && ./configure --quiet --prefix="$prefix" --disable-mfsgui --disable-mfscgi \
      --disable-mfscgiserv --disable-mfscli --disable-mfsnetdump \
      --with-default-user=root --with-default-group=root \
    && make -j"$(nproc)" >/dev/null && make install >/dev/null) || die "the MooseFS build failed in $src"
  echo "moosefs-beside: MooseFS $tag installed in $prefix"
}

start() {
  local dir=${1:?usage: start DIR}
  [ -x "$prefix/sbin/mfsmaster" ] || die "no MooseFS in $prefix: run '$0 build' first"
  mkdir -p "$dir/master" "$dir/mnt"
  cat >"$dir/mfsexports.cfg" <<EOF
* / rw,alldirs,admin,maproot=0:0
EOF
  cat >"$dir/mfsmaster.cfg" <<EOF
DATA_PATH = $dir/master
EXPORTS_FILENAME = $dir/mfsexports.cfg
MATOML_LISTEN_HOST = 127.0.0.1
MATOML_LISTEN_PORT = 29419
MATOCS_LISTEN_HOST = 127.0.0.1
MATOCS_LISTEN_PORT = 29420
MATOCL_LISTEN_HOST = 127.0.0.1
MATOCL_LISTEN_PORT = 29421
EOF
  [ -e "$dir/master/metadata.mfs" ] || cp "$prefix/var/mfs/metadata.mfs.empty" "$dir/master/metadata.mfs"
  "$prefix/sbin/mfsmaster" -c "$dir/mfsmaster.cfg" start
  for i in 0 1 2; do
    mkdir -p "$dir/cs$i/data" "$dir/cs$i/hdd"
    echo "$dir/cs$i/hdd" >"$dir/cs$i/mfshdd.cfg"
    cat >"$dir/cs$i/mfschunkserver.cfg" <<EOF
DATA_PATH = $dir/cs$i/data
HDD_CONF_FILENAME = $dir/cs$i/mfshdd.cfg
MASTER_HOST = 127.0.0.1
MASTER_PORT = 29420
CSSERV_LISTEN_HOST = 127.0.0.1
CSSERV_LISTEN_PORT = $((29422 + 10 * i))
EOF
    "$prefix/sbin/mfschunkserver" -c "$dir/cs$i/mfschunkserver.cfg" start
  done
  "$prefix/bin/mfsmount" "$dir/mnt" -H 127.0.0.1 -P 29421
  # The chunkservers register within seconds; until then a write fails. Wait for one that
  # lands on two copies' worth of servers (the default class, 2CP).
  for _ in $(seq 1 60); do
    if dd if=/dev/zero of="$dir/mnt/.probe" bs=64k count=1 conv=fsync status=none 2>/dev/null; then
      rm -f "$dir/mnt/.probe"
      echo "moosefs-beside: MooseFS mounted at $dir/mnt"
      return
    fi
    sleep 1
  done
  die "MooseFS at $dir took no write within 60 s (see syslog)"
}

stop() {
  local dir=${1:?usage: stop DIR}
  umount "$dir/mnt" 2>/dev/null || umount -l "$dir/mnt" 2>/dev/null || true
  for i in 0 1 2; do
    [ -e "$dir/cs$i/mfschunkserver.cfg" ] && "$prefix/sbin/mfschunkserver" -c "$dir/cs$i/mfschunkserver.cfg" stop || true
  done
  [ -e "$dir/mfsmaster.cfg" ] && "$prefix/sbin/mfsmaster" -c "$dir/mfsmaster.cfg" stop || true
}

case "${1:-}" in
  build) shift; build "$@" ;;
  start) shift; start "$@" ;;
  stop) shift; stop "$@" ;;
  *) die "usage: $0 build [SRC] | start DIR | stop DIR" ;;
esac
