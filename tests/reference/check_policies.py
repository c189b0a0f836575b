"""Replays kvbench's recorded attention through the reference selection
rules of policies_ref.py: for each policy, budget and feeding mode, every
layer call's kept token set must equal kvbench's, and eviction must have
happened. Prints a line per run and "N passed, M failed".

With --archs, each policy (its first configuration above) runs instead on
every synthetic family of arch_ref.py (llama 3, qwen2, qwen3, phi3, gemma2,
gemma3: NEOX pairing, sliding-window layers, soft-capping), with the same
replay and budget checks.

usage: /usr/bin/python3 check_policies.py --kvbench BIN --models DIR --tmp DIR [--archs]
"""
import argparse
import os
import shutil
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import arch_ref  # noqa: E402
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
    ('adakv', 'window=4', '12'), ('adakv', 'window=4,normalize=1', '12'), ('adakv', None, '60%'),
    ('adakv', 'window=2,alloc=factory,pooling=avg,kernel=3', '9'), ('adakv', 'window=4,floor=0.5', '16'),
    ('adakv', 'window=4,layers=pyramid', '12'), ('adakv', 'window=2,layers=pyramid,alloc=factory,floor=0,beta=2', '10'),
    ('zigzag', 'window=4', '12'), ('zigzag', 'window=4,alloc=kvpress,pooling=max,kernel=7', '12'),
    ('zigzag', None, '50%'), ('zigzag', 'window=2,bound=0,threshold=0.5', '20'),
    ('zigzag', 'window=1,bound=0,threshold=0.5,kernel=1', '25'), ('zigzag', 'window=2,threshold=0.3,bound=0.5', '8'),
    ('cascade', None, '12'), ('cascade', 'sinks=2,cascades=3,stride=8', '9'),
    ('cascade', 'head_reduction=mean,eager_fill=0,stride=5', '16'), ('cascade', 'cascades=1', '8'),
    ('cascade', 'positions=original,beta=0.5,stride=7', '40%'), ('cascade', 'cascades=2,sinks=0,eager_fill=0,beta=0.9', '10'),
    # knorm, random (schedule, window) and h2o sim=1 (utils_hh's mask simulation)
    ('knorm', None, '12'), ('knorm', 'recent=4', '40%'), ('knorm', 'schedule=every_step', '9'),
    ('random', 'recent=3', '12'), ('random', 'schedule=every_step,recent=2', '9'),
    ('h2o', 'sim=1', '20%'), ('h2o', 'sim=1,heavy_ratio=0.15,recent_ratio=0.1', '25%'), ('h2o', 'sim=1,recent=0.25', '12'),
    # keyformer's two selections (the runs above use the default, authors)
    ('keyformer', 'selection=paper', '40%'), ('keyformer', 'selection=paper,recent=50', '12'),
    ('keyformer', 'selection=paper,noise=none,recent=0', '8'), ('keyformer', 'recent=70', '70%'),
    ('keyformer', 'selection=authors,noise=none,recent=0', '9'),
    # the snap family per query head (a KV head keeps the union of its group's picks)
    ('snapkv', 'window=4,granularity=query_head', '12'), ('snapkv', 'window=6,kernel=3,pooling=avg,granularity=query_head', '20'),
    ('pyramidkv', 'window=4,granularity=query_head', '12'), ('pyramidkv', 'window=2,alloc=factory,granularity=query_head', '10'),
    ('adakv', 'window=4,granularity=query_head', '12'), ('adakv', 'window=2,normalize=1,alloc=factory,granularity=query_head', '9'),
    ('adakv', 'window=4,layers=pyramid,granularity=query_head', '16'),
    ('zigzag', 'window=4,granularity=query_head', '12'), ('zigzag', 'window=2,bound=0,threshold=0.5,granularity=query_head', '20'),
]
MODES = ['decode', 'chunk:13', 'prefill']
# zigzag cuts every layer in the last layer's call, so an earlier layer's cut
# shows only in its next call, which 'prefill' (one call) never makes: instead
# chunk:30 feeds the prompt alone, then the rest (as the runner does)
POLICY_MODES = {'zigzag': ['decode', 'chunk:13', 'chunk:30']}
# --archs: besides each policy's first run, cascade at original positions,
# where the engine frees window layers' slots under it; its chunks of 7 span
# several one-token calls, so a window of 6 frees a chunk's own first tokens
# before they are inserted
ARCH_EXTRA = [('cascade', 'positions=original,beta=0.5,stride=7', '40%')]
ARCH_MODES = {'cascade': ['decode', 'chunk:13']}


def cascade_limit_differs(rec, settings, budget, n_prompt):
    """cascade's recorded limit is its N = C W cascade slots plus its S sinks
    (W = budget // C, C cut to the budget)."""
    opt = dict(kv.split('=') for kv in settings.split(',')) if settings else {}
    S, C = int(opt.get('sinks', 4)), int(opt.get('cascades', 4))
    N = int(n_prompt * float(budget[:-1]) / 100) if budget.endswith('%') else int(budget)
    C = min(C, N)
    want = C * (N // C) + S
    if rec.limit != want:
        print('  cascade: limit %d recorded, %d expected' % (rec.limit, want))
    return rec.limit != want


def budget_limit_differs(rec, budget, n_prompt):
    """A percentage budget in slots as Keyformer's summarize.py computes it:
    int(n * pct / 100) (30 tokens at 70%: 21, where 30 * 0.7 truncates to 20)."""
    if not budget.endswith('%'):
        return False
    want = max(int(n_prompt * float(budget[:-1]) / 100), 1)
    if rec.limit != want:
        print('  %s: limit %d recorded, %d expected' % (rec.name, rec.limit, want))
    return rec.limit != want


def plan(a):
    """(label prefix, model, tokens, runs, modes of a policy) to check."""
    if not a.archs:
        model = os.path.join(a.models, 'stories260K', 'stories260K.bin')
        if not os.path.exists(model):
            print('skip: %s not found' % model)
            return []
        tokens = [1] + list(np.random.default_rng(7).integers(3, 512, 59))
        return [('', model, tokens, RUNS, lambda p: POLICY_MODES.get(p, MODES), None)]
    firsts, seen = [], set()
    for run in RUNS:  # each policy's first configuration
        if run[0] not in seen:
            seen.add(run[0])
            firsts.append(run)
    out = []
    for name in arch_ref.CONFIGS:
        path = os.path.join(a.tmp, name + '.gguf')
        arch_ref.make(path, name)
        tokens = [1] + list(np.random.default_rng(7).integers(3, 256, 59))
        c = arch_ref.from_gguf(path)['cfg']
        swa = (c['window'], {l for l, w in enumerate(c['swa']) if w}) if c['window'] else None
        out.append((name + ' ', path, tokens, firsts + ARCH_EXTRA,
                    lambda p: ARCH_MODES.get(p, POLICY_MODES.get(p, ['chunk:13'])[-1:]), swa))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--kvbench', required=True)
    ap.add_argument('--models', required=True)
    ap.add_argument('--tmp', required=True)
    ap.add_argument('--archs', action='store_true')
    a = ap.parse_args()
    os.makedirs(a.tmp, exist_ok=True)
    passed = failed = 0
    for prefix, model, tokens, runs, modes_of, swa in plan(a):
        p, f = check_runs(a, prefix, model, tokens, runs, modes_of, swa)
        passed, failed = passed + p, failed + f
    shutil.rmtree(a.tmp, ignore_errors=True)
    print('%d passed, %d failed' % (passed, failed))
    return 1 if failed else 0


# the engine frees a window layer's unseen slots for every method, but not
# under in-cache positions (renumbering): StreamingLLM's and cascade's default
CACHE_POSITIONS = ('streamingllm', 'cascade')


def trims(policy, settings, swa):
    """The model's windows when kvbench trims for this run, else None."""
    opt = dict(kv.split('=') for kv in settings.split(',')) if settings else {}
    pos = opt.get('positions', 'cache' if policy in CACHE_POSITIONS else 'original')
    return None if pos != 'original' else swa


def check_runs(a, prefix, model, tokens, runs, modes_of, swa):
    passed = failed = 0
    for policy, settings, budget in runs:
        for mode in modes_of(policy):
            rec = os.path.join(a.tmp, 'run.rec')
            cmd = [a.kvbench, 'logits', '--model', model, '--tokens', ','.join(map(str, tokens)), '--mode', mode,
                   '--policy', policy, '--budget', budget, '--record', rec, '--out', os.path.join(a.tmp, 'l.f32'),
                   '--threads', '2', '--prompt-len', '30']
            if settings:
                cmd += ['--set', settings]
            r = subprocess.run(cmd, capture_output=True, text=True)
            label = '%s%-12s %-12s %-4s %-8s' % (prefix, policy, settings or '', budget, mode)
            if r.returncode != 0:
                print('FAIL %s: %s' % (label, r.stderr.strip()))
                failed += 1
                continue
            rec_obj = policies_ref.Record(rec)
            evicted = policies_ref.evicted(rec_obj)
            calls, bad = policies_ref.check(rec, trims(policy, settings, swa))
            if policy == 'cascade':
                bad += cascade_limit_differs(rec_obj, settings, budget, 30)
            elif policy in ('keyformer', 'snapkv', 'h2o'):
                bad += budget_limit_differs(rec_obj, budget, 30)
            ok = bad == 0 and evicted
            print('%s %s: %d layer calls, %d differ%s' % ('PASS' if ok else 'FAIL', label, calls, bad,
                                                       '' if evicted else ', no eviction happened'))
            passed += ok
            failed += not ok
    return passed, failed


if __name__ == '__main__':
    sys.exit(main())
