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
# --qemu-version 7.2|10.0 (default 7.2, the host's own).
# Environment: BUILD_DIR (default build).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
build=${BUILD_DIR:-build}

tools/bootstrap.sh
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" --target escdr
escdr=$root/$build/src/cli/escdr
guest=$root/$build/guest
tools/build-guest.sh "$guest"
tools/install-qemu.sh 10.0 >/dev/null

exec "$escdr" demo --guest "$guest" "$@"
