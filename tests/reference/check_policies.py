"""Replays kvbench's recorded attention through the reference selection
rules of policies_ref.py: for each policy, budget and feeding mode, every
layer call's kept token set must equal kvbench's, and eviction must have
happened. Prints a line per run and "N passed, M failed".

usage: /usr/bin/python3 check_policies.py --kvbench BIN --models DIR --tmp DIR
"""
import argparse
import os
import shutil
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import policies_ref  # noqa: E402

RUNS = [  # policy, settings, budget
    ('window', None, '7'), ('window', None, '16'),
    ('streamingllm', 'sinks=4', '12'), ('streamingllm', 'sinks=1', '7'),
    ('h2o', 'recent=0.5', '12'), ('h2o', 'recent=0.25', '9'), ('h2o', 'recent=0', '8'),
    ('tova', None, '7'), ('tova', None, '20'),
    ('h2o', 'recent=0.5', '40%'), ('h2o', 'recent=0.5,sim=1', '40%'), ('h2o', 'recent=0.3,sim=1', '11'),
    ('keyformer', None, '40%'), ('keyformer', 'recent=50', '12'), ('keyformer', 'noise=gaussian', '50%'),
    ('keyformer', 'noise=constant,steps=16', '9'), ('keyformer', 'noise=none,recent=0', '8'),
    ('keyformer', 'tau_init=0.5,tau_end=3,steps=20,recent=20', '60%'),
    ('snapkv', 'window=4', '12'), ('snapkv', 'window=6,kernel=3,pooling=max', '20'), ('snapkv', None, '60%'),
    ('snapkv', 'window=8,kernel=7,pooling=max', '17'),
    ('pyramidkv', 'window=4', '12'), ('pyramidkv', 'window=2,kernel=3,alloc=factory', '10'),
    ('pyramidkv', None, '50%'), ('pyramidkv', 'window=4,beta=2,pooling=avg', '9'), ('pyramidkv', 'window=4', '20'),
]
MODES = ['decode', 'chunk:13', 'prefill']


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--kvbench', required=True)
    ap.add_argument('--models', required=True)
    ap.add_argument('--tmp', required=True)
    a = ap.parse_args()
    os.makedirs(a.tmp, exist_ok=True)
    model = os.path.join(a.models, 'stories260K', 'stories260K.bin')
    if not os.path.exists(model):
        print('skip: %s not found' % model)
        print('0 passed, 0 failed')
        return 0
    tokens = [1] + list(np.random.default_rng(7).integers(3, 512, 59))
    passed = failed = 0
    for policy, settings, budget in RUNS:
        for mode in MODES:
            rec = os.path.join(a.tmp, 'run.rec')
            cmd = [a.kvbench, 'logits', '--model', model, '--tokens', ','.join(map(str, tokens)), '--mode', mode,
                   '--policy', policy, '--budget', budget, '--record', rec, '--out', os.path.join(a.tmp, 'l.f32'),
                   '--threads', '2', '--prompt-len', '30']
            if settings:
                cmd += ['--set', settings]
            r = subprocess.run(cmd, capture_output=True, text=True)
            label = '%-12s %-12s %-4s %-8s' % (policy, settings or '', budget, mode)
            if r.returncode != 0:
                print('FAIL %s: %s' % (label, r.stderr.strip()))
                failed += 1
                continue
            rec_obj = policies_ref.Record(rec)
            evicted = any(len(a) < len(b) for ev in rec_obj.events() for a, b in zip(ev['after'], ev['before']))
            calls, bad = policies_ref.check(rec)
            ok = bad == 0 and evicted
            print('%s %s: %d layer calls, %d differ%s' % ('PASS' if ok else 'FAIL', label, calls, bad,
                                                       '' if evicted else ', no eviction happened'))
            passed += ok
            failed += not ok
    shutil.rmtree(a.tmp, ignore_errors=True)
    print('%d passed, %d failed' % (passed, failed))
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
