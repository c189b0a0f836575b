#!/usr/bin/env bash
# Two kvbench builds (or two option sets) compared on one model, run after
# one another in alternating rounds: this machine's memory bandwidth moves
# between levels from one minute to the next, so only interleaved runs
# compare like with like. Prints each round's prefill and decode tokens/s
# for A and B, then the medians and the median of the per-round B/A ratios.
# usage: [ROUNDS=8] [REPS=3] scripts/bench_ab.sh BIN_A BIN_B -- BENCH_ARGS...
#   e.g. scripts/bench_ab.sh /tmp/kvbench.old build/kvbench -- --model /tmp/m.gguf --threads 2
# To compare options on one build, give the same binary twice and put the
# options of each side in A_ARGS / B_ARGS, environment settings in A_ENV /
# B_ENV (e.g. B_ENV=KVBENCH_WEIGHTS=mmap).
set -euo pipefail
[ $# -ge 3 ] && [ "$3" = "--" ] || { echo "usage: $0 BIN_A BIN_B -- BENCH_ARGS..." >&2; exit 2; }
a=$1 b=$2; shift 3
rounds=${ROUNDS:-8} reps=${REPS:-3}
read -r -a a_args <<<"${A_ARGS:-}"
read -r -a b_args <<<"${B_ARGS:-}"
one() { # ENV BIN EXTRA... -> "prefill decode"
  local envs=$1 bin=$2; shift 2
  read -r -a envs <<<"$envs"
  env "${envs[@]}" "$bin" bench --reps "$reps" "$@" | awk '
    function rate() { for (i = 2; i <= NF; i++) if ($i == "tok/s") return $(i - 1) }
    /^prefill/ {p = rate()} /^decode  / {d = rate()} END {print p, d}'
}
pa=() pb=() da=() db=() rp=() rd=()
printf "%-5s %10s %10s %10s %10s\n" round "prefill A" "prefill B" "decode A" "decode B"
for r in $(seq "$rounds"); do
  read -r p1 d1 < <(one "${A_ENV:-}" "$a" "$@" "${a_args[@]}")
  read -r p2 d2 < <(one "${B_ENV:-}" "$b" "$@" "${b_args[@]}")
  printf "%-5s %10s %10s %10s %10s\n" "$r" "$p1" "$p2" "$d1" "$d2"
  pa+=("$p1") pb+=("$p2") da+=("$d1") db+=("$d2")
  rp+=("$(echo "$p2 / $p1" | bc -l)") rd+=("$(echo "$d2 / $d1" | bc -l)")
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
printf "%-5s %10.1f %10.1f %10.1f %10.1f\n" median "$(median "${pa[@]}")" "$(median "${pb[@]}")" \
  "$(median "${da[@]}")" "$(median "${db[@]}")"
printf "B/A per round, median: prefill %.3f, decode %.3f\n" "$(median "${rp[@]}")" "$(median "${rd[@]}")"
