#!/usr/bin/env bash
# Builds the mfsha Debian package (binary package only) with dpkg-deb:
#
#   scripts/deb.sh [--profile release|dev] [--bin PATH] [--out DIR]
#
#   --profile release  (default) `cargo build --release`: what to install on servers. The
#                      first release build compiles RocksDB's C++ (tens of minutes on 2 cores).
#   --profile dev      the debug build (`cargo build --workspace --locked --tests`, the build
#                      the test suite shares): for trying the package, not for production.
#   --bin PATH         package this mfsha binary instead of building one (the package test
#                      passes the binary cargo built for it).
#   --out DIR          where the .deb goes (default: target/debian under the repository).
#
# Contents: /usr/bin/mfsha, /sbin/mount.mfsha (for `mount -t mfsha` and fstab), the units in
# /lib/systemd/system, commented configs in /etc/mfsha (conffiles), a man page made from
# `mfsha --help`, docs in /usr/share/doc/mfsha. postinst makes the `mfsha` system user and
# /var/lib/mfsha/{master,chunks,logger}; purge removes /etc/mfsha and /var/lib/mfsha (the
# user stays, as Debian keeps system users). Prints the path of the .deb on its last line.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
profile=release
bin=""
out="$repo/target/debian"
while [ $# -gt 0 ]; do
  case "$1" in
    --profile) profile=${2:?--profile needs release or dev}; shift 2 ;;
    --bin) bin=${2:?--bin needs a path}; shift 2 ;;
    --out) out=${2:?--out needs a directory}; shift 2 ;;
    -h|--help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "deb.sh: unknown argument $1 (see scripts/deb.sh --help)" >&2; exit 2 ;;
  esac
done
for tool in dpkg-deb dpkg-shlibdeps strip gzip; do
  command -v "$tool" >/dev/null || { echo "deb.sh: $tool not found: install dpkg-dev and binutils (scripts/setup.sh)" >&2; exit 1; }
done

if [ -z "$bin" ]; then
  target=${CARGO_TARGET_DIR:-$repo/target}
  case "$profile" in
    release) (cd "$repo" && cargo build --release --workspace --locked) >&2; bin="$target/release/mfsha" ;;
    dev) (cd "$repo" && cargo build --workspace --locked --tests) >&2; bin="$target/debug/mfsha" ;;
    *) echo "deb.sh: --profile is release or dev, not $profile" >&2; exit 2 ;;
  esac
fi
[ -x "$bin" ] || { echo "deb.sh: $bin is not an executable mfsha binary" >&2; exit 1; }

version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' "$repo/Cargo.toml")
[ -n "$version" ] || { echo "deb.sh: no version in $repo/Cargo.toml [workspace.package]" >&2; exit 1; }
debversion="$version-1"
arch=$(dpkg --print-architecture)
maintainer="${DEBFULLNAME:-mfsha developers} <${DEBEMAIL:-mfsha@example.org}>"
# The date of the commit packaged, so the same commit gives the same changelog.
date=$(git -C "$repo" log -1 --format=%cD 2>/dev/null || date -R)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root="$work/root"
install -d "$root/DEBIAN" "$root/usr/bin" "$root/sbin" "$root/lib/systemd/system" \
  "$root/etc/mfsha" "$root/usr/share/doc/mfsha/examples" "$root/usr/share/man/man1" \
  "$root/usr/share/man/man8"

install -m 0755 "$bin" "$root/usr/bin/mfsha"
strip --strip-unneeded --remove-section=.comment --remove-section=.note "$root/usr/bin/mfsha"
# mount(8) runs /sbin/mount.TYPE; mfsha acts as the helper when started under that name.
ln -s /usr/bin/mfsha "$root/sbin/mount.mfsha"
install -m 0644 "$repo"/systemd/*.service "$root/lib/systemd/system/"
# The mount unit names one mount point: an example to copy, not a unit to install.
install -m 0644 "$repo"/systemd/*.mount "$root/usr/share/doc/mfsha/examples/"
for conf in master chunkserver logger; do
  install -m 0644 "$repo/deploy/$conf.yaml" "$root/etc/mfsha/$conf.yaml"
  echo "/etc/mfsha/$conf.yaml" >>"$root/DEBIAN/conffiles"
done
cp -r "$repo/deploy/appliance" "$repo/deploy/appliance-vip" "$root/usr/share/doc/mfsha/examples/"
for doc in README.md docs/install.md docs/architecture.md docs/runbook-restore.md; do
  [ -f "$repo/$doc" ] && install -m 0644 "$repo/$doc" "$root/usr/share/doc/mfsha/"
done
find "$root/usr/share/doc" -type d -exec chmod 0755 {} + -o -type f -exec chmod 0644 {} +

# lintian takes serde_yaml's unsafe-libyaml (libyaml translated to Rust, linked statically as
# every Rust crate is) for a bundled copy of the C libyaml: there is no C code to replace with
# the system's libyaml. The one override; any other error fails the package test.
install -d "$root/usr/share/lintian/overrides"
cat >"$root/usr/share/lintian/overrides/mfsha" <<'EOF'
# serde_yaml's unsafe-libyaml is libyaml translated to Rust, not a copy of the C library.
mfsha: embedded-library libyaml [usr/bin/mfsha]
EOF
chmod 0644 "$root/usr/share/lintian/overrides/mfsha"

cat >"$root/usr/share/doc/mfsha/copyright" <<'EOF'
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: mfsha
Comment: The binary also contains the Rust crates that Cargo.lock names, each under its
 own license (most MIT or Apache-2.0), and RocksDB (Apache-2.0 or GPL-2).

Files: *
Copyright: 2026 the mfsha authors
License: Apache-2.0
 Licensed under the Apache License, Version 2.0 (the "License"); you may not use this
 file except in compliance with the License.
 .
 On Debian systems, the full text of the Apache License, Version 2.0 can be found in
 "/usr/share/common-licenses/Apache-2.0".
EOF

cat >"$work/changelog.Debian" <<EOF
mfsha ($debversion) unstable; urgency=medium

  * Package of mfsha $version, built by scripts/deb.sh from commit
    $(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown).

 -- $maintainer  $date
EOF
gzip -9n <"$work/changelog.Debian" >"$root/usr/share/doc/mfsha/changelog.Debian.gz"

# A man page from the --help texts: the overview, then every command's own help.
man_text() {
  local b="$root/usr/bin/mfsha"
  echo ".TH MFSHA 1 \"$(date -d "$date" +%Y-%m-%d)\" \"mfsha $version\" \"mfsha manual\""
  echo ".SH NAME"
  echo "mfsha \\- a highly available MooseFS-style distributed filesystem"
  echo ".SH SYNOPSIS"
  echo ".B mfsha"
  echo ".I COMMAND"
  echo "[\\fIOPTIONS\\fR]"
  echo ".br"
  echo ".B mount.mfsha"
  echo ".I HOST[:PORT]:[/PATH] DIR"
  echo "[\\fB\\-o\\fR \\fIOPTIONS\\fR]"
  echo ".SH DESCRIPTION"
  echo ".nf"
  "$b" --help | sed 's/\\/\\e/g; s/^\./\\\&./'
  echo ".fi"
  echo ".SH COMMANDS"
  "$b" --help | sed -n '/^Commands:/,/^$/p' | awk 'NR>1 && $1 != "" && $1 != "help" {print $1}' |
    while read -r cmd; do
      echo ".SS mfsha $cmd"
      echo ".nf"
      "$b" "$cmd" --help | sed 's/\\/\\e/g; s/^\./\\\&./'
      echo ".fi"
    done
  echo ".SH FILES"
  echo "/etc/mfsha/*.yaml (configuration), /var/lib/mfsha (data),"
  echo "/lib/systemd/system/mfsha-*.service (units), /usr/share/doc/mfsha (documentation)."
  echo ".SH SEE ALSO"
  echo "/usr/share/doc/mfsha/install.md, /usr/share/doc/mfsha/README.md"
}
man_text | gzip -9n >"$root/usr/share/man/man1/mfsha.1.gz"
echo ".so man1/mfsha.1" | gzip -9n >"$root/usr/share/man/man8/mount.mfsha.8.gz"

cat >"$root/DEBIAN/postinst" <<'EOF'
#!/bin/sh
# Makes the mfsha system user and its data directories; starts nothing (a cluster needs its
# cluster_id in /etc/mfsha/*.yaml first: see /usr/share/doc/mfsha/install.md).
set -e
if [ "$1" = configure ]; then
    adduser --system --group --home /var/lib/mfsha --no-create-home --quiet mfsha
    for dir in /var/lib/mfsha /var/lib/mfsha/master /var/lib/mfsha/chunks /var/lib/mfsha/logger; do
        if [ ! -d "$dir" ]; then
            mkdir -p "$dir"
            chown mfsha:mfsha "$dir"
            chmod 0750 "$dir"
        fi
    done
    if [ -d /run/systemd/system ]; then
        systemctl --system daemon-reload >/dev/null || true
    fi
fi
exit 0
EOF

cat >"$root/DEBIAN/prerm" <<'EOF'
#!/bin/sh
# A daemon left running would keep the removed binary open and restart into nothing.
set -e
if [ "$1" = remove ] && [ -d /run/systemd/system ]; then
    deb-systemd-invoke stop mfsha-master.service mfsha-chunkserver.service mfsha-logger.service >/dev/null || true
fi
exit 0
EOF

cat >"$root/DEBIAN/postrm" <<'EOF'
#!/bin/sh
# purge: the configuration (dpkg removes the conffiles) and every daemon's data go; the
# mfsha system user stays, as Debian keeps system users (files elsewhere may belong to it).
set -e
if [ "$1" = purge ]; then
    rm -rf /var/lib/mfsha
    rm -f /var/log/mfsha-mount.log
    rmdir /etc/mfsha 2>/dev/null || true
fi
if [ -d /run/systemd/system ]; then
    systemctl --system daemon-reload >/dev/null || true
fi
exit 0
EOF
chmod 0755 "$root/DEBIAN/postinst" "$root/DEBIAN/prerm" "$root/DEBIAN/postrm"

# The shared libraries the binary links (libc, libstdc++ for RocksDB, libgcc), as dpkg-shlibdeps
# finds them; it wants a debian/control to read.
mkdir -p "$work/shlibs/debian"
printf 'Source: mfsha\n\nPackage: mfsha\nArchitecture: any\n' >"$work/shlibs/debian/control"
shlibs=$(cd "$work/shlibs" && dpkg-shlibdeps -O "$root/usr/bin/mfsha" | sed -n 's/^shlibs:Depends=//p')
[ -n "$shlibs" ] || { echo "deb.sh: dpkg-shlibdeps found no library dependencies" >&2; exit 1; }

installed_size=$(du -sk --apparent-size --exclude=DEBIAN "$root" | cut -f1)
cat >"$root/DEBIAN/control" <<EOF
Package: mfsha
Version: $debversion
Architecture: $arch
Maintainer: $maintainer
Installed-Size: $installed_size
Depends: $shlibs, adduser, fuse3, procps
Section: admin
Priority: optional
Description: highly available MooseFS-style distributed filesystem
 mfsha is a POSIX filesystem over FUSE with MooseFS's model: goals (copies per
 file), 64 MiB chunks of CRC-checked blocks spread over chunkservers, trash and
 undelete, snapshots. Its master is replicated with Raft into RocksDB and the
 elected leader claims a virtual IP, replacing keepalived, DRBD and metarestore
 scripts with one product.
 .
 This package holds the one mfsha binary (master, chunkserver, metalogger,
 mount and tools), the mount.mfsha helper, systemd units for every daemon and
 commented configuration files in /etc/mfsha.
EOF

mkdir -p "$out"
deb="$out/mfsha_${debversion}_${arch}.deb"
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >&2
echo "$deb"
