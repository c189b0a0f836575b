"""llama2.c checkpoints in numpy, from llama2.c's documented layouts
(shared/docs/FORMATS.md and llama2.c export.py):

legacy: 7 int32 (dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size
  (negative: separate classifier), seq_len), then fp32 token_embedding,
  rms_att, wq, wk, wv, wo, rms_ffn, w1, w2, w3, rms_final, two legacy RoPE
  tables (skipped), and wcls when not shared.
version 2 ("ak42"): a 256-byte header (magic, version, the 7 ints, u8
  shared_classifier, i32 group_size), fp32 norms (all rms_att, all rms_ffn,
  rms_final), then each weight matrix - the embedding, then per kind one per
  layer, then the classifier if not shared - as its int8 values followed by
  one fp32 scale per group of group_size values.
Returns the same model dict as llama_ref.from_gguf.
"""
import struct

import numpy as np


def _cfg(dim, hidden, n_layers, n_heads, n_kv, vocab, seq_len):
    return dict(dim=dim, hidden=hidden, n_layers=n_layers, n_heads=n_heads, n_kv_heads=n_kv,
                vocab=vocab, ctx=seq_len, head_dim=dim // n_heads, n_rot=dim // n_heads,
                rope_base=10000.0, eps=1e-5)


def read_legacy(path):
    data = open(path, 'rb').read()
    dim, hidden, L, H, KV, V, S = struct.unpack_from('<7i', data, 0)
    shared = V > 0
    V = abs(V)
    c = _cfg(dim, hidden, L, H, KV, V, S)
    f = np.frombuffer(data, dtype='<f4', offset=28).astype(np.float64)
    hd, kvd = dim // H, KV * (dim // H)
    o = 0

    def take(*shape):
        nonlocal o
        n = int(np.prod(shape))
        a = f[o:o + n].reshape(shape)
        o += n
        return a
    emb = take(V, dim)
    att = take(L, dim)
    wq, wk, wv, wo = take(L, dim, dim), take(L, kvd, dim), take(L, kvd, dim), take(L, dim, dim)
    ffn = take(L, dim)
    w1, w2, w3 = take(L, hidden, dim), take(L, dim, hidden), take(L, hidden, dim)
    fin = take(dim)
    take(S * hd // 2)   # freq_cis_real (unused)
    take(S * hd // 2)   # freq_cis_imag (unused)
    cls = emb if shared else take(V, dim)
    layers = [dict(attn_norm=att[l], wq=wq[l], wk=wk[l], wv=wv[l], wo=wo[l], ffn_norm=ffn[l],
                   w_gate=w1[l], w_down=w2[l], w_up=w3[l]) for l in range(L)]
    return dict(cfg=c, emb=emb, layers=layers, out_norm=fin, out=cls)


def read_q8(path):
    data = open(path, 'rb').read()
    magic, version = struct.unpack_from('<Ii', data, 0)
    assert magic == 0x616b3432 and version == 2, 'not a llama2.c version 2 file'
    dim, hidden, L, H, KV, V, S = struct.unpack_from('<7i', data, 8)
    shared = data[36]
    gs = struct.unpack_from('<i', data, 37)[0]
    c = _cfg(dim, hidden, L, H, KV, V, S)
    kvd = KV * (dim // H)
    o = 256

    def f32(n):
        nonlocal o
        a = np.frombuffer(data, dtype='<f4', count=n, offset=o).astype(np.float64)
        o += 4 * n
        return a

    def q8(rows, cols):
        nonlocal o
        n = rows * cols
        q = np.frombuffer(data, dtype=np.int8, count=n, offset=o).astype(np.float64)
        o += n
        s = f32(n // gs)
        return (q.reshape(-1, gs) * s[:, None]).reshape(rows, cols)
    att, ffn, fin = f32(L * dim).reshape(L, dim), f32(L * dim).reshape(L, dim), f32(dim)
    emb = q8(V, dim)
    shapes = dict(wq=(dim, dim), wk=(kvd, dim), wv=(kvd, dim), wo=(dim, dim),
                  w_gate=(hidden, dim), w_down=(dim, hidden), w_up=(hidden, dim))
    per = {k: [q8(*shp) for _ in range(L)] for k, shp in shapes.items()}
    cls = emb if shared else q8(V, dim)
    assert o == len(data), 'trailing bytes in %s' % path
    layers = [dict(attn_norm=att[l], ffn_norm=ffn[l], **{k: per[k][l] for k in shapes}) for l in range(L)]
    return dict(cfg=c, emb=emb, layers=layers, out_norm=fin, out=cls)


def read(path):
    with open(path, 'rb') as f:
        head = f.read(4)
    return read_q8(path) if struct.unpack('<I', head)[0] == 0x616b3432 else read_legacy(path)


def read_vocab(path, vocab):
    """llama2.c tokenizer .bin: int32 max_len, then per token f32 score, int32 len, bytes."""
    data = open(path, 'rb').read()
    o, pieces = 4, []
    for _ in range(vocab):
        _, n = struct.unpack_from('<fi', data, o)
        o += 8
        pieces.append(data[o:o + n])
        o += n
    return pieces
