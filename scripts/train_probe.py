#!/usr/bin/python3
"""train_probe.py - train kvprobe, a small Llama-architecture model that
retrieves, so that kvbench's retrieval experiments measure something on a
CPU (docs/PROBE.md is its model card).

The model is the Llama forward as kvbench runs it (tests/reference/llama_ref.py):
RMSNorm (eps 1e-5) before attention and FFN, rotary embeddings on adjacent pairs
(2i, 2i+1) with base 10000 (llama2.c / GGUF layout), grouped-query attention,
SwiGLU, a classifier tied to the embedding. The vocabulary is stories260K's
512-piece SentencePiece vocabulary (tok512.bin, which kvbench reads), so
prompts are plain text and the classifier costs little: with Llama 2's 32,000
pieces it was nine tenths of a training step on this CPU.

Training data, generated on the fly from a seeded RNG:
  - retrieval episodes in kvbench's exact prompt wording (datasets/generated.c:
    passkey and needle; datasets/ruler.c: RULER niah single / multikey /
    multivalue / multiquery), with fresh keys, values, depths and fillers;
  - plain language-modelling text (PG-19 books, Multi-News articles);
  - copying drills: random pieces then a stretch of them again at a varying
    distance, and repeated text spans and word lists.
Held out entirely: the Paul Graham essays (kvbench's needle and RULER
haystack) and WikiText-2 (the perplexity report). The needle of kvbench's
needle task (San Francisco, Dolores Park) never appears in training.

Start: layer 0 head 0 a previous-token head and layer 1 head 0 an induction
head (init_prev_token_head, init_induction_head), every weight trainable.
The shipped model runs every stage with --rope-base 500000: with base 10000
the induction head's planted match faded to a third of its strength 1,500
tokens back (docs/PROBE.md). --plant trigram starts layer 0 head 1 as a
two-back head and the induction head matching two tokens
(init_trigram_circuit); it was tried as a recipe and not shipped.
--tokenizer also takes Llama 2's tokenizer.bin (32,000 pieces).
Curriculum: drills alone at 256 tokens until their loss is below 1 nat, then
every kind at 256-1,024 tokens, then at 512-2,112. A second stage (--init the
first stage's .bin, --mix retrieval, --start-frac) weighs needles and RULER
lookups up.

Loss: the mean over every answer token, plus the mean over the drills'
repeated tokens (--copy-share), plus the mean over the other positions
(--lm-share).

Output: --out FILE.bin in llama2.c's legacy format (shared classifier),
which `kvbench convert --tokenizer .../tok512.bin` turns into a GGUF,
FILE.csv with the losses per step, and FILE.pt (the PyTorch state).

Usage (the shipped model; docs/PROBE.md):
  /usr/bin/python3 scripts/train_probe.py --steps 2000 --warmup 100 --lr 2e-3 \
      --dim 128 --hidden 384 --heads 2 --kv-heads 1 --layers 4 --rope-base 500000 --seed 1 \
      --stop-at 1100 --fit subtract --out s1.bin
  then stages 2-4 from s1.bin (--init), as docs/PROBE.md gives them
  (stages 1-3 with --fit subtract, the rule they were trained with).
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

import torch
import torch.nn as nn
import torch.nn.functional as F

from probe_tokenizer import L2CTokenizer

SHARED = os.environ.get('KVBENCH_SHARED', os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', 'shared'))
TOKENIZER = os.path.join(SHARED, 'models', 'stories260K', 'tok512.bin')
WORDS = '/usr/share/dict/american-english'
ATTN_BLOCK = 384  # queries per block in causal_attention (speed only)

# ------------------------------------------------------------ the tokenizer
# (the encoder is probe_tokenizer.py's: tests/check_probe_tokenizer.py checks it)

def load_tokenizer(path):
    if path.endswith('.model'):  # a SentencePiece model (Llama 2's)
        import sentencepiece as spm
        return spm.SentencePieceProcessor(model_file=path)
    return L2CTokenizer(path)

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

    def forward(self, x, cos, sin, tri):
        B, T, _ = x.shape
        h = rmsnorm(x, self.attn_norm)
        q = rope(self.wq(h).view(B, T, self.n_heads, self.hd), cos, sin).transpose(1, 2)
        k = rope(self.wk(h).view(B, T, self.n_kv, self.hd), cos, sin).transpose(1, 2)
        v = self.wv(h).view(B, T, self.n_kv, self.hd).transpose(1, 2)
        o = causal_attention(q * (1.0 / math.sqrt(self.hd)), k, v, tri).transpose(1, 2).reshape(B, T, -1)
        x = x + self.wo(o)
        h = rmsnorm(x, self.ffn_norm)
        return x + self.w2(F.silu(self.w1(h)) * self.w3(h))


def causal_attention(q, k, v, tri):
    """Causal attention, q [B, H, T, hd] already scaled, k and v [B, KV, T, hd].
    Query head i reads KV head i // (H / KV), as the engine does. The queries
    go in blocks of tri's size, each against the keys up to its end: the
    scores above the diagonal are never computed (a 2K step took 2.7x less
    time than with the full T x T matrix and its mask), and the heads that
    share a KV head go in one product instead of copies of k and v."""
    B, H, T, hd = q.shape
    KV = k.shape[1]
    rep, C = H // KV, tri.shape[0]
    q = q.reshape(B, KV, rep, T, hd)
    out = []
    for s in range(0, T, C):
        e = min(T, s + C)
        n = e - s
        sc = (q[:, :, :, s:e].reshape(B, KV, rep * n, hd) @ k[:, :, :e].transpose(-1, -2)).view(B, KV, rep, n, e)
        sc[..., s:e] += tri[:n, :n]
        p = sc.softmax(dim=-1).view(B, KV, rep * n, e)
        out.append((p @ v[:, :, :e]).view(B, KV, rep, n, hd))
    return torch.cat(out, dim=3).view(B, H, T, hd)


def rmsnorm(x, w, eps=1e-5):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def rope_freqs(hd, base):
    """Pair i's angle per position, base^(-2i/hd) (float64). The rotary tables
    and the planted heads' phases both come from here, so that the start is
    planted at the base the model runs with."""
    return base ** (-torch.arange(0, hd, 2, dtype=torch.float64) / hd)


def rope_tables(T, hd, base=10000.0):
    inv = rope_freqs(hd, base)
    ang = torch.arange(T, dtype=torch.float64)[:, None] * inv[None, :]
    return torch.cos(ang).float(), torch.sin(ang).float()


def rope(x, cos, sin):
    """x [B, T, heads, hd]: rotate the adjacent pairs (2i, 2i+1) by pos * base^(-2i/hd)."""
    T = x.shape[1]
    c, s = cos[:T, None, :], sin[:T, None, :]
    a, b = x[..., 0::2], x[..., 1::2]
    return torch.stack((a * c - b * s, a * s + b * c), dim=-1).flatten(-2)


class Probe(nn.Module):
    def __init__(self, vocab, dim, hidden, n_layers, n_heads, n_kv, ctx, rope_base=10000.0):
        super().__init__()
        self.cfg = dict(vocab=vocab, dim=dim, hidden=hidden, n_layers=n_layers, n_heads=n_heads, n_kv=n_kv, ctx=ctx,
                        rope_base=rope_base)
        self.emb = nn.Embedding(vocab, dim)
        self.layers = nn.ModuleList(Block(dim, hidden, n_heads, n_kv) for _ in range(n_layers))
        self.out_norm = nn.Parameter(torch.ones(dim))
        cos, sin = rope_tables(ctx + 512, dim // n_heads, rope_base)
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
        theta = rope_freqs(hd, self.cfg['rope_base'])
        L.wq.weight[:hd].zero_()
        L.wk.weight[:hd].zero_()  # KV head 0 (shared with the group's other query heads)
        L.wq.weight[0:hd:2, 0] = gain
        L.wk.weight[0:hd:2, 0] = (gain * torch.cos(theta)).float()
        L.wk.weight[1:hd:2, 0] = (gain * torch.sin(theta)).float()

    @torch.no_grad()
    def init_induction_head(self, gain, prev_out=0.02, copy_out=0.05):
        """Plant the circuit retrieval rests on at the start: layer 0 head 0
        (made a previous-token head by init_prev_token_head) writes the
        previous token into the upper half of the residual, and layer 1
        head 0 is an induction head: its query (the current token) and key
        (the previous token there) meet in the 12 lowest-frequency rotary
        pairs, which turn little over the drill's distances, and its value
        and output copy the token it finds into the logits of the tied
        classifier. Why: an induction head needs its match and its copy at
        once, and neither earns a gradient without the other; from random
        weights the copy loss sat at the no-information level for every
        run this CPU could afford (PROBE.md). Every weight stays trainable:
        this is where training starts, not what it ends with. gain scales
        the match (0: plain random start)."""
        if gain <= 0 or len(self.layers) < 2:
            return
        dim, hd = self.cfg['dim'], self.layers[0].hd
        half = dim // 2
        assert hd <= half + 1, 'the planted circuit needs head_dim <= dim / 2 + 1'
        n_tok = hd - 1  # token dimensions 1..hd-1 (dimension 0 is init_prev_token_head's constant)
        self.emb.weight[:, half:] = 0.0  # the upper half carries the previous token
        self.emb.weight[:, n_tok + 1:half] = 0.0
        tok = torch.arange(1, n_tok + 1)
        L0, L1 = self.layers[0], self.layers[1]
        L0.wv.weight[:hd] = 0.0
        L0.wv.weight[tok, tok] = 1.0
        L0.wo.weight[:, :hd] = 0.0
        L0.wo.weight[half + tok, tok] = prev_out
        g = torch.Generator().manual_seed(12345)
        r = 24  # 12 rotary pairs
        proj, _ = torch.linalg.qr(torch.randn(n_tok, r, generator=g))  # n_tok x r, orthonormal columns
        L1.wq.weight[:hd] = 0.0
        L1.wk.weight[:hd] = 0.0
        L1.wq.weight[hd - r:hd, 1:n_tok + 1] = gain * proj.t()
        L1.wk.weight[hd - r:hd, half + 1:half + n_tok + 1] = gain * proj.t()
        L1.wv.weight[:hd] = 0.0
        L1.wv.weight[tok, tok] = 1.0
        L1.wo.weight[:, :hd] = 0.0
        L1.wo.weight[tok, tok] = copy_out

    @torch.no_grad()
    def plant_pair_match(self, gain, r, n_tok, A, B, second, copy_out):
        """Layer 1 head 0 as a copying head that matches two things at once:
        the current token (query, from offset A) against the previous one
        (key, from B) in the r lowest-frequency rotary pairs, and
        second = (query offset, key offset) in the r pairs above them. Its
        value and output copy the token found (offset A) into the tied
        classifier. The projections are fixed random orthonormal rows, so
        the same start comes out whatever the training seed."""
        L1, hd = self.layers[1], self.layers[1].hd
        tok = torch.arange(n_tok)
        g = torch.Generator().manual_seed(12345)
        p1 = torch.linalg.qr(torch.randn(n_tok, 2 * r, generator=g))[0].t()  # 2r x n_tok, orthonormal rows
        p2 = torch.linalg.qr(torch.randn(n_tok, 2 * r, generator=g))[0].t()
        L1.wq.weight[:hd] = 0.0
        L1.wk.weight[:hd] = 0.0
        lo, mid = hd - 2 * r, hd - 4 * r
        L1.wq.weight[lo:hd, A:A + n_tok] = gain * p1
        L1.wk.weight[lo:hd, B:B + n_tok] = gain * p1
        L1.wq.weight[mid:lo, second[0]:second[0] + n_tok] = gain * p2
        L1.wk.weight[mid:lo, second[1]:second[1] + n_tok] = gain * p2
        L1.wv.weight[:hd] = 0.0
        L1.wv.weight[tok, A + tok] = 1.0
        L1.wo.weight[:, :hd] = 0.0
        L1.wo.weight[A + tok, tok] = copy_out

    @torch.no_grad()
    def residual_thirds(self, what):
        """The set-up the trigram and context starts share: the token code
        in dimensions A.., two further thirds of the residual from B.. and
        C.., and a constant in dimension 0 for layer 0's positional key.
        Returns (layer 0, head dim, rotary frequencies, n_tok, A, B, C)."""
        L0 = self.layers[0]
        dim, hd = self.cfg['dim'], L0.hd
        assert L0.n_heads // L0.n_kv >= 2, 'the %s circuit needs two query heads on KV head 0' % what
        third = (dim - 1) // 3
        n_tok = min(third, hd)
        self.emb.weight[:, 0] = 0.2
        self.emb.weight[:, n_tok + 1:] = 0.0
        return L0, hd, rope_freqs(hd, self.cfg['rope_base']), n_tok, 1, 1 + third, 1 + 2 * third

    @torch.no_grad()
    def init_trigram_circuit(self, gain, pos_gain, n_pos=8, r=8, prev_out=0.02, copy_out=0.05):
        """Plant an induction head that matches two tokens, not one (--plant
        trigram). Layer 0's query heads 0 and 1 share KV head 0: its key is
        a constant rotated by position (every embedding gets a constant in
        dimension 0), its value the token. Head 0's query peaks one position
        back and head 1's two back, in the n_pos highest-frequency rotary
        pairs; they write the previous token and the one before it into two
        further thirds of the residual. Layer 1 head 0 then matches (current,
        previous) against (previous, the one before) in the r lowest-frequency
        pairs each, and copies the token it finds. Why: with one token of
        match, the copy after "San Francisco is" lands on any "is" of the
        essay and a uuid's copy jumps at a repeated character; two tokens of
        match tell them apart. Every weight stays trainable."""
        # token code from A, previous token from B, the one before from C
        L0, hd, theta, n_tok, A, B, C = self.residual_thirds('trigram')
        tok = torch.arange(n_tok)
        for q_head, back, dst in ((0, 1, B), (1, 2, C)):
            rows = slice(q_head * hd, (q_head + 1) * hd)
            L0.wq.weight[rows].zero_()
            # score sum_i cos((t - s) theta_i - back theta_i): the peak is at s = t - back
            L0.wq.weight[q_head * hd:q_head * hd + 2 * n_pos:2, 0] = (pos_gain * torch.cos((back - 1) * theta[:n_pos])).float()
            L0.wq.weight[q_head * hd + 1:q_head * hd + 2 * n_pos:2, 0] = (-pos_gain * torch.sin((back - 1) * theta[:n_pos])).float()
            L0.wo.weight[:, rows] = 0.0
            L0.wo.weight[dst + tok, q_head * hd + tok] = prev_out
        L0.wk.weight[:hd].zero_()
        L0.wk.weight[0:2 * n_pos:2, 0] = (pos_gain * torch.cos(theta[:n_pos])).float()
        L0.wk.weight[1:2 * n_pos:2, 0] = (pos_gain * torch.sin(theta[:n_pos])).float()
        L0.wv.weight[:hd] = 0.0
        L0.wv.weight[tok, A + tok] = 1.0
        self.plant_pair_match(gain, r, n_tok, A, B, (B, C), copy_out)

    @torch.no_grad()
    def init_context_circuit(self, gain, pos_gain, n_pos=8, n_box=16, box=(1, 10), box_gain=1.5, r=6,
                             prev_out=0.02, box_out=0.1, copy_out=0.05):
        """Plant an induction head that matches the current token and a
        summary of the few before it (--plant context). Layer 0's query
        heads share KV head 0, whose key is a constant rotated by position.
        Head 0 peaks one position back and writes the previous token into
        the residual's second third. Head 1 spreads its weight over the
        positions box[0]..box[1] back (a bump fitted by least squares over
        the n_box highest-frequency rotary pairs) and writes the mean of
        their tokens into the last third. Layer 1 head 0 then matches
        (current token, summary) against (previous token, summary) in the
        2r lowest-frequency pairs, and copies the token it finds. Why: in
        RULER's multi-key tasks every needle ends "... KEY is:", so the
        pieces just before the value are the same in all of them; only a
        match that reaches back into the key tells them apart, and with
        tok512's letter-sized pieces two tokens do not (PROBE.md). The
        summary's bump at the key is one position later than at the query
        (the key side is aligned one back), so the match is of two bags
        that overlap in most of their tokens. Every weight stays trainable."""
        # token code from A, previous token from B, the summary from C
        L0, hd, theta, n_tok, A, B, C = self.residual_thirds('context')
        assert n_pos <= n_box <= hd // 2 - 2 * r, 'the positional pairs and the match pairs overlap'
        # the key: the constant in the n_box highest-frequency pairs, pair i at phase theta_i
        L0.wk.weight[:hd].zero_()
        L0.wk.weight[0:2 * n_box:2, 0] = (pos_gain * torch.cos(theta[:n_box])).float()
        L0.wk.weight[1:2 * n_box:2, 0] = (pos_gain * torch.sin(theta[:n_box])).float()
        # head 0: score sum_i cos((d - 1) theta_i) over n_pos pairs, the peak at d = 1
        L0.wq.weight[:2 * hd].zero_()
        L0.wq.weight[0:2 * n_pos:2, 0] = pos_gain
        # head 1: the pair's score is q.R(-d theta)k; with k = (cos theta, sin theta) that is
        # a cos(d theta) + b sin(d theta) for q = M (a, b), M = [[kc, ks], [ks, -kc]] (its own inverse)
        d = torch.arange(0, 2200, dtype=torch.float64)
        ang = d[:, None] * theta[None, :n_box]
        feats = torch.cat((torch.cos(ang), torch.sin(ang)), 1)
        target = ((d >= box[0]) & (d <= box[1])).double()
        w = torch.where(d <= 40, 1.0, 0.05).double()
        coef = torch.linalg.lstsq(feats * w[:, None], (target * w)[:, None]).solution[:, 0]
        a, b = coef[:n_box], coef[n_box:]
        kc, ks = torch.cos(theta[:n_box]), torch.sin(theta[:n_box])
        L0.wq.weight[hd:hd + 2 * n_box:2, 0] = (box_gain * (kc * a + ks * b)).float()
        L0.wq.weight[hd + 1:hd + 2 * n_box:2, 0] = (box_gain * (ks * a - kc * b)).float()
        tok = torch.arange(n_tok)
        L0.wv.weight[:hd] = 0.0
        L0.wv.weight[tok, A + tok] = 1.0
        L0.wo.weight[:, :2 * hd] = 0.0
        L0.wo.weight[B + tok, tok] = prev_out
        L0.wo.weight[C + tok, hd + tok] = box_out
        self.plant_pair_match(gain, r, n_tok, A, B, (C, C), copy_out)

    def hidden(self, tokens):
        C = ATTN_BLOCK
        tri = torch.full((C, C), float('-inf')).triu(1)
        x = self.emb(tokens)
        for L in self.layers:
            x = L(x, self.cos, self.sin, tri)
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

def read_llama2c(model, path):
    """The inverse of write_llama2c: loads a .bin of the same shape."""
    c = model.cfg
    with open(path, 'rb') as f:
        head = struct.unpack('<7i', f.read(28))
        want = (c['dim'], c['hidden'], c['n_layers'], c['n_heads'], c['n_kv'], c['vocab'], c['ctx'])
        if head != want:
            sys.exit('%s: shape %s, expected %s' % (path, head, want))

        def get(t):
            n = t.numel()
            t.copy_(torch.frombuffer(bytearray(f.read(4 * n)), dtype=torch.float32).view_as(t))
        with torch.no_grad():
            get(model.emb.weight)
            for name in ('attn_norm', 'wq', 'wk', 'wv', 'wo', 'ffn_norm', 'w1', 'w2', 'w3'):
                for L in model.layers:
                    a = getattr(L, name)
                    get(a if isinstance(a, nn.Parameter) else a.weight)
            get(model.out_norm)

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
FIRST_PIECE = 259  # the drills draw pieces after <unk>, <s>, </s> and the 256 byte pieces


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


def reweigh(kinds, weights):
    """An episode mix with some kinds' weights changed (same kinds, same order)."""
    return [(weights.get(k[1:], k[0]),) + k[1:] for k in kinds]


class Episodes:
    """Seeded episode generator. Each episode is a list of (text, flag)
    pieces: flag 1 marks an answer (the loss always taken), 2 a repeated
    span (the loss taken at a share of its tokens), 0 other text."""

    def __init__(self, sp, corpus, seed, restate=False, ruler_restate=False, fit='scale'):
        self.sp, self.c, self.rng, self.restate = sp, corpus, random.Random(seed), restate
        self.ruler_restate, self.fit = ruler_restate, fit
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

    def name(self, n_words):
        """A made-up proper name of dictionary words (no list member: copying it
        needs a match on several pieces, not a memory of the list)."""
        return " ".join(self.rng.choice(self.c.words).capitalize() for _ in range(n_words))

    def needle(self, n_tok):
        r = self.rng
        place = r.choice(PLACES)
        act = "%s %s and %s in %s %s" % (r.choice(VERBS), r.choice(NOUNS), r.choice(ACTS), r.choice(SPOTS), r.choice(WHENS))
        if self.restate and r.random() < 0.6:  # made-up places, spots and things
            place = self.name(r.choice((1, 2)))
            spot = r.choice(("%s Park", "%s Square", "the %s garden", "%s Market", "the %s pier")) % self.name(1)
            thing = r.choice(NOUNS) if r.random() < 0.5 else "a " + r.choice(self.c.words)
            act = "%s %s and %s in %s %s" % (r.choice(VERBS), thing, r.choice(ACTS), spot, r.choice(WHENS))
        needle = "The best thing to do in %s is %s." % (place, act)
        hay = self.c.span(r, max(0, int((n_tok - 50) * self.cpt['text'])))
        at = int(len(hay) * r.random())
        while at > 0 and not (hay[at - 1] == '.' and (at == len(hay) or hay[at] in ' \n')):
            at -= 1
        ctx = hay[:at] + (" " if at else "") + needle + hay[at:]
        if self.restate:  # the answer restates the needle: each step then has a copy to follow
            return [(ctx + "\n\nWhat is the best thing to do in %s? Answer:" % place, 0), (" " + needle, 1)]
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
        if self.ruler_restate and num_q == 1 and num_v == 1:
            # the answer restates the key as the needle has it ("KEY is: VALUE"): the
            # value then follows the same words as in its needle, which a copy
            # step can match among needles of other keys (RULER scores whether the
            # value occurs in the answer, so the words around it cost nothing)
            return [(head + body + "\n" + q + ap, 0), (" " + qkeys[0] + " is: " + ans + ".", 1)]
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

    def drill(self, n_tok):
        """Ids, not text: random pieces A, a gap, then a stretch of A again
        from a random point of it. Nothing but looking back predicts the
        copy, and the distance between the two copies varies, so that only
        a content match (an induction head) predicts it, not a fixed
        offset. The gap is random pieces or, in half of the drills, text.
        Flags: 3 on A and random gaps (no loss: nothing to learn there), 2
        on the copy."""
        r = self.rng
        if r.random() < 0.5:
            gap = self.sp.encode(self.c.span(r, int(n_tok * self.cpt['text'] * 0.25 * r.random())))
            gflag = 0
        else:
            gap = [r.randrange(FIRST_PIECE, self.sp.vocab_size()) for _ in range(r.randrange(0, n_tok // 4))]
            gflag = 3
        n_a = max(8, int((n_tok - 1 - len(gap)) * (0.5 + 0.2 * r.random())))
        a = [r.randrange(FIRST_PIECE, self.sp.vocab_size()) for _ in range(n_a)]
        j = r.randrange(0, n_a // 2)
        copy = a[j:j + max(4, n_tok - 1 - n_a - len(gap))]
        ids = [1] + a + gap + copy
        ans = [0] + [3] * n_a + [gflag] * len(gap) + [2] * len(copy)
        return ids[:n_tok], ans[:n_tok]

    KINDS = [  # (weight, name, function arguments)
        (18, 'passkey', ()),
        (10, 'needle', ()),
        (8, 'ruler', ('noise', 'words', 'numbers', 1, 1, 1)),
        (8, 'ruler', ('essay', 'words', 'numbers', 1, 1, 1)),
        (5, 'ruler', ('essay', 'words', 'uuids', 1, 1, 1)),
        (8, 'ruler', ('essay', 'words', 'numbers', 4, 1, 1)),
        (4, 'ruler', ('needle', 'words', 'numbers', 1, 1, 1)),
        (3, 'ruler', ('needle', 'uuids', 'uuids', 1, 1, 1)),
        (2, 'ruler', ('essay', 'words', 'numbers', 1, 4, 1)),
        (2, 'ruler', ('essay', 'words', 'numbers', 1, 1, 4)),
        (10, 'lm', ()),
        (6, 'repeat', ()),
        (6, 'repeat_words', ()),
        (10, 'drill', ()),
    ]

    KINDS_RETRIEVAL = [  # --mix retrieval: a second stage that weighs the lookups that need a key match
        (10, 'passkey', ()),
        (25, 'needle', ()),
        (6, 'ruler', ('noise', 'words', 'numbers', 1, 1, 1)),
        (8, 'ruler', ('essay', 'words', 'numbers', 1, 1, 1)),
        (5, 'ruler', ('essay', 'words', 'uuids', 1, 1, 1)),
        (10, 'ruler', ('essay', 'words', 'numbers', 4, 1, 1)),
        (8, 'ruler', ('needle', 'words', 'numbers', 1, 1, 1)),
        (6, 'ruler', ('needle', 'uuids', 'uuids', 1, 1, 1)),
        (5, 'ruler', ('essay', 'words', 'numbers', 1, 4, 1)),
        (5, 'ruler', ('essay', 'words', 'numbers', 1, 1, 4)),
        (5, 'lm', ()),
        (3, 'repeat', ()),
        (3, 'repeat_words', ()),
        (6, 'drill', ()),
    ]

    KINDS_NEEDLE = [  # --mix needle: a third stage for the needle questions (with --needle-answer restate)
        (14, 'passkey', ()),
        (36, 'needle', ()),
        (8, 'ruler', ('noise', 'words', 'numbers', 1, 1, 1)),
        (8, 'ruler', ('essay', 'words', 'numbers', 1, 1, 1)),
        (4, 'ruler', ('essay', 'words', 'uuids', 1, 1, 1)),
        (8, 'ruler', ('essay', 'words', 'numbers', 4, 1, 1)),
        (4, 'ruler', ('needle', 'words', 'numbers', 1, 1, 1)),
        (6, 'lm', ()),
        (4, 'repeat', ()),
        (4, 'drill', ()),
    ]

    KINDS_KEYS = [  # --mix keys: a fourth stage for lookups among distractors (RULER multi-key, the needle at 2K)
        (10, 'passkey', ()),
        (22, 'needle', ()),
        (5, 'ruler', ('noise', 'words', 'numbers', 1, 1, 1)),
        (5, 'ruler', ('essay', 'words', 'numbers', 1, 1, 1)),
        (3, 'ruler', ('essay', 'words', 'uuids', 1, 1, 1)),
        (20, 'ruler', ('essay', 'words', 'numbers', 4, 1, 1)),
        (12, 'ruler', ('needle', 'words', 'numbers', 1, 1, 1)),
        (6, 'ruler', ('needle', 'uuids', 'uuids', 1, 1, 1)),
        (4, 'ruler', ('essay', 'words', 'numbers', 1, 4, 1)),
        (4, 'ruler', ('essay', 'words', 'numbers', 1, 1, 4)),
        (4, 'lm', ()),
        (3, 'repeat', ()),
        (2, 'drill', ()),
    ]

    # --mix haystack: --mix keys with RULER's needle haystacks weighed up (niah_multikey_2/3)
    KINDS_HAYSTACK = reweigh(KINDS_KEYS, {('ruler', ('needle', 'words', 'numbers', 1, 1, 1)): 20,
                                          ('ruler', ('needle', 'uuids', 'uuids', 1, 1, 1)): 18})

    # --mix NAME: the episode weights of each stage
    MIXES = {'all': KINDS, 'retrieval': KINDS_RETRIEVAL, 'needle': KINDS_NEEDLE, 'keys': KINDS_KEYS,
             'haystack': KINDS_HAYSTACK}

    def sample(self, n_tok, drill_only=False):
        """Token ids (BOS first, at most n_tok) and a 0/1/2 mask (answer,
        repeated span)."""
        w = [k[0] for k in self.KINDS]
        _, name, args = self.rng.choices(self.KINDS, weights=w)[0]
        if drill_only or name == 'drill':
            return self.drill(n_tok)
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
            if self.fit == 'subtract':
                # stages 1-3 of the shipped model: the excess taken off the
                # target; a generator whose units cost more tokens than it
                # assumes (RULER's needle lines, about 52 pieces against 24)
                # then collapses to a haystack of one or two lines
                target -= (len(ids) - n_tok) + 8
            else:  # the target scaled by what the text really costs
                target = int(target * n_tok / len(ids)) - 8
        return ids[:n_tok], ans[:n_tok]


# ------------------------------------------------------------------ training

def length_for(rng, frac, max_len, warm, late=None):
    """The curriculum: drills alone at 256 tokens while warm (until the
    copying circuits have formed), then every kind at growing
    lengths up to the context and a little past it (max_len), so that RoPE
    sees every distance the evaluation asks for, the generated tokens after
    a full-context prompt included. Returns (length, tokens in the step,
    drills only)."""
    if warm:
        return 256, 4096, True
    if frac < 0.3:
        return min(max_len, rng.choice([256, 384, 512, 768, 1024])), 4096, False
    return min(max_len, rng.choice(late or [512, 1024, 1536, 2048, max_len])), 6144, False


def batch(ep, n_tok, tokens_per_step, lm_share, copy_share, rng, drill_only=False):
    B = max(1, tokens_per_step // n_tok)
    rows = [ep.sample(n_tok, drill_only) for _ in range(B)]
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
            elif ans[t + 1] == 3:
                continue
            elif rng.random() < lm_share:
                w_lm[i, t] = 1.0
    return x, y, w_ans, w_copy, w_lm


def train(args):
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed + 1)
    torch.set_num_threads(args.threads)
    sp = load_tokenizer(args.tokenizer)
    corpus = Corpus()
    ep = Episodes(sp, corpus, args.seed + 2, restate=args.needle_answer == 'restate',
                  ruler_restate=args.ruler_answer == 'restate', fit=args.fit)
    ep.KINDS = Episodes.MIXES[args.mix]
    late = [int(v) for v in args.lengths.split(',')] if args.lengths else None
    model = Probe(sp.vocab_size(), args.dim, args.hidden, args.layers, args.heads, args.kv_heads, args.ctx,
                  args.rope_base)
    if args.init:
        # a second stage: the weights of an earlier run, the curriculum from --start-frac
        if args.init.endswith('.bin'):
            read_llama2c(model, args.init)
        else:
            model.load_state_dict(torch.load(args.init))
    elif args.plant == 'trigram':
        # its position heads read 8 rotary pairs where the bigram start's read
        # all 32: the gain doubles so that their peaks stay as sharp
        model.init_trigram_circuit(args.induction_gain, 2 * args.prev_head_gain)
    elif args.plant == 'context':
        model.init_context_circuit(args.induction_gain, 2 * args.prev_head_gain)
    else:
        model.init_prev_token_head(args.prev_head_gain)
        model.init_induction_head(args.induction_gain)
    n_params = sum(p.numel() for p in model.parameters())
    print('parameters: %d (embedding %d)' % (n_params, model.emb.weight.numel()), flush=True)
    decay = [p for p in model.parameters() if p.dim() == 2]
    nodecay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{'params': decay, 'weight_decay': 0.05}, {'params': nodecay, 'weight_decay': 0.0}],
                            lr=args.lr, betas=(0.9, 0.95))
    csv = open(os.path.splitext(args.out)[0] + '.csv', 'w')
    csv.write('step,seconds,length,loss,loss_answer,acc_answer,loss_lm,lr,loss_copy\n')
    t0 = time.time()
    warm, copy_avg, warm_steps = not args.init, 10.0, 0
    for step in range(args.steps + args.warm_max):
        if warm and (copy_avg < 1.0 or warm_steps >= args.warm_max):
            warm = False
            print('copying drills learned (mean loss %.2f) after %d steps' % (copy_avg, warm_steps), flush=True)
        if warm:
            warm_steps += 1
        elif step - warm_steps >= args.steps or (args.stop_at and step > args.stop_at):
            break
        frac = args.start_frac + (1 - args.start_frac) * (step - warm_steps) / args.steps
        lr = args.lr * min(1.0, (step + 1) / args.warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))
        for g in opt.param_groups:
            g['lr'] = lr
        n_tok, per_step, drills = length_for(rng, frac, args.ctx + args.past_ctx, warm, late)
        x, y, w_ans, w_copy, w_lm = batch(ep, n_tok, per_step, args.lm_share, args.copy_share, rng, drills)
        h = model.hidden(x)
        sel = (w_ans + w_copy + w_lm) > 0
        logits = model.logits(h[sel])
        nll = F.cross_entropy(logits, y[sel], reduction='none')
        a, cp, l = w_ans[sel], w_copy[sel], w_lm[sel]
        loss_ans = (nll * a).sum() / a.sum().clamp(min=1)
        loss_copy = (nll * cp).sum() / cp.sum().clamp(min=1)
        loss_lm = (nll * l).sum() / l.sum().clamp(min=1)
        loss = loss_ans + loss_copy + loss_lm
        if warm:
            copy_avg = 0.9 * copy_avg + 0.1 * loss_copy.item()
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
    p.add_argument('--heads', type=int, default=3)
    p.add_argument('--kv-heads', type=int, default=1)
    p.add_argument('--ctx', type=int, default=2048)
    p.add_argument('--lr', type=float, default=3e-3)
    p.add_argument('--warm-max', type=int, default=600,
                   help='copying drills alone, at 256 tokens, until their loss falls below 1 nat or for this many steps')
    p.add_argument('--tokenizer', default=TOKENIZER,
                   help='llama2.c tokenizer.bin (default: stories260K tok512.bin) or a SentencePiece .model')
    p.add_argument('--warmup', type=int, default=100)
    p.add_argument('--past-ctx', type=int, default=64,
                   help='longest episodes run this many tokens past --ctx (the tokens generated after a full prompt)')
    p.add_argument('--deadline', type=float, default=0, help='stop after this many seconds (0: never), saving the model')
    p.add_argument('--lm-share', type=float, default=1.0, help='share of non-answer positions with a loss')
    p.add_argument('--copy-share', type=float, default=1.0, help='share of repeated-span positions with a loss')
    p.add_argument('--prev-head-gain', type=float, default=0.6,
                   help='start layer 0 head 0 as a previous-token head with this weight (0: plain random start)')
    p.add_argument('--induction-gain', type=float, default=3.0,
                   help='start layer 1 head 0 as an induction head with this query/key gain (0: plain random start)')
    p.add_argument('--plant', choices=('bigram', 'trigram', 'context'), default='bigram',
                   help='the planted start: an induction head matching one token (bigram), two (trigram: '
                        'layer 0 head 1 looks two back) or the token and a summary of the 3-8 before it '
                        '(context: layer 0 head 1 averages them); trigram and context need --heads >= 2 per KV '
                        'head and dim >= 3 * 43')
    p.add_argument('--rope-base', type=float, default=10000.0,
                   help='rotary base (500000 as Llama 3: more pairs turn little across 2K tokens); write the GGUF '
                        'with kvbench convert --rope-base')
    p.add_argument('--init', default='', help="a second stage: start from this run's FILE.pt (no drills-only warm-up)")
    p.add_argument('--stop-at', type=int, default=0,
                   help='stop after step N (counted from 0, warm-up included), keeping the schedule of --steps')
    p.add_argument('--mix', choices=tuple(Episodes.MIXES), default='all',
                   help='episode weights: all (the first stage), retrieval (a second stage: needles and RULER lookups '
                        'weighed up), needle (a third stage: needle questions first), keys (a fourth stage: '
                        'RULER multi-key lookups and needles) or haystack (keys with RULER\'s needle haystacks '
                        'weighed up)')
    p.add_argument('--lengths', default='',
                   help='episode lengths after 30%% of the schedule, comma-separated (default 512,1024,1536,2048 '
                        'and the context plus --past-ctx); each is capped at that')
    p.add_argument('--needle-answer', choices=('short', 'restate'), default='short',
                   help="a needle episode's answer: the activity alone, or the needle sentence restated")
    p.add_argument('--ruler-answer', choices=('short', 'restate'), default='short',
                   help="RULER single-value lookups: the value alone (short), or 'KEY is: VALUE' (restate)")
    p.add_argument('--start-frac', type=float, default=0.0,
                   help='start the curriculum and the learning-rate schedule this far in (a second stage)')
    p.add_argument('--fit', choices=('scale', 'subtract'), default='scale',
                   help='an episode over its length is made again with its text budget scaled by what it cost '
                        '(scale), or less the excess (subtract: the shipped stages 1-3, whose RULER needle '
                        'haystacks shrank to one or two lines)')
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--log-every', type=int, default=10)
    p.add_argument('--save-every', type=int, default=200)
    args = p.parse_args()
    train(args)


if __name__ == '__main__':
    sys.exit(main())
