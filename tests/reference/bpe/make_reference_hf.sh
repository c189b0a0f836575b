#!/usr/bin/env bash
# Recomputes the reference counts and hashes of test_hf_real_text
# (tests/test_tokenizer.c) with Hugging Face's Tokenizers.js (npm
# @huggingface/tokenizers 0.2.0) on the tokenizer.json folders under
# tokenizers/hf/: 200 KB of WikiText-2 and of a PG-19 book, 40 CNN/DailyMail
# articles, and unicode.txt (emoji, CJK, combining marks, runs of spaces and
# newlines, control-token strings). Needs node and npm, installed into a
# temporary folder; not run by the suite.
# usage: make_reference_hf.sh [MODELS_DIR] [DATA_DIR]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
models=${1:-${KVBENCH_MODELS:-$here/../../../../shared/models}}
data=${2:-${KVBENCH_DATA:-$here/../../../../shared/data}}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp "$here/ref.mjs" "$work/"
(cd "$work" && npm init -y >/dev/null && npm install --silent @huggingface/tokenizers@0.2.0 >/dev/null)
for v in llama3_1 qwen3 llama2 gemma3; do
  dir=$models/tokenizers/hf/$v
  for f in wikitext/wikitext2_test.txt pg19/10146.txt; do
    echo -n "$v  "; node "$work/ref.mjs" "$dir" "$data/$f" 200000
  done
  echo -n "$v  "; node "$work/ref.mjs" "$dir" --cnndm "$data/cnn_dailymail/cnndm_test_500.jsonl" 40
  echo -n "$v  "; node "$work/ref.mjs" "$dir" "$here/unicode.txt" 1000000
done
