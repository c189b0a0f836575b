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
                sim=1: utils_hh's mask simulation, replayed as its code runs it
                (h2o_sim_event below)
  knorm, random schedule=prompt: evictions only in the call that ends the prompt
                (n tokens), which keeps every position >= n - recent and B in all
                of the prompt; every_step: after each call at most B, the newest
                max(recent, 1) kept (the scores, key norms or draws, are not in the
                record: the schedule and window are checked, not the choice)
  tova          score = the newest query's attention averaged over all heads;
                keep the B best                                   (A6)
  keyformer     score = sum over queries (prompt and generation) and over the query
                heads sharing the KV head of softmax((x + g) / tau), x the raw logits,
                g the noise (gumbel | gaussian | constant | none = plain softmax(x),
                H2O's score), tau = tau_init + itr (tau_end - tau_init) / steps,
                itr = 0 in the prompt, t - n_prompt + 1 at position t after it;
                k = B, w = int(k * recent / 100); the kept set counts the next token.
                selection=paper: once more than k - 1 are held, keep the w - 1 newest
                and the min(k - w, k - 1) best others. selection=authors (the
                authors' mask, ANDed step to step): once N > k tokens have been
                seen, the mask over N + 1 columns keeps the last w and the k - w
                best of the columns before the last w (all when w = 0), dropped
                tokens scoring 0; only held tokens stay      (A5)
  snapkv        once, at the end of the prompt (n tokens, n > B): votes = the softmax
                rows of the last w = min(window, B) prompt queries summed over those
                queries, for each prefix key (position < n - w), per query head;
                pool1d (avg: zero-padded sum / kernel; max), summed over the query
                heads of the KV head; keep the B - w best prefix keys and every key
                at position >= n - w; nothing evicted afterwards  (A7)
                granularity=kv_head: the group's votes are summed BEFORE pooling
                (KVCache-Factory's kv_head mode, AdaKV's gqa_support), one score
                per KV head; granularity=query_head: each query head's votes
                pooled and each query head selecting its own B - w (SnapKV's
                code after repeat_kv), the KV head keeping the union. The same
                units serve pyramidkv's, adakv's (caps shared among the units)
                and zigzag's (LMBA summed over the units) cuts
  pyramidkv     snapkv with per-layer prefix caps: min = (B - w) // beta,
                max = 2 (B - w) - min, clipped to n - w; n <= B keeps all,
                n < 2 (B - w) keeps B - w in every layer, else layer l keeps
                cap_l = max - l * ((max - min) // (L - 1)) (alloc=factory), or the
                same line rounded so the caps sum to L (B - w) (alloc=exact) (A8)
  adakv         snapkv's per-KV-head scores s[g, j]; per layer with base b (B - w, or
                pyramidkv's cap with layers=pyramid): count_g = the number of head g's
                scores among the layer's KV * b best (normalize=1: each head's scores
                times its b best's share of its total); f = int(floor * b);
                alloc=exact: cap_g = f + (b - f) count_g / b rounded by largest remainder
                (ties to the lower head), summing to KV * b; alloc=factory:
                round(count_g (1 - floor) + f); head g keeps its cap_g best prefix keys
                and every key at position >= n - w                (A9)
  zigzag        snapkv's per-KV-head scores; LMBA of a head = the fewest of its prefix
                scores, best first, whose running sum reaches threshold * their sum
                (at least 1); per layer, summed over its heads; bb = int(bound * b),
                cap_l = bb + (b - bb) L LMBA_l / sum LMBA with layers above n - w held
                there and the excess shared by the others (alloc=exact, largest
                remainder, summing to L b) or round()ed and clipped (alloc=kvpress);
                every head of layer l keeps its cap_l best prefix keys and every key
                at position >= n - w. All layers are cut in the last layer's call at
                the prompt's end, so the earlier layers' cut shows in their next
                call's `before`                                   (A12)
  cascade       per KV head: S sinks (the first S tokens), then C sub-caches of
                W = (limit - S) / C tokens, each a list oldest first (the record's
                limit counts the sinks: N = C W cascade slots + S). The prompt is
                cut into chunks [k stride, (k+1) stride) and its end, every later
                token is a chunk of one (no prompt length: every call); at a
                chunk's end its tokens are inserted in position order: a sink
                while fewer than S, else carried down the sub-caches: sub-cache i
                takes it when t <= N + S (eager_fill) or (t - S) % 2^i == 0 (full:
                the oldest leaves it and is carried on; past the last it is
                dropped); one not taking it appends it when empty, else keeps the
                better of it and its newest token (score >= keeps the carry).
                Score: per query head P = beta^n P + D over the chunk's calls (D the
                recorded decayed column sums), red = max or mean over the group
                (summed in head order, / G), cached score = beta^L score +
                (1 - beta) red, a chunk token's = (1 - beta) red  (A10)
Ties go to the older position.

The Keyformer noise is the one the policy documents (policies/keyformer.c),
a counter-based draw so that it can be replayed here: splitmix64's finaliser
chained over (seed, layer, query head, query position, key position).
"""
from fractions import Fraction
import itertools
import struct
import sys

import numpy as np


class Record:
    def __init__(self, path):
        self.d = open(path, 'rb').read()
        self.o = 0
        assert self.d[:4] == b'KVRC', 'not a kvbench attention record'
        self.o = 4
        version, self.limit = self.i32(2)
        assert version in (1, 2, 3)
        self.version = version
        self.n_prompt, self.seed, self.n_layers, self.layer_limit = 0, 0, 0, []
        if version >= 2:
            (self.n_prompt,) = self.i32(1)
            (self.seed,) = struct.unpack_from('<Q', self.d, self.o)
            self.o += 8
            (self.n_layers,) = self.i32(1)
            self.layer_limit = list(self.i32(self.n_layers))
        (n,) = self.i32(1)
        self.name = self.d[self.o:self.o + n].decode()
        self.o += n
        (np_,) = self.i32(1)
        self.params = list(struct.unpack_from('<%dd' % np_, self.d, self.o))
        self.o += 8 * np_
        self.start = self.o

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
        self.o = self.start
        while self.o < len(self.d):
            layer, H, KV, n_new, pos0, stride, needs = self.i32(7)
            before = self.heads(KV)
            last = self.f32(H * stride).reshape(H, stride) if needs & 1 else None
            colsum = self.f32(H * stride).reshape(H, stride) if needs & 2 else None
            lg_keys = None
            if needs & 4 and self.version >= 3:  # the keys the rows cover (before a window layer's trim)
                lg_keys = self.heads(KV)
            logits = self.f32(H * n_new * stride).reshape(H, n_new, stride) if needs & 4 else None
            win_pos0, win_n, window = 0, 0, None
            if needs & 8:
                win_pos0, win_n = self.i32(2)
                window = self.f32(H * win_n * stride).reshape(H, win_n, stride)
            dcolsum = self.f32(H * stride).reshape(H, stride) if needs & 16 else None
            after = self.heads(KV)
            yield dict(layer=layer, H=H, KV=KV, n_new=n_new, pos0=pos0, before=before, last=last,
                       colsum=colsum, logits=logits, lg_keys=lg_keys, win_pos0=win_pos0, win_n=win_n, window=window,
                       dcolsum=dcolsum, after=after)


def best(scores, k):
    """The k positions with the highest score; ties to the older (smaller) position."""
    ranked = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))
    return {p for p, _ in ranked[:k]}


# ------------------------------------------------------------- keyformer

U64 = np.uint64


def splitmix(z):
    """splitmix64's finaliser on a uint64 array (wrapping arithmetic)."""
    with np.errstate(over='ignore'):
        z = z + U64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> U64(30))) * U64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> U64(27))) * U64(0x94D049BB133111EB)
        return z ^ (z >> U64(31))


def uniform(u):
    return ((u >> U64(11)).astype(np.float64) + 0.5) * 2.0 ** -53


EULER = 0.57721566490153286           # Gumbel(0, 1) mean
GUMBEL_SD = np.pi / np.sqrt(6.0)      # and standard deviation
NOISES = ['gumbel', 'gaussian', 'constant', 'none']


def keyformer_noise(kind, seed, layer, head, qpos, kpos):
    """The logit adjustment for keys at positions kpos seen by one query."""
    one = lambda v: np.array([v], dtype=np.uint64)
    base = splitmix(splitmix(splitmix(splitmix(one(seed)) ^ one(layer)) ^ one(head)) ^ one(qpos))
    u = splitmix(base ^ np.asarray(kpos, dtype=np.uint64))
    if kind == 'gumbel':
        return -np.log(-np.log(uniform(u)))
    if kind == 'gaussian':
        return EULER + GUMBEL_SD * np.sqrt(-2.0 * np.log(uniform(u))) * np.cos(2 * np.pi * uniform(splitmix(u)))
    if kind == 'constant':
        return np.full(len(kpos), EULER)
    return np.zeros(len(kpos))


def keyformer_row_score(rec, layer, head, qpos, x, kpos):
    """f = softmax((x + g) / tau) over the keys the query sees (x finite)."""
    recent, tau_init, tau_end, steps, noise = rec.params[:5]
    kind = NOISES[int(noise)]
    seen = np.isfinite(x)
    if kind == 'none':
        y = x[seen]
    else:
        itr = min(qpos - rec.n_prompt + 1, steps) if qpos >= rec.n_prompt else 0
        tau = tau_init + itr * (tau_end - tau_init) / steps
        y = (x[seen] + keyformer_noise(kind, rec.seed, layer, head, qpos, np.asarray(kpos)[seen])) / tau
    e = np.exp(y - y.max())
    f = np.zeros(len(x))
    f[seen] = e / e.sum()
    return f


def keyformer_selection(rec):
    """'authors' (the default) or 'paper'; a record without the parameter is 'paper'."""
    return ['authors', 'paper'][int(rec.params[5])] if len(rec.params) > 5 else 'paper'


def keyformer_authors_step(held, sc, N, k, r, have_scores):
    """One step of the authors' token mask (keyformer-llm: modeling_gptj.py's
    _attn, mpt attention.py), after the attention over the first N tokens:
    the mask has N + 1 columns (the token about to be generated is column
    N). Once N > k: the last r columns are kept, and the k - r best-scored
    columns of score[:, :-r] (all N columns when r = 0), where a token
    dropped earlier has score 0; the mask is ANDed with the previous one, so
    only held tokens can be kept."""
    if N <= k:
        return set(held)
    recent = set(range(N + 1 - r, N + 1)) if r > 0 else set()
    columns = range(N - r) if r > 0 else range(N)
    key = best_of([(p, sc.get(p, 0.0)) for p in columns], k - r) if k - r > 0 else set()
    if not have_scores and r > 0 and len([p for p in held if p < N - r]) > k - r:
        raise ValueError('keyformer: no logits at a step whose selection depends on them')
    return set(held) & (recent | key)


# ------------------------------------------------------------- snapkv / pyramidkv

def pool1d(v, kernel, kind):
    """Stride 1, padding kernel // 2: avg counts the zero padding (avg_pool1d), max ignores it."""
    r = kernel // 2
    m = len(v)
    pad = np.concatenate([np.full(r, 0.0 if kind == 'avg' else -np.inf), v,
                          np.full(r, 0.0 if kind == 'avg' else -np.inf)])
    if kind == 'max':
        out = np.full(m, -np.inf)
        for d in range(kernel):
            out = np.maximum(out, pad[d:d + m])
        return out
    acc = np.zeros(m)
    for d in range(kernel):
        acc = acc + pad[d:d + m]
    return acc / kernel


def pyramid_caps(n, B, w, L, beta, alloc):
    """Prefix tokens each layer keeps besides the window (None: everything)."""
    if n <= B:
        return [None] * L
    if n < 2 * (B - w) or L == 1:
        return [B - w] * L
    lo = (B - w) // beta
    hi = 2 * (B - w) - lo
    if hi >= n - w:
        hi = n - w
        lo = 2 * (B - w) - hi
    if alloc == 'factory':
        steps = (hi - lo) // (L - 1)
        return [hi - l * steps for l in range(L)]
    line = [Fraction(hi) - Fraction(l * (hi - lo), L - 1) for l in range(L)]
    caps = [int(c) for c in line]            # floors (all non-negative)
    order = sorted(range(L), key=lambda l: (-(line[l] - caps[l]), l))
    for l in order[:L * (B - w) - sum(caps)]:
        caps[l] += 1
    assert sum(caps) == L * (B - w)
    return caps


SNAP_POLICIES = ('snapkv', 'pyramidkv', 'adakv', 'zigzag')


def snap_setup(rec, first_call):
    """(n, w, caps) of a snapkv / pyramidkv / adakv / zigzag record: each layer's
    prefix budget per head (adakv: the base the heads share; zigzag: the average)."""
    B = rec.limit
    n = rec.n_prompt or first_call
    w = min(int(rec.params[0]), B)
    L = rec.n_layers
    if rec.name == 'pyramidkv':
        caps = pyramid_caps(n, B, w, L, int(rec.params[3]), ['exact', 'factory'][int(rec.params[4])])
    elif rec.name == 'adakv' and int(rec.params[4]) == 1:   # layers=pyramid
        caps = pyramid_caps(n, B, w, L, int(rec.params[5]), ['exact', 'factory'][int(rec.params[6])])
    else:
        caps = [None if n <= B else B - w] * L
    return n, w, caps


GRANULARITY_INDEX = {'snapkv': 3, 'pyramidkv': 5, 'adakv': 8, 'zigzag': 6}


def snap_granularity(rec):
    """'kv_head' or 'query_head' (a record without the parameter: kv_head)."""
    i = GRANULARITY_INDEX[rec.name]
    return ['kv_head', 'query_head'][int(rec.params[i])] if len(rec.params) > i else 'kv_head'


def snap_limits(rec, n, w, caps, KV, H):
    """The per-layer head limits a snap record starts with: the cap + w, or for
    adakv and zigzag the most their rule can give one head. Per query head,
    a KV head may hold the union of its G query heads' selections."""
    G = H // KV if snap_granularity(rec) == 'query_head' else 1
    units = KV * G
    m = n - w
    out = []
    for c in caps:
        if c is None:
            out.append(rec.limit)
            continue
        if rec.name == 'adakv':
            f = int(rec.params[3] * c)
            unit = f + (c - f) * units
        elif rec.name == 'zigzag':
            bb = int(rec.params[4] * c)
            unit = bb + rec.n_layers * (c - bb)
        else:
            unit = c
        out.append(w + min(m, G * min(m, unit)))
    return out


def ada_caps(scores, b, alpha, alloc, normalize):
    """Ada-KV's prefix caps of the KV heads of one layer (scores: per head, by position)."""
    KV, m = len(scores), len(scores[0])
    if b <= 0:
        return [0] * KV
    weight = [1.0] * KV
    if normalize:
        for g in range(KV):
            desc = sorted(scores[g].tolist(), reverse=True)
            total, top = 0.0, 0.0
            for j, x in enumerate(desc):
                total += x
                if j + 1 == b:
                    top = total
            weight[g] = top / total if total > 0 else 0.0
    ranked = sorted((-(float(scores[g][j]) * weight[g]), j, g) for g in range(KV) for j in range(m))
    count = [0] * KV
    for _, _, g in ranked[:KV * b]:
        count[g] += 1
    f = int(alpha * b)
    if alloc == 'factory':
        return [min(max(round(c * (1 - alpha) + f), 0), m) for c in count]
    ideal = [f + Fraction((b - f) * c, b) for c in count]
    caps = [int(x) for x in ideal]
    for g in sorted(range(KV), key=lambda g: (-(ideal[g] - caps[g]), g))[:KV * b - sum(caps)]:
        caps[g] += 1
    assert sum(caps) == KV * b and all(f <= c <= m for c in caps)
    return caps


def lmba(score, tau):
    """The fewest scores, best first, whose running sum reaches tau of their sum (>= 1)."""
    desc = sorted(score.tolist(), reverse=True)
    total = 0.0
    for x in desc:
        total += x
    run, below = 0.0, 0
    for x in desc:
        run += x
        below += run < tau * total
    return min(below + 1, len(desc))


def zigzag_caps(lm, m, b, bound, alloc):
    """ZigZagKV's prefix caps per layer from the layers' LMBA (summed over heads)."""
    L = len(lm)
    if alloc == 'kvpress':
        bbr = bound * b
        total = float(sum(lm))
        return [min(max(round(bbr + (b - bbr) * L * (x / total)), 0), m) for x in lm]
    bb = int(bound * b)
    caps, free, share = [None] * L, set(range(L)), Fraction(L * (b - bb))
    while free:
        S = sum(lm[l] for l in free)
        over = [l for l in free if bb + share * lm[l] / S > m]
        if not over:
            break
        for l in over:                       # held at m, the excess to the others
            caps[l] = m
            free.discard(l)
            share -= m - bb
    if free:
        S = sum(lm[l] for l in free)
        ideal = {l: bb + share * lm[l] / S for l in free}
        for l in free:
            caps[l] = int(ideal[l])
        left = L * b - sum(caps)
        for l in sorted(free, key=lambda l: (-(ideal[l] - caps[l]), l))[:left]:
            caps[l] += 1
    assert sum(caps) == L * b and all(bb <= c <= m for c in caps)
    return caps


def best_of(scores, k):
    """best() on a (positions, scores) pair of arrays, exact ties to the older."""
    order = sorted(range(len(scores)), key=lambda i: (-scores[i][1], scores[i][0]))
    return {scores[i][0] for i in order[:k]}


def trim_floor(swa, ev):
    """A sliding-window layer keeps only what the next query can see: the
    positions >= last query + 2 - window (swa = (window, windowed layers));
    None for a global layer or a model without windows."""
    if not swa or ev['layer'] not in swa[1]:
        return None
    return ev['pos0'] + ev['n_new'] + 1 - swa[0]


def replay_trims(rec, swa):
    """Yields (event, KV head, expected set, recorded set) for what each
    layer call started from: the slots the previous call left plus this
    call's tokens, less what a window layer frees (trim_floor) - kvbench's
    slots before the policy ran, for every policy that follows the trim.
    Window layers only (a global one starts from what it left). ZigZag cuts
    a layer in a later layer's call, so what a call leaves is not final
    there: replay checks its cut calls, trims included."""
    after = {}
    for ev in rec.events():
        floor = trim_floor(swa, ev)
        new = set(range(ev['pos0'], ev['pos0'] + ev['n_new']))
        for g in range(ev['KV']) if floor is not None and rec.name != 'zigzag' else []:
            want = {p for p in after.get((ev['layer'], g), set()) | new if p >= floor}
            yield ev, g, want, set(ev['before'][g])
            after[(ev['layer'], g)] = set(ev['after'][g])


def replay(rec, swa=None):
    """Yields (event, expected kept set, recorded kept set) per (layer call, KV head)."""
    B = rec.limit
    state = {}       # (layer, g) -> {position: score}   (h2o, keyformer)
    snap = None      # snapkv / pyramidkv: n, w, caps, votes per layer, layers done
    for ev in rec.events():
        if rec.name in SNAP_POLICIES:
            if snap is None:
                n, w, caps = snap_setup(rec, ev['n_new'])
                want = snap_limits(rec, n, w, caps, ev['KV'], ev['H'])
                if rec.layer_limit and rec.layer_limit != want:
                    raise ValueError('per-layer budgets: kvbench %s, reference %s' % (rec.layer_limit, want))
                snap = dict(n=n, w=w, caps=caps, votes={}, done=set(), stash={}, pending={})
            # zigzag: a layer cut in a later layer's call shows it in its next call
            cut = snap['pending'].pop(ev['layer'], None)
            floor = trim_floor(swa, ev)
            for g in range(ev['KV']) if cut is not None else []:
                new = set(range(ev['pos0'], ev['pos0'] + ev['n_new']))
                want = {p for p in cut[g] | new if floor is None or p >= floor}
                yield ev, g, want, set(ev['before'][g])
            snap_event(rec, snap, ev)
        group = ev['H'] // ev['KV']
        # prefill=whole (the records here use it): the prompt is read with
        # full attention and nothing is evicted before its last token; the
        # every-step rules then start (their scores gathered all along)
        hold = rec.n_prompt > 0 and ev['pos0'] + ev['n_new'] < rec.n_prompt
        for g in range(ev['KV']):
            before = ev['before'][g]
            held = set(before)
            if rec.name == 'window':
                keep = set(sorted(held)[-B:]) if len(held) > B and not hold else held
            elif rec.name == 'streamingllm':
                s = min(int(rec.params[0]), B)
                ordered = sorted(held)
                keep = set(ordered[:s] + ordered[len(ordered) - (B - s):]) if len(held) > B and not hold else held
            elif rec.name == 'h2o' and int(rec.params[1]) == 1:
                keep = h2o_sim_event(rec, state, ev, g)
            elif rec.name in ('knorm', 'random'):
                keep = floor_event(rec, state, ev, g)
            elif rec.name == 'h2o':
                sc = state.setdefault((ev['layer'], g), {})
                sc = {p: sc.get(p, 0.0) for p in held}          # scores leave with their tokens
                for j, p in enumerate(before):
                    sc[p] += sum(ev['colsum'][q][j] for q in range(g * group, (g + 1) * group))
                nxt = int(rec.params[1])
                keep = held
                if len(held) > B - nxt and not hold:
                    r = int(B * rec.params[0])
                    heavy = B - r
                    r = max(r - nxt, 0)
                    recent = set(sorted(held)[len(held) - r:]) if r > 0 else set()
                    keep = recent | best({p: v for p, v in sc.items() if p not in recent}, min(heavy, B - nxt))
                state[(ev['layer'], g)] = {p: sc[p] for p in keep}
            elif rec.name == 'tova':
                keep = held
                if len(held) > B and not hold:
                    mean = ev['last'].mean(axis=0)               # over all heads of the layer
                    keep = best({p: mean[j] for j, p in enumerate(before)}, B)
            elif rec.name == 'keyformer':
                sc = state.setdefault((ev['layer'], g), {})
                sc = {p: sc.get(p, 0.0) for p in held}
                # each row's softmax is over the keys its query saw; a key a
                # window layer then freed takes its share with it
                keys = ev['lg_keys'][g] if ev['lg_keys'] is not None else before
                for q in range(g * group, (g + 1) * group) if ev['logits'] is not None else []:
                    for r in range(ev['n_new']):
                        f = keyformer_row_score(rec, ev['layer'], q, ev['pos0'] + r,
                                                ev['logits'][q][r][:len(keys)], keys)
                        for j, p in enumerate(keys):
                            if p in sc:
                                sc[p] += f[j]
                k = B
                w = int(k * rec.params[0] / 100)
                keep = held
                if hold:
                    pass                                         # prefill=whole: the prompt is still being read
                elif keyformer_selection(rec) == 'authors':
                    keep = keyformer_authors_step(held, sc, ev['pos0'] + ev['n_new'], k, w, ev['logits'] is not None)
                elif len(held) > k - 1:
                    r = max(w - 1, 0)
                    recent = set(sorted(held)[len(held) - r:]) if r > 0 else set()
                    keep = recent | best_of([(p, v) for p, v in sc.items() if p not in recent], min(k - w, k - 1))
                state[(ev['layer'], g)] = {p: sc[p] for p in keep}
            elif rec.name in SNAP_POLICIES:
                keep = snap['keep'].get(g, held)
            elif rec.name == 'cascade':
                keep = cascade_event(rec, state, ev, g, trim_floor(swa, ev))
            else:
                raise ValueError('no reference for policy %s' % rec.name)
            yield ev, g, keep, set(ev['after'][g])
    if snap and snap['pending']:
        raise ValueError('the cut of layers %s never shows in this record (feed the prompt in a call of its own)'
                         % sorted(snap['pending']))


# ------------------------------------------------------------- h2o sim=1

def h2o_sim_budgets(rec, n):
    """heavy, recent as utils_hh sizes them: int(ratio * n) each on the prompt's
    n tokens (ratios recorded as params 2, 3); a token budget B: int(B * recent)
    recent and the rest heavy."""
    if rec.params[2] > 0 or rec.params[3] > 0:
        heavy, recent = int(rec.params[2] * n), int(rec.params[3] * n)
    else:
        recent = int(rec.limit * rec.params[0])
        heavy = rec.limit - recent
    if rec.limit != heavy + recent:
        raise ValueError('h2o sim: limit %d recorded, heavy %d + recent %d expected' % (rec.limit, heavy, recent))
    return heavy, recent


def h2o_sim_event(rec, state, ev, g):
    """LlamaAttention_heavy_hitter (FMInference/H2O utils_hh) on one KV head:
    `prev` holds a score for every position of the sequence (zero once masked),
    `mask` the positions the next forward may attend (None: all). After a
    forward leaving K tokens, if K > heavy + recent: mask = the last recent of
    the K + 1 positions (the new token's included) and the heavy best of the
    first K - recent; prev is zeroed outside the mask except for its last
    recent positions. The kvbench cache must hold exactly the mask."""
    st = state.setdefault((ev['layer'], g), {'prev': {}, 'mask': None, 'n': rec.n_prompt})
    group = ev['H'] // ev['KV']
    before, pos0, n_new = ev['before'][g], ev['pos0'], ev['n_new']
    if st['n'] <= 0:
        st['n'] = pos0 + n_new
    new = set(range(pos0, pos0 + n_new))
    seen = set(range(pos0)) if st['mask'] is None else {p for p in st['mask'] if p < pos0}
    if set(before) != seen | new:
        raise ValueError('h2o sim: layer %d head %d attends %s, utils_hh %s' % (
            ev['layer'], g, sorted(set(before) ^ (seen | new)), 'differently'))
    prev = st['prev']
    for j, p in enumerate(before):        # masked positions receive no attention
        prev[p] = prev.get(p, 0.0) + sum(float(ev['colsum'][q][j]) for q in range(g * group, (g + 1) * group))
    K = pos0 + n_new
    if K < st['n']:
        return set(before)                 # the prompt's one forward is not over
    heavy, recent = h2o_sim_budgets(rec, st['n'])
    if K <= heavy + recent:
        st['mask'] = None
        return set(before)
    mask = set(range(K + 1 - recent, K + 1))
    if heavy:
        mask |= best({p: prev.get(p, 0.0) for p in range(K - recent)}, heavy)
    for p in range(K):
        if p not in mask and p < K - recent:
            prev[p] = 0.0
    st['mask'] = mask
    return {p for p in mask if p < K}


def floor_event(rec, state, ev, g):
    """knorm and random: the schedule and the window (see the module's doc)."""
    before, after = ev['before'][g], set(ev['after'][g])
    B, every, recent = rec.limit, int(rec.params[0]) == 1, int(rec.params[1])
    st = state.setdefault((ev['layer'], g), {'n': rec.n_prompt, 'cut': False})
    if st['n'] <= 0:
        st['n'] = ev['pos0'] + ev['n_new']
    end = ev['pos0'] + ev['n_new']
    if every:
        w = min(max(recent, 1), B)
        if len(before) <= B or (rec.n_prompt > 0 and end < rec.n_prompt):  # prefill=whole: held while reading
            return set(before)
        must = set(sorted(before)[len(before) - w:])
        ok = len(after) == B and must <= after and after <= set(before)
        return after if ok else must
    if st['cut'] or end < st['n'] or len(before) <= B:
        st['cut'] = st['cut'] or end >= st['n']
        return set(before)
    st['cut'] = True
    w = min(recent, B)
    must = {p for p in before if p >= st['n'] - w}
    prompt = {p for p in after if p < st['n']}
    ok = must <= after and after <= set(before) and len(prompt) == B
    return after if ok else must


# ------------------------------------------------------------- cascade

class CascadeHead:
    """One (layer, KV head) of the Cascading KV cache."""

    def __init__(self, C):
        self.taken = 0                        # sinks taken (a window may have freed some since)
        self.sinks = []
        self.subs = [[] for _ in range(C)]   # each oldest first
        self.score = {}                       # position -> score
        self.P = {}                           # position -> per query head sums of the open chunk
        self.new = []                         # the open chunk's positions
        self.L = 0                            # and its length

    def held(self):
        return set(self.sinks).union(*self.subs)


def cascade_geometry(rec):
    S, C = int(rec.params[0]), int(rec.params[1])
    n = rec.limit - S
    C = min(C, n)
    W = n // C
    if C * W != n:
        raise ValueError('cascade: limit %d - sinks %d is not C x W' % (rec.limit, S))
    return S, C, W


def cascade_insert(st, t, S, C, W, eager):
    if st.taken < S:
        st.taken += 1
        st.sinks.append(t)
        return
    early = eager and t <= C * W + S
    carry = t
    for i in range(C):
        sub = st.subs[i]
        if early or (t - S) % (2 ** i) == 0:
            sub.append(carry)
            if len(sub) <= W:
                return
            carry = sub.pop(0)                # the oldest goes down a level
        else:
            if not sub:
                sub.append(carry)
            elif st.score[carry] >= st.score[sub[-1]]:
                sub[-1] = carry
            return
    # pushed out of the last sub-cache: dropped


def cascade_trim(st, floor):
    """A window layer freed the positions below floor: they leave the
    sinks (which are not replaced: sinks are the first S tokens), the
    sub-caches (which then take tokens as when not yet full), the scores
    and the open chunk."""
    st.sinks = [p for p in st.sinks if p >= floor]
    st.subs = [[p for p in sub if p >= floor] for sub in st.subs]
    st.score = {p: v for p, v in st.score.items() if p >= floor}
    st.P = {p: v for p, v in st.P.items() if p >= floor}
    st.new = [p for p in st.new if p >= floor]


def cascade_event(rec, state, ev, g, floor=None):
    S, C, W = cascade_geometry(rec)
    beta, eager, stride = rec.params[2], int(rec.params[4]) != 0, int(rec.params[5])
    mode = ['max', 'mean'][int(rec.params[3])]
    st = state.setdefault((ev['layer'], g), CascadeHead(C))
    if floor is not None:
        cascade_trim(st, floor)
    before, pos0, n, np_ = ev['before'][g], ev['pos0'], ev['n_new'], rec.n_prompt
    G = ev['H'] // ev['KV']
    # the engine stopped its forwards at the chunks' boundaries
    if np_ > 0 and pos0 >= np_:
        if n != 1:
            raise ValueError('cascade: %d tokens in one forward after the prompt' % n)
    elif pos0 // stride != (pos0 + n - 1) // stride or (np_ > 0 and pos0 + n > np_):
        raise ValueError('cascade: a forward over %d..%d crosses a chunk boundary' % (pos0, pos0 + n - 1))
    had = st.held() | set(st.new)
    fresh = [p for p in range(pos0, pos0 + n) if floor is None or p >= floor]  # a long call frees its own first
    if set(before) != had | set(fresh) or had & set(fresh):
        raise ValueError('cascade: layer %d head %d holds %s before, the reference %s + the new tokens' % (
            ev['layer'], g, sorted(before), sorted(had)))
    st.new += fresh
    st.L += n
    b = beta ** n
    D = ev['dcolsum']
    for j, p in enumerate(before):
        old = st.P.get(p, [0.0] * G)
        st.P[p] = [b * old[k] + float(D[g * G + k][j]) for k in range(G)]
    e = pos0 + n
    if not (np_ <= 0 or e >= np_ or e % stride == 0):
        return set(before)                   # the chunk goes on in the next call
    omb, bL = 1.0 - beta, beta ** st.L
    for p, x in st.P.items():
        if mode == 'max':
            r = max(x)
        else:
            r = x[0]
            for v in x[1:]:
                r += v
            r = r / G
        st.score[p] = bL * st.score[p] + omb * r if p in st.score else omb * r
    for t in st.new:
        cascade_insert(st, t, S, C, W, eager)
    keep = st.held()
    st.score = {p: st.score[p] for p in keep}
    st.new, st.P, st.L = [], {}, 0
    return keep


def snap_event(rec, snap, ev):
    """Adds the event's window rows to the votes and, at the prompt's end,
    fixes snap['keep'][g] for each KV head of the layer."""
    n, w, layer = snap['n'], snap['w'], ev['layer']
    m = n - w
    cap = snap['caps'][layer]
    snap['keep'] = {}
    if cap is None or layer in snap['done']:
        return
    group = ev['H'] // ev['KV']
    votes = snap['votes'].setdefault(layer, np.zeros((ev['H'], max(m, 0))))
    if ev['window'] is not None:
        for q in range(ev['H']):
            before = ev['before'][q // group]
            for r in range(ev['win_n']):          # each row: a query of the observation window
                assert n - w <= ev['win_pos0'] + r < n
                for j, p in enumerate(before):
                    if p < m:
                        votes[q][p] = votes[q][p] + ev['window'][q][r][j]
    if ev['pos0'] + ev['n_new'] < n:
        return
    snap['done'].add(layer)
    kernel, kind = int(rec.params[1]), ['avg', 'max'][int(rec.params[2])]
    # the scoring units: per KV head, its query heads' votes summed and then
    # pooled (KVCache-Factory's kv_head mode, AdaKV's gqa_support); or per
    # query head, pooled (SnapKV's code after repeat_kv)
    per_query = snap_granularity(rec) == 'query_head'
    upk = group if per_query else 1
    if per_query:
        scores = [pool1d(votes[q], kernel, kind) for q in range(ev['H'])]
    else:
        scores = [pool1d(votes[g * group:(g + 1) * group].sum(axis=0), kernel, kind) for g in range(ev['KV'])]

    def cut(before, score, k):
        prefix = [(p, score[p]) for p in before if p < m]
        return {p for p in before if p >= m} | best_of(prefix, k)

    def cut_union(before, g, caps):
        """KV head g keeps the union of its units' selections."""
        kept = set()
        for u in range(g * upk, (g + 1) * upk):
            kept |= cut(before, scores[u], caps[u])
        return kept

    if rec.name == 'zigzag':
        snap['stash'][layer] = (scores, ev['before'])
        if len(snap['stash']) < rec.n_layers:
            return
        lm = [sum(lmba(s, rec.params[3]) for s in snap['stash'][l][0]) for l in range(rec.n_layers)]
        caps = zigzag_caps(lm, m, cap, rec.params[4], ['exact', 'kvpress'][int(rec.params[5])])
        for l, (sc, before) in snap['stash'].items():
            kept = []
            for g in range(ev['KV']):
                kept.append(set())
                for u in range(g * upk, (g + 1) * upk):
                    kept[g] |= cut(before[g], sc[u], caps[l])
            if l == layer:
                snap['keep'] = dict(enumerate(kept))
            else:
                snap['pending'][l] = kept
        return
    unit_caps = [cap] * len(scores)
    if rec.name == 'adakv':
        unit_caps = ada_caps(scores, cap, rec.params[3], ['exact', 'factory'][int(rec.params[6])], int(rec.params[7]))
    for g in range(ev['KV']):
        snap['keep'][g] = cut_union(ev['before'][g], g, unit_caps)


def evicted(rec):
    """Whether any token left the cache: within a layer call, or between two
    calls of a layer (a cut made in another layer's call, as zigzag's)."""
    last = {}
    for ev in rec.events():
        for g, (b, a) in enumerate(zip(ev['before'], ev['after'])):
            if len(a) < len(b) or not last.get((ev['layer'], g), set()) <= set(b):
                return True
            last[(ev['layer'], g)] = set(a)
    return False


def check(path, swa=None):
    """swa: (window, windowed layers) of the model, whose trims are then
    checked too (pass None for a run the engine does not trim: in-cache
    positions)."""
    rec = Record(path)
    calls = bad = 0
    try:
        for ev, g, want, got in itertools.chain(replay_trims(rec, swa) if swa else (), replay(rec, swa)):
            calls += 1
            if want != got:
                bad += 1
                if bad <= 3:
                    print('  %s layer %d head %d pos0 %d: reference keeps %s, kvbench %s' % (
                        rec.name, ev['layer'], g, ev['pos0'], sorted(want - got), sorted(got - want)))
    except ValueError as e:
        print('  %s: %s' % (rec.name, e))
        bad += 1
    return calls, bad


if __name__ == '__main__':
    calls, bad = check(sys.argv[1])
    print('%d layer calls, %d differ' % (calls, bad))
    sys.exit(1 if bad else 0)
