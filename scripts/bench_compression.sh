#!/usr/bin/env bash
# What KV compression buys at depth: decode tokens/s, the KV bytes held and
# the process's peak resident memory of the full cache against h2o,
# streamingllm and snapkv at budgets 256 and 512, for each KV cache type,
# after prompts of 2048 and 8192 tokens. Every figure is measured: the KV
# bytes are what the cache holds after the run (`kvbench bench`'s "holds"),
# the peak is getrusage's high-water mark of a run without the bandwidth
# probe, and tokens/s is the median of REPS decodes of GEN tokens.
#
# The machine's memory bandwidth drifts from one minute to the next, so
# each group (one context, one cache type) runs the full cache first and
# last, gives each policy's speed-up over the mean of the two, and prints
# the memory read bandwidth measured just before the group.
#
# usage: [CONTEXTS="2048 8192"] [KV_TYPES="f32 f16 q8_0"] [POLICIES="h2o streamingllm snapkv"]
#        [BUDGETS="256 512"] [GEN=64] [REPS=1] scripts/bench_compression.sh [MODEL] [THREADS]
# (default MODEL: a synthetic 110M Llama with Q8_0 weights and an 8192-token
# context, written to /tmp if missing; THREADS: 2)
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x build/kvbench ] || bash scripts/build.sh
kv=build/kvbench
model=${1:-/tmp/kvbench-llama110m-q8_0-8k.gguf}
threads=${2:-2}
[ -f "$model" ] || $kv synth "$model" --type q8_0 --ctx 8192 >/dev/null
contexts=${CONTEXTS:-2048 8192} kv_types=${KV_TYPES:-f32 f16 q8_0}
policies=${POLICIES:-h2o streamingllm snapkv} budgets=${BUDGETS:-256 512}
gen=${GEN:-64} reps=${REPS:-1}

# one bench run -> "tok/s kv_MB peak_MB"
run() {
  $kv bench --model "$model" --threads "$threads" --prompt "$ctx" --gen "$gen" --reps "$reps" --membw 0 \
    --kv-type "$kt" "$@" | awk '
      /^decode  / {for (i = 1; i <= NF; i++) if ($i == "tok/s") d = $(i - 1)}
      /^kv cache/ {for (i = 1; i <= NF; i++) if ($i == "holds") k = $(i + 1)}
      /^peak resident/ {p = $3}
      END {print d, k, p}'
}
membw() {
  $kv bench --model "$model" --threads "$threads" --prompt 1 --gen 1 --reps 1 --membw 128 |
    awk '/^memory read/ {print $3}'
}

printf '%s\n' "model: $model, $threads threads, $gen tokens decoded after the prompt, median of $reps"
printf '| context | KV type | memory read GB/s | policy | budget | decode tok/s | x full | KV held MB | peak RSS MB |\n'
printf '|---:|---|---:|---|---:|---:|---:|---:|---:|\n'
for ctx in $contexts; do
  for kt in $kv_types; do
    bw=$(membw)
    read -r f1 k1 p1 < <(run --policy full)
    rows=()
    for p in $policies; do
      for b in $budgets; do
        read -r d k pk < <(run --policy "$p" --budget "$b")
        rows+=("$p $b $d $k $pk")
      done
    done
    read -r f2 k2 p2 < <(run --policy full)
    full=$(echo "($f1 + $f2) / 2" | bc -l)
    printf '| %s | %s | %s | full | - | %.1f (%.1f, %.1f) | 1.00 | %s | %s |\n' "$ctx" "$kt" "$bw" "$full" "$f1" "$f2" "$k1" "$p1"
    for r in "${rows[@]}"; do
      read -r p b d k pk <<<"$r"
      printf '| %s | %s | %s | %s | %s | %.1f | %.2f | %s | %s |\n' "$ctx" "$kt" "$bw" "$p" "$b" "$d" \
        "$(echo "$d / $full" | bc -l)" "$k" "$pk"
    done
  done
done
