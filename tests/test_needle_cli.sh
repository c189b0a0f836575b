#!/usr/bin/env bash
# Needle tasks through `kvbench run`: KVCache-Factory's protocol (token cut
# with its buffer, its prompt, the ROUGE-1 x 10 score, sigmoid depths),
# several needles scored by the fraction found, and the settings' errors
# naming file and line.
# usage: test_needle_cli.sh KVBENCH_BINARY TMPDIR
set -u
kv=$1
tmp=$2
rm -rf "$tmp" && mkdir -p "$tmp"
. "$(cd "$(dirname "$0")" && pwd)/testlib.sh"

head_ini() {
  cat <<INI
[experiment]
name = $1
seed = 7
db = $tmp/needle.db
[model s]
path = stories260K/stories260K.bin
tokenizer = stories260K/tok512.bin
chat = none
[policy full]
policy = full
[sweep]
models = s
tasks = needle
policies = full
budgets = none
INI
}

{ head_ini factory; cat <<INI
[task needle]
kind = needle
haystack = niah/paul_graham_essays
needle_protocol = kvcache-factory
lengths = 400
depth_intervals = 3
depth_spacing = sigmoid
INI
} > "$tmp/factory.ini"
if "$kv" run "$tmp/factory.ini" -q 2>"$tmp/err"; then
  q() { sqlite3 "$tmp/needle.db" "$1"; }
  ids=$(q "SELECT group_concat(sample, ' ') FROM (SELECT sample FROM samples ORDER BY sample)")
  # linspace(0, 100, 3) through the tester's logistic: 0, 50, 100
  [ "$ids" = "len400-depth0 len400-depth100 len400-depth50" ] && ok "sigmoid depth grid" || bad "sigmoid depth grid" "$ids"
  # 400 tokens - the 200-token buffer leave 200 for the essays; the prompt
  # adds the book wrapper, the question and BOS: between 200 and 320
  pt=$(q "SELECT min(prompt_tokens) || ' ' || max(prompt_tokens) FROM samples")
  set -- $pt
  [ "$1" -gt 200 ] && [ "$2" -lt 320 ] && ok "final_context_length_buffer ($pt)" || bad "buffer" "$pt"
  n=$(q "SELECT count(*) FROM metrics WHERE name = 'needle_score' AND value BETWEEN 0 AND 10")
  [ "$n" = 3 ] && ok "needle_score stored" || bad "needle_score stored ($n)"
  lim=$(q "SELECT max(generated_tokens) FROM samples")
  [ "$lim" -le 30 ] && ok "30 new tokens at most" || bad "max_new_tokens ($lim)"
  spec=$(q "SELECT spec FROM runs LIMIT 1")
  echo "$spec" | grep -q "needle=kvcache-factory/buffer=200/scorer=rouge1/depths=0.000,50.000,100.000" &&
    ok "the protocol is part of the run's identity" || bad "spec" "$spec"
else
  bad "factory run" "$(cat "$tmp/err")"
fi

{ head_ini two; cat <<INI
[task needle]
kind = needle
haystack = niah/paul_graham_essays
lengths = 300
depths = 50
needle = The magic fruit is a mango. | The magic tool is a hammer.
needle_answer = mango | hammer
INI
} > "$tmp/two.ini"
if "$kv" run "$tmp/two.ini" -q 2>"$tmp/err"; then
  n=$(sqlite3 "$tmp/needle.db" "SELECT count(DISTINCT run) FROM samples")
  [ "$n" = 2 ] && ok "another protocol, another run" || bad "runs ($n)"
  ref=$(sqlite3 "$tmp/needle.db" "SELECT reference FROM samples WHERE sample = 'len300-depth50'")
  [ "$ref" = "$(printf 'mango\nhammer')" ] && ok "several answers" || bad "several answers" "$ref"
else
  bad "two needles run" "$(cat "$tmp/err")"
fi

# errors name the file and the line
expect() {
  local name=$1 pat=$2 body=$3
  { head_ini e; printf '%s\n' "$body"; } > "$tmp/e.ini"
  out=$("$kv" run "$tmp/e.ini" --dry-run 2>&1 >/dev/null)
  rc=$?
  if [ $rc -ne 0 ] && echo "$out" | grep -qE "$pat"; then ok "$name"; else bad "$name (rc $rc)" "$out"; fi
}
base='[task needle]
kind = needle
haystack = niah/paul_graham_essays
lengths = 300'
expect "unknown protocol" "e.ini:20: \[task needle\] needle_protocol: expected kvbench or kvcache-factory" \
  "$base
needle_protocol = factory
depths = 50"
expect "depths and intervals" "\[task needle\] depths and depth_intervals: give one" "$base
depths = 50
depth_intervals = 3"
expect "sigmoid needs intervals" "depth_spacing = sigmoid: goes with depth_intervals" "$base
depths = 50
depth_spacing = sigmoid"
expect "answers per needle" "needle_answer: one answer per needle" "$base
depths = 50
needle = A. | B.
needle_answer = a"
expect "buffer is the factory's" "final_context_length_buffer: only the kvcache-factory protocol" "$base
depths = 50
final_context_length_buffer = 100"
expect "needle keys elsewhere" "needle settings: only needle tasks take them" '[task needle]
kind = passkey
lengths = 300
depths = 50
needle_scorer = rouge1'

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
