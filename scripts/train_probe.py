#!/usr/bin/python3
"""train_probe.py - train kvprobe, a small Llama-architecture model meant to
retrieve, so that kvbench's retrieval experiments measure something on a CPU
(docs/PROBE.md: the first two-hour CPU runs did not get there).

The model is the Llama forward as kvbench runs it (tests/reference/llama_ref.py):
RMSNorm (eps 1e-5) before attention and FFN, rotary embeddings on adjacent pairs
(2i, 2i+1) with base 10000 (llama2.c / GGUF layout), grouped-query attention,
SwiGLU, a classifier tied to the embedding. The vocabulary is Llama 2's
(sentencepiece, ../shared/models/tokenizers/llama2), so prompts are plain text.

Training data, generated on the fly from a seeded RNG:
  - retrieval episodes in kvbench's exact prompt wording (datasets/generated.c:
    passkey and needle; datasets/ruler.c: RULER niah single / multikey /
    multivalue / multiquery), with fresh keys, values, depths and fillers;
  - plain language-modelling text (PG-19 books, Multi-News articles);
  - copying drills: a text span or a list of random words, a little text,
    the same span again.
Held out entirely: the Paul Graham essays (kvbench's needle and RULER
haystack) and WikiText-2 (the perplexity report). The needle of kvbench's
needle task (San Francisco, Dolores Park) never appears in training.

Loss: the mean over every answer token, plus the mean over a share of the
drills' repeated tokens (--copy-share), plus the mean over a random share of
the other positions (--lm-share): the 32000-way classifier dominates the
cost, so it is computed only where a loss is taken.

Output: --out FILE.bin in llama2.c's legacy format (shared classifier),
which `kvbench convert --tokenizer .../tokenizer.bin` turns into a GGUF,
FILE.csv with the losses per step, and FILE.pt (the PyTorch state).

Usage: /usr/bin/python3 scripts/train_probe.py --steps 1300 --seed 1 --out /tmp/kvprobe.bin
"""
import argparse
import glob
import json
import math
import os
import random
import struct
import sys
import time

import sentencepiece as spm
import torch
import torch.nn as nn
import torch.nn.functional as F

SHARED = os.environ.get('KVBENCH_SHARED', os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', 'shared'))
TOKENIZER = os.path.join(SHARED, 'models', 'tokenizers', 'llama2', 'tokenizer.model')
WORDS = '/usr/share/dict/american-english'

# ---------------------------------------------------------------- the model


class Block(nn.Module):
    def __init__(self, dim, hidden, n_heads, n_kv):
        super().__init__()
        hd = dim // n_heads
        self.n_heads, self.n_kv, self.hd = n_heads, n_kv, hd
        self.attn_norm = nn.Parameter(torch.ones(dim))
        self.wq = nn.Linear(dim, n_heads * hd, bias=False)
        self.wk = nn.Linear(dim, n_kv * hd, bias=False)
        self.wv = nn.Linear(dim, n_kv * hd, bias=False)
        self.wo = nn.Linear(n_heads * hd, dim, bias=False)
        self.ffn_norm = nn.Parameter(torch.ones(dim))
        self.w1 = nn.Linear(dim, hidden, bias=False)  # gate
        self.w2 = nn.Linear(hidden, dim, bias=False)  # down
        self.w3 = nn.Linear(dim, hidden, bias=False)  # up

    def forward(self, x, cos, sin, mask):
        B, T, _ = x.shape
        h = rmsnorm(x, self.attn_norm)
        q = rope(self.wq(h).view(B, T, self.n_heads, self.hd), cos, sin).transpose(1, 2)
        k = rope(self.wk(h).view(B, T, self.n_kv, self.hd), cos, sin).transpose(1, 2)
        v = self.wv(h).view(B, T, self.n_kv, self.hd).transpose(1, 2)
        # query head i reads KV head i // (n_heads / n_kv), as the engine does
        rep = self.n_heads // self.n_kv
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        s = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(self.hd)) + mask
        o = (s.softmax(dim=-1) @ v).transpose(1, 2).reshape(B, T, -1)
        x = x + self.wo(o)
        h = rmsnorm(x, self.ffn_norm)
        return x + self.w2(F.silu(self.w1(h)) * self.w3(h))


def rmsnorm(x, w, eps=1e-5):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def rope_tables(T, hd, base=10000.0):
    inv = base ** (-torch.arange(0, hd, 2, dtype=torch.float64) / hd)
    ang = torch.arange(T, dtype=torch.float64)[:, None] * inv[None, :]
    return torch.cos(ang).float(), torch.sin(ang).float()


def rope(x, cos, sin):
    """x [B, T, heads, hd]: rotate the adjacent pairs (2i, 2i+1) by pos * base^(-2i/hd)."""
    T = x.shape[1]
    c, s = cos[:T, None, :], sin[:T, None, :]
    a, b = x[..., 0::2], x[..., 1::2]
    return torch.stack((a * c - b * s, a * s + b * c), dim=-1).flatten(-2)


class Probe(nn.Module):
    def __init__(self, vocab, dim, hidden, n_layers, n_heads, n_kv, ctx):
        super().__init__()
        self.cfg = dict(vocab=vocab, dim=dim, hidden=hidden, n_layers=n_layers, n_heads=n_heads, n_kv=n_kv, ctx=ctx)
        self.emb = nn.Embedding(vocab, dim)
        self.layers = nn.ModuleList(Block(dim, hidden, n_heads, n_kv) for _ in range(n_layers))
        self.out_norm = nn.Parameter(torch.ones(dim))
        cos, sin = rope_tables(ctx + 512, dim // n_heads)
        self.register_buffer('cos', cos, persistent=False)
        self.register_buffer('sin', sin, persistent=False)
        for name, p in self.named_parameters():
            if p.dim() == 2:
                # residual outputs scaled down with depth (GPT-2's scheme)
                std = 0.02 / math.sqrt(2 * n_layers) if name.endswith(('wo.weight', 'w2.weight')) else 0.02
                nn.init.normal_(p, 0.0, std)

    @torch.no_grad()
    def init_prev_token_head(self, gain):
        """Start layer 0's first query head as a previous-token head.

        Retrieval rests on induction (a head that finds an earlier copy of
        the current token and reads what followed it), which needs a
        previous-token head below it; from random weights the two only
        appear together after a long plateau (Olsson et al. 2022), longer
        than this CPU budget. Here every embedding gets a shared constant
        component (the logits shift by the same amount for every token, so
        the classifier is unchanged), and head 0 of layer 0 reads it as a
        query and key whose rotary phases differ by one position in each
        pair: its score sum_i cos((t - s - 1) theta_i) peaks at the
        previous token. Everything stays trainable; gain 0 leaves the plain
        random start."""
        if gain <= 0:
            return
        L = self.layers[0]
        hd = L.hd
        self.emb.weight[:, 0] = 0.2
        theta = 10000.0 ** (-torch.arange(0, hd, 2, dtype=torch.float64) / hd)
        L.wq.weight[:hd].zero_()
        L.wk.weight[:hd].zero_()  # KV head 0 (shared with the group's other query heads)
        L.wq.weight[0:hd:2, 0] = gain
        L.wk.weight[0:hd:2, 0] = (gain * torch.cos(theta)).float()
        L.wk.weight[1:hd:2, 0] = (gain * torch.sin(theta)).float()

    def hidden(self, tokens):
        T = tokens.shape[1]
        mask = torch.full((T, T), float('-inf')).triu(1)
        x = self.emb(tokens)
        for L in self.layers:
            x = L(x, self.cos, self.sin, mask)
        return rmsnorm(x, self.out_norm)

    def logits(self, h):
        return h @ self.emb.weight.t()  # the classifier is the embedding (tied)


def write_llama2c(model, path):
    """llama2.c legacy format: 7 int32, then fp32 tensors in export.py's order,
    the two legacy RoPE tables, no classifier (shared: vocab_size > 0)."""
    c = model.cfg
    hd = c['dim'] // c['n_heads']
    Ls = model.layers

    def put(f, t):
        f.write(t.detach().float().contiguous().numpy().astype('<f4').tobytes())
    with open(path, 'wb') as f:
        f.write(struct.pack('<7i', c['dim'], c['hidden'], c['n_layers'], c['n_heads'], c['n_kv'], c['vocab'], c['ctx']))
        put(f, model.emb.weight)
        for name in ('attn_norm', 'wq', 'wk', 'wv', 'wo', 'ffn_norm', 'w1', 'w2', 'w3'):
            for L in Ls:
                a = getattr(L, name)
                put(f, a if isinstance(a, nn.Parameter) else a.weight)
        put(f, model.out_norm)
        cos, sin = rope_tables(c['ctx'], hd)
        put(f, cos)
        put(f, sin)

# ------------------------------------------------------------- the episodes

# kvbench's passkey wording (datasets/generated.c, from TEMPLATE.md)
PK_TASK = ("There is an important info hidden inside a lot of irrelevant text. Find it and memorize "
           "them. I will quiz you about the important information there.")
PK_GARBAGE = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
PK_QUESTION = "What is the pass key? The pass key is"
PK_FILLER = " ".join([PK_GARBAGE] * 2000)

# needle task wording (datasets/generated.c, template needle@1: "{context}\n\n{question} Answer:")
PLACES = ["Boston", "Chicago", "Seattle", "Denver", "Austin", "Portland", "Miami", "Atlanta", "Houston", "Phoenix",
          "Dallas", "Detroit", "Nashville", "Memphis", "Baltimore", "Pittsburgh", "Cleveland", "Minneapolis",
          "Philadelphia", "New Orleans", "Salt Lake City", "Kansas City", "St. Louis", "Milwaukee", "Sacramento",
          "San Diego", "Los Angeles", "New York", "Honolulu", "Anchorage", "London", "Paris", "Berlin", "Rome",
          "Madrid", "Lisbon", "Vienna", "Prague", "Dublin", "Edinburgh", "Amsterdam", "Brussels", "Zurich", "Oslo",
          "Stockholm", "Helsinki", "Copenhagen", "Warsaw", "Budapest", "Athens", "Istanbul", "Cairo", "Tokyo",
          "Kyoto", "Osaka", "Seoul", "Beijing", "Shanghai", "Sydney", "Melbourne", "Toronto", "Montreal",
          "Vancouver", "Mexico City", "Lima", "Bogota", "Santiago", "Buenos Aires", "Cape Town", "Nairobi",
          "Mumbai", "Delhi", "Bangkok", "Singapore", "Hanoi", "Manila", "Oakland", "Tucson", "Omaha", "Reno"]
VERBS = ["eat", "buy", "drink", "read", "find", "watch", "cook", "paint", "share", "order", "try", "carry", "bake",
         "sell", "draw", "collect", "photograph", "borrow", "fold", "build"]
NOUNS = ["a pretzel", "some oysters", "a book", "a cup of coffee", "a bowl of noodles", "a kite", "a bagel",
         "an apple pie", "a taco", "a sandwich", "some tea", "a pizza", "a map", "a postcard", "a hot dog",
         "a lemonade", "a croissant", "a salad", "some dumplings", "a donut", "a newspaper", "an ice cream",
         "some fries", "a burrito", "a cake", "some cheese", "a paper boat", "a sketch", "a poem", "a watermelon"]
ACTS = ["sit", "walk", "rest", "read", "relax", "wander", "nap", "linger", "stroll", "picnic", "sing", "dance",
        "swim", "sketch", "run", "fish", "jog", "play chess", "people-watch", "daydream"]
SPOTS = ["Central Park", "the harbor", "the old market", "Riverside Park", "the botanical garden", "the pier",
         "the town square", "Lincoln Park", "the waterfront", "the museum garden", "Union Square", "the beach",
         "the rose garden", "Victoria Park", "the city library", "the lakeside", "the castle hill",
         "Liberty Park", "the canal", "the old bridge", "Hyde Park", "the boardwalk", "the zoo", "the plaza"]
WHENS = ["on a sunny day", "on a rainy afternoon", "at sunset", "early in the morning", "on a quiet evening",
         "in the spring", "on a cold night", "after lunch", "on a windy day", "at dawn", "in the autumn",
         "on a Sunday", "at midnight", "in the summer", "on a snowy morning"]

# RULER niah wording (datasets/ruler.c, rl_niah_build; NVIDIA/RULER niah.py)
NOISE = PK_GARBAGE


class Corpus:
    """Training text (PG-19 books, Multi-News) and RULER's word list."""

    def __init__(self):
        texts = []
        for p in sorted(glob.glob(os.path.join(SHARED, 'data', 'pg19', '*.txt'))):
            texts.append(open(p, encoding='utf-8').read())
        with open(os.path.join(SHARED, 'data', 'multi_news', 'multi_news.jsonl'), encoding='utf-8') as f:
            for line in f:
                ctx = json.loads(line).get('context', '')
                texts.append(ctx.replace(' NEWLINE_CHAR ', '\n').replace('NEWLINE_CHAR', '\n'))
        self.text = '\n\n'.join(texts)
        with open(WORDS, encoding='utf-8') as f:
            self.words = sorted({w.strip() for w in f if w.strip().isalpha() and w.strip().islower()
                                 and w.strip().isascii() and len(w.strip()) >= 3})

    def span(self, rng, n):
        """n characters of text starting at a word."""
        at = rng.randrange(0, len(self.text) - n - 1)
        sp = self.text.find(' ', at)
        at = sp + 1 if 0 <= sp < at + 100 else at
        return self.text[at:at + n]


def ruler_value(rng, corpus, kind):
    if kind == 'numbers':
        return str(1000000 + rng.randrange(9000000))
    if kind == 'uuids':
        b = bytearray(rng.getrandbits(8) for _ in range(16))
        b[6] = (b[6] & 0x0F) | 0x40
        b[8] = (b[8] & 0x3F) | 0x80
        h = b.hex()
        return '%s-%s-%s-%s-%s' % (h[:8], h[8:12], h[12:16], h[16:20], h[20:])
    return '%s-%s' % (rng.choice(corpus.words), rng.choice(corpus.words))


class Episodes:
    """Seeded episode generator. Each episode is a list of (text, flag)
    pieces: flag 1 marks an answer (the loss always taken), 2 a repeated
    span (the loss taken at a share of its tokens), 0 other text."""

    def __init__(self, sp, corpus, seed):
        self.sp, self.c, self.rng = sp, corpus, random.Random(seed)
        # characters per token of each filler kind, measured once
        self.cpt = {}
        for kind, sample in (('pk', PK_FILLER[:20000]), ('noise', '\n'.join([NOISE] * 200)),
                             ('text', corpus.text[100000:140000])):
            self.cpt[kind] = len(sample) / len(sp.encode(sample))

    # each returns a list of (text, is_answer) pieces whose whole is the
    # prompt followed by the answer, and the filler kind used

    def passkey(self, n_tok):
        r = self.rng
        key = r.randint(1, 50000)
        n_garbage = max(0, int((n_tok - 45) * self.cpt['pk']))
        prefix = int(n_garbage * r.random())
        return [(PK_TASK + "\n" + PK_FILLER[:prefix] + "\nThe pass key is %d. Remember it." % key, 0),
                (" %d" % key, 1), (" is the pass key.\n" + PK_FILLER[:n_garbage - prefix] + "\n" + PK_QUESTION, 0),
                (" %d." % key, 1)]

    def needle(self, n_tok):
        r = self.rng
        place = r.choice(PLACES)
        act = "%s %s and %s in %s %s" % (r.choice(VERBS), r.choice(NOUNS), r.choice(ACTS), r.choice(SPOTS), r.choice(WHENS))
        needle = "The best thing to do in %s is %s." % (place, act)
        hay = self.c.span(r, max(0, int((n_tok - 50) * self.cpt['text'])))
        at = int(len(hay) * r.random())
        while at > 0 and not (hay[at - 1] == '.' and (at == len(hay) or hay[at] in ' \n')):
            at -= 1
        ctx = hay[:at] + (" " if at else "") + needle + hay[at:]
        return [(ctx + "\n\nWhat is the best thing to do in %s? Answer:" % place, 0), (" " + act + ".", 1)]

    def ruler(self, n_tok, haystack, type_k, type_v, num_k, num_v, num_q):
        r = self.rng
        nk = max(num_k, num_q)
        keys = []
        while len(keys) < nk:
            k = ruler_value(r, self.c, type_k)
            if k not in keys:
                keys.append(k)
        vals = [[ruler_value(r, self.c, type_v) for _ in range(num_v)] for _ in range(nk)]
        needles = ["One of the special magic %s for %s is: %s." % (type_v, keys[i], v) for i in range(nk) for v in vals[i]]
        r.shuffle(needles)
        single = num_q * num_v == 1
        tv = type_v[:-1] if single else type_v
        head = ("%s special magic %s %s hidden within the following text. Make sure to memorize it. "
                "I will quiz you about the %s afterwards.\n") % ("A" if single else "Some", tv, "is" if single else "are", tv)
        budget = n_tok - 90 - 12 * len(needles)
        if haystack == 'essay':
            hay = self.c.span(r, max(0, int(budget * self.cpt['text'])))
            cuts = sorted(int(len(hay) * r.random()) for _ in needles)
            parts, last = [], 0
            for cut, nd in zip(cuts, needles):
                while cut > last and not (hay[cut - 1] in '.!?' and (cut == len(hay) or hay[cut] == ' ')):
                    cut -= 1
                parts.append(hay[last:cut].strip())
                parts.append(nd)
                last = cut
            parts.append(hay[last:].strip())
            body = " ".join(p for p in parts if p)
        else:
            n_lines = max(len(needles), int(budget * self.cpt['noise'] / (len(NOISE) + 1)))
            if haystack == 'needle':
                n_lines = max(len(needles), budget // 24)
            pos = sorted(r.sample(range(n_lines), len(needles)))
            lines, j = [], 0
            for i in range(n_lines):
                while j < len(pos) and pos[j] == i:
                    lines.append(needles[j])
                    j += 1
                if haystack == 'needle':
                    lines.append("One of the special magic %s for %s is: %s." %
                                 (type_v, ruler_value(r, self.c, type_k), ruler_value(r, self.c, type_v)))
                else:
                    lines.append(NOISE)
            body = "\n".join(lines)
        qi = r.sample(range(nk), num_q)
        qkeys = [keys[i] for i in qi]
        query = qkeys[0] if num_q == 1 else ", ".join(qkeys[:-1]) + ", and " + qkeys[-1]
        q = "What %s the special magic %s for %s mentioned in the provided text?" % ("is" if single else "are all", tv, query)
        ap = " The special magic %s for %s mentioned in the provided text %s" % (tv, query, "is" if single else "are")
        ans = ", ".join(v for i in qi for v in vals[i])
        return [(head + body + "\n" + q + ap, 0), (" " + ans + ".", 1)]

    def repeat(self, n_tok):
        """A text span, a little other text, the span again: every token of
        the repeat is predictable only by looking back (dense supervision of
        the copying - induction - heads that retrieval is built on)."""
        r = self.rng
        gap = self.c.span(r, int(n_tok * self.cpt['text'] * 0.2 * r.random()))
        span = self.c.span(r, max(40, int((n_tok * self.cpt['text'] - len(gap)) / 2) - 8))
        return [(span + "\n" + gap + "\n", 0), (span, 2)]

    def repeat_words(self, n_tok):
        """Random list words, a little text, the same words again: no
        statistics predict the repeat, only looking back does."""
        r = self.rng
        gap = self.c.span(r, int(n_tok * self.cpt['text'] * 0.2 * r.random()))
        n_words = max(8, int((n_tok - len(gap) / self.cpt['text']) / 2 / 2.2))
        words = " ".join(r.choice(self.c.words) for _ in range(n_words))
        return [(words + "\n" + gap + "\n", 0), (words, 2)]

    def lm(self, n_tok):
        return [(self.c.span(self.rng, int(n_tok * self.cpt['text'] * 1.1)), 0)]

    KINDS = [  # (weight, name, function arguments)
        (20, 'passkey', ()),
        (10, 'needle', ()),
        (8, 'ruler', ('noise', 'words', 'numbers', 1, 1, 1)),
        (8, 'ruler', ('essay', 'words', 'numbers', 1, 1, 1)),
        (5, 'ruler', ('essay', 'words', 'uuids', 1, 1, 1)),
        (8, 'ruler', ('essay', 'words', 'numbers', 4, 1, 1)),
        (4, 'ruler', ('needle', 'words', 'numbers', 1, 1, 1)),
        (3, 'ruler', ('needle', 'uuids', 'uuids', 1, 1, 1)),
        (2, 'ruler', ('essay', 'words', 'numbers', 1, 4, 1)),
        (2, 'ruler', ('essay', 'words', 'numbers', 1, 1, 4)),
        (8, 'lm', ()),
        (15, 'repeat', ()),
        (15, 'repeat_words', ()),
    ]

    def sample(self, n_tok):
        """Token ids (BOS first, at most n_tok) and a 0/1 answer mask."""
        w = [k[0] for k in self.KINDS]
        _, name, args = self.rng.choices(self.KINDS, weights=w)[0]
        target = n_tok
        for _ in range(4):
            pieces = getattr(self, name)(target, *args)
            ids, ans = [1], [0]
            text = ''
            for t, a in pieces:
                # tokenize the whole prefix so that the ids are those of the
                # whole text (sentencepiece merges across piece edges)
                before = len(self.sp.encode(text)) if text else 0
                text += t
                now = self.sp.encode(text)
                if before and now[:before] != ids[1:1 + before]:
                    before = len(ids) - 1  # an edge merged: keep the ids as they are
                ids = [1] + now
                ans = ans[:1 + before] + [a] * (len(ids) - 1 - before)
            if name == 'lm':  # plain text: cut to the length, no answer
                ids, ans = ids[:n_tok], [0] * min(len(ids), n_tok)
            if len(ids) <= n_tok:
                return ids, ans
            target -= (len(ids) - n_tok) + 8
        return ids[:n_tok], ans[:n_tok]


# ------------------------------------------------------------------ training

def length_for(rng, frac, max_len):
    """The curriculum: short episodes first (the copying circuits form
    cheaply and with many updates), then every length up to the context and
    a little past it (max_len), so that RoPE sees every distance the
    evaluation asks for, the generated tokens after a full-context prompt
    included. Returns (length, tokens in the step)."""
    if frac < 0.35:
        return min(max_len, rng.choice([128, 192, 256, 384, 512])), 2048
    if frac < 0.6:
        return min(max_len, rng.choice([256, 512, 768, 1024])), 2048
    return min(max_len, rng.choice([512, 1024, 1536, 2048, max_len])), 4096


def batch(ep, n_tok, tokens_per_step, lm_share, copy_share, rng):
    B = max(1, tokens_per_step // n_tok)
    rows = [ep.sample(n_tok) for _ in range(B)]
    T = max(len(r[0]) for r in rows)
    x = torch.zeros(B, T, dtype=torch.long)
    y = torch.zeros(B, T, dtype=torch.long)
    w_ans = torch.zeros(B, T)
    w_copy = torch.zeros(B, T)
    w_lm = torch.zeros(B, T)
    for i, (ids, ans) in enumerate(rows):
        n = len(ids)
        x[i, :n] = torch.tensor(ids)
        y[i, :n - 1] = torch.tensor(ids[1:])
        for t in range(n - 1):
            if ans[t + 1] == 1:
                w_ans[i, t] = 1.0
            elif ans[t + 1] == 2:
                if rng.random() < copy_share:
                    w_copy[i, t] = 1.0
            elif rng.random() < lm_share:
                w_lm[i, t] = 1.0
    return x, y, w_ans, w_copy, w_lm


def train(args):
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed + 1)
    torch.set_num_threads(args.threads)
    sp = spm.SentencePieceProcessor(model_file=TOKENIZER)
    corpus = Corpus()
    ep = Episodes(sp, corpus, args.seed + 2)
    model = Probe(sp.vocab_size(), args.dim, args.hidden, args.layers, args.heads, args.kv_heads, args.ctx)
    model.init_prev_token_head(args.prev_head_gain)
    n_params = sum(p.numel() for p in model.parameters())
    print('parameters: %d (embedding %d)' % (n_params, model.emb.weight.numel()), flush=True)
    decay = [p for p in model.parameters() if p.dim() == 2]
    nodecay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{'params': decay, 'weight_decay': 0.05}, {'params': nodecay, 'weight_decay': 0.0}],
                            lr=args.lr, betas=(0.9, 0.95))
    csv = open(os.path.splitext(args.out)[0] + '.csv', 'w')
    csv.write('step,seconds,length,loss,loss_answer,acc_answer,loss_lm,lr,loss_copy\n')
    t0 = time.time()
    for step in range(args.steps):
        frac = step / args.steps
        lr = args.lr * min(1.0, (step + 1) / args.warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))
        for g in opt.param_groups:
            g['lr'] = lr
        n_tok, per_step = length_for(rng, frac, args.ctx + args.past_ctx)
        x, y, w_ans, w_copy, w_lm = batch(ep, n_tok, per_step, args.lm_share, args.copy_share, rng)
        h = model.hidden(x)
        sel = (w_ans + w_copy + w_lm) > 0
        logits = model.logits(h[sel])
        nll = F.cross_entropy(logits, y[sel], reduction='none')
        a, cp, l = w_ans[sel], w_copy[sel], w_lm[sel]
        loss_ans = (nll * a).sum() / a.sum().clamp(min=1)
        loss_copy = (nll * cp).sum() / cp.sum().clamp(min=1)
        loss_lm = (nll * l).sum() / l.sum().clamp(min=1)
        loss = loss_ans + loss_copy + loss_lm
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        acc = ((logits.argmax(-1) == y[sel]).float() * a).sum().item() / max(1.0, a.sum().item())
        el = time.time() - t0
        csv.write('%d,%.1f,%d,%.4f,%.4f,%.4f,%.4f,%.6f,%.4f\n' % (step, el, n_tok, loss.item(), loss_ans.item(), acc,
                                                                   loss_lm.item(), lr, loss_copy.item()))
        if step % args.log_every == 0 or step == args.steps - 1:
            csv.flush()
            print('step %d/%d %.0fs len %d loss %.3f answer %.3f (acc %.2f) copy %.3f lm %.3f lr %.2e' %
                  (step, args.steps, el, n_tok, loss.item(), loss_ans.item(), acc, loss_copy.item(), loss_lm.item(), lr),
                  flush=True)
        if args.save_every and step and step % args.save_every == 0:
            write_llama2c(model, args.out)
        if args.deadline and el > args.deadline:
            print('deadline: stopped after step %d of %d' % (step, args.steps), flush=True)
            break
    write_llama2c(model, args.out)
    print('wall time %.0f s, %d steps; wrote %s' % (time.time() - t0, step + 1, args.out), flush=True)
    torch.save(model.state_dict(), os.path.splitext(args.out)[0] + '.pt')


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--steps', type=int, default=3000)
    p.add_argument('--seed', type=int, default=1)
    p.add_argument('--out', default='kvprobe.bin')
    p.add_argument('--dim', type=int, default=192)
    p.add_argument('--hidden', type=int, default=512)
    p.add_argument('--layers', type=int, default=4)
    p.add_argument('--heads', type=int, default=6)
    p.add_argument('--kv-heads', type=int, default=2)
    p.add_argument('--ctx', type=int, default=2048)
    p.add_argument('--lr', type=float, default=2e-3)
    p.add_argument('--warmup', type=int, default=100)
    p.add_argument('--past-ctx', type=int, default=64,
                   help='longest episodes run this many tokens past --ctx (the tokens generated after a full prompt)')
    p.add_argument('--deadline', type=float, default=0, help='stop after this many seconds (0: never), saving the model')
    p.add_argument('--lm-share', type=float, default=0.1, help='share of non-answer positions with a loss')
    p.add_argument('--copy-share', type=float, default=0.5, help='share of repeated-span positions with a loss')
    p.add_argument('--prev-head-gain', type=float, default=0.6,
                   help='start layer 0 head 0 as a previous-token head with this weight (0: plain random start)')
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--log-every', type=int, default=10)
    p.add_argument('--save-every', type=int, default=200)
    args = p.parse_args()
    train(args)


if __name__ == '__main__':
    sys.exit(main())
