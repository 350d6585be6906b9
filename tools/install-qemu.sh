#!/usr/bin/env bash
# Installs a second QEMU beside the host's own, for escdr agents that run
# guests of more than one QEMU version (docs/qemu-versions.md).
#
#   tools/install-qemu.sh [SERIES] [DIR]
#
# SERIES is the QEMU series to install; 10.0 (Debian 13's) is the one this
# script knows. DIR defaults to /var/lib/escdr/qemu-SERIES. The QEMU is a
# Debian 13 tree made by mmdebstrap (installed with apt-get if missing);
# escdr runs it with that tree's own loader, libraries and firmware
# (`escdr agent --qemu DIR`), so nothing of the host's Debian 12 changes.
# Idempotent: a tree whose QEMU already reports SERIES is left as it is.
# Prints the tree's path on its last line.
set -euo pipefail

series=${1:-10.0}
dir=${2:-/var/lib/escdr/qemu-$series}
case "$series" in
  10.0) suite=trixie ;;
  *) echo "install-qemu.sh: no recipe for QEMU $series (known: 10.0)" >&2; exit 2 ;;
esac

reported() {
  local lp="$dir/lib/x86_64-linux-gnu:$dir/usr/lib/x86_64-linux-gnu"
  "$dir/lib64/ld-linux-x86-64.so.2" --library-path "$lp" \
    "$dir/usr/bin/qemu-system-x86_64" --version 2>/dev/null |
    sed -n 's/^QEMU emulator version \([0-9]*\.[0-9]*\)\..*/\1/p'
}

if [ -x "$dir/usr/bin/qemu-system-x86_64" ] && [ "$(reported)" = "$series" ]; then
  echo "install-qemu.sh: QEMU $series already in $dir" >&2
  echo "$dir"
  exit 0
fi

SUDO=
if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; fi
if ! command -v mmdebstrap >/dev/null; then
  echo "install-qemu.sh: installing mmdebstrap" >&2
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends mmdebstrap >&2
fi

# Build in a sibling directory and rename, so an interrupted run never
# leaves a half tree at $dir.
tmp="$dir.partial.$$"
trap '$SUDO rm -rf "$tmp"' EXIT
$SUDO rm -rf "$tmp"
$SUDO mkdir -p "$(dirname "$dir")"
echo "install-qemu.sh: building a Debian $suite tree with QEMU $series in $dir" >&2
$SUDO mmdebstrap --quiet --variant=apt --include=qemu-system-x86,qemu-utils "$suite" "$tmp" >&2
$SUDO rm -rf "$dir"
$SUDO mv "$tmp" "$dir"
trap - EXIT
got=$(reported)
if [ "$got" != "$series" ]; then
  echo "install-qemu.sh: the tree in $dir runs QEMU '${got:-nothing}', not $series" >&2
  exit 1
fi
echo "$dir"
