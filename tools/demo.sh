#!/usr/bin/env bash
# The main job (README: "Try it"): installs what is missing, builds escdr and
# the test guest, then shows ESCDR end to end on this machine.
#
# Today it boots four guests of one kind (the project's own Debian-kernel +
# busybox guest, QEMU TCG), learns the static-page catalog from three of them,
# and prints how much of the fourth's memory the catalog covers: the bytes a
# live migration would not have to send. It cleans up everything it started.
#
# Environment: BUILD_DIR (default build), DEMO_MEMORY_MIB (default 256),
# DEMO_KASLR=1 to boot with KASLR (default: nokaslr).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
build=${BUILD_DIR:-build}
mem=${DEMO_MEMORY_MIB:-256}

tools/bootstrap.sh
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" --target escdr
escdr=$root/$build/src/cli/escdr
guest=$root/$build/guest
tools/build-guest.sh "$guest"

work=$(mktemp -d /dev/shm/escdr-demo.XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

append="console=ttyS0 quiet"
[ "${DEMO_KASLR:-0}" = 1 ] || append="$append nokaslr"

echo "== booting 4 guests ($mem MiB, TCG, ${append#console=ttyS0 quiet })"
for i in 1 2 3 4; do
  qemu-system-x86_64 -accel tcg -M pc -m "$mem" -smp 1 -nodefaults -nographic \
    -no-user-config -nic none \
    -object memory-backend-file,id=mem0,size="${mem}M",mem-path="$work/vm$i.ram",share=on \
    -machine memory-backend=mem0 \
    -kernel "$guest/vmlinuz" -initrd "$guest/initrd.img" -append "$append escdr.seed=$i" \
    -serial file:"$work/vm$i.serial" -monitor none >/dev/null 2>&1 &
  pids+=($!)
done
for i in 1 2 3 4; do
  for _ in $(seq 1 240); do
    if grep -q 'escdr-counter 2' "$work/vm$i.serial" 2>/dev/null; then break; fi
    sleep 0.5
  done
  grep -q 'escdr-counter 2' "$work/vm$i.serial" || { echo "guest $i did not boot"; tail "$work/vm$i.serial"; exit 1; }
  echo "   vm$i up"
done

export ESCDR_STATE_DIR=$work/state
echo "== learning the catalog of debian 12 / qemu 7.2 from vm1..vm3"
"$escdr" catalog learn --os debian --os-version 12 --hypervisor qemu --hypervisor-version 7.2 \
  "$work/vm1.ram" "$work/vm2.ram" "$work/vm3.ram"
echo
echo "== how much of vm4 the catalog covers"
"$escdr" catalog match --os debian --os-version 12 --hypervisor qemu --hypervisor-version 7.2 \
  "$work/vm4.ram"
