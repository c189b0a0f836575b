#!/usr/bin/env bash
# Fuzzes every target of tests/fuzz/ with libFuzzer under AddressSanitizer +
# UndefinedBehaviorSanitizer: builds kvbench with -Dfuzz=true (clang) into
# build-fuzz/, then runs each target from its committed seeds
# (tests/fuzz/corpus/TARGET/, read only) into build-fuzz/corpus/TARGET/,
# for a time or a number of executions each. Prints per target the
# executions and libFuzzer's coverage figures (cov: edges, ft: features)
# and the crash files it wrote (build-fuzz/crashes/TARGET/).
#
#   scripts/fuzz.sh [SECONDS [RUNS [TARGET...]]]
#     SECONDS  time per target (default 60; 0: no limit, RUNS must be set)
#     RUNS     executions per target (default 0: no limit)
#     TARGET   fuzz_model fuzz_vocab fuzz_tokenizer fuzz_experiment
#              fuzz_dataset fuzz_resultsdb fuzz_safetensors fuzz_chat
#              fuzz_hfconfig (default: all)
#
# A crash's reproducer, once fixed, goes into tests/fuzz/corpus/TARGET/ so
# that the test suite replays it (suite fuzz). Exits non-zero if any target
# crashed.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
runs=${2:-0}
for v in "$secs" "$runs"; do
  [[ $v =~ ^[0-9]+$ ]] || { echo "fuzz.sh: expected SECONDS and RUNS as whole numbers before the targets (fuzz.sh SECONDS RUNS [TARGET...]), got '$v'" >&2; exit 2; }
done
shift 2 || shift $# || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(fuzz_model fuzz_vocab fuzz_tokenizer fuzz_experiment fuzz_dataset fuzz_resultsdb fuzz_safetensors fuzz_chat fuzz_hfconfig)
out=build-fuzz

# clang with libFuzzer (Debian 12: clang-14 ships it in libclang-rt-14-dev)
probe=$(mktemp -d)
trap 'rm -rf "$probe"' EXIT
echo 'int LLVMFuzzerTestOneInput(const unsigned char *d, unsigned long n) { (void)d; return (int)n * 0; }' > "$probe/p.c"
if ! clang -fsanitize=fuzzer,address,undefined "$probe/p.c" -o "$probe/p" 2>/dev/null; then
  echo "fuzz.sh: installing clang (libFuzzer)"
  sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get install -y -qq clang >/dev/null
  clang -fsanitize=fuzzer,address,undefined "$probe/p.c" -o "$probe/p"
fi

if [ ! -f $out/build.ninja ]; then
  CC=clang meson setup $out -Dfuzz=true -Dtests=false -Dbuildtype=debugoptimized -Dwerror=true >/dev/null
fi
# only the targets (and what they link): the rest of the tree is the normal build's
ninja -C $out "${targets[@]/#/tests/fuzz/}" >/dev/null

export KVBENCH_MODELS=${KVBENCH_MODELS:-$PWD/../shared/models}
export KVBENCH_DATA=${KVBENCH_DATA:-$PWD/../shared/data}
# crashes on anything the sanitizers report; leaks are reported, not fatal
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
status=0
printf '%-16s %12s %8s %8s %8s %12s %s\n' target executions seconds cov ft corpus crashes
for t in "${targets[@]}"; do
  mkdir -p $out/corpus/$t $out/crashes/$t $out/logs
  # the target's temporary files, its own folder so that two fuzz.sh may run
  # at once: libFuzzer ends with _exit, past the target's cleanup
  export TMPDIR=$PWD/$out/tmp/$t
  rm -rf "$TMPDIR" && mkdir -p "$TMPDIR"
  log=$out/logs/$t.log
  # the committed seeds are read, never written: new inputs go to $out/corpus
  if ! $out/tests/fuzz/$t -max_total_time="$secs" -runs="$((runs > 0 ? runs : -1))" -max_len=65536 \
       -rss_limit_mb=4096 -timeout=20 -print_final_stats=1 -artifact_prefix=$out/crashes/$t/ \
       $out/corpus/$t tests/fuzz/corpus/$t >"$log" 2>&1; then
    status=1
  fi
  execs=$(awk '/stat::number_of_executed_units:/ {print $2}' "$log" | tail -1)
  secs_run=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$log" | tail -1)
  last=$(grep -E '^#[0-9]+' "$log" | grep -E 'cov:' | tail -1)
  cov=$(sed -n 's/.*cov: \([0-9]*\).*/\1/p' <<<"$last")
  ft=$(sed -n 's/.*ft: \([0-9]*\).*/\1/p' <<<"$last")
  corp=$(sed -n 's/.*corp: \([0-9]*\/[0-9]*[a-zA-Z]*\).*/\1/p' <<<"$last")
  crashes=$(ls $out/crashes/$t | tr '\n' ' ')
  printf '%-16s %12s %8s %8s %8s %12s %s\n' "$t" "${execs:-?}" "${secs_run:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}" "${crashes:-none}"
done
[ $status = 0 ] || echo "fuzz.sh: a target stopped on a finding; logs in $out/logs/"
exit $status
