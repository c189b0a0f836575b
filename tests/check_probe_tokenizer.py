#!/usr/bin/python3
"""check_probe_tokenizer.py - train_probe.py's encoder (scripts/probe_tokenizer.py)
must give the tokens kvbench gives, or the probe is trained on text it will
never be fed. Two vocabularies: stories260K's tok512 (the shipped probe's,
against kvbench tokenize --model stories260K.bin) and Llama 2's 32,000 pieces
(tokenizer.bin, against llama.cpp's Llama SentencePiece vocabulary file that
kvbench reads), on fixed texts with runs of spaces, tabs, newlines and
non-ASCII, and on seeded excerpts of the essays and books.
usage: check_probe_tokenizer.py --kvbench BIN --models DIR --data DIR"""
import argparse
import glob
import os
import random
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'scripts'))
from probe_tokenizer import L2CTokenizer  # noqa: E402

FIXED = [
    'The best thing to do in San Francisco is eat a sandwich and sit in Dolores Park on a sunny day.',
    'a  b   c    d\n\n  indented\tline   ',
    '   leading spaces, then     a run of five',
    'One of the special magic numbers for fearless-pharmacist is: 4512783.',
    '3a4434f2-9b1c-4e0d-8f7a-123456789abc',
    'naïve café — “quotes” 東京 🙂',
]


def kvbench_ids(kv, source, text):
    out = subprocess.run([kv, 'tokenize'] + source + ['--text', text], capture_output=True, text=True, check=True).stdout
    return [int(line.split('\t')[0]) for line in out.splitlines() if line.strip()]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--kvbench', required=True)
    ap.add_argument('--models', required=True)
    ap.add_argument('--data', required=True)
    a = ap.parse_args()
    rng = random.Random(20261207)
    texts = list(FIXED)
    files = sorted(glob.glob(os.path.join(a.data, 'niah', 'paul_graham_essays', '*.txt')))[:4] + \
        sorted(glob.glob(os.path.join(a.data, 'pg19', '*')))[:1]
    if len(files) < 2:
        print('FAIL no essays or books under %s' % a.data)
        return 1
    for f in files:
        t = open(f, encoding='utf-8', errors='replace').read()
        for _ in range(4):
            at = rng.randrange(max(1, len(t) - 400))
            texts.append(t[at:at + rng.randrange(20, 400)])
    cases = [
        ('tok512', os.path.join(a.models, 'stories260K', 'tok512.bin'),
         ['--model', os.path.join(a.models, 'stories260K', 'stories260K.bin')]),
        ('llama2', os.path.join(a.models, 'tokenizers', 'llama2', 'tokenizer.bin'),
         ['--tokenizer', os.path.join(a.models, 'tokenizers', 'gguf-vocab', 'ggml-vocab-llama-spm.gguf')]),
    ]
    failed = 0
    for name, path, source in cases:
        enc = L2CTokenizer(path)
        bad = 0
        for t in texts:
            ref, got = kvbench_ids(a.kvbench, source, t), enc.encode(t)
            if not ref:
                print('FAIL %s: kvbench gave no tokens for %r' % (name, t[:40]))
                bad += 1
            elif ref != got:
                k = next((i for i, (x, y) in enumerate(zip(ref, got)) if x != y), min(len(ref), len(got)))
                print('FAIL %s: %r: first difference at token %d: kvbench %s, encoder %s' %
                      (name, t[:40], k, ref[k:k + 4], got[k:k + 4]))
                bad += 1
        print('%s %s: %d of %d texts agree' % ('ok' if not bad else 'FAIL', name, len(texts) - bad, len(texts)))
        failed += bad
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
