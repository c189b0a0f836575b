#!/usr/bin/env bash
# kvbench against llama.cpp on the same GGUF files, side by side: prefill of
# each PROMPTS length and decode of GEN tokens after each DEPTHS context,
# both engines alternating within every round (this machine's memory
# bandwidth moves from one minute to the next), with the memory's read
# bandwidth measured at the start of each round. llama.cpp is not a
# dependency: build it yourself and give its llama-bench in LLAMA_BENCH.
# Both use their defaults but the cache: kvbench's --kv-type follows
# KV_TYPE (default f16, llama.cpp's default cache type; llama-bench gets the
# same -ctk/-ctv).
#
# usage: LLAMA_BENCH=/path/to/llama-bench [ROUNDS=3] [THREADS=2] [PROMPTS="128 512 2048"]
#        [DEPTHS="0 2048"] [GEN=32] [KV_TYPE=f16] scripts/bench_vs_llamacpp.sh MODEL.gguf...
# Prints one line per round and measurement, then the medians and the
# median of the per-round ratios kvbench / llama.cpp.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x build/kvbench ] || bash scripts/build.sh
lb=${LLAMA_BENCH:?the path of llama-bench (llama.cpp) in LLAMA_BENCH}
[ $# -ge 1 ] || { echo "usage: LLAMA_BENCH=... $0 MODEL.gguf..." >&2; exit 2; }
rounds=${ROUNDS:-3} threads=${THREADS:-2} prompts=${PROMPTS:-128 512 2048} depths=${DEPTHS:-0 2048}
gen=${GEN:-32} kvt=${KV_TYPE:-f16}
export LD_LIBRARY_PATH=$(dirname "$lb")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}

# llama-bench's CSV -> avg_ts of its one test
lc() { "$lb" -m "$1" -t "$threads" -r 1 -ctk "$kvt" -ctv "$kvt" -o csv "${@:2}" 2>/dev/null | awk -F, '
  NR == 1 {for (i = 1; i <= NF; i++) {gsub(/"/, "", $i); col[$i] = i}; next}
  {v = $col["avg_ts"]; gsub(/"/, "", v); print v}' | tail -1; }
# kvbench bench -> prefill or decode tok/s
kv() { # MODEL prefill|decode PROMPT GEN
  build/kvbench bench --model "$1" --threads "$threads" --prompt "$3" --gen "$4" --reps 1 --membw 0 --kv-type "$kvt" |
    awk -v want="$2" 'function rate() { for (i = 2; i <= NF; i++) if ($i == "tok/s") return $(i - 1) }
      want == "prefill" && /^prefill/ {print rate()} want == "decode" && /^decode  / {print rate()}'; }
membw() { build/kvbench bench --model "$1" --threads "$threads" --prompt 1 --gen 1 --reps 1 --membw 128 |
          awk '/^memory read/ {print $3}'; }

out=$(mktemp)
trap 'rm -f "$out"' EXIT
printf '%-5s %-28s %-12s %10s %10s %7s %8s\n' round model test llama.cpp kvbench ratio "mem GB/s"
for r in $(seq "$rounds"); do
  for m in "$@"; do
    bw=$(membw "$m")
    for p in $prompts; do
      a=$(lc "$m" -p "$p" -n 0); b=$(kv "$m" prefill "$p" 1)
      printf '%-5s %-28s %-12s %10.1f %10.1f %7.2f %8s\n' "$r" "$(basename "$m")" "pp$p" "$a" "$b" "$(echo "$b / $a" | bc -l)" "$bw" | tee -a "$out"
    done
    for d in $depths; do
      a=$(lc "$m" -p 0 -n "$gen" -d "$d"); b=$(kv "$m" decode "$((d > 0 ? d : 1))" "$gen")
      printf '%-5s %-28s %-12s %10.1f %10.1f %7.2f %8s\n' "$r" "$(basename "$m")" "tg$gen@d$d" "$a" "$b" "$(echo "$b / $a" | bc -l)" "$bw" | tee -a "$out"
    done
  done
done
echo "medians over $rounds rounds (tokens/s; ratio: the median of the rounds' kvbench / llama.cpp):"
awk '{k = $2 " " $3; a[k] = a[k] " " $4; b[k] = b[k] " " $5; q[k] = q[k] " " $6; if (!(k in seen)) {seen[k] = 1; order[n++] = k}}
  function med(s,   v, m, i, j, t) { m = split(s, v, " "); for (i = 1; i <= m; i++) for (j = i + 1; j <= m; j++)
      if (v[j] + 0 < v[i] + 0) {t = v[i]; v[i] = v[j]; v[j] = t}; return v[int((m + 1) / 2)] }
  END {for (i = 0; i < n; i++) printf "%-41s %10.1f %10.1f %7.2f\n", order[i], med(a[order[i]]), med(b[order[i]]), med(q[order[i]])}' "$out"
