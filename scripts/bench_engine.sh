#!/usr/bin/env bash
# The engine's speed on the 110M-parameter synthetic Llama of issue 2 (dim
# 768, 12 layers, 12 heads, vocab 32000) in F32, F16 and Q8_0, and on the
# real stories260K: prefill of 128 tokens and decode of 64, 2 threads.
# Each bench also measures the memory's read bandwidth right before each of
# its runs (decode streams every weight once per token, so decode tok/s is
# at best that bandwidth / bytes per token): columns are tok/s (medians),
# decode's GB/s, the memory's (median) and decode's share of it. The types
# run in rounds, one after another, because that bandwidth moves from one
# minute to the next on shared machines.
# usage: [ROUNDS=3] [REPS=5] [THREADS=2] scripts/bench_engine.sh [DIR]
# (DIR holds the synthetic GGUFs, written there if missing; default /tmp)
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x build/kvbench ] || bash scripts/build.sh
dir=${1:-/tmp}
rounds=${ROUNDS:-3} reps=${REPS:-5} threads=${THREADS:-2}
for t in f32 f16 q8_0; do
  [ -f "$dir/kvbench-llama110m-$t.gguf" ] || build/kvbench synth "$dir/kvbench-llama110m-$t.gguf" --type $t >/dev/null
  cat "$dir/kvbench-llama110m-$t.gguf" >/dev/null # into the page cache: loading reads it
done
row() { # MODEL LABEL
  build/kvbench bench --model "$1" --threads "$threads" --reps "$reps" | awk -v label="$2" '
    function rate() { for (i = 2; i <= NF; i++) if ($i == "tok/s") return $(i - 1) }
    /^prefill/ {p = rate()} /^decode  / {d = rate()}
    /^decode bandwidth/ {b = $3} /^memory read/ {m = $3} /^decode share/ {s = $3}
    END {printf "%-12s %10.1f %10.1f %10.1f %10.1f %8s\n", label, p, d, b, m, s}'
}
printf "%-12s %10s %10s %10s %10s %8s\n" model "prefill" "decode" "dec GB/s" "mem GB/s" "share"
for r in $(seq "$rounds"); do
  echo "round $r  $(date +%T)"
  for t in f32 f16 q8_0; do row "$dir/kvbench-llama110m-$t.gguf" "110M $t"; done
  row stories260K/stories260K.bin "stories260K"
done
