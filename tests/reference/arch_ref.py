"""The transformer families of 2024-25 in float64 numpy, one decoder for all,
written from the models' papers and the Hugging Face model documentation
(modeling_llama, modeling_qwen2, modeling_qwen3, modeling_phi3,
modeling_gemma2, modeling_gemma3), with the GGUF conventions of llama.cpp's
converter (shared/docs/FORMATS.md):

- llama: Q/K rows permuted by the converter, so rotary pairs are adjacent
  (2i, 2i+1); every other family keeps Hugging Face's rotate_half pairing
  (i, i + n_rot/2).
- gemma: the converter stores RMSNorm weights as 1 + w (Hugging Face's Gemma
  RMSNorm multiplies by 1 + w); this decoder reads w = stored - 1 and applies
  1 + w.
- Llama 3.1's rope scaling arrives as rope_freqs.weight: frequency i is
  divided by factor i. phi3's LongRoPE as rope_factors_short/long (long when
  the context the model is run at, by default its context_length, exceeds
  rope.scaling.original_context_length, as llama.cpp chooses), with its
  cos/sin scaled by rope.scaling.attn_factor.

Decoding is token by token with an explicit cache, so the same code is the
full-cache reference and the reference for evicting caches (sinks + recent)
in either position convention. Sliding-window layers (gemma2: even layers;
gemma3: 5 of every 6) mask keys whose true position is `window` or more
behind the query's, as Hugging Face does.

Also here: make(), which writes the synthetic GGUF files of CONFIGS.
"""
import math

import numpy as np

import gguf_io as G

NEOX_ARCHS = ('qwen2', 'qwen3', 'phi3', 'gemma2', 'gemma3')


# ------------------------------------------------------------------ model

def from_gguf(path, ctx=None):
    meta, t, _ = G.read(path)
    a = meta['general.architecture']
    g = lambda k, d=None: meta.get('%s.%s' % (a, k), d)  # noqa: E731
    dim, H = int(g('embedding_length')), int(g('attention.head_count'))
    hd = int(g('attention.key_length', dim // H))
    n_layers = int(g('block_count'))
    c = dict(arch=a, dim=dim, hidden=int(g('feed_forward_length')), n_layers=n_layers, n_heads=H,
             n_kv_heads=int(g('attention.head_count_kv', H)), head_dim=hd, vocab=t['token_embd.weight'].shape[0],
             n_rot=int(g('rope.dimension_count', hd)), base=float(g('rope.freq_base', 10000.0)),
             eps=float(g('attention.layer_norm_rms_epsilon', 1e-5)), scaling=g('rope.scaling.type', 'none'),
             factor=float(g('rope.scaling.factor', 1.0)), attn_factor=float(g('rope.scaling.attn_factor', 1.0)),
             orig_ctx=int(g('rope.scaling.original_context_length', g('context_length', 2048))),
             attn_cap=float(g('attn_logit_softcapping', 0.0)) if a == 'gemma2' else 0.0,
             final_cap=float(g('final_logit_softcapping', 0.0)) if a == 'gemma2' else 0.0,
             window=int(g('attention.sliding_window', 0)) if a in ('gemma2', 'gemma3') else 0)
    gemma = a in ('gemma2', 'gemma3')
    c['gemma'] = gemma
    # which layers slide: Gemma 2 alternates starting with a local layer;
    # Gemma 3 has five local layers before each global one
    period = {'gemma2': 2, 'gemma3': 6}.get(a, 0)
    c['swa'] = [bool(c['window']) and period > 0 and (l + 1) % period != 0 for l in range(n_layers)]

    def nv(name):  # a norm weight as Hugging Face holds it
        return t[name] - 1.0 if gemma else t[name]
    layers = []
    for l in range(n_layers):
        b = 'blk.%d.' % l
        L = dict(attn_norm=nv(b + 'attn_norm.weight'), ffn_norm=nv(b + 'ffn_norm.weight'),
                 wo=t[b + 'attn_output.weight'], w_down=t[b + 'ffn_down.weight'])
        if b + 'attn_qkv.weight' in t:
            qkv = t[b + 'attn_qkv.weight']
            qd, kvd = H * hd, c['n_kv_heads'] * hd
            L.update(wq=qkv[:qd], wk=qkv[qd:qd + kvd], wv=qkv[qd + kvd:])
        else:
            L.update(wq=t[b + 'attn_q.weight'], wk=t[b + 'attn_k.weight'], wv=t[b + 'attn_v.weight'])
        if b + 'ffn_gate.weight' in t:
            L.update(w_gate=t[b + 'ffn_gate.weight'], w_up=t[b + 'ffn_up.weight'])
        else:  # phi3's gate_up_proj: the gate's rows first
            gu = t[b + 'ffn_up.weight']
            L.update(w_gate=gu[:gu.shape[0] // 2], w_up=gu[gu.shape[0] // 2:])
        for k in ('q', 'k', 'v'):
            L['b' + k] = t.get(b + 'attn_%s.bias' % k)
        for k in ('q', 'k'):
            L[k + '_norm'] = nv(b + 'attn_%s_norm.weight' % k) if b + 'attn_%s_norm.weight' % k in t else None
        for k, name in (('post_attn', 'post_attention_norm'), ('post_ffn', 'post_ffw_norm')):
            L[k] = nv(b + name + '.weight') if b + name + '.weight' in t else None
        layers.append(L)
    factors = t.get('rope_freqs.weight')
    if a == 'phi3':  # long factors when the planned context (default: the file's) exceeds the original
        long = (ctx if ctx is not None else int(g('context_length', 2048))) > c['orig_ctx']
        factors = t.get('rope_factors_long.weight' if long else 'rope_factors_short.weight')
    out = t.get('output.weight', t['token_embd.weight'])
    return dict(cfg=c, emb=t['token_embd.weight'], layers=layers, out_norm=nv('output_norm.weight'), out=out,
                factors=factors)


def rmsnorm(x, w, eps, gemma=False):
    y = x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps)
    return y * (1.0 + w) if gemma else y * w


def inv_freq(model, local):
    """Per-pair inverse frequencies and the cos/sin factor (Hugging Face's
    rope initialisers: default, linear, yarn, llama3-as-factors, longrope)."""
    c = model['cfg']
    n_rot = c['n_rot']
    base = 10000.0 if (local and c['arch'] == 'gemma3') else c['base']
    f = base ** (-np.arange(0, n_rot, 2, dtype=np.float64) / n_rot)
    if model['factors'] is not None:
        f = f / model['factors']
    kind = 'none' if (local and c['arch'] == 'gemma3') else c['scaling']
    mscale = c['attn_factor']
    if kind == 'linear':
        f = f / c['factor']
    elif kind == 'yarn':
        def corr(turns):
            return n_rot * math.log(c['orig_ctx'] / (turns * 2 * math.pi)) / (2 * math.log(base))
        lo, hi = max(math.floor(corr(32.0)), 0), min(math.ceil(corr(1.0)), n_rot - 1)
        if lo == hi:
            hi += 0.001
        ramp = np.clip((np.arange(n_rot // 2) - lo) / (hi - lo), 0.0, 1.0)
        keep = 1.0 - ramp                   # the share of the extrapolated (original) frequency
        f = (f / c['factor']) * (1.0 - keep) + f * keep
        mscale *= 0.1 * math.log(c['factor']) + 1.0
    return f, mscale


def rope(x, pos, model, local):
    """x [n, heads, head_dim] rotated at positions pos [n]."""
    c = model['cfg']
    n_rot, half = c['n_rot'], c['n_rot'] // 2
    f, mscale = inv_freq(model, local)
    ang = np.asarray(pos, dtype=np.float64)[:, None] * f[None, :]
    cos, sin = (np.cos(ang) * mscale)[:, None, :], (np.sin(ang) * mscale)[:, None, :]
    x = x.copy()
    if c['arch'] in NEOX_ARCHS:
        a, b = x[..., :half].copy(), x[..., half:n_rot].copy()
        x[..., :half], x[..., half:n_rot] = a * cos - b * sin, a * sin + b * cos
    else:
        a, b = x[..., 0:n_rot:2].copy(), x[..., 1:n_rot:2].copy()
        x[..., 0:n_rot:2], x[..., 1:n_rot:2] = a * cos - b * sin, a * sin + b * cos
    return x


def gelu_tanh(x):
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def query_scale(c):
    """Gemma's query_pre_attn_scalar is head_dim except in its 27B models
    (hidden/heads); every other family scales by head_dim^-1/2."""
    big = (c['arch'] == 'gemma2' and c['n_layers'] == 46) or (c['arch'] == 'gemma3' and c['n_layers'] == 62)
    return 1.0 / math.sqrt(c['dim'] / c['n_heads'] if big else c['head_dim'])


def decode(model, tokens, sinks=None, budget=None, in_cache=False, prompt_len=0):
    """Logits [T, vocab], one token at a time. With a budget, each layer's
    cache keeps the first `sinks` and the last budget - sinks entries after
    a token's attention (from the prompt's last token on; prompt_len 0:
    from the first). in_cache: keys are held unrotated and rotated by their
    index in the cache at every step, the query by its own index."""
    c = model['cfg']
    H, KV, hd, gemma = c['n_heads'], c['n_kv_heads'], c['head_dim'], c['gemma']
    scale = query_scale(c)
    caches = [dict(k=[], v=[], pos=[]) for _ in model['layers']]
    out = []
    for t, tok in enumerate(tokens):
        x = model['emb'][tok][None, :] * (math.sqrt(c['dim']) if gemma else 1.0)
        for li, (L, kv) in enumerate(zip(model['layers'], caches)):
            local = c['swa'][li]
            h = rmsnorm(x, L['attn_norm'], c['eps'], gemma)
            q, k, v = h @ L['wq'].T, h @ L['wk'].T, h @ L['wv'].T
            if L['bq'] is not None:
                q, k, v = q + L['bq'], k + L['bk'], v + L['bv']
            q, k, v = q.reshape(1, H, hd), k.reshape(1, KV, hd), v.reshape(1, KV, hd)
            if L['q_norm'] is not None:
                q, k = rmsnorm(q, L['q_norm'], c['eps'], gemma), rmsnorm(k, L['k_norm'], c['eps'], gemma)
            if not in_cache:
                q, k = rope(q, [t], model, local), rope(k, [t], model, local)
            kv['k'].append(k[0])
            kv['v'].append(v[0])
            kv['pos'].append(t)
            K, V, P = np.stack(kv['k']), np.stack(kv['v']), np.array(kv['pos'])
            n = len(K)
            if in_cache:
                K = rope(K, np.arange(n), model, local)
                q = rope(q, [n - 1], model, local)
            visible = P <= t
            if local:
                visible &= (t - P) < c['window']
            o = np.empty((H, hd))
            for head in range(H):
                g = head // (H // KV)
                s = K[:, g, :] @ q[0, head] * scale
                if c['attn_cap']:
                    s = c['attn_cap'] * np.tanh(s / c['attn_cap'])
                s = np.where(visible, s, -np.inf)
                s = np.exp(s - s.max())
                o[head] = (s / s.sum()) @ V[:, g, :]
            a = o.reshape(1, H * hd) @ L['wo'].T
            if L['post_attn'] is not None:
                a = rmsnorm(a, L['post_attn'], c['eps'], gemma)
            x = x + a
            if budget is not None and n > budget and t >= prompt_len - 1:
                keep = list(range(sinks)) + list(range(n - (budget - sinks), n))
                for key in ('k', 'v', 'pos'):
                    kv[key] = [kv[key][i] for i in keep]
            h = rmsnorm(x, L['ffn_norm'], c['eps'], gemma)
            gate, up = h @ L['w_gate'].T, h @ L['w_up'].T
            act = gelu_tanh(gate) if gemma else gate / (1 + np.exp(-gate))
            m = (act * up) @ L['w_down'].T
            if L['post_ffn'] is not None:
                m = rmsnorm(m, L['post_ffn'], c['eps'], gemma)
            x = x + m
        logit = (rmsnorm(x, model['out_norm'], c['eps'], gemma) @ model['out'].T)[0]
        if c['final_cap']:
            logit = c['final_cap'] * np.tanh(logit / c['final_cap'])
        out.append(logit)
    return np.array(out)


# ------------------------------------------------------- synthetic files

# name: arch, dim, hidden, layers, heads, kv_heads, key_length (None: dim/heads),
#       vocab, weight type, tied, extra metadata {key (without arch.): (type, value)},
#       extras: set of 'bias', 'qk_norm', 'fused', 'post_norms', 'rope_freqs', 'factors'
CONFIGS = {
    'llama3_rope_freqs': ('llama', 128, 256, 2, 4, 2, None, 288, G.F32, True, {}, {'rope_freqs'}),
    'llama_linear2_f16': ('llama', 128, 256, 2, 4, 4, None, 256, G.F16, False,
                          {'rope.scaling.type': (G.STRING, 'linear'), 'rope.scaling.factor': (G.FLOAT32, 2.0)}, set()),
    'qwen2_bias_gqa2': ('qwen2', 128, 320, 2, 4, 2, None, 300, G.F32, False,
                        {'rope.freq_base': (G.FLOAT32, 1000000.0)}, {'bias'}),
    'qwen2_yarn4_q8_0': ('qwen2', 128, 256, 2, 4, 1, None, 256, G.Q8_0, True,
                         {'rope.scaling.type': (G.STRING, 'yarn'), 'rope.scaling.factor': (G.FLOAT32, 4.0),
                          'rope.scaling.original_context_length': (G.U32, 32)}, {'bias'}),
    'qwen3_hd48_bf16': ('qwen3', 128, 256, 2, 4, 2, 48, 256, G.BF16, True, {}, {'qk_norm'}),
    'phi3_fused_hd96': ('phi3', 192, 384, 2, 2, 2, None, 256, G.F32, False,
                        {'rope.scaling.attn_factor': (G.FLOAT32, 1.19),
                         'rope.scaling.original_context_length': (G.U32, 64)}, {'fused', 'factors'}),
    'gemma2_swa8_cap': ('gemma2', 128, 256, 3, 4, 2, 32, 256, G.F32, True,
                        {'attention.sliding_window': (G.U32, 8), 'attn_logit_softcapping': (G.FLOAT32, 2.0),
                         'final_logit_softcapping': (G.FLOAT32, 5.0)}, {'post_norms'}),
    'gemma3_swa6_linear8': ('gemma3', 64, 128, 7, 2, 1, 32, 256, G.F32, True,
                            {'attention.sliding_window': (G.U32, 6), 'rope.freq_base': (G.FLOAT32, 1000000.0),
                             'rope.scaling.type': (G.STRING, 'linear'), 'rope.scaling.factor': (G.FLOAT32, 8.0)},
                            {'post_norms', 'qk_norm'}),
}


def make(path, name, seed=0):
    import make_synthetic  # the vocabulary of the Llama configurations
    arch, dim, hid, L, H, KV, kl, V, wt, tied, extra, feats = CONFIGS[name]
    rng = np.random.default_rng(seed)
    hd = kl or dim // H
    gemma = arch.startswith('gemma')

    def mat(rows, cols, scale=None):
        return rng.standard_normal((rows, cols)) * (scale or 1.0 / np.sqrt(cols))

    def norm(n):  # stored as llama.cpp stores it: 1 + w for gemma
        w = 0.2 * rng.standard_normal(n) if gemma else 1.0 + 0.2 * rng.standard_normal(n)
        return 1.0 + w if gemma else w
    toks, scores, types = make_synthetic.vocab(V)
    meta = {'general.architecture': (G.STRING, arch), 'general.name': (G.STRING, name)}
    for k, v in [('context_length', (G.U32, 256)), ('embedding_length', (G.U32, dim)), ('block_count', (G.U32, L)),
                 ('feed_forward_length', (G.U32, hid)), ('attention.head_count', (G.U32, H)),
                 ('attention.head_count_kv', (G.U32, KV)), ('attention.layer_norm_rms_epsilon', (G.FLOAT32, 1e-6))]:
        meta['%s.%s' % (arch, k)] = v
    if kl:
        meta['%s.attention.key_length' % arch] = (G.U32, kl)
        meta['%s.attention.value_length' % arch] = (G.U32, kl)
    for k, v in extra.items():
        meta['%s.%s' % (arch, k)] = v
    meta.update({'tokenizer.ggml.model': (G.STRING, 'llama'), 'tokenizer.ggml.tokens': (G.ARRAY, (G.STRING, toks)),
                 'tokenizer.ggml.scores': (G.ARRAY, (G.FLOAT32, scores)),
                 'tokenizer.ggml.token_type': (G.ARRAY, (G.I32, types)),
                 'tokenizer.ggml.bos_token_id': (G.U32, 1), 'tokenizer.ggml.eos_token_id': (G.U32, 2)})
    emb_scale = 1.0 / math.sqrt(dim) if gemma else 1.0  # keeps gemma's sqrt(dim) embeddings O(1)
    tensors = [('token_embd.weight', mat(V, dim, emb_scale), wt if wt in (G.F32, G.F16) else G.F32),
               ('output_norm.weight', norm(dim), G.F32)]
    if not tied:
        tensors.append(('output.weight', mat(V, dim), wt))
    if 'rope_freqs' in feats:
        tensors.append(('rope_freqs.weight', 1.0 + 7.0 * rng.random(hd // 2), G.F32))
    if 'factors' in feats:
        tensors.append(('rope_factors_short.weight', 1.0 + rng.random(hd // 2), G.F32))
        tensors.append(('rope_factors_long.weight', 1.0 + 20.0 * rng.random(hd // 2), G.F32))
    qd, kvd = H * hd, KV * hd
    for l in range(L):
        b = 'blk.%d.' % l
        tensors += [(b + 'attn_norm.weight', norm(dim), G.F32), (b + 'ffn_norm.weight', norm(dim), G.F32)]
        if 'fused' in feats:
            tensors += [(b + 'attn_qkv.weight', mat(qd + 2 * kvd, dim), wt), (b + 'ffn_up.weight', mat(2 * hid, dim), wt)]
        else:
            tensors += [(b + 'attn_q.weight', mat(qd, dim), wt), (b + 'attn_k.weight', mat(kvd, dim), wt),
                        (b + 'attn_v.weight', mat(kvd, dim), wt), (b + 'ffn_gate.weight', mat(hid, dim), wt),
                        (b + 'ffn_up.weight', mat(hid, dim), wt)]
        tensors += [(b + 'attn_output.weight', mat(dim, qd), wt), (b + 'ffn_down.weight', mat(dim, hid), wt)]
        if 'bias' in feats:
            tensors += [(b + 'attn_q.bias', 0.3 * rng.standard_normal(qd), G.F32),
                        (b + 'attn_k.bias', 0.3 * rng.standard_normal(kvd), G.F32),
                        (b + 'attn_v.bias', 0.3 * rng.standard_normal(kvd), G.F32)]
        if 'qk_norm' in feats:
            tensors += [(b + 'attn_q_norm.weight', norm(hd), G.F32), (b + 'attn_k_norm.weight', norm(hd), G.F32)]
        if 'post_norms' in feats:
            tensors += [(b + 'post_attention_norm.weight', norm(dim), G.F32),
                        (b + 'post_ffw_norm.weight', norm(dim), G.F32)]
    G.write(path, meta, tensors)
