"""Hugging Face model folders in numpy: safetensors files (one or sharded),
config.json, a tiny byte-level tokenizer.json, and the forward pass of the
models as the transformers documentation defines them.

safetensors, from its format documentation: an 8-byte little-endian header
length, a JSON header {name: {dtype, shape, data_offsets: [begin, end]}}
(offsets relative to the data that follows; "__metadata__" optional), padded
with spaces, then the data.

The forward (float64) follows the modelling described for LlamaForCausalLM,
MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM and Gemma2ForCausalLM:
RMSNorm x / sqrt(mean(x^2) + eps) * w (Gemma: * (1 + w)); rotary embedding
on the two HALVES of each head (rotate_half: dimension i pairs with
i + d/2, inverse frequencies theta^(-2i/d)); grouped-query attention whose
query head h reads key/value head h // (H / KV); SwiGLU MLP
down(silu(gate(x)) * up(x)) (Gemma 2: GELU tanh). Qwen2 adds q/k/v biases,
Qwen3 an RMSNorm over each head of q and k before the rotation. Gemma 2
scales the embeddings by sqrt(hidden_size), normalises after attention and
after the MLP as well, scales queries by query_pre_attn_scalar^-0.5,
soft-caps attention scores and final logits (cap * tanh(x / cap)) and lets
even layers see only the last sliding_window tokens.

Independent of kvbench's C code, which is checked against it.
"""
import json
import math
import os
import struct

import numpy as np

import gguf_io

DTYPES = {'F32': ('<f4', 4), 'F16': ('<f2', 2), 'BF16': ('<u2', 2)}


def _encode(arr, dtype):
    a = np.asarray(arr, dtype=np.float32)
    if dtype == 'F32':
        return a.astype('<f4').tobytes()
    if dtype == 'F16':
        return a.astype('<f2').tobytes()
    if dtype == 'BF16':
        return gguf_io.f32_to_bf16_bits(a).astype('<u2').tobytes()
    raise ValueError(dtype)


def _decode(raw, dtype, shape):
    if dtype == 'BF16':
        u = np.frombuffer(raw, dtype='<u2').astype(np.uint32) << 16
        return u.view(np.float32).astype(np.float64).reshape(shape)
    return np.frombuffer(raw, dtype=DTYPES[dtype][0]).astype(np.float64).reshape(shape)


def safetensors_bytes(tensors, metadata=None):
    """tensors: list of (name, array, dtype 'F32'|'F16'|'BF16'), stored in that order."""
    header, blobs, off = {}, [], 0
    if metadata is not None:
        header['__metadata__'] = metadata
    for name, arr, dtype in tensors:
        b = _encode(arr, dtype)
        header[name] = {'dtype': dtype, 'shape': list(np.shape(arr)), 'data_offsets': [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header).encode('utf-8')
    h += b' ' * ((-len(h)) % 8)
    return struct.pack('<Q', len(h)) + h + b''.join(blobs)


def read_safetensors(path):
    """{name: float64 array} of one file."""
    with open(path, 'rb') as f:
        data = f.read()
    n = struct.unpack_from('<Q', data, 0)[0]
    header = json.loads(data[8:8 + n])
    out = {}
    for name, e in header.items():
        if name == '__metadata__':
            continue
        b, end = e['data_offsets']
        out[name] = _decode(data[8 + n + b: 8 + n + end], e['dtype'], e['shape'])
    return out


def write_folder(d, config, tensors, dtype='F32', shards=1, tokenizer=None, tokenizer_config=None):
    """A model folder: config.json, model.safetensors (or `shards` files and
    model.safetensors.index.json), and tokenizer.json / tokenizer_config.json
    when given. tensors: {name: array}, all stored in `dtype`."""
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, 'config.json'), 'w') as f:
        json.dump(config, f, indent=2)
    names = list(tensors)
    if shards == 1:
        with open(os.path.join(d, 'model.safetensors'), 'wb') as f:
            f.write(safetensors_bytes([(k, tensors[k], dtype) for k in names], {'format': 'pt'}))
    else:
        wm = {}
        for s in range(shards):
            fn = 'model-%05d-of-%05d.safetensors' % (s + 1, shards)
            part = names[s::shards]
            with open(os.path.join(d, fn), 'wb') as f:
                f.write(safetensors_bytes([(k, tensors[k], dtype) for k in part]))
            wm.update({k: fn for k in part})
        with open(os.path.join(d, 'model.safetensors.index.json'), 'w') as f:
            json.dump({'metadata': {'total_size': 0}, 'weight_map': wm}, f)
    if tokenizer is not None:
        with open(os.path.join(d, 'tokenizer.json'), 'w') as f:
            json.dump(tokenizer, f)
    if tokenizer_config is not None:
        with open(os.path.join(d, 'tokenizer_config.json'), 'w') as f:
            json.dump(tokenizer_config, f)


def read_folder(d):
    """(config dict, {name: float64 array}) of a folder, sharded or not."""
    with open(os.path.join(d, 'config.json')) as f:
        cfg = json.load(f)
    idx = os.path.join(d, 'model.safetensors.index.json')
    files = ['model.safetensors']
    if os.path.exists(idx):
        with open(idx) as f:
            files = sorted(set(json.load(f)['weight_map'].values()))
    t = {}
    for fn in files:
        t.update(read_safetensors(os.path.join(d, fn)))
    return cfg, t


# ------------------------------------------------------------ tokenizer

def _bytes_to_unicode():
    """GPT-2's byte -> printable code point table (its tokenizer's documented encoding)."""
    bs = list(range(ord('!'), ord('~') + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


CHAT_TEMPLATE = "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"


def byte_level_tokenizer():
    """A GPT-2-style byte-level BPE tokenizer.json: the 256 byte symbols,
    four merges and <|endoftext|>: 261 tokens. Returns (tokenizer.json
    dict, tokenizer_config.json dict)."""
    b2u = _bytes_to_unicode()
    vocab = {b2u[b]: i for i, b in enumerate(range(256))}
    sp = b2u[ord(' ')]
    merges = [[sp, 't'], ['h', 'e'], [sp + 't', 'he'], ['a', 'n']]
    for l, r in merges:
        vocab[l + r] = len(vocab)
    eot = len(vocab)
    tok = {
        'version': '1.0', 'truncation': None, 'padding': None,
        'added_tokens': [{'id': eot, 'content': '<|endoftext|>', 'single_word': False, 'lstrip': False,
                          'rstrip': False, 'normalized': False, 'special': True}],
        'normalizer': None,
        'pre_tokenizer': {'type': 'ByteLevel', 'add_prefix_space': False, 'trim_offsets': True, 'use_regex': True},
        'post_processor': None,
        'decoder': {'type': 'ByteLevel', 'add_prefix_space': True, 'trim_offsets': True, 'use_regex': True},
        'model': {'type': 'BPE', 'dropout': None, 'unk_token': None, 'continuing_subword_prefix': '',
                  'end_of_word_suffix': '', 'fuse_unk': False, 'byte_fallback': False,
                  'vocab': vocab, 'merges': [' '.join(m) for m in merges]},
    }
    cfg = {'bos_token': '<|endoftext|>', 'eos_token': '<|endoftext|>', 'add_bos_token': False,
           'chat_template': CHAT_TEMPLATE}
    return tok, cfg


# ------------------------------------------------------------ synthetic models

def make_tensors(cfg, seed=0, std=0.08):
    """Seeded random weights with the names and shapes a config implies."""
    rng = np.random.default_rng(seed)
    mt = cfg['model_type']
    D, F, L = cfg['hidden_size'], cfg['intermediate_size'], cfg['num_hidden_layers']
    H = cfg['num_attention_heads']
    KV = cfg.get('num_key_value_heads', H)
    hd = cfg.get('head_dim', D // H)
    V = cfg['vocab_size']

    def mat(r, c):
        return rng.standard_normal((r, c)) * std

    def norm(n):
        return (0.0 if mt == 'gemma2' else 1.0) + 0.1 * rng.standard_normal(n)

    t = {'model.embed_tokens.weight': rng.standard_normal((V, D)) * 0.5}
    for l in range(L):
        p = 'model.layers.%d.' % l
        t[p + 'input_layernorm.weight'] = norm(D)
        t[p + 'self_attn.q_proj.weight'] = mat(H * hd, D)
        t[p + 'self_attn.k_proj.weight'] = mat(KV * hd, D)
        t[p + 'self_attn.v_proj.weight'] = mat(KV * hd, D)
        t[p + 'self_attn.o_proj.weight'] = mat(D, H * hd)
        if mt == 'qwen2' or cfg.get('attention_bias'):
            t[p + 'self_attn.q_proj.bias'] = 0.1 * rng.standard_normal(H * hd)
            t[p + 'self_attn.k_proj.bias'] = 0.1 * rng.standard_normal(KV * hd)
            t[p + 'self_attn.v_proj.bias'] = 0.1 * rng.standard_normal(KV * hd)
        if mt == 'qwen3':
            t[p + 'self_attn.q_norm.weight'] = norm(hd)
            t[p + 'self_attn.k_norm.weight'] = norm(hd)
        t[p + 'post_attention_layernorm.weight'] = norm(D)
        if mt == 'gemma2':
            t[p + 'pre_feedforward_layernorm.weight'] = norm(D)
            t[p + 'post_feedforward_layernorm.weight'] = norm(D)
        t[p + 'mlp.gate_proj.weight'] = mat(F, D)
        t[p + 'mlp.up_proj.weight'] = mat(F, D)
        t[p + 'mlp.down_proj.weight'] = mat(D, F)
    t['model.norm.weight'] = norm(D)
    if not cfg.get('tie_word_embeddings', mt == 'gemma2'):
        t['lm_head.weight'] = mat(V, D)
    return t


def config(model_type, **kw):
    c = dict(model_type=model_type, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
             num_attention_heads=4, num_key_value_heads=2, vocab_size=261, max_position_embeddings=256,
             rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=False)
    c.update(kw)
    return c


# ------------------------------------------------------------ forward

def rmsnorm(x, w, eps, plus_one=False):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * ((1.0 + w) if plus_one else w)


def rotate_half(x):
    h = x.shape[-1] // 2
    return np.concatenate([-x[..., h:], x[..., :h]], axis=-1)


def inv_freq(cfg, hd):
    theta = cfg.get('rope_theta', 10000.0)
    f = 1.0 / theta ** (np.arange(0, hd, 2, dtype=np.float64) / hd)
    rs = cfg.get('rope_scaling') or {}
    kind = rs.get('rope_type', rs.get('type'))
    if kind == 'linear':
        f = f / rs['factor']
    elif kind == 'llama3':  # the transformers documentation's llama3 frequencies
        factor, lo, hi = rs['factor'], rs.get('low_freq_factor', 1.0), rs.get('high_freq_factor', 4.0)
        old = rs.get('original_max_position_embeddings', 8192)
        wl = 2 * math.pi / f
        scaled = np.where(wl > old / lo, f / factor, f)
        smooth = (old / wl - lo) / (hi - lo)
        mid = ~(wl < old / hi) & ~(wl > old / lo)
        f = np.where(mid, (1 - smooth) * scaled / factor + smooth * scaled, scaled)
    elif kind not in (None, 'default'):
        raise ValueError('rope scaling %s not in the reference' % kind)
    return f


def rope(x, pos, f):
    """x [T, heads, hd] rotated Hugging Face's way (halves)."""
    ang = pos[:, None] * f[None, :]                      # [T, hd/2]
    emb = np.concatenate([ang, ang], axis=-1)[:, None, :]
    return x * np.cos(emb) + rotate_half(x) * np.sin(emb)


def logits(cfg, t, tokens):
    """Logits [T, vocab] of `tokens` at positions 0..T-1 (float64)."""
    mt = cfg['model_type']
    gemma = mt == 'gemma2'
    D, L, H = cfg['hidden_size'], cfg['num_hidden_layers'], cfg['num_attention_heads']
    KV = cfg.get('num_key_value_heads', H)
    hd = cfg.get('head_dim', D // H)
    eps = cfg.get('rms_norm_eps', 1e-6)
    T = len(tokens)
    pos = np.arange(T, dtype=np.float64)
    f = inv_freq(cfg, hd)
    x = t['model.embed_tokens.weight'][np.asarray(tokens)]
    if gemma:
        x = x * math.sqrt(D)
    causal = np.tril(np.ones((T, T), dtype=bool))
    scale = cfg.get('query_pre_attn_scalar', hd) ** -0.5 if gemma else hd ** -0.5
    for l in range(L):
        p = 'model.layers.%d.' % l
        h = rmsnorm(x, t[p + 'input_layernorm.weight'], eps, gemma)

        def proj(name, n):
            y = h @ t[p + 'self_attn.%s_proj.weight' % name].T
            b = t.get(p + 'self_attn.%s_proj.bias' % name)
            return (y if b is None else y + b).reshape(T, n, hd)
        q, k, v = proj('q', H), proj('k', KV), proj('v', KV)
        if mt == 'qwen3':
            q = rmsnorm(q, t[p + 'self_attn.q_norm.weight'], eps)
            k = rmsnorm(k, t[p + 'self_attn.k_norm.weight'], eps)
        q, k = rope(q, pos, f), rope(k, pos, f)
        allowed = causal
        if gemma and l % 2 == 0:
            w = cfg.get('sliding_window', 4096)
            allowed = causal & (np.arange(T)[:, None] - np.arange(T)[None, :] < w)
        out = np.empty((T, H, hd))
        for head in range(H):
            g = head // (H // KV)
            s = q[:, head] @ k[:, g].T * scale
            if gemma and cfg.get('attn_logit_softcapping'):
                cap = cfg['attn_logit_softcapping']
                s = np.tanh(s / cap) * cap
            s = np.where(allowed, s, -np.inf)
            s = np.exp(s - s.max(axis=1, keepdims=True))
            out[:, head] = (s / s.sum(axis=1, keepdims=True)) @ v[:, g]
        a = out.reshape(T, H * hd) @ t[p + 'self_attn.o_proj.weight'].T
        if gemma:
            a = rmsnorm(a, t[p + 'post_attention_layernorm.weight'], eps, True)
            x = x + a
            h = rmsnorm(x, t[p + 'pre_feedforward_layernorm.weight'], eps, True)
        else:
            x = x + a
            h = rmsnorm(x, t[p + 'post_attention_layernorm.weight'], eps)
        gate, up = h @ t[p + 'mlp.gate_proj.weight'].T, h @ t[p + 'mlp.up_proj.weight'].T
        if gemma:  # gelu_pytorch_tanh
            act = 0.5 * gate * (1 + np.tanh(math.sqrt(2 / math.pi) * (gate + 0.044715 * gate ** 3)))
        else:
            act = gate / (1 + np.exp(-gate))
        m = (act * up) @ t[p + 'mlp.down_proj.weight'].T
        if gemma:
            m = rmsnorm(m, t[p + 'post_feedforward_layernorm.weight'], eps, True)
        x = x + m
    x = rmsnorm(x, t['model.norm.weight'], eps, gemma)
    out_w = t.get('lm_head.weight') if not (gemma or cfg.get('tie_word_embeddings')) else None
    y = x @ (t['model.embed_tokens.weight'] if out_w is None else out_w).T
    if gemma and cfg.get('final_logit_softcapping'):
        cap = cfg['final_logit_softcapping']
        y = np.tanh(y / cap) * cap
    return y
