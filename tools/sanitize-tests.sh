#!/usr/bin/env bash
# tools/sanitize-tests.sh [--build-only] [address|thread] [--modules M1,M2,...]
#                         [--also T1,T2,...] [CTEST_ARG...]
#
# Builds escdr with GCC and sanitizers (CMake option ESCDR_SANITIZE) and runs
# its tests under them:
#   address (default): AddressSanitizer + UndefinedBehaviorSanitizer (and
#                      LeakSanitizer), build directory build-asan;
#   thread:            ThreadSanitizer, build directory build-tsan.
# Every report fails the test that caused it (-fno-sanitize-recover=all,
# halt_on_error). The CTest arguments default to "-L unit" (the unit tests);
# pass e.g. "-L integration" or "-R Wire" to choose others. Build and test
# times are printed at the end (docs/reliability.md has the figures).
# --modules wire,migrate,agent builds only the unit-test binaries of those
# modules (src/<module>/*_test.cc) and runs them (ctest -L unit): CI's
# ThreadSanitizer stage for the session and agent code. --modules all builds
# every unit-test binary (src/*/ and fuzz/) and nothing else. Either leaves
# out the simulator's golden tests, which run the escdr binary.
# --also escdr,migrate_itest builds those targets too (with --modules) or
# only those (without): e.g. integration tests and the escdr binary they run.
# --build-only stops after the build (CI builds the sanitizer trees while
# the main suite runs, then runs this again to test).
#
# Environment: SANITIZE_BUILD_DIR (overrides the build directory),
# SANITIZE_JOBS (ninja and ctest -j, default 2), SANITIZE_CXXFLAGS (below).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
build_only=0
if [ $# -gt 0 ] && [ "$1" = --build-only ]; then
  build_only=1
  shift
fi
mode=address
if [ $# -gt 0 ] && { [ "$1" = address ] || [ "$1" = thread ]; }; then
  mode=$1
  shift
fi
modules=()
if [ $# -gt 0 ] && [ "$1" = --modules ]; then
  [ $# -ge 2 ] || { echo "sanitize-tests.sh: --modules needs a list, e.g. wire,migrate" >&2; exit 2; }
  IFS=, read -r -a modules <<<"$2"
  shift 2
  if [ "${modules[*]}" != all ]; then
    for m in "${modules[@]}"; do
      [ -d "src/$m" ] || { echo "sanitize-tests.sh: no module src/$m" >&2; exit 2; }
    done
  fi
  # The simulator's golden tests (label unit) run the escdr binary, which
  # --modules does not build: leave them out (a run without --modules has them).
  skip_cli_tests=1
fi
also=()
if [ $# -gt 0 ] && [ "$1" = --also ]; then
  [ $# -ge 2 ] || { echo "sanitize-tests.sh: --also needs a list, e.g. escdr,migrate_itest" >&2; exit 2; }
  IFS=, read -r -a also <<<"$2"
  shift 2
fi
case "$mode" in
  address) sanitize=address,undefined; build=${SANITIZE_BUILD_DIR:-build-asan} ;;
  thread) sanitize=thread; build=${SANITIZE_BUILD_DIR:-build-tsan} ;;
esac
ctest_args=("$@")
[ ${#ctest_args[@]} -gt 0 ] || ctest_args=(-L unit)
[ "${skip_cli_tests:-0}" = 1 ] && ctest_args+=(-E '^sim_golden_')
jobs=${SANITIZE_JOBS:-2}

tools/bootstrap.sh
start=$(date +%s)
# SANITIZE_CXXFLAGS (e.g. "-O1", what CI uses: no debug information, so less
# to compile and link; reports then name functions, not lines)
# replaces RelWithDebInfo's -O2 -g.
if [ -n "${SANITIZE_CXXFLAGS:-}" ]; then
  flags=(-DCMAKE_BUILD_TYPE=None "-DCMAKE_CXX_FLAGS=$SANITIZE_CXXFLAGS" "-DCMAKE_C_FLAGS=$SANITIZE_CXXFLAGS")
else
  flags=(-DCMAKE_BUILD_TYPE=RelWithDebInfo)
fi
cmake -S . -B "$build" -G Ninja "${flags[@]}" -DESCDR_SANITIZE="$sanitize" \
  -DESCDR_BUILD_BENCHMARKS=OFF >/dev/null
# With --modules, only those modules' unit-test binaries (ctest sees only
# built tests' cases; the others appear as *_NOT_BUILT without the unit
# label): the executables the build puts in src/<module>/ (and fuzz/ for
# "all") whose names end in _test (integration tests end in _itest).
targets=()
if [ ${#modules[@]} -gt 0 ]; then
  if [ "${modules[*]}" = all ]; then
    dirs='src/[a-z_]+|fuzz'
  else
    dirs="src/($(IFS='|'; echo "${modules[*]}"))"
  fi
  mapfile -t targets < <(ninja -C "$build" -t targets all |
    sed -nE "s#^(($dirs)/[a-z0-9_]+_test): CXX_EXECUTABLE_LINKER.*#\1#p" | sort -u)
  [ ${#targets[@]} -gt 0 ] || { echo "sanitize-tests.sh: no unit tests in ${modules[*]}" >&2; exit 2; }
  echo "sanitize-tests.sh: building ${#targets[@]} unit-test binaries"
fi
if [ ${#also[@]} -gt 0 ]; then
  all_targets=$(ninja -C "$build" -t targets all)
  for t in "${also[@]}"; do
    grep -q "^$t: " <<<"$all_targets" || { echo "sanitize-tests.sh: no target $t" >&2; exit 2; }
    targets+=("$t")
  done
  echo "sanitize-tests.sh: also building ${also[*]}"
fi
ninja -C "$build" -j "$jobs" "${targets[@]}"
built=$(date +%s)
if [ "$build_only" = 1 ]; then
  echo "sanitize-tests.sh: $mode: build $((built - start)) s"
  exit 0
fi

# Every sanitized process writes its reports to files in $reports: the
# agents and CLIs that integration tests start too, whose stderr no test
# reads and whose exit status after a report (a leak at exit, say) a test
# may not see. Any report there fails the run below.
reports=$root/$build/sanitizer-reports
rm -rf "$reports"
mkdir -p "$reports"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:check_initialization_order=1}:log_path=$reports/asan
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}:log_path=$reports/ubsan
export TSAN_OPTIONS=${TSAN_OPTIONS:-halt_on_error=1:second_deadlock_stack=1}:log_path=$reports/tsan
# Integration tests boot the test guest (tools/build-guest.sh).
export ESCDR_GUEST_DIR=${ESCDR_GUEST_DIR:-$root/$build/guest}
if [ -x tools/build-guest.sh ]; then
  tools/build-guest.sh "$ESCDR_GUEST_DIR" >/dev/null
fi
if [ -f tools/pg-cluster.sh ]; then
  pgdir=$(mktemp -d /tmp/escdr-pg.XXXXXX)
  trap 'tools/pg-cluster.sh stop "$pgdir" || true; rm -rf "$pgdir"' EXIT
  eval "$(tools/pg-cluster.sh start "$pgdir")"
fi
rc=0
ctest --test-dir "$build" --output-on-failure --no-tests=error -j "$jobs" "${ctest_args[@]}" || rc=$?
done_at=$(date +%s)
# A report is an error, a leak or a race (ASan, LSan and TSan end each with
# a SUMMARY line; UBSan's say "runtime error"). Other files hold warnings
# only, e.g. ASan's "ignoring requested __asan_handle_no_return" from the
# children GoogleTest's death tests clone() onto a stack of their own:
# counted, not failed.
if compgen -G "$reports/*" >/dev/null; then
  mapfile -t errors < <(grep -l -E 'SUMMARY: |runtime error:' "$reports"/* || true)
  for f in "${errors[@]}"; do
    echo "sanitize-tests.sh: report $f:" >&2
    head -n 60 "$f" >&2
  done
  warnings=$(( $(ls "$reports" | wc -l) - ${#errors[@]} ))
  [ "$warnings" -eq 0 ] || echo "sanitize-tests.sh: $mode: $warnings file(s) of warnings only in $reports"
  if [ ${#errors[@]} -gt 0 ]; then
    echo "sanitize-tests.sh: $mode: ${#errors[@]} sanitizer report(s) in $reports" >&2
    rc=1
  fi
fi
echo "sanitize-tests.sh: $mode: build $((built - start)) s, tests $((done_at - built)) s" \
     "(ctest ${ctest_args[*]}), exit $rc"
exit "$rc"
