"""Sentinel-token compression (Ren, Jia, Zhu, EMNLP 2023; METHODS.md A11)
against an independent reference: synthetic Llama GGUFs whose vocabulary
holds "<CL>" and "<CR>", the engine's `sentinel` policy (spans folded into
their <CR>, span KV freed) against a numpy forward pass over the whole
sequence with the sentinels inserted, the paper's attention mask and its
position ids, written here from the method's description:

  <CL>            attends only to itself;
  a span token    to the ordinary tokens and <CR>s before it and to the
                  earlier tokens of its own span (not its <CL>);
  <CR>            to its <CL>, its span and itself;
  ordinary token  to earlier ordinary tokens and every earlier <CR>;
  positions       a sentinel takes the position of the token before it,
                  every other token the next one.

The spans are the ones the engine chose (it prints them): this checks the
mask, the positions and the eviction, not the random placement (tested in
C). Logits of the last prompt token and of every decoded token must agree
to a relative 1e-4. Prints a line per case and "N passed, M failed".
"""
import argparse
import os
import subprocess
import sys

import numpy as np

import gguf_io as G
import llama_ref
import make_synthetic

TOL = 1e-4


def sentinel_vocab(n):
    """make_synthetic's vocabulary with its last two entries the sentinels
    (user-defined tokens, type 4), as a tokenizer that added them has it."""
    toks, scores, types = make_synthetic.BASE_VOCAB(n)
    toks, types = list(toks), list(types)
    toks[-2:], types[-2:] = ['<CL>', '<CR>'], [4, 4]
    return toks, scores, types


def reference(model, prompt, gen, spans, cl, cr):
    """Logits of the last prompt token and of each generated token."""
    seq, kind, span_id = [], [], []
    starts = {s: (s, e) for s, e in spans}
    i = 0
    while i < len(prompt):
        if i in starts:
            s, e = starts[i]
            seq += [cl] + list(prompt[s:e + 1]) + [cr]
            kind += ['cl'] + ['span'] * (e - s + 1) + ['cr']
            span_id += [s] * (e - s + 3)
            i = e + 1
        else:
            seq.append(prompt[i])
            kind.append('ord')
            span_id.append(-1)
            i += 1
    last_prompt = len(seq) - 1
    for t in gen:
        seq.append(t)
        kind.append('ord')
        span_id.append(-1)
    T = len(seq)
    pos, nxt = [], 0
    for j in range(T):
        if kind[j] in ('cl', 'cr'):
            pos.append(pos[-1] if j else 0)
        else:
            pos.append(nxt)
            nxt += 1
    allowed = np.zeros((T, T), dtype=bool)
    for j in range(T):
        for k in range(j + 1):
            if k == j:
                ok = True
            elif kind[j] == 'cl':
                ok = False
            elif kind[j] == 'cr':
                ok = span_id[k] == span_id[j]
            elif kind[j] == 'span':
                ok = kind[k] in ('ord', 'cr') or (kind[k] == 'span' and span_id[k] == span_id[j])
            else:
                ok = kind[k] in ('ord', 'cr')
            allowed[j, k] = ok
    out = llama_ref.logits(model, seq, pos, allowed)
    return out[[last_prompt] + list(range(last_prompt + 1, T))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--kvbench', required=True)
    ap.add_argument('--tmp', required=True)
    a = ap.parse_args()
    os.makedirs(a.tmp, exist_ok=True)
    make_synthetic.BASE_VOCAB = make_synthetic.vocab
    make_synthetic.vocab = sentinel_vocab
    rng = np.random.default_rng(11)
    passed = failed = 0
    for name in ['hd64_gqa2_f32', 'hd64_mha_f16_untied', 'hd32_gqa4_bf16']:
        path = os.path.join(a.tmp, name + '_sentinel.gguf')
        make_synthetic.make(path, name)
        model = llama_ref.from_gguf(path)
        V = model['cfg']['vocab']
        cl, cr = V - 2, V - 1
        for n_prompt, budget, max_span in [(60, '60%', 6), (90, '40', 25), (45, '80%', 3)]:
            prompt = [1] + list(rng.integers(3, V - 2, n_prompt - 1))
            gen = list(rng.integers(3, V - 2, 6))
            out = os.path.join(a.tmp, 'logits.f32')
            cmd = [a.kvbench, 'logits', '--model', path, '--tokens', ','.join(map(str, prompt + gen)),
                   '--prompt-len', str(n_prompt), '--policy', 'sentinel', '--budget', budget,
                   '--set', 'max_span=%d' % max_span, '--threads', '2', '--out', out]
            r = subprocess.run(cmd, capture_output=True, text=True)
            label = '%s n=%d budget=%s max_span=%d' % (name, n_prompt, budget, max_span)
            ok, rel, n_spans = False, float('nan'), 0
            if r.returncode == 0:
                line = [x for x in r.stdout.splitlines() if x.startswith('spans')][0]
                spans = [tuple(map(int, x.split('-'))) for x in line.split()[1:]]
                n_spans = len(spans)
                got = np.fromfile(out, dtype='<f4').reshape(n_prompt + len(gen), V)[n_prompt - 1:].astype(np.float64)
                ref = reference(model, prompt, gen, spans, cl, cr)
                rel = np.abs(got - ref).max() / np.abs(ref).max()
                # the spans must free what the budget asks: prompt slots = n - sum(L - 1)
                held = n_prompt - sum(e - s for s, e in spans)
                limit = int(n_prompt * float(budget[:-1]) / 100) if budget.endswith('%') else int(budget)
                ok = rel <= TOL and n_spans > 0 and held == limit
                if held != limit:
                    print('  spans leave %d prompt slots, budget %d' % (held, limit))
            else:
                print('  error: %s' % r.stderr.strip())
            print('%-4s %-44s %2d spans rel %.2e' % ('PASS' if ok else 'FAIL', label, n_spans, rel))
            passed += ok
            failed += not ok
    # without the sentinel tokens the method refuses, naming them
    path = os.path.join(a.tmp, 'plain.gguf')
    make_synthetic.vocab = make_synthetic.BASE_VOCAB
    make_synthetic.make(path, 'hd64_gqa2_f32')
    r = subprocess.run([a.kvbench, 'logits', '--model', path, '--tokens', '1,5,6,7,8,9,10,11', '--prompt-len', '8',
                        '--policy', 'sentinel', '--budget', '50%', '--out', os.path.join(a.tmp, 'x.f32')],
                       capture_output=True, text=True)
    ok = r.returncode != 0 and 'has no <CL> token' in r.stderr
    print('%-4s %-44s %s' % ('PASS' if ok else 'FAIL', 'no sentinel tokens: refused', r.stderr.strip()[:80]))
    passed += ok
    failed += not ok
    print('%d passed, %d failed' % (passed, failed))
    return 1 if failed or not passed else 0


if __name__ == '__main__':
    sys.exit(main())
