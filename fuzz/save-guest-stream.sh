#!/usr/bin/env bash
# fuzz/save-guest-stream.sh GUEST_DIR OUT_FILE [MEMORY_MIB]
#
# Boots escdr's test guest (tools/build-guest.sh GUEST_DIR) under TCG with
# MEMORY_MIB of RAM (default 128), waits for its second "escdr-counter" line,
# stops it and saves its QEMU migration stream to OUT_FILE with
# migrate "exec:cat > OUT_FILE". The seeds of the stream_parser harness are
# cut from such a stream by escdr_fuzz_seeds. Stops the QEMU it started (by
# pid) and removes its files whatever happens.
set -euo pipefail
guest=$1
out=$2
mem=${3:-128}
work=$(mktemp -d /tmp/escdr-save-stream.XXXXXX)
qemu_pid=""
cleanup() {
  if [ -n "$qemu_pid" ] && kill -0 "$qemu_pid" 2>/dev/null; then
    kill "$qemu_pid" 2>/dev/null || true
    wait "$qemu_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

qmp() {  # one QMP command after the capabilities handshake; prints the replies
  printf '{"execute":"qmp_capabilities"}\n%s\n' "$1" |
    socat -t 2 - "UNIX-CONNECT:$work/qmp" 2>/dev/null
}

qemu-system-x86_64 -accel tcg -m "$mem" -nographic -nodefaults -no-reboot \
  -kernel "$guest/vmlinuz" -initrd "$guest/initrd.img" -append "console=ttyS0 quiet nokaslr" \
  -serial "file:$work/serial.log" -qmp "unix:$work/qmp,server=on,wait=off" \
  >"$work/qemu.log" 2>&1 &
qemu_pid=$!

for _ in $(seq 1 600); do
  grep -q "escdr-counter 2" "$work/serial.log" 2>/dev/null && break
  kill -0 "$qemu_pid" 2>/dev/null || { cat "$work/qemu.log" >&2; exit 1; }
  sleep 0.5
done
grep -q "escdr-counter 2" "$work/serial.log" || { echo "guest did not boot" >&2; exit 1; }

qmp '{"execute":"stop"}' >/dev/null
qmp "{\"execute\":\"migrate\",\"arguments\":{\"uri\":\"exec:cat > $work/stream.part && mv $work/stream.part $work/stream\"}}" >/dev/null
for _ in $(seq 1 600); do
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
