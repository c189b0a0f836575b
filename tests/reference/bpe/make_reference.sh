#!/usr/bin/env bash
# Recomputes the reference counts and hashes in tests/test_tokenizer.c
# (test_bpe_real_text) with an independent byte-level BPE: Hugging Face's
# Tokenizers.js (npm @huggingface/tokenizers 0.2.0), on tokenizer.json files
# made from the GGUF vocabularies. Needs node and npm; not run by the suite.
# usage: make_reference.sh [MODELS_DIR] [DATA_DIR]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
models=${1:-${KVBENCH_MODELS:-$here/../../../../shared/models}}
data=${2:-${KVBENCH_DATA:-$here/../../../../shared/data}}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp "$here/ref.mjs" "$work/"
(cd "$work" && npm init -y >/dev/null && npm install --silent @huggingface/tokenizers@0.2.0 >/dev/null)
for v in gpt-2 mpt; do
  /usr/bin/python3 "$here/gguf_to_tokenizer_json.py" "$models/tokenizers/gguf-vocab/ggml-vocab-$v.gguf" "$work/$v.json"
  node "$work/ref.mjs" "$work/$v.json" --vectors "$models/tokenizers/gguf-vocab/ggml-vocab-$v.gguf.inp"
  for f in wikitext/wikitext2_test.txt pg19/10146.txt; do
    echo -n "$v  "
    node "$work/ref.mjs" "$work/$v.json" "$data/$f" 200000
  done
done
