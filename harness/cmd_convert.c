/* cmd_convert.c - `kvbench convert` (any loadable model to GGUF) and
 * `kvbench synth` (a Llama or MPT GGUF with seeded random weights, for tests
 * and benchmarks at sizes no real model here has). */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../base/kv_error.h"
#include "../engine/export.h"
#include "../engine/model.h"
#include "../engine/quant.h"
#include "../engine/tokenizer.h"
#include "commands.h"
#include "hf_convert.h"
#include "opts.h"
#include "paths.h"


/* `convert --vocab-only`: any tokenizer kv_tokenizer_load reads (a
 * tokenizer.json folder above all) as a vocabulary-only GGUF. */
static int convert_vocab(const char *in, const char *out) {
    char ip[4096];
    kv_tokenizer *t;
    const char *path = hx_resolve_model(in, ip, sizeof ip);
    if (kv_tokenizer_load(path, 0, &t)) {
        fprintf(stderr, "kvbench convert: %s\n", kv_last_error());
        return 1;
    }
    const char *base = strrchr(path, '/');
    int rc = kv_export_vocab_gguf(t, base && base[1] ? base + 1 : path, out);
    if (rc) fprintf(stderr, "kvbench convert: %s\n", kv_last_error());
    else if (kv_tokenizer_byte_level(t))
        printf("wrote %s (vocabulary only: %d tokens, %lld merges, pre-tokenizer %s)\n", out, kv_tokenizer_n_vocab(t),
               (long long)kv_tokenizer_n_merges(t), kv_tokenizer_pre(t) ? kv_tokenizer_pre(t) : "none");
    else /* SentencePiece-style: scores, from the merges when the input had them (export.c) */
        printf("wrote %s (vocabulary only: %d tokens, SentencePiece scores%s)\n", out, kv_tokenizer_n_vocab(t),
               kv_tokenizer_n_merges(t) > 0 ? " derived from the merge ranks" : "");
    kv_tokenizer_free(t);
    return rc ? 1 : 0;
}

/* --type: a stored type, or a mixed recipe (q4_k_m, q5_k_m: export.h). */
int hx_parse_weight_type(const char *cmd, const char *name, kv_dtype *type, kv_quant_mix *mix) {
    *mix = KV_MIX_NONE;
    if (kv_quant_mix_parse(name, mix, type) == KV_OK) return 0;
    if (kv_dtype_parse(name, type) || *type == KV_Q8_G) {
        fprintf(stderr, "kvbench %s: --type: expected " TYPE_LIST ", got '%s'\n", cmd, name);
        return 2;
    }
    return 0;
}

int hx_cmd_convert(int argc, char **argv, int help) {
    const char *type_name = "f32", *tokenizer = NULL;
    int vocab_only = 0;
    float rope_base = NAN; /* NAN: not given */
    hx_opt opts[] = {
        {"type", 0, HX_OPT_STR, &type_name, "TYPE", "type of the 2-D weights: " TYPE_LIST " (default f32)"},
        {"tokenizer", 'z', HX_OPT_STR, &tokenizer, "PATH",
         "tokenizer for llama2.c input (default: found beside it) or instead of a Hugging Face folder's"},
        {"rope-base", 0, HX_OPT_FLOAT, &rope_base, "F",
         "rotary base to write instead of IN's (a llama2.c checkpoint has none: 10000)"},
        {"vocab-only", 0, HX_OPT_FLAG, &vocab_only, NULL,
         "IN is a tokenizer (a Hugging Face tokenizer.json folder, ...): write its vocabulary alone"},
    };
    if (help) {
        printf("usage: kvbench convert IN OUT.gguf [--type TYPE]\n"
               "       kvbench convert HF_DIR OUT.gguf [--type TYPE] [--tokenizer PATH]\n"
               "       kvbench convert --vocab-only TOKENIZER_DIR OUT.gguf\n\n"
               "Writes IN (GGUF or llama2.c) as a GGUF llama model with its tokenizer. With\n"
               "--type f32 an fp32 input keeps every weight bit for bit.\n"
               "A Hugging Face folder (config.json, model.safetensors or a sharded\n"
               "model.safetensors.index.json, tokenizer.json) of model_type llama, mistral,\n"
               "qwen2, qwen3 or gemma2 is written with the keys and tensor names llama.cpp's\n"
               "convert_hf_to_gguf.py writes (llama/mistral q and k rows permuted to GGUF's\n"
               "pairing, Gemma norms as 1 + w, Llama 3 rope scaling as rope_freqs.weight);\n"
               "F32/F16/BF16 sources. A SentencePiece tokenizer.json (no scores) needs\n"
               "--tokenizer with a GGUF or llama2.c tokenizer of the model. With --vocab-only,\n"
               "writes the tokenizer.ggml.* keys llama.cpp writes (model, pre, tokens,\n"
               "token_type, merges, bos/eos ids, add_bos_token) and no tensors.\n"
               "K-quant rows must hold a multiple of 256 values (others are written Q8_0 or\n"
               "F32). q4_k_m / q5_k_m mix Q4_K / Q5_K with Q6_K as llama.cpp's recipes do:\n"
               "output (or the tied embedding) and attn_v / ffn_down of the first and last\n"
               "eighth of the layers and every third between them in Q6_K.\n\n");
        hx_opts_print(opts, N_OPTS(opts));
        return 0;
    }
    const char *pos[2];
    int np;
    if (hx_opts_parse("convert", argc, argv, opts, N_OPTS(opts), pos, 2, &np)) return 2;
    if (np != 2) {
        fprintf(stderr, "kvbench convert: expected IN and OUT paths\n");
        return 2;
    }
    if (!isnan(rope_base) && !(rope_base > 0 && isfinite(rope_base))) {
        fprintf(stderr, "kvbench convert: --rope-base: expected a positive number, got %g\n", (double)rope_base);
        return 2;
    }
    if (vocab_only) return convert_vocab(pos[0], pos[1]);
    kv_dtype type;
    kv_quant_mix mix;
    if (hx_parse_weight_type("convert", type_name, &type, &mix)) return 2;
    char ip[4096], tp[4096];
    const char *in = hx_resolve_model(pos[0], ip, sizeof ip);
    if (hx_is_hf_dir(in)) {
        if (!isnan(rope_base)) {
            fprintf(stderr, "kvbench convert: --rope-base: a Hugging Face folder's config.json gives rope_theta\n");
            return 2;
        }
        int rc = hx_convert_hf(in, pos[1], type, mix, tokenizer ? hx_resolve_model(tokenizer, tp, sizeof tp) : NULL);
        if (rc) fprintf(stderr, "kvbench convert: %s\n", kv_last_error());
        else printf("wrote %s (%s weights, from the Hugging Face folder %s)\n", pos[1], mix ? type_name : kv_dtype_name(type), in);
        return rc ? 1 : 0;
    }
    kv_model_params p = kv_model_default_params();
    if (tokenizer) p.tokenizer_path = hx_resolve_model(tokenizer, tp, sizeof tp);
    p.weights_mmap = 1; /* each weight is read once: no copy */
    if (!isnan(rope_base)) p.rope_base = rope_base;
    kv_model *m;
    if (kv_model_load(in, &p, &m)) {
        fprintf(stderr, "kvbench convert: %s\n", kv_last_error());
        return 1;
    }
    int rc = kv_model_export_gguf_mix(m, pos[1], type, mix);
    if (rc) fprintf(stderr, "kvbench convert: %s\n", kv_last_error());
    else
        printf("wrote %s (%s weights, %lld parameters)\n", pos[1], mix ? type_name : kv_dtype_name(type),
               (long long)kv_model_get_info(m)->n_params);
    kv_model_free(m);
    return rc ? 1 : 0;
}
