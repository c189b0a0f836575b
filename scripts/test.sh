#!/usr/bin/env bash
# Sets up, builds and runs every test: the release build's whole suite
# (unit, numpy reference, command line), then the whole suite again under
# AddressSanitizer + UndefinedBehaviorSanitizer (a sanitizer report exits
# with status 86, which no test accepts). Ends with a line
# "N passed, M failed" and exits non-zero if anything failed.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || exit 1

total_ok=0
total_fail=0
run_suite() { # name builddir meson-test-args...
  local name=$1 dir=$2
  shift 2
  echo "== $name"
  local log
  log=$(meson test -C "$dir" --print-errorlogs "$@" 2>&1)
  local rc=$?
  echo "$log" | grep -E "^ *[0-9]+/[0-9]+ |^(Ok|Fail|Expected Fail|Unexpected Pass|Skipped|Timeout):" || true
  [ $rc -ne 0 ] && echo "$log" | tail -n 200
  local ok fail to
  ok=$(echo "$log" | awk '/^Ok:/ {print $2}')
  fail=$(echo "$log" | awk '/^Fail:/ {print $2}')
  to=$(echo "$log" | awk '/^Timeout:/ {print $2}')
  total_ok=$((total_ok + ${ok:-0}))
  total_fail=$((total_fail + ${fail:-0} + ${to:-0}))
  [ $rc -ne 0 ] && [ "${fail:-0}" = 0 ] && [ "${to:-0}" = 0 ] && total_fail=$((total_fail + 1))
  return 0
}

if ! bash scripts/build.sh build; then echo "0 passed, 1 failed"; exit 1; fi
run_suite "release build: all tests" build

if ! bash scripts/build.sh build-asan -Db_sanitize=address,undefined -Dbuildtype=debugoptimized \
     -Db_lundef=false; then
  echo "0 passed, 1 failed"; exit 1
fi
UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1:exitcode=86 ASAN_OPTIONS=detect_leaks=1:exitcode=86 \
  run_suite "sanitizers (address, undefined): all tests" build-asan

echo "$total_ok passed, $total_fail failed"
[ "$total_fail" -eq 0 ]
