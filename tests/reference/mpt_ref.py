"""The MPT forward pass in float64 numpy, written from the model's
descriptions, not from kvbench's C code:

- MPT (MosaicML, "Introducing MPT-7B", and the model card / llm-foundry
  config): a decoder of pre-LayerNorm blocks, x += attn(LN1(x)),
  x += ffn(LN2(x)); attention computes Q, K, V with one fused matrix Wqkv
  (optionally clamped to [-clip_qkv, clip_qkv]), no positional embedding
  but ALiBi; the MLP is down(GELU(up(x))) with no gate; a final LayerNorm
  and the classifier, tied to the embedding unless the file has its own.
  LayerNorm weights may come with biases (MPT-7B has none: no_bias).
- ALiBi (Press, Smith & Lewis, "Train Short, Test Long", ICLR 2022): the
  attention logit of query i and key j gets -m_h * (i - j); for n heads a
  power of two the slopes are the geometric sequence that starts at
  2^(-8/n) with that same ratio (8: MPT's alibi_bias_max, generalised to
  2^(-b/n)); for other n the paper's code takes the slopes of the closest
  power of two below n, then every other slope of twice that many heads.
- GELU (Hendrycks & Gimpel 2016): x * Phi(x) = 0.5 x (1 + erf(x / sqrt 2)),
  or its tanh approximation 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
- The GGUF layout of shared/docs/FORMATS.md (mpt.* keys; blk.N.attn_qkv rows
  are Q, then K, then V; ne[0] fastest).

A model is a dict: cfg (dim, hidden, n_layers, n_heads, n_kv_heads, vocab,
head_dim, eps, max_bias, clamp), emb [vocab, dim], layers (attn_norm,
attn_norm_b, wqkv, wo, ffn_norm, ffn_norm_b, w_up, w_down; biases may be
None; matrices [out, in]), out_norm, out_norm_b, out [vocab, dim].
"""
import math

import numpy as np

import gguf_io


def from_gguf(path):
    meta, t, _ = gguf_io.read(path)
    assert meta['general.architecture'] == 'mpt'
    p = 'mpt.'
    dim = int(meta[p + 'embedding_length'])
    H = int(meta[p + 'attention.head_count'])
    c = dict(dim=dim, hidden=int(meta[p + 'feed_forward_length']), n_layers=int(meta[p + 'block_count']),
             n_heads=H, n_kv_heads=int(meta.get(p + 'attention.head_count_kv', H)),
             vocab=t['token_embd.weight'].shape[0], head_dim=dim // H,
             eps=float(meta.get(p + 'attention.layer_norm_epsilon', 1e-5)),
             max_bias=float(meta.get(p + 'attention.max_alibi_bias', 8.0)),
             clamp=float(meta.get(p + 'attention.clamp_kqv', 0.0)))
    layers = []
    for l in range(c['n_layers']):
        b = 'blk.%d.' % l
        layers.append(dict(attn_norm=t[b + 'attn_norm.weight'], attn_norm_b=t.get(b + 'attn_norm.bias'),
                           wqkv=t[b + 'attn_qkv.weight'], wo=t[b + 'attn_output.weight'],
                           ffn_norm=t[b + 'ffn_norm.weight'], ffn_norm_b=t.get(b + 'ffn_norm.bias'),
                           w_up=t[b + 'ffn_up.weight'], w_down=t[b + 'ffn_down.weight']))
    out = t.get('output.weight', t['token_embd.weight'])
    return dict(cfg=c, emb=t['token_embd.weight'], layers=layers, out_norm=t['output_norm.weight'],
                out_norm_b=t.get('output_norm.bias'), out=out)


def alibi_slopes(n, max_bias=8.0):
    def geometric(k):                  # 2^(-b/k), 2^(-2b/k), ..., 2^(-b)
        start = 2.0 ** (-max_bias / k)
        return [start ** (i + 1) for i in range(k)]
    if n & (n - 1) == 0:
        return np.array(geometric(n))
    closest = 2 ** int(math.floor(math.log2(n)))
    return np.array(geometric(closest) + geometric(2 * closest)[0::2][:n - closest])


def layernorm(x, w, b, eps):
    mu = x.mean(axis=-1, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)
    y = (x - mu) / np.sqrt(var + eps) * w
    return y if b is None else y + b


_erf = np.vectorize(math.erf)


def gelu(x, form):
    if form == 'erf':
        return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))
    assert form == 'tanh'
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def _qkv(model, L, h):
    """Q [T, H, hd], K, V [T, KV, hd] of normalised input h [T, dim]."""
    c = model['cfg']
    H, KV, hd = c['n_heads'], c['n_kv_heads'], c['head_dim']
    qkv = h @ L['wqkv'].T
    if c['clamp'] > 0:
        qkv = np.clip(qkv, -c['clamp'], c['clamp'])
    T = len(h)
    q = qkv[:, :H * hd].reshape(T, H, hd)
    k = qkv[:, H * hd:(H + KV) * hd].reshape(T, KV, hd)
    v = qkv[:, (H + KV) * hd:].reshape(T, KV, hd)
    return q, k, v


def _attend(q, K, V, slopes, qidx, kidx, visible):
    """One query row per head: q [H, hd] over keys K, V [n, KV, hd] whose
    indices (for the ALiBi distance) are kidx [n], the query's qidx;
    visible [n] is the causal mask. Returns [H, hd]."""
    H, hd = q.shape
    KV = K.shape[1]
    o = np.empty((H, hd))
    for head in range(H):
        g = head // (H // KV)
        s = K[:, g, :] @ q[head] / np.sqrt(hd) - slopes[head] * (qidx - kidx)
        s = np.where(visible, s, -np.inf)
        s = np.exp(s - s.max())
        o[head] = (s / s.sum()) @ V[:, g, :]
    return o


def _mlp(model, L, x, form):
    c = model['cfg']
    h = layernorm(x, L['ffn_norm'], L['ffn_norm_b'], c['eps'])
    return x + gelu(h @ L['w_up'].T, form) @ L['w_down'].T


def _head(model, x):
    c = model['cfg']
    return layernorm(x, model['out_norm'], model['out_norm_b'], c['eps']) @ model['out'].T


def logits(model, tokens, form='tanh'):
    """Logits [T, vocab] for every position of `tokens` (positions 0..T-1)."""
    c = model['cfg']
    T, H, hd = len(tokens), c['n_heads'], c['head_dim']
    slopes = alibi_slopes(H, c['max_bias'])
    pos = np.arange(T)
    x = model['emb'][np.asarray(tokens)]
    for L in model['layers']:
        q, k, v = _qkv(model, L, layernorm(x, L['attn_norm'], L['attn_norm_b'], c['eps']))
        out = np.stack([_attend(q[i], k, v, slopes, i, pos, pos <= i) for i in range(T)])
        x = x + out.reshape(T, H * hd) @ L['wo'].T
        x = _mlp(model, L, x, form)
    return _head(model, x)


def logits_sinks_recent(model, tokens, sinks, budget, in_cache_positions, form='tanh', prompt_len=0):
    """Token-by-token decoding with a cache that keeps, in every layer, the
    first `sinks` and the most recent `budget - sinks` tokens, evicting after
    each token's attention (StreamingLLM, METHODS.md A3; sinks = 0 is a
    plain window).

    in_cache_positions: the ALiBi distance is taken between indices in the
    compacted cache (keys 0..n-1 in order, the query at n-1), as
    StreamingLLM's MPT runs and Keyformer's "New Pos" slice the bias for
    the cache's length. Otherwise between true positions ("Org Pos").
    Returns logits [T, vocab]."""
    c = model['cfg']
    H, hd = c['n_heads'], c['head_dim']
    slopes = alibi_slopes(H, c['max_bias'])
    layers = model['layers']
    cache = [dict(k=[], v=[], pos=[]) for _ in layers]   # oldest first
    out = []
    for t, tok in enumerate(tokens):
        x = model['emb'][tok][None, :]
        for L, kv in zip(layers, cache):
            q, k, v = _qkv(model, L, layernorm(x, L['attn_norm'], L['attn_norm_b'], c['eps']))
            kv['k'].append(k[0])
            kv['v'].append(v[0])
            kv['pos'].append(t)
            K, V, P = np.stack(kv['k']), np.stack(kv['v']), np.array(kv['pos'])
            n = len(K)
            if in_cache_positions:
                o = _attend(q[0], K, V, slopes, n - 1, np.arange(n), P <= t)
            else:
                o = _attend(q[0], K, V, slopes, t, P, P <= t)
            x = x + o.reshape(1, H * hd) @ L['wo'].T
            if n > budget and t >= prompt_len - 1:            # evict after this token's attention
                keep = list(range(sinks)) + list(range(n - (budget - sinks), n))
                for key in ('k', 'v', 'pos'):
                    kv[key] = [kv[key][i] for i in keep]
            x = _mlp(model, L, x, form)
        out.append(_head(model, x)[0])
    return np.array(out)
