#!/usr/bin/env bash
# Each policy's time per decode step at a long context, and its share over
# the full cache's step: the cost of the policy's bookkeeping (scores,
# selection, compaction). Every policy runs with a budget one below the
# context, so it evicts one slot per layer and KV head at every step while
# attending over the same number of keys as the full cache.
# The machine's memory bandwidth drifts from minute to minute, so the runs
# are interleaved (full, then every policy, three rounds) and each policy's
# figure is the median over the rounds.
# usage: [ROUNDS=3] [REPS=3] scripts/bench_policies.sh [MODEL] [CONTEXT] [THREADS]
# (default: a synthetic 110M Llama in F32, written to /tmp if missing; 2048; 2)
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x build/kvbench ] || bash scripts/build.sh
model=${1:-/tmp/kvbench-llama110m-f32.gguf}
ctx=${2:-2048}
threads=${3:-2}
[ -f "$model" ] || build/kvbench synth "$model" --type f32 >/dev/null
rounds=${ROUNDS:-3} reps=${REPS:-3} # fewer for a quick look: ROUNDS=2 REPS=1
step() { build/kvbench bench --model "$model" --threads "$threads" --prompt "$ctx" --gen 32 --reps "$reps" "$@" |
         awk '/^decode step/ {print $3}'; }
policies=$(build/kvbench list policies | awk '/^[a-z]/ {print $1}')
declare -A runs
for round in $(seq "$rounds"); do
  for p in $policies; do
    # (a synthetic model has no <CL>/<CR>: the sentinel method is given two ids)
    extra=(); [ "$p" = sentinel ] && extra=(--set cl=3,cr=4)
    if [ "$p" = full ]; then t=$(step --policy full); else t=$(step --policy "$p" --budget $((ctx - 1)) "${extra[@]}"); fi
    runs[$p]="${runs[$p]:-} $t"
  done
done
median() { echo "$@" | tr ' ' '\n' | sed '/^$/d' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
full=$(median ${runs[full]})
printf "%-14s %10s %9s   %s\n" policy "ms/step" "vs full" "rounds"
for p in $policies; do
  t=$(median ${runs[$p]})
  printf "%-14s %10.3f %+8.1f%%  %s\n" "$p" "$t" "$(echo "($t / $full - 1) * 100" | bc -l)" "${runs[$p]}"
done
