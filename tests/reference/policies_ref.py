"""Independent implementations of KV-policy selection rules, written from
shared/docs/METHODS.md (not from kvbench's C code), replayed on the attention
statistics kvbench recorded (`kvbench logits --record FILE`): after every
layer call, the set of token positions each policy keeps must be the one the
C code kept.

Rules (per layer and KV head, applied when the head holds more than B):
  window        keep the B newest positions                      (METHODS A2)
  streamingllm  keep the s oldest (sinks) and the B - s newest    (A3)
  h2o           score = attention received, summed over every query so far and
                over the query heads sharing the KV head; keep the r = int(B * recent)
                newest and the B - r best-scored others          (A4 (b), real drop)
                sim=1: the mask simulation (A4 (a)): the kept set counts the token
                about to be generated, so B - 1 are kept, r - 1 of them recent
  tova          score = the newest query's attention averaged over all heads;
                keep the B best                                   (A6)
Ties go to the older position.
"""
import struct
import sys

import numpy as np


class Record:
    def __init__(self, path):
        self.d = open(path, 'rb').read()
        self.o = 0
        assert self.d[:4] == b'KVRC', 'not a kvbench attention record'
        self.o = 4
        version, self.limit, n = self.i32(3)
        assert version == 1
        self.name = self.d[self.o:self.o + n].decode()
        self.o += n
        (np_,) = self.i32(1)
        self.params = list(struct.unpack_from('<%dd' % np_, self.d, self.o))
        self.o += 8 * np_

    def i32(self, n):
        v = struct.unpack_from('<%di' % n, self.d, self.o)
        self.o += 4 * n
        return v

    def f32(self, n):
        v = np.frombuffer(self.d, dtype='<f4', count=n, offset=self.o).astype(np.float64)
        self.o += 4 * n
        return v

    def heads(self, n_kv):
        out = []
        for _ in range(n_kv):
            (n,) = self.i32(1)
            out.append(list(self.i32(n)))
        return out

    def events(self):
        while self.o < len(self.d):
            layer, H, KV, n_new, pos0, stride, needs = self.i32(7)
            before = self.heads(KV)
            last = self.f32(H * stride).reshape(H, stride) if needs & 1 else None
            colsum = self.f32(H * stride).reshape(H, stride) if needs & 2 else None
            after = self.heads(KV)
            yield dict(layer=layer, H=H, KV=KV, n_new=n_new, pos0=pos0, before=before, last=last,
                       colsum=colsum, after=after)


def best(scores, k):
    """The k positions with the highest score; ties to the older (smaller) position."""
    ranked = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))
    return {p for p, _ in ranked[:k]}


def replay(rec):
    """Yields (event, expected kept set, recorded kept set) per (layer call, KV head)."""
    B = rec.limit
    state = {}       # (layer, g) -> {position: score}   (h2o)
    for ev in rec.events():
        group = ev['H'] // ev['KV']
        for g in range(ev['KV']):
            before = ev['before'][g]
            held = set(before)
            if rec.name == 'window':
                keep = set(sorted(held)[-B:]) if len(held) > B else held
            elif rec.name == 'streamingllm':
                s = min(int(rec.params[0]), B)
                ordered = sorted(held)
                keep = set(ordered[:s] + ordered[len(ordered) - (B - s):]) if len(held) > B else held
            elif rec.name == 'h2o':
                sc = state.setdefault((ev['layer'], g), {})
                sc = {p: sc.get(p, 0.0) for p in held}          # scores leave with their tokens
                for j, p in enumerate(before):
                    sc[p] += sum(ev['colsum'][q][j] for q in range(g * group, (g + 1) * group))
                nxt = int(rec.params[1])
                keep = held
                if len(held) > B - nxt:
                    r = int(B * rec.params[0])
                    heavy = B - r
                    r = max(r - nxt, 0)
                    recent = set(sorted(held)[len(held) - r:]) if r > 0 else set()
                    keep = recent | best({p: v for p, v in sc.items() if p not in recent}, min(heavy, B - nxt))
                state[(ev['layer'], g)] = {p: sc[p] for p in keep}
            elif rec.name == 'tova':
                keep = held
                if len(held) > B:
                    mean = ev['last'].mean(axis=0)               # over all heads of the layer
                    keep = best({p: mean[j] for j, p in enumerate(before)}, B)
            else:
                raise ValueError('no reference for policy %s' % rec.name)
            yield ev, g, keep, set(ev['after'][g])


def check(path):
    rec = Record(path)
    calls = bad = 0
    for ev, g, want, got in replay(rec):
        calls += 1
        if want != got:
            bad += 1
            if bad <= 3:
                print('  %s layer %d head %d pos0 %d: reference keeps %s, kvbench %s' % (
                    rec.name, ev['layer'], g, ev['pos0'], sorted(want - got), sorted(got - want)))
    return calls, bad


if __name__ == '__main__':
    calls, bad = check(sys.argv[1])
    print('%d layer calls, %d differ' % (calls, bad))
    sys.exit(1 if bad else 0)
