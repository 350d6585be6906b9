#!/usr/bin/env bash
# tools/fuzz.sh [--seconds N] [--build-only] [HARNESS...]
#
# Builds escdr's libFuzzer harnesses (fuzz/, CMake option ESCDR_FUZZ) with
# clang-19 into build-fuzz/ and runs each harness for N seconds (default 60),
# one after the other, on its seed corpus (fuzz/corpus/<harness>/), its
# regression inputs (fuzz/regressions/<harness>/) and the inputs earlier runs
# found (build-fuzz/corpus/<harness>/, not committed). Harnesses:
# stream_parser, wire_frames, catalog (default: all three). --build-only
# builds the harnesses and runs none.
#
# Exit status: 0 if no harness failed; 1 if one crashed, leaked, timed out or
# broke a contract check, with the reproducer's path printed. Reproduce with
#   build-fuzz/fuzz/<harness>_fuzzer <reproducer>
# then copy the reproducer to fuzz/regressions/<harness>/ with the fix
# (fuzz_regression_test replays it in every normal build).
#
# Installs clang-19 and its libFuzzer runtime (Debian packages clang-19,
# libclang-rt-19-dev) if they are missing. Environment: FUZZ_BUILD_DIR
# (default build-fuzz), FUZZ_JOBS (ninja -j, default 2), FUZZ_ARGS (extra
# libFuzzer flags).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
build=${FUZZ_BUILD_DIR:-build-fuzz}
seconds=60
build_only=0
harnesses=()
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) seconds=$2; shift 2 ;;
    --seconds=*) seconds=${1#*=}; shift ;;
    --build-only) build_only=1; shift ;;
    -h|--help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    stream_parser|wire_frames|catalog) harnesses+=("$1"); shift ;;
    *) echo "fuzz.sh: unknown argument '$1' (harnesses: stream_parser wire_frames catalog)" >&2
       exit 2 ;;
  esac
done
[ ${#harnesses[@]} -gt 0 ] || harnesses=(stream_parser wire_frames catalog)

# The compiler: clang >= 16 compiles libstdc++ 12's <expected>; clang-14 does not.
fuzzer_rt=/usr/lib/llvm-19/lib/clang/19/lib/linux/libclang_rt.fuzzer-x86_64.a
if ! command -v clang++-19 >/dev/null || [ ! -f "$fuzzer_rt" ]; then
  echo "fuzz.sh: installing clang-19 and libclang-rt-19-dev" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
    clang-19 libclang-rt-19-dev >/dev/null
fi

if [ ! -f "$build/build.ninja" ]; then
  CC=clang-19 CXX=clang++-19 cmake -S . -B "$build" -G Ninja \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo -DESCDR_FUZZ=ON >/dev/null
fi
targets=()
for h in "${harnesses[@]}"; do targets+=("${h}_fuzzer"); done
ninja -C "$build" -j "${FUZZ_JOBS:-2}" "${targets[@]}"
[ "$build_only" = 0 ] || exit 0

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:symbolize=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
if symbolizer=$(command -v llvm-symbolizer); then
  export ASAN_SYMBOLIZER_PATH=$symbolizer
fi

failed=0
for h in "${harnesses[@]}"; do
  work="$build/corpus/$h"
  artifacts="$build/artifacts/$h"
  log="$build/fuzz-$h.log"
  mkdir -p "$work" "$artifacts"
  dirs=("$work" "$root/fuzz/corpus/$h")
  [ -d "$root/fuzz/regressions/$h" ] && dirs+=("$root/fuzz/regressions/$h")
  echo "fuzz.sh: $h for $seconds s (log $log)"
  rc=0
  # shellcheck disable=SC2086
  /usr/bin/time -f "fuzz.sh: $h: %e s wall, %U s user, %S s system CPU" \
    "$build/fuzz/${h}_fuzzer" "${dirs[@]}" -max_total_time="$seconds" -timeout=25 \
    -rss_limit_mb=2048 -artifact_prefix="$artifacts/" -print_final_stats=1 ${FUZZ_ARGS:-} \
    >"$log" 2>&1 || rc=$?
  tail -n 1 "$log"
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  echo "fuzz.sh: $h: ${execs:-?} executions"
  if [ "$rc" -ne 0 ]; then
    failed=1
    grep -E "ERROR|fuzz check failed|SUMMARY" "$log" | head -n 5 >&2 || true
    repro=$(sed -n "s/.*Test unit written to //p" "$log" | tail -n 1)
    echo "fuzz.sh: $h FAILED (exit $rc); reproducer: ${repro:-none written, see $log}" >&2
  fi
done
exit "$failed"
