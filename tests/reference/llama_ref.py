"""The Llama forward pass in float64 numpy, from the Llama paper (Touvron
et al. 2023: pre-normalisation with RMSNorm, SwiGLU, rotary embeddings) and
grouped-query attention (Ainslie et al. 2023), with the file conventions of
shared/docs/FORMATS.md (adjacent-pair rotary layout in llama2.c and GGUF).

A model is a dict: cfg (dim, hidden, n_layers, n_heads, n_kv_heads, vocab,
head_dim, n_rot, rope_base, eps), emb [vocab, dim], layers (attn_norm, wq,
wk, wv, wo, ffn_norm, w_gate, w_down, w_up; matrices [out, in]), out_norm,
out [vocab, dim].
"""
import numpy as np

import gguf_io


def from_gguf(path):
    meta, t, _ = gguf_io.read(path)
    assert meta['general.architecture'] == 'llama'
    p = 'llama.'
    dim = int(meta[p + 'embedding_length'])
    H = int(meta[p + 'attention.head_count'])
    c = dict(dim=dim, hidden=int(meta[p + 'feed_forward_length']), n_layers=int(meta[p + 'block_count']),
             n_heads=H, n_kv_heads=int(meta.get(p + 'attention.head_count_kv', H)),
             vocab=t['token_embd.weight'].shape[0], head_dim=dim // H,
             n_rot=int(meta.get(p + 'rope.dimension_count', dim // H)),
             rope_base=float(meta.get(p + 'rope.freq_base', 10000.0)),
             eps=float(meta.get(p + 'attention.layer_norm_rms_epsilon', 1e-5)))
    names = dict(attn_norm='attn_norm', wq='attn_q', wk='attn_k', wv='attn_v', wo='attn_output',
                 ffn_norm='ffn_norm', w_gate='ffn_gate', w_down='ffn_down', w_up='ffn_up')
    layers = [{k: t['blk.%d.%s.weight' % (l, v)] for k, v in names.items()} for l in range(c['n_layers'])]
    out = t.get('output.weight', t['token_embd.weight'])
    return dict(cfg=c, emb=t['token_embd.weight'], layers=layers, out_norm=t['output_norm.weight'], out=out)


def rmsnorm(x, w, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def rope(x, pos, n_rot, base):
    """x [T, heads, head_dim]: rotate pairs (2i, 2i+1), i < n_rot/2, by pos * base^(-2i/n_rot)."""
    i = np.arange(n_rot // 2)
    theta = pos[:, None] * base ** (-2.0 * i / n_rot)          # [T, n_rot/2]
    cos, sin = np.cos(theta)[:, None, :], np.sin(theta)[:, None, :]
    x = x.copy()
    a, b = x[..., 0:n_rot:2].copy(), x[..., 1:n_rot:2].copy()
    x[..., 0:n_rot:2] = a * cos - b * sin
    x[..., 1:n_rot:2] = a * sin + b * cos
    return x


def logits(model, tokens, pos=None, allowed=None):
    """Logits [T, vocab] for every position of `tokens`: at positions 0..T-1
    with a causal mask, or at the given positions [T] with the given mask
    (allowed [T, T] booleans: query row t may attend key column j)."""
    c = model['cfg']
    T, H, KV, hd = len(tokens), c['n_heads'], c['n_kv_heads'], c['head_dim']
    pos = np.arange(T, dtype=np.float64) if pos is None else np.asarray(pos, dtype=np.float64)
    x = model['emb'][np.asarray(tokens)]
    if allowed is None:
        mask = np.triu(np.full((T, T), -np.inf), k=1)
    else:
        mask = np.where(np.asarray(allowed, dtype=bool), 0.0, -np.inf)
    for L in model['layers']:
        h = rmsnorm(x, L['attn_norm'], c['eps'])
        q = rope((h @ L['wq'].T).reshape(T, H, hd), pos, c['n_rot'], c['rope_base'])
        k = rope((h @ L['wk'].T).reshape(T, KV, hd), pos, c['n_rot'], c['rope_base'])
        v = (h @ L['wv'].T).reshape(T, KV, hd)
        out = np.empty((T, H, hd))
        for head in range(H):
            g = head // (H // KV)                                # the KV head this query head reads
            s = q[:, head, :] @ k[:, g, :].T / np.sqrt(hd) + mask
            s = np.exp(s - s.max(axis=1, keepdims=True))
            s /= s.sum(axis=1, keepdims=True)
            out[:, head, :] = s @ v[:, g, :]
        x = x + out.reshape(T, H * hd) @ L['wo'].T
        h = rmsnorm(x, L['ffn_norm'], c['eps'])
        gate, up = h @ L['w_gate'].T, h @ L['w_up'].T
        x = x + (gate / (1 + np.exp(-gate)) * up) @ L['w_down'].T
    return rmsnorm(x, model['out_norm'], c['eps']) @ model['out'].T


def logits_sinks_recent(model, tokens, sinks, budget, in_cache_positions, prompt_len=0):
    """Token-by-token decoding with a cache that keeps the first `sinks` and the
    most recent `budget - sinks` tokens of every layer, evicting after each
    token's attention (StreamingLLM, METHODS.md A3; sinks = 0 is a plain window).

    in_cache_positions: keys are cached un-rotated and rotated at every step by
    their index in the cache (0..len-1), the query by its own index (len-1):
    StreamingLLM's "pos shift". Otherwise keys are rotated at their true
    position when cached and the query at its true position.

    prompt_len: the first prompt_len tokens are a prompt read whole - full
    attention, nothing evicted until the prompt's last token has attended
    (the authors' prefill-then-compress); 0 evicts from the first token on.
    Returns logits [T, vocab]."""
    c = model['cfg']
    H, KV, hd = c['n_heads'], c['n_kv_heads'], c['head_dim']
    layers = model['layers']
    cache = [dict(k=[], v=[]) for _ in layers]      # lists of [KV, hd] arrays, oldest first
    out = []
    for t, tok in enumerate(tokens):
        x = model['emb'][tok][None, :]
        pos = np.array([float(t)])
        for L, kv in zip(layers, cache):
            h = rmsnorm(x, L['attn_norm'], c['eps'])
            q = (h @ L['wq'].T).reshape(1, H, hd)
            k = (h @ L['wk'].T).reshape(1, KV, hd)
            v = (h @ L['wv'].T).reshape(1, KV, hd)
            if not in_cache_positions:
                q = rope(q, pos, c['n_rot'], c['rope_base'])
                k = rope(k, pos, c['n_rot'], c['rope_base'])
            kv['k'].append(k[0])
            kv['v'].append(v[0])
            K, V = np.stack(kv['k']), np.stack(kv['v'])     # [len, KV, hd]
            n = len(K)
            if in_cache_positions:
                K = rope(K, np.arange(n, dtype=np.float64), c['n_rot'], c['rope_base'])
                q = rope(q, np.array([float(n - 1)]), c['n_rot'], c['rope_base'])
            o = np.empty((H, hd))
            for head in range(H):
                g = head // (H // KV)
                s = K[:, g, :] @ q[0, head] / np.sqrt(hd)
                s = np.exp(s - s.max())
                o[head] = (s / s.sum()) @ V[:, g, :]
            x = x + o.reshape(1, H * hd) @ L['wo'].T
            if n > budget and t >= prompt_len - 1:            # evict after this token's attention
                keep = list(range(sinks)) + list(range(n - (budget - sinks), n))
                kv['k'] = [kv['k'][i] for i in keep]
                kv['v'] = [kv['v'][i] for i in keep]
            h = rmsnorm(x, L['ffn_norm'], c['eps'])
            gate, up = h @ L['w_gate'].T, h @ L['w_up'].T
            x = x + (gate / (1 + np.exp(-gate)) * up) @ L['w_down'].T
        out.append((rmsnorm(x, model['out_norm'], c['eps']) @ model['out'].T)[0])
    return np.array(out)
