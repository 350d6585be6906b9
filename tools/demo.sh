#!/usr/bin/env bash
# The main job (README: "Quick start"): installs what is missing, builds escdr
# and the test guest, then runs `escdr demo` (docs/cli-demo.md): three agents
# on this machine, four VMs of one kind placed by the inventory, the
# static-page catalog learned from three of them, and the fourth migrated with
# ESCDR and without, side by side. The demo cleans up everything it started.
#
# It also installs QEMU 10.0 beside the host's 7.2 (tools/install-qemu.sh,
# once), so that `tools/demo.sh --qemu-version 10.0` runs the demo on it.
#
# Arguments go to `escdr demo`: --memory MIB (default 256), --kaslr, --keep
# (leave it running), --json (the comparison as JSON on stdout),
# --qemu-version 7.2|10.0 (default 7.2, the host's own), --guest DIR (a test
# guest directory) or --guest debian-12|debian-13: the demo on a real Debian
# guest, whose image tools/build-distro-guest.sh builds first (once, cached).
# Environment: BUILD_DIR (default build).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
build=${BUILD_DIR:-build}

tools/bootstrap.sh
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" --target escdr
escdr=$root/$build/src/cli/escdr
tools/install-qemu.sh 10.0 >/dev/null

# --guest given: a Debian guest's image is built (or found up to date) here; a
# directory is the caller's. Else the test guest, built into the build tree.
guest=
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  case "${args[i]}" in
    --guest) guest=${args[i + 1]:-} ;;
    --guest=*) guest=${args[i]#--guest=} ;;
  esac
done
case "$guest" in
  debian-12 | debian-13) tools/build-distro-guest.sh "$guest" | tail -n 1 ;;
  '')
    guest=$root/$build/guest
    tools/build-guest.sh "$guest"
    set -- --guest "$guest" "$@"
    ;;
esac

exec "$escdr" demo "$@"
