#!/usr/bin/env python3
"""check_plants.py - what train_probe.py's planted starts do before any training.

For each start (bigram, trigram, context) it prints where layer 0's two
query heads put their weight (mean over positions 100-599 of random pieces,
distances 0-12), and how often layer 1 head 0, the planted induction head,
finds the right value among 40 same-form needles: each needle is 8 random
key pieces, the same 3 separator pieces and a value, in random filler; the
prompt ends with one needle's key and separator, as a RULER answer that
restates its key does. A match on the last one or two pieces sees 40 equal
candidates (chance: 1 of 40); one that reaches into the key tells them apart.

Needs PyTorch (Debian's python3-torch), as train_probe.py does:
    /usr/bin/python3 scripts/check_plants.py [--rope-base 500000] [bigram trigram context]
Exits 1 if a start's planted head misses its mark: the previous-token head
below 50% on distance 1, or the context start finding fewer than 30 of 40.
"""
import argparse
import math
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import train_probe as tp  # noqa: E402


def attention(model, layer, tokens):
    """Layer `layer`'s attention weights per query head, [T, T] each."""
    tri = torch.full((tp.ATTN_BLOCK, tp.ATTN_BLOCK), float('-inf')).triu(1)
    h = model.emb(tokens)
    for L in model.layers[:layer]:
        h = L(h, model.cos, model.sin, tri)
    L = model.layers[layer]
    x = tp.rmsnorm(h, L.attn_norm)
    n = tokens.shape[1]
    q = tp.rope(L.wq(x).view(1, n, L.n_heads, L.hd), model.cos, model.sin)[0]
    k = tp.rope(L.wk(x).view(1, n, L.n_kv, L.hd), model.cos, model.sin)[0]
    mask = torch.full((n, n), float('-inf')).triu(1)
    rep = L.n_heads // L.n_kv
    return [((q[:, i] @ k[:, i // rep].t()) / math.sqrt(L.hd) + mask).softmax(-1) for i in range(L.n_heads)]


def planted(plant, base):
    torch.manual_seed(1)
    m = tp.Probe(512, 128, 384, 4, 2, 1, 2048, base)
    if plant == 'bigram':  # train_probe.py's defaults: --prev-head-gain 0.6 --induction-gain 3
        m.init_prev_token_head(0.6)
        m.init_induction_head(3.0)
    elif plant == 'trigram':
        m.init_trigram_circuit(3.0, 1.2)
    else:
        m.init_context_circuit(3.0, 1.2)
    return m


def needles(g, n=40, filler=(10, 30), key_len=8, sep=(7, 8, 9)):
    seq, value_at, keys = [], [], []
    for _ in range(n):
        seq += torch.randint(20, 512, (int(torch.randint(filler[0], filler[1], (1,), generator=g)),), generator=g).tolist()
        key = torch.randint(20, 512, (key_len,), generator=g).tolist()
        seq += key + list(sep)
        value_at.append(len(seq))
        keys.append(key)
        seq += torch.randint(20, 512, (2,), generator=g).tolist()
    return seq, value_at, keys, list(sep)


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('plants', nargs='*', default=['bigram', 'trigram', 'context'])
    p.add_argument('--rope-base', type=float, default=500000.0)
    args = p.parse_args()
    bad = 0
    with torch.no_grad():
        for plant in args.plants:
            m = planted(plant, args.rope_base)
            g = torch.Generator().manual_seed(7)
            x = torch.randint(3, 512, (1, 600), generator=g)
            t = torch.arange(100, 600)
            for i, w in enumerate(attention(m, 0, x)):
                by_d = [w[t, t - d].mean().item() for d in range(13)]
                print('%-7s layer 0 head %d, weight at distance 0-12: %s' % (plant, i, ' '.join('%.2f' % v for v in by_d)))
                if i == 0 and by_d[1] < 0.5:
                    print('FAIL %s: the previous-token head puts %.2f on distance 1' % (plant, by_d[1]))
                    bad = 1
            seq, value_at, keys, sep = needles(g)
            found, share = 0, 0.0
            for j, key in enumerate(keys):
                s = seq + torch.randint(20, 512, (15,), generator=g).tolist() + key + sep
                w = attention(m, 1, torch.tensor([s]))[0][len(s) - 1][torch.tensor(value_at)]
                found += int(w.argmax().item() == j)
                share += w[j].item() / max(w.sum().item(), 1e-12)
            print('%-7s layer 1 head 0: the right value first in %d of %d needles, %.0f%% of their weight (prompt %d pieces)' %
                  (plant, found, len(keys), 100 * share / len(keys), len(s)))
            if plant == 'context' and found < 30:
                print('FAIL context: the planted match finds %d of %d' % (found, len(keys)))
                bad = 1
    return bad


if __name__ == '__main__':
    sys.exit(main())
