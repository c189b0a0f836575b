"""Checks kvbench's logits against the numpy reference (llama_ref.py).

For stories260K (both llama2.c files) and every synthetic configuration of
make_synthetic.py, a seeded random token sequence is run through
`kvbench logits` in three modes - one prefill call, one token per call
(decode), and chunks of 7 - and each must satisfy
    max |engine - reference| / max |reference| <= 1e-4
over all positions. Prints a line per check and then "N passed, M failed".

usage: /usr/bin/python3 check_engine.py --kvbench BIN --models DIR --tmp DIR [--only NAME] [--keep]
"""
import argparse
import os
import shutil
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import llama2c_io  # noqa: E402
import llama_ref  # noqa: E402
import make_synthetic  # noqa: E402

TOL = 1e-4
N_TOKENS = 40
MODES = ['prefill', 'decode', 'chunk:7']


def engine_logits(kvbench, model, tokens, mode, out, vocab):
    cmd = [kvbench, 'logits', '--model', model, '--tokens', ','.join(map(str, tokens)),
           '--mode', mode, '--out', out, '--threads', '2']
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError('%s failed: %s' % (' '.join(cmd[:4]), r.stderr.strip()))
    return np.fromfile(out, dtype='<f4').reshape(len(tokens), vocab).astype(np.float64)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--kvbench', required=True)
    ap.add_argument('--models', required=True)
    ap.add_argument('--tmp', required=True)
    ap.add_argument('--only', default=None)
    ap.add_argument('--keep', action='store_true')
    a = ap.parse_args()
    os.makedirs(a.tmp, exist_ok=True)
    rng = np.random.default_rng(1234)

    models = []  # (label, path, reference model)
    for f in ['stories260K.bin', 'stories260K_q8.bin']:
        p = os.path.join(a.models, 'stories260K', f)
        if os.path.exists(p):
            models.append((f, p, llama2c_io.read(p)))
        else:
            print('skip %s: not found' % p)
    for name in make_synthetic.CONFIGS:
        p = os.path.join(a.tmp, name + '.gguf')
        make_synthetic.make(p, name)
        models.append((name, p, llama_ref.from_gguf(p)))

    passed = failed = 0
    for label, path, ref_model in models:
        if a.only and a.only not in label:
            continue
        V = ref_model['cfg']['vocab']
        tokens = [1] + list(rng.integers(0, V, N_TOKENS - 1))
        ref = llama_ref.logits(ref_model, tokens)
        scale = np.abs(ref).max()
        for mode in MODES:
            try:
                got = engine_logits(a.kvbench, path, tokens, mode, os.path.join(a.tmp, 'logits.f32'), V)
                rel = np.abs(got - ref).max() / scale
                ok = rel <= TOL
            except Exception as e:  # report, count, go on
                rel, ok = float('nan'), False
                print('  error: %s' % e)
            print('%-4s %-22s %-8s rel %.2e' % ('PASS' if ok else 'FAIL', label, mode, rel))
            passed += ok
            failed += not ok
    # Evicting caches, token by token, in every position mode: the engine's
    # window and streamingllm policies against the reference decoder.
    p = os.path.join(a.models, 'stories260K', 'stories260K.bin')
    if os.path.exists(p) and not a.only:
        m = llama2c_io.read(p)
        tokens = [1] + list(rng.integers(3, 512, 47))
        for policy, sinks, budget in [('window', 0, 9), ('streamingllm', 4, 12), ('streamingllm', 2, 20)]:
            # rerotate reaches the in-cache positions of 'cache' by rotating
            # kept keys at each eviction: the same reference
            for positions in ['original', 'cache', 'rerotate']:
                ref = llama_ref.logits_sinks_recent(m, tokens, sinks, budget, positions != 'original')
                out = os.path.join(a.tmp, 'logits.f32')
                cmd = [a.kvbench, 'logits', '--model', p, '--tokens', ','.join(map(str, tokens)), '--mode', 'decode',
                       '--out', out, '--threads', '2', '--policy', policy, '--budget', str(budget),
                       '--set', 'positions=%s' % positions + (',sinks=%d' % sinks if policy == 'streamingllm' else '')]
                r = subprocess.run(cmd, capture_output=True, text=True)
                ok, rel = False, float('nan')
                if r.returncode == 0:
                    got = np.fromfile(out, dtype='<f4').reshape(len(tokens), -1).astype(np.float64)
                    rel = np.abs(got - ref).max() / np.abs(ref).max()
                    ok = rel <= TOL
                else:
                    print('  error: %s' % r.stderr.strip())
                print('%-4s %-22s %-8s rel %.2e' % ('PASS' if ok else 'FAIL', '%s %d/%d %s' % (policy, sinks, budget, positions),
                                                  'decode', rel))
                passed += ok
                failed += not ok

    if not a.keep:
        shutil.rmtree(a.tmp, ignore_errors=True)
    print('%d passed, %d failed' % (passed, failed))
    return 1 if failed or not passed else 0


if __name__ == '__main__':
    sys.exit(main())
