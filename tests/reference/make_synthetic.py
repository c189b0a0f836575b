"""Small synthetic Llama and MPT models as GGUF files, with seeded random
weights, for checking architecture paths that stories260K does not exercise
(head sizes, KV-head ratios, weight types, untied output, rotary settings;
MPT's LayerNorm biases, ALiBi slopes for any head count, clamp_kqv).
Weights and metadata follow shared/docs/FORMATS.md; nothing here comes from
kvbench's C code.
"""
import numpy as np

import gguf_io as G

# name: dim, hidden, layers, heads, kv_heads, vocab, weight type, embedding type,
#       tied, rope base, n_rot (None = head_dim), eps
CONFIGS = {
    'hd64_gqa2_f32':        (256, 512, 2, 4, 2, 320, G.F32, G.F32, True, 10000.0, None, 1e-5),
    'hd128_mqa_f32':        (256, 384, 2, 2, 1, 288, G.F32, G.F32, False, 10000.0, None, 1e-5),
    'hd64_mha_f16_untied':  (128, 256, 2, 2, 2, 320, G.F16, G.F16, False, 500000.0, None, 1e-6),
    'hd32_gqa4_bf16':       (128, 320, 3, 4, 1, 256, G.BF16, G.F32, True, 1000000.0, None, 1e-5),
    'hd64_gqa2_q8_0':       (256, 512, 2, 4, 2, 320, G.Q8_0, G.Q8_0, False, 10000.0, None, 1e-5),
    'hd64_gqa8_q4_0':       (512, 1024, 2, 8, 1, 320, G.Q4_0, G.Q4_0, True, 10000.0, None, 1e-5),
    'hd64_partial_rope':    (256, 512, 2, 4, 4, 288, G.F32, G.F32, True, 10000.0, 32, 1e-5),
    'hd128_gqa2_q8_0':      (512, 768, 2, 4, 2, 256, G.Q8_0, G.F16, False, 10000.0, None, 1e-6),
    # K-quants: rows of 256s (kquant_ref.py's blocks)
    'hd64_gqa2_q4_k':       (256, 512, 2, 4, 2, 320, G.Q4_K, G.Q6_K, False, 10000.0, None, 1e-5),
    'hd64_gqa4_q5_k':       (512, 768, 2, 8, 2, 288, G.Q5_K, G.Q5_K, True, 10000.0, None, 1e-5),
    'hd64_mha_q6_k':        (256, 768, 2, 4, 4, 256, G.Q6_K, G.Q6_K, False, 500000.0, None, 1e-5),
    'hd128_gqa2_q3_k':      (512, 512, 2, 4, 2, 288, G.Q3_K, G.Q4_K, True, 10000.0, None, 1e-5),
    'hd64_gqa2_q2_k':       (256, 512, 2, 4, 2, 256, G.Q2_K, G.Q2_K, False, 10000.0, None, 1e-5),
}


def vocab(n):
    toks = ['<unk>', '<s>', '</s>'] + ['<0x%02X>' % b for b in range(256 if n >= 300 else 0)]
    toks += ['\u2581w%d' % i for i in range(n - len(toks))]
    types = [2, 3, 3] + [6 if t.startswith('<0x') else 1 for t in toks[3:]]
    return toks, [-float(i) for i in range(n)], types


def make(path, name, seed=0):
    dim, hid, L, H, KV, V, wt, et, tied, base, n_rot, eps = CONFIGS[name]
    rng = np.random.default_rng(seed)
    hd = dim // H

    def mat(rows, cols, scale=None):
        return rng.standard_normal((rows, cols)) * (scale or 1.0 / np.sqrt(cols))

    def norm(n):
        return 1.0 + 0.2 * rng.standard_normal(n)
    toks, scores, types = vocab(V)
    meta = {
        'general.architecture': (G.STRING, 'llama'),
        'general.name': (G.STRING, name),
        'llama.context_length': (G.U32, 256),
        'llama.embedding_length': (G.U32, dim),
        'llama.block_count': (G.U32, L),
        'llama.feed_forward_length': (G.U32, hid),
        'llama.attention.head_count': (G.U32, H),
        'llama.attention.head_count_kv': (G.U32, KV),
        'llama.attention.layer_norm_rms_epsilon': (G.FLOAT32, eps),
        'llama.rope.freq_base': (G.FLOAT32, base),
        'tokenizer.ggml.model': (G.STRING, 'llama'),
        'tokenizer.ggml.tokens': (G.ARRAY, (G.STRING, toks)),
        'tokenizer.ggml.scores': (G.ARRAY, (G.FLOAT32, scores)),
        'tokenizer.ggml.token_type': (G.ARRAY, (G.I32, types)),
        'tokenizer.ggml.bos_token_id': (G.U32, 1),
        'tokenizer.ggml.eos_token_id': (G.U32, 2),
    }
    if n_rot is not None:
        meta['llama.rope.dimension_count'] = (G.U32, n_rot)
    tensors = [('token_embd.weight', mat(V, dim, 1.0), et), ('output_norm.weight', norm(dim), G.F32)]
    if not tied:
        tensors.append(('output.weight', mat(V, dim), wt))
    for l in range(L):
        b = 'blk.%d.' % l
        tensors += [(b + 'attn_norm.weight', norm(dim), G.F32), (b + 'ffn_norm.weight', norm(dim), G.F32),
                    (b + 'attn_q.weight', mat(H * hd, dim), wt), (b + 'attn_k.weight', mat(KV * hd, dim), wt),
                    (b + 'attn_v.weight', mat(KV * hd, dim), wt), (b + 'attn_output.weight', mat(dim, H * hd), wt),
                    (b + 'ffn_gate.weight', mat(hid, dim), wt), (b + 'ffn_down.weight', mat(dim, hid), wt),
                    (b + 'ffn_up.weight', mat(hid, dim), wt)]
    G.write(path, meta, tensors)


def make_raw(path, ttype, blocks):
    """A one-layer Llama (dim 256, hidden 512, 4 heads, vocab 256) whose 2-D
    weights are ttype super-blocks from blocks(n_blocks) -> bytes: for
    checking a decoder on arbitrary blocks. Returns {name: (bytes, values)}."""
    dim, hid, H, V = 256, 512, 4, 256
    toks, scores, types = vocab(V)
    meta = {
        'general.architecture': (G.STRING, 'llama'),
        'llama.context_length': (G.U32, 64), 'llama.embedding_length': (G.U32, dim),
        'llama.block_count': (G.U32, 1), 'llama.feed_forward_length': (G.U32, hid),
        'llama.attention.head_count': (G.U32, H), 'llama.attention.head_count_kv': (G.U32, H),
        'llama.attention.layer_norm_rms_epsilon': (G.FLOAT32, 1e-5),
        'tokenizer.ggml.model': (G.STRING, 'llama'),
        'tokenizer.ggml.tokens': (G.ARRAY, (G.STRING, toks)),
        'tokenizer.ggml.scores': (G.ARRAY, (G.FLOAT32, scores)),
        'tokenizer.ggml.token_type': (G.ARRAY, (G.I32, types)),
    }
    shapes = [('token_embd.weight', (V, dim)), ('output.weight', (V, dim)), ('blk.0.attn_q.weight', (dim, dim)),
              ('blk.0.attn_k.weight', (dim, dim)), ('blk.0.attn_v.weight', (dim, dim)),
              ('blk.0.attn_output.weight', (dim, dim)), ('blk.0.ffn_gate.weight', (hid, dim)),
              ('blk.0.ffn_down.weight', (dim, hid)), ('blk.0.ffn_up.weight', (hid, dim))]
    ones = np.ones(dim)
    tensors = [('output_norm.weight', ones, G.F32), ('blk.0.attn_norm.weight', ones, G.F32),
               ('blk.0.ffn_norm.weight', ones, G.F32)]
    out = {}
    for name, shape in shapes:
        n = shape[0] * shape[1]
        raw = blocks(n // 256)
        out[name] = (raw, n)
        tensors.append((name, G.Raw(shape, raw), ttype))
    G.write(path, meta, tensors)
    return out


# MPT as llama.cpp's converter writes it (FORMATS.md: mpt.* keys, fused
# blk.N.attn_qkv with rows Q, K, V, LayerNorm weights and optional biases, GELU
# MLP without gate, output.weight absent when tied).
# name: dim, hidden, layers, heads, kv_heads, vocab, weight type, embedding type,
#       tied, norm biases, max_alibi_bias (None: key absent, default 8),
#       clamp_kqv (None: key absent), eps
MPT_CONFIGS = {
    'mpt_h4_f32':             (128, 512, 2, 4, 4, 320, G.F32, G.F32, True, False, None, None, 1e-5),
    'mpt_h6_f32_bias_untied': (192, 384, 2, 6, 6, 288, G.F32, G.F32, False, True, 8.0, None, 1e-5),
    'mpt_h4_q8_0_bias':       (256, 512, 2, 4, 4, 320, G.Q8_0, G.Q8_0, False, True, 8.0, None, 1e-5),
    'mpt_h6_q8_0_clamp':      (192, 768, 3, 6, 6, 256, G.Q8_0, G.F16, True, False, None, 0.7, 1e-5),
    'mpt_h12_q4_0_untied':    (384, 768, 2, 12, 12, 256, G.Q4_0, G.Q4_0, False, False, 8.0, None, 1e-5),
    'mpt_h8_gqa2_f16_bias12': (256, 512, 2, 8, 2, 288, G.F16, G.BF16, True, True, 12.0, None, 1e-6),
}


def make_mpt(path, name, seed=0):
    dim, hid, L, H, KV, V, wt, et, tied, biases, max_bias, clamp, eps = MPT_CONFIGS[name]
    rng = np.random.default_rng(seed)
    hd = dim // H

    def mat(rows, cols, scale=None):
        return rng.standard_normal((rows, cols)) * (scale or 1.0 / np.sqrt(cols))

    def norm(n):
        return 1.0 + 0.2 * rng.standard_normal(n)

    def bias(n):
        return 0.1 * rng.standard_normal(n)
    toks, scores, types = vocab(V)
    meta = {
        'general.architecture': (G.STRING, 'mpt'),
        'general.name': (G.STRING, name),
        'mpt.context_length': (G.U32, 256),
        'mpt.embedding_length': (G.U32, dim),
        'mpt.block_count': (G.U32, L),
        'mpt.feed_forward_length': (G.U32, hid),
        'mpt.attention.head_count': (G.U32, H),
        'mpt.attention.layer_norm_epsilon': (G.FLOAT32, eps),
        'tokenizer.ggml.model': (G.STRING, 'llama'),
        'tokenizer.ggml.tokens': (G.ARRAY, (G.STRING, toks)),
        'tokenizer.ggml.scores': (G.ARRAY, (G.FLOAT32, scores)),
        'tokenizer.ggml.token_type': (G.ARRAY, (G.I32, types)),
        'tokenizer.ggml.bos_token_id': (G.U32, 1),
        'tokenizer.ggml.eos_token_id': (G.U32, 2),
    }
    if KV != H:
        meta['mpt.attention.head_count_kv'] = (G.U32, KV)
    if max_bias is not None:
        meta['mpt.attention.max_alibi_bias'] = (G.FLOAT32, max_bias)
    if clamp is not None:
        meta['mpt.attention.clamp_kqv'] = (G.FLOAT32, clamp)
    tensors = [('token_embd.weight', mat(V, dim, 1.0), et), ('output_norm.weight', norm(dim), G.F32)]
    if biases:
        tensors.append(('output_norm.bias', bias(dim), G.F32))
    if not tied:
        tensors.append(('output.weight', mat(V, dim), wt))
    for l in range(L):
        b = 'blk.%d.' % l
        tensors.append((b + 'attn_norm.weight', norm(dim), G.F32))
        if biases:
            tensors.append((b + 'attn_norm.bias', bias(dim), G.F32))
        tensors += [(b + 'attn_qkv.weight', mat((H + 2 * KV) * hd, dim), wt),
                    (b + 'attn_output.weight', mat(dim, H * hd), wt),
                    (b + 'ffn_norm.weight', norm(dim), G.F32)]
        if biases:
            tensors.append((b + 'ffn_norm.bias', bias(dim), G.F32))
        tensors += [(b + 'ffn_up.weight', mat(hid, dim), wt), (b + 'ffn_down.weight', mat(dim, hid), wt)]
    G.write(path, meta, tensors)
