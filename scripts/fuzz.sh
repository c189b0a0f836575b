#!/usr/bin/env bash
# Fuzzes the model loaders (GGUF, llama2.c legacy and Q8), then the
# tokenizers' encoders (byte-level BPE and SentencePiece, on text), with
# libFuzzer under AddressSanitizer + UndefinedBehaviorSanitizer for N seconds
# each (default 60), starting from small valid files and texts.
# Needs clang and its runtime: apt-get install clang libclang-rt-14-dev
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
out=build-fuzz
mkdir -p $out/corpus
san="-fsanitize=address,undefined -fno-sanitize-recover=undefined"
blas=$(pkg-config --cflags --libs openblas libpcre2-8 libcjson)
# the vector kernels need their own ISA flags, as in meson.build
clang -g -O1 -std=c11 $san -Iengine -c engine/kernels_avx2.c -mavx2 -mfma -mf16c -o $out/k2.o
clang -g -O1 -std=c11 $san -Iengine -c engine/kernels_avx512.c \
  -mavx512f -mavx512bw -mavx512vl -mavx512dq -mfma -mf16c -o $out/k512.o
clang -g -O1 -std=c11 $san -fsanitize=fuzzer -Iengine -DKV_X86_DISPATCH tests/fuzz/fuzz_model.c \
  engine/{kv_error,dtype,gguf,quant,kernels,threadpool,tokenizer,tokenizer_bpe,model,kvcache,context,export}.c \
  $out/k2.o $out/k512.o $blas -lm -lpthread -o $out/fuzz_model
# seeds: a tiny synthetic GGUF and the first bytes of the real llama2.c files
[ -x build/kvbench ] || bash scripts/build.sh
build/kvbench synth $out/corpus/tiny.gguf --dim 32 --hidden 64 --layers 1 --heads 2 --kv-heads 1 \
  --vocab 40 --type q8_0 >/dev/null
models=${KVBENCH_MODELS:-../shared/models}
head -c 4096 "$models/stories260K/stories260K.bin" > $out/corpus/l2c.bin || true
head -c 4096 "$models/stories260K/stories260K_q8.bin" > $out/corpus/q8.bin || true
$out/fuzz_model -max_total_time="$secs" -max_len=65536 -rss_limit_mb=4096 $out/corpus
# the tokenizers: any text, seeded with llama.cpp's conformance inputs
mkdir -p $out/corpus-tok
clang -g -O1 -std=c11 $san -fsanitize=fuzzer -Iengine tests/fuzz/fuzz_tokenizer.c \
  engine/{kv_error,gguf,dtype,quant,tokenizer,tokenizer_bpe}.c $blas -lm -o $out/fuzz_tokenizer
cp "$models"/tokenizers/gguf-vocab/*.inp $out/corpus-tok/ 2>/dev/null || true
$out/fuzz_tokenizer -max_total_time="$secs" -max_len=4096 -rss_limit_mb=4096 $out/corpus-tok
