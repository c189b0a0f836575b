"""Checks kvbench's forward pass for every rotary family (llama with Llama
3's rope_freqs and linear scaling, qwen2 with biases and YaRN, qwen3, phi3,
gemma2, gemma3) against arch_ref.py, on the synthetic files of
arch_ref.CONFIGS:

- the full cache, in one prefill call, one token per call and chunks of 7;
- evicting caches (window; sinks + recent) token by token in every position
  mode (original, cache, rerotate) and both prefill protocols, on the NEOX,
  YaRN (cos/sin scaled) and sliding-window families.

Each must satisfy max |engine - reference| / max |reference| <= 1e-4.
Prints a line per check, then "N passed, M failed".

usage: /usr/bin/python3 check_arch.py --kvbench BIN --tmp DIR [--only NAME] [--keep]
"""
import argparse
import itertools
import os
import shutil
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import arch_ref  # noqa: E402

TOL = 1e-4
N_TOKENS = 40
EVICTING = ['qwen2_bias_gqa2', 'qwen2_yarn4_q8_0', 'gemma2_swa8_cap', 'gemma3_swa6_linear8', 'llama3_rope_freqs']


def run_logits(kvbench, path, tokens, out, extra):
    cmd = [kvbench, 'logits', '--model', path, '--tokens', ','.join(map(str, tokens)), '--out', out,
           '--threads', '2'] + extra
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(r.stderr.strip())
    return np.fromfile(out, dtype='<f4').reshape(len(tokens), -1).astype(np.float64)


def report(ok, label, rel):
    print('%-4s %-44s rel %.2e' % ('PASS' if ok else 'FAIL', label, rel))
    return ok


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--kvbench', required=True)
    ap.add_argument('--tmp', required=True)
    ap.add_argument('--only', default=None)
    ap.add_argument('--keep', action='store_true')
    a = ap.parse_args()
    os.makedirs(a.tmp, exist_ok=True)
    rng = np.random.default_rng(2024)
    out = os.path.join(a.tmp, 'logits.f32')
    passed = failed = 0
    for name in arch_ref.CONFIGS:
        if a.only and a.only not in name:
            continue
        path = os.path.join(a.tmp, name + '.gguf')
        arch_ref.make(path, name)
        model = arch_ref.from_gguf(path)
        V = model['cfg']['vocab']
        tokens = [1] + list(rng.integers(3, V, N_TOKENS - 1))
        ref = arch_ref.decode(model, tokens)
        scale = np.abs(ref).max()
        for mode in ['prefill', 'decode', 'chunk:7']:
            try:
                got = run_logits(a.kvbench, path, tokens, out, ['--mode', mode])
                rel = np.abs(got - ref).max() / scale
            except Exception as e:  # report, count, go on
                print('  error: %s' % e)
                rel = float('nan')
            ok = report(rel <= TOL, '%s %s' % (name, mode), rel)
            passed, failed = passed + ok, failed + (not ok)
        if name not in EVICTING:
            continue
        for policy, sinks, budget in [('window', 0, 9), ('streamingllm', 4, 12)]:
            for positions, prefill in itertools.product(['original', 'cache', 'rerotate'], ['streaming', 'whole']):
                n_prompt = 20 if prefill == 'whole' else 0
                ref = arch_ref.decode(model, tokens, sinks, budget, positions != 'original', n_prompt)
                sets = 'positions=%s,prefill=%s' % (positions, prefill + (',chunk=1' if prefill == 'streaming' else ''))
                if policy == 'streamingllm':
                    sets += ',sinks=%d' % sinks
                extra = ['--mode', 'decode', '--policy', policy, '--budget', str(budget), '--set', sets]
                if n_prompt:
                    extra += ['--prompt-len', str(n_prompt)]
                try:
                    got = run_logits(a.kvbench, path, tokens, out, extra)
                    rel = np.abs(got - ref).max() / np.abs(ref).max()
                except Exception as e:
                    print('  error: %s' % e)
                    rel = float('nan')
                ok = report(rel <= TOL, '%s %s %d/%d %s %s' % (name, policy, sinks, budget, positions, prefill), rel)
                passed, failed = passed + ok, failed + (not ok)
    # `kvbench synth --arch A` writes what arch_ref reads (llama.cpp's keys and tensors)
    for arch, extra in [('llama', ['--rope-freqs', '8']), ('qwen2', []), ('qwen3', ['--head-dim', '48']),
                        ('phi3', []), ('gemma2', ['--swa', '8']), ('gemma3', ['--swa', '6', '--layers', '7'])]:
        if a.only and a.only not in 'synth-' + arch:
            continue
        path = os.path.join(a.tmp, 'synth-%s.gguf' % arch)
        cmd = [a.kvbench, 'synth', path, '--arch', arch, '--dim', '128', '--hidden', '256', '--heads', '4',
               '--kv-heads', '2', '--vocab', '300', '--std', '0.08'] + extra + (['--layers', '2'] if arch != 'gemma3' else [])
        r = subprocess.run(cmd, capture_output=True, text=True)
        rel = float('nan')
        if r.returncode == 0:
            model = arch_ref.from_gguf(path)
            tokens = [1] + list(rng.integers(3, 300, N_TOKENS - 1))
            ref = arch_ref.decode(model, tokens)
            try:
                got = run_logits(a.kvbench, path, tokens, out, ['--mode', 'chunk:7'])
                rel = np.abs(got - ref).max() / np.abs(ref).max()
            except Exception as e:
                print('  error: %s' % e)
        else:
            print('  error: %s' % r.stderr.strip())
        ok = report(rel <= TOL, 'synth --arch %s chunk:7' % arch, rel)
        passed, failed = passed + ok, failed + (not ok)
    if not a.keep:
        shutil.rmtree(a.tmp, ignore_errors=True)
    print('%d passed, %d failed' % (passed, failed))
    return 1 if failed or not passed else 0


if __name__ == '__main__':
    sys.exit(main())
