#!/usr/bin/env bash
# The whole escdr test suite, as CI runs it (README: "Run the tests").
#
# Installs what is missing (tools/bootstrap.sh), builds with warnings as
# errors, builds the test guest, starts a throwaway PostgreSQL cluster for the
# inventory tests, runs every CTest test, and stops the cluster again.
#
# With CI=true (or ESCDR_EXTRA_CHECKS=1) it then runs the checks that need
# builds of their own (docs/reliability.md): the wire, migrate and agent unit
# tests under ThreadSanitizer, and each libFuzzer harness (built with ASan and
# UBSan) for ESCDR_FUZZ_SECONDS (default 30) seconds on its seeds and
# regressions. The AddressSanitizer build of the unit tests
# (tools/sanitize-tests.sh address --modules all) is not in it yet.
#
# Environment: BUILD_DIR (default build), CTEST_ARGS (extra ctest arguments,
# e.g. "-L unit" or "-R Catalog").
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
build=${BUILD_DIR:-build}

tools/bootstrap.sh
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DESCDR_WERROR=ON >/dev/null
cmake --build "$build"

# The test guest (kernel + busybox initramfs) that integration tests boot.
export ESCDR_GUEST_DIR=${ESCDR_GUEST_DIR:-$root/$build/guest}
if [ -x tools/build-guest.sh ]; then
  tools/build-guest.sh "$ESCDR_GUEST_DIR"
fi

# A throwaway PostgreSQL cluster; tools/pg-cluster.sh exports ESCDR_TEST_PG_URL.
if [ -f tools/pg-cluster.sh ]; then
  pgdir=$(mktemp -d /tmp/escdr-pg.XXXXXX)
  trap 'tools/pg-cluster.sh stop "$pgdir" || true; rm -rf "$pgdir"' EXIT
  eval "$(tools/pg-cluster.sh start "$pgdir")"
fi

# shellcheck disable=SC2086
ctest --test-dir "$build" --output-on-failure --no-tests=error -j2 ${CTEST_ARGS:-}

if [ "${CI:-}" = true ] || [ "${ESCDR_EXTRA_CHECKS:-0}" = 1 ]; then
  stage() { echo "run-tests.sh: $* ($(date +%T))"; }
  export SANITIZE_CXXFLAGS=${SANITIZE_CXXFLAGS:--O1}
  stage "wire, migrate and agent unit tests under ThreadSanitizer"
  tools/sanitize-tests.sh thread --modules wire,migrate,agent -L unit
  stage "fuzz harnesses, ${ESCDR_FUZZ_SECONDS:-30} s each"
  tools/fuzz.sh --seconds "${ESCDR_FUZZ_SECONDS:-30}"
  stage "all checks passed"
fi
