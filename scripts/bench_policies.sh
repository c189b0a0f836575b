#!/usr/bin/env bash
# Each policy's time per decode step at a long context, and its share over
# the full cache's step: the cost of the policy's bookkeeping (scores,
# selection, compaction). Every policy runs with a budget one below the
# context, so it evicts one slot per layer and KV head at every step while
# attending over the same number of keys as the full cache.
# usage: scripts/bench_policies.sh [MODEL] [CONTEXT] [THREADS]
# (default: a synthetic 110M Llama in F32, written to /tmp if missing; 2048; 2)
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x build/kvbench ] || bash scripts/build.sh
model=${1:-/tmp/kvbench-llama110m-f32.gguf}
ctx=${2:-2048}
threads=${3:-2}
[ -f "$model" ] || build/kvbench synth "$model" --type f32 >/dev/null
step() { build/kvbench bench --model "$model" --threads "$threads" --prompt "$ctx" --gen 16 --reps 5 "$@" |
         awk '/^decode step/ {print $3}'; }
full=$(step --policy full)
printf "%-14s %12s %10s\n" policy "ms/step" "vs full"
printf "%-14s %12.3f %10s\n" full "$full" "-"
for p in $(build/kvbench list policies | awk '/^[a-z]/ && $1 != "full" {print $1}'); do
  t=$(step --policy "$p" --budget $((ctx - 1)))
  printf "%-14s %12.3f %+9.1f%%\n" "$p" "$t" "$(echo "($t / $full - 1) * 100" | bc -l)"
done
