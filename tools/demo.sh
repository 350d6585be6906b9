#!/usr/bin/env bash
# The main job (README: "Quick start"): installs what is missing, builds escdr
# and the test guest, then runs `escdr demo` (docs/cli-demo.md): three agents
# on this machine, four VMs of one kind placed by the inventory, the
# static-page catalog learned from three of them, and the fourth migrated with
# ESCDR and without, side by side. The demo cleans up everything it started.
#
# Arguments go to `escdr demo`: --memory MIB (default 256), --kaslr, --keep
# (leave it running), --json (the comparison as JSON on stdout).
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

exec "$escdr" demo --guest "$guest" "$@"
