#!/usr/bin/env bash
# Each policy's time per decode step at a long context, and its share over
# the full cache's step: the cost of the policy's bookkeeping (scores,
# selection, compaction). Every policy runs with a budget one below the
# context, so it evicts one slot per layer and KV head at every step while
# attending over the same number of keys as the full cache.
# The machine's memory bandwidth drifts from one minute to the next, so each
# policy's run is paired with a full-cache run just before it, and its
# figure is the median over the rounds of the ratio within each pair.
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
step() { build/kvbench bench --model "$model" --threads "$threads" --prompt "$ctx" --gen 32 --reps "$reps" --membw 0 "$@" |
         awk '/^decode step/ {print $3}'; }
policies=$(build/kvbench list policies | awk '/^[a-z]/ && $1 != "full" {print $1}')
declare -A runs ratios
fulls=""
for round in $(seq "$rounds"); do
  for p in $policies; do
    # (a synthetic model has no <CL>/<CR>: the sentinel method is given two ids)
    extra=(); [ "$p" = sentinel ] && extra=(--set cl=3,cr=4)
    f=$(step --policy full)
    t=$(step --policy "$p" --budget $((ctx - 1)) "${extra[@]}")
    fulls="$fulls $f"
    runs[$p]="${runs[$p]:-} $t"
    ratios[$p]="${ratios[$p]:-} $(echo "$t / $f" | bc -l)"
  done
done
median() { echo "$@" | tr ' ' '\n' | sed '/^$/d' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
printf "%-14s %10s %9s   %s\n" policy "ms/step" "vs full" "ms/step of each run"
printf "%-14s %10.3f %9s   (%d runs, one before each policy's)\n" full "$(median $fulls)" "" "$(echo $fulls | wc -w)"
for p in $policies; do
  printf "%-14s %10.3f %+8.1f%%  %s\n" "$p" "$(median ${runs[$p]})" "$(echo "($(median ${ratios[$p]}) - 1) * 100" | bc -l)" "${runs[$p]}"
done
