#!/usr/bin/env bash
# fuzz/save-guest-stream.sh [OPTIONS] GUEST_DIR OUT_FILE [MEMORY_MIB]
#
# Boots escdr's test guest (tools/build-guest.sh GUEST_DIR) under TCG with
# MEMORY_MIB of RAM (default 128), waits for its second "escdr-counter" line
# and saves its QEMU migration stream to OUT_FILE with
# migrate "exec:cat > OUT_FILE". By default the guest is stopped first (the
# stream then carries every page in PART sections and an empty END). The
# seeds of the stream_parser harness are cut from such a stream by
# escdr_fuzz_seeds. Stops the QEMU it started (by pid) and removes its files
# whatever happens, also when it is interrupted (SIGINT, SIGTERM).
#
# Options:
#   --qemu TREE     run the qemu-system-x86_64 of TREE, a QEMU tree made by
#                   tools/install-qemu.sh (e.g. /var/lib/escdr/qemu-10.0),
#                   with that tree's loader, libraries, modules and firmware;
#                   default: qemu-system-x86_64 from $PATH (Debian 12's 7.2)
#   --machine M     QEMU machine type (default pc)
#   --live          migrate the running guest (precopy while it runs; QEMU
#                   stops it at switchover) instead of stopping it first
#   --busy MIB      boot with escdr.dirty=MIB, so the guest keeps rewriting
#                   MIB of its RAM; implies --live
#   --qemu-log FILE copy QEMU's stderr there at the end (for diagnostics)
set -euo pipefail

tree=""
machine=pc
live=0
busy=0
qemu_log_copy=""
while [ $# -gt 0 ]; do
  case "$1" in
    --qemu) tree=$2; shift 2 ;;
    --machine) machine=$2; shift 2 ;;
    --live) live=1; shift ;;
    --busy) busy=$2; live=1; shift 2 ;;
    --qemu-log) qemu_log_copy=$2; shift 2 ;;
    --) shift; break ;;
    -*) echo "save-guest-stream.sh: unknown option $1" >&2; exit 2 ;;
    *) break ;;
  esac
done
if [ $# -lt 2 ]; then
  echo "usage: save-guest-stream.sh [--qemu TREE] [--machine M] [--live] [--busy MIB]" \
    "GUEST_DIR OUT_FILE [MEMORY_MIB]" >&2
  exit 2
fi
guest=$1
out=$2
mem=${3:-128}

qemu=(qemu-system-x86_64)
if [ -n "$tree" ]; then
  if [ ! -x "$tree/usr/bin/qemu-system-x86_64" ]; then
    echo "save-guest-stream.sh: $tree has no usr/bin/qemu-system-x86_64" >&2
    exit 1
  fi
  export QEMU_MODULE_DIR=$tree/usr/lib/x86_64-linux-gnu/qemu
  qemu=("$tree/lib64/ld-linux-x86-64.so.2"
        --library-path "$tree/lib/x86_64-linux-gnu:$tree/usr/lib/x86_64-linux-gnu"
        "$tree/usr/bin/qemu-system-x86_64" -L "$tree/usr/share/qemu" -L "$tree/usr/share/seabios")
fi

append="console=ttyS0 quiet nokaslr"
if [ "$busy" != 0 ]; then append="$append escdr.dirty=$busy"; fi

work=$(mktemp -d /tmp/escdr-save-stream.XXXXXX)
qemu_pid=""
cleanup() {
  if [ -n "$qemu_pid" ] && kill -0 "$qemu_pid" 2>/dev/null; then
    kill "$qemu_pid" 2>/dev/null || true
    wait "$qemu_pid" 2>/dev/null || true
  fi
  if [ -n "$qemu_log_copy" ] && [ -f "$work/qemu.log" ]; then
    cp "$work/qemu.log" "$qemu_log_copy" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

qmp() {  # one QMP command after the capabilities handshake; prints the replies
  printf '{"execute":"qmp_capabilities"}\n%s\n' "$1" |
    socat -t 2 - "UNIX-CONNECT:$work/qmp" 2>/dev/null
}

"${qemu[@]}" -accel tcg -M "$machine" -m "$mem" -nographic -nodefaults -no-reboot \
  -kernel "$guest/vmlinuz" -initrd "$guest/initrd.img" -append "$append" \
  -serial "file:$work/serial.log" -qmp "unix:$work/qmp,server=on,wait=off" \
  >"$work/qemu.log" 2>&1 &
qemu_pid=$!

for _ in $(seq 1 600); do
  grep -q "escdr-counter 2" "$work/serial.log" 2>/dev/null && break
  kill -0 "$qemu_pid" 2>/dev/null || { cat "$work/qemu.log" >&2; exit 1; }
  sleep 0.5
done
grep -q "escdr-counter 2" "$work/serial.log" || { echo "guest did not boot" >&2; exit 1; }

if [ "$live" = 0 ]; then qmp '{"execute":"stop"}' >/dev/null; fi
qmp "{\"execute\":\"migrate\",\"arguments\":{\"uri\":\"exec:cat > $work/stream.part && mv $work/stream.part $work/stream\"}}" >/dev/null
status=""
for _ in $(seq 1 1200); do
  status=$(qmp '{"execute":"query-migrate"}' | grep -o '"status": *"[a-z-]*"' | tail -n 1 || true)
  case "$status" in
    *completed*) break ;;
    *failed*|*cancelled*) echo "migration $status" >&2; exit 1 ;;
  esac
  sleep 0.5
done
case "$status" in *completed*) ;; *) echo "migration did not complete: $status" >&2; exit 1 ;; esac
# The file appears (renamed) only once cat has written all of it.
for _ in $(seq 1 120); do [ -f "$work/stream" ] && break; sleep 0.5; done
qmp '{"execute":"quit"}' >/dev/null || true
wait "$qemu_pid" 2>/dev/null || true
qemu_pid=""
mv "$work/stream" "$out"
ls -l "$out"
