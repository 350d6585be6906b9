#!/usr/bin/env bash
# The whole escdr test suite, as CI runs it (README: "Run the tests").
#
# Installs what is missing (tools/bootstrap.sh), builds with warnings as
# errors, builds the test guest, installs QEMU 10.0 beside the host's 7.2
# (tools/install-qemu.sh), builds the real Debian 12 guest image
# (tools/build-distro-guest.sh), starts a throwaway PostgreSQL cluster for the
# inventory tests, runs every CTest test, and stops the cluster again.
#
# With CI=true (or ESCDR_EXTRA_CHECKS=1) it then runs the checks that need
# builds of their own (docs/reliability.md): every unit test under
# AddressSanitizer + UndefinedBehaviorSanitizer, the agent, migration and
# TLS integration tests under the same (sanitized agents and CLIs driving
# real QEMU guests), the wire, migrate and agent unit tests under
# ThreadSanitizer, and each libFuzzer harness (built with ASan and UBSan)
# for ESCDR_FUZZ_SECONDS (default 20) seconds on its seeds and regressions.
#
# Environment: BUILD_DIR (default build), CTEST_ARGS (extra ctest arguments,
# e.g. "-L unit" or "-R Catalog").
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
build=${BUILD_DIR:-build}

tools/bootstrap.sh

# QEMU 10.0 beside the host's 7.2 (the end-to-end and upgrade tests run
# guests on both; docs/qemu-versions.md) and a real Debian 12 guest image
# with nginx and redis for real_guest_itest (docs/distro-guests.md): both
# cached, both mostly downloads and unpacking, so they are made in the
# background (a process group of their own) while escdr builds.
ESCDR_DISTRO_GUEST_DIR=${ESCDR_DISTRO_GUEST_DIR:-/var/lib/escdr/guests}
export ESCDR_DISTRO_GUEST_DIR
prep_dir=$(mktemp -d /tmp/escdr-prep.XXXXXX)
setsid bash -c 'set -eo pipefail
  tools/install-qemu.sh 10.0 | tail -n 1 >"$0/qemu10"
  tools/build-distro-guest.sh debian-12 "$ESCDR_DISTRO_GUEST_DIR"' "$prep_dir" \
  >"$prep_dir/log" 2>&1 &
prep=$!
trap 'kill -- "-$prep" 2>/dev/null || true; rm -rf "$prep_dir"' EXIT

cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DESCDR_WERROR=ON >/dev/null
cmake --build "$build"

# The test guest (kernel + busybox initramfs) that integration tests boot.
export ESCDR_GUEST_DIR=${ESCDR_GUEST_DIR:-$root/$build/guest}
if [ -x tools/build-guest.sh ]; then
  tools/build-guest.sh "$ESCDR_GUEST_DIR"
fi
if ! wait "$prep"; then
  tail -n 40 "$prep_dir/log" >&2
  echo "run-tests.sh: installing QEMU 10.0 or building the Debian 12 guest failed" >&2
  exit 1
fi
ESCDR_QEMU10_DIR=$(cat "$prep_dir/qemu10")
export ESCDR_QEMU10_DIR
rm -rf "$prep_dir"
trap - EXIT

extra=0
if [ "${CI:-}" = true ] || [ "${ESCDR_EXTRA_CHECKS:-0}" = 1 ]; then
  extra=1
fi
stage() { echo "run-tests.sh: $* ($(date +%T))"; }

pgdir=""
builder=""
cleanup() {
  # The background builds (a process group of their own, by its leader's pid).
  if [ -n "$builder" ]; then
    kill -- "-$builder" 2>/dev/null || true
    wait "$builder" 2>/dev/null || true
  fi
  if [ -n "$pgdir" ]; then
    tools/pg-cluster.sh stop "$pgdir" || true
    rm -rf "$pgdir"
  fi
}
trap cleanup EXIT

# A throwaway PostgreSQL cluster; tools/pg-cluster.sh exports ESCDR_TEST_PG_URL.
if [ -f tools/pg-cluster.sh ]; then
  pgdir=$(mktemp -d /tmp/escdr-pg.XXXXXX)
  eval "$(tools/pg-cluster.sh start "$pgdir")"
fi

extra_log=$build/extra-builds.log
# The integration tests that also run under ASan+UBSan (and the escdr binary
# they start): the agents, the migration path and TLS; end to end (the same
# agents and sessions driven by the CLI), the fault matrix, the soak, the
# auto-converge test and the libvirt hosts are left out for time.
asan_itests=escdr,agent_itest,migrate_itest,tls_itest
asan_itest_filter='^(AgentTest|MigrateTest|TlsAgentTest)\.'
if [ "$extra" = 1 ]; then
  # The extra checks' three builds run at the lowest CPU priority while the
  # suite runs: its integration tests leave much of the CPU idle (guests
  # waiting, one migration at a time), and nice 19 gives the suite whatever
  # it asks for.
  export SANITIZE_CXXFLAGS=${SANITIZE_CXXFLAGS:--O1}
  stage "building the sanitizer and fuzz trees in the background (log $extra_log)"
  setsid nice -n 19 bash -c 'set -e
    tools/sanitize-tests.sh --build-only address --modules all --also "$0"
    tools/sanitize-tests.sh --build-only thread --modules wire,migrate,agent
    tools/fuzz.sh --build-only' "$asan_itests" >"$extra_log" 2>&1 &
  builder=$!
fi

if [ "$extra" = 1 ] && [ -z "${ESCDR_FAULTS+set}" ]; then
  # CI runs a representative half of the fault matrix (an agent killed on
  # each side, a cut connection, a full inventory disk) to stay in its time;
  # the whole matrix runs by hand (docs/reliability.md has its figures).
  export ESCDR_FAULTS=source-kill,destination-kill,cut,db-full
fi

stage "the test suite"
# shellcheck disable=SC2086
ctest --test-dir "$build" --output-on-failure --no-tests=error -j2 ${CTEST_ARGS:-}

if [ "$extra" = 1 ]; then
  stage "waiting for the background builds"
  if ! wait "$builder"; then
    builder=""
    tail -n 40 "$extra_log" >&2
    echo "run-tests.sh: a sanitizer or fuzz build failed (log $extra_log)" >&2
    exit 1
  fi
  builder=""
  grep -h '^sanitize-tests.sh: .*: build' "$extra_log" || true
  stage "every unit test under AddressSanitizer + UndefinedBehaviorSanitizer"
  tools/sanitize-tests.sh address --modules all -L unit
  stage "agent, migration and TLS integration tests under ASan + UBSan"
  tools/sanitize-tests.sh address --also "$asan_itests" -R "$asan_itest_filter" -E AutoConverge
  stage "wire, migrate and agent unit tests under ThreadSanitizer"
  tools/sanitize-tests.sh thread --modules wire,migrate,agent -L unit
  stage "fuzz harnesses, ${ESCDR_FUZZ_SECONDS:-20} s each"
  tools/fuzz.sh --seconds "${ESCDR_FUZZ_SECONDS:-20}"
fi
stage "all tests passed"
