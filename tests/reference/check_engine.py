"""Checks kvbench's logits against the numpy references (llama_ref.py,
mpt_ref.py).

For stories260K (both llama2.c files) and every synthetic configuration of
make_synthetic.py (Llama and MPT), a seeded random token sequence is run
through `kvbench logits` in three modes - one prefill call, one token per
call (decode), and chunks of 7 - and each must satisfy
    max |engine - reference| / max |reference| <= 1e-4
over all positions. MPT's two GELU forms are each checked to be the one
computed (much nearer its own reference than the other form's). Evicting
caches (window, sinks + recent) are checked token by token in every position
mode (original, cache, rerotate) on stories260K and on synthetic MPT models
(ALiBi over true or in-cache distances). Prints a line per check and then
"N passed, M failed".

usage: /usr/bin/python3 check_engine.py --kvbench BIN --models DIR --tmp DIR [--only NAME] [--keep]
"""
import argparse
import itertools
import os
import shutil
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import llama2c_io  # noqa: E402
import llama_ref  # noqa: E402
import make_synthetic  # noqa: E402
import mpt_ref  # noqa: E402

TOL = 1e-4
N_TOKENS = 40
MODES = ['prefill', 'decode', 'chunk:7']


def engine_logits(kvbench, model, tokens, mode, out, vocab, extra=()):
    cmd = [kvbench, 'logits', '--model', model, '--tokens', ','.join(map(str, tokens)),
           '--mode', mode, '--out', out, '--threads', '2'] + list(extra)
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
    rng_mpt = np.random.default_rng(4321)  # MPT's own draws: the Llama checks' tokens stay as they were

    models = []  # (label, path, reference model, reference logits function)
    for f in ['stories260K.bin', 'stories260K_q8.bin']:
        p = os.path.join(a.models, 'stories260K', f)
        if os.path.exists(p):
            models.append((f, p, llama2c_io.read(p), llama_ref.logits))
        else:
            print('skip %s: not found' % p)
    for name in make_synthetic.CONFIGS:
        p = os.path.join(a.tmp, name + '.gguf')
        make_synthetic.make(p, name)
        models.append((name, p, llama_ref.from_gguf(p), llama_ref.logits))
    for name in make_synthetic.MPT_CONFIGS:
        p = os.path.join(a.tmp, name + '.gguf')
        make_synthetic.make_mpt(p, name)
        models.append((name, p, mpt_ref.from_gguf(p), mpt_ref.logits))

    passed = failed = 0
    worst = {}  # MPT: the worst relative error per label
    for label, path, ref_model, ref_logits in models:
        if a.only and a.only not in label:
            continue
        V = ref_model['cfg']['vocab']
        tokens = [1] + list((rng_mpt if label.startswith('mpt') else rng).integers(0, V, N_TOKENS - 1))
        ref = ref_logits(ref_model, tokens)
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
            if label.startswith('mpt'):
                worst[label] = max(worst.get(label, 0.0), rel)
    # MPT's GELU: the tanh approximation (default, llama.cpp's) or the exact
    # erf form (--gelu erf, Hugging Face's). The two differ by ~1e-4 of the
    # logits, so each must also be at least 10x nearer its own reference.
    name = 'mpt_h6_f32_bias_untied'
    if not a.only or a.only in name:
        p = os.path.join(a.tmp, name + '.gguf')
        m = mpt_ref.from_gguf(p)
        tokens = [1] + list(rng_mpt.integers(0, m['cfg']['vocab'], N_TOKENS - 1))
        refs = {f: mpt_ref.logits(m, tokens, f) for f in ('tanh', 'erf')}
        for form, other in [('tanh', 'erf'), ('erf', 'tanh')]:
            for mode in ['prefill', 'decode']:
                ok, rel, rel_other = False, float('nan'), float('nan')
                try:
                    got = engine_logits(a.kvbench, p, tokens, mode, os.path.join(a.tmp, 'logits.f32'),
                                        m['cfg']['vocab'], ['--gelu', form])
                    rel = np.abs(got - refs[form]).max() / np.abs(refs[form]).max()
                    rel_other = np.abs(got - refs[other]).max() / np.abs(refs[other]).max()
                    ok = rel <= TOL and rel_other >= 10 * rel
                except Exception as e:
                    print('  error: %s' % e)
                print('%-4s %-22s %-8s rel %.2e (to the %s form: %.2e)' % (
                    'PASS' if ok else 'FAIL', '%s gelu=%s' % (name, form), mode, rel, other, rel_other))
                passed += ok
                failed += not ok
                worst[name] = max(worst.get(name, 0.0), rel)
    # Evicting caches, token by token, in every position mode: the engine's
    # window and streamingllm policies against the reference decoder.
    evict = []  # (label, path, tokens, reference decoder)
    p = os.path.join(a.models, 'stories260K', 'stories260K.bin')
    if os.path.exists(p) and not a.only:
        m = llama2c_io.read(p)
        t = [1] + list(rng.integers(3, 512, 47))
        evict.append(('', p, t, lambda s, b, c, n, m=m, t=t: llama_ref.logits_sinks_recent(m, t, s, b, c,
                                                                                         prompt_len=n)))
    # MPT: ALiBi distances over true positions (original) or in-cache indices
    # (cache); 6 heads (non-power-of-two slopes, norm biases) and GQA
    for name in ['mpt_h6_f32_bias_untied', 'mpt_h8_gqa2_f16_bias12']:
        if a.only and a.only not in name:
            continue
        pm = os.path.join(a.tmp, name + '.gguf')
        m = mpt_ref.from_gguf(pm)
        t = [1] + list(rng_mpt.integers(3, m['cfg']['vocab'], 47))
        evict.append((name + ' ', pm, t, lambda s, b, c, n, m=m, t=t: mpt_ref.logits_sinks_recent(m, t, s, b, c,
                                                                                                  prompt_len=n)))
    for label, p, tokens, ref_decoder in evict:
        for policy, sinks, budget in [('window', 0, 9), ('streamingllm', 4, 12), ('streamingllm', 2, 20)]:
            # rerotate reaches the in-cache positions of 'cache' by rotating
            # kept keys at each eviction (nothing to rotate for ALiBi): the
            # same reference
            # prefill=streaming evicts from the first token on; whole reads a
            # 20-token prompt with full attention and evicts at its end
            for positions, prefill in itertools.product(['original', 'cache', 'rerotate'], ['streaming', 'whole']):
                n_prompt = 20 if prefill == 'whole' else 0
                ref = ref_decoder(sinks, budget, positions != 'original', n_prompt)
                out = os.path.join(a.tmp, 'logits.f32')
                cmd = [a.kvbench, 'logits', '--model', p, '--tokens', ','.join(map(str, tokens)), '--mode', 'decode',
                       '--out', out, '--threads', '2', '--policy', policy, '--budget', str(budget),
                       '--set', 'positions=%s,prefill=%s' % (positions, prefill + (',chunk=1' if prefill == 'streaming' else '')) +
                       (',sinks=%d' % sinks if policy == 'streamingllm' else '')]
                if n_prompt:
                    cmd += ['--prompt-len', str(n_prompt)]
                r = subprocess.run(cmd, capture_output=True, text=True)
                ok, rel = False, float('nan')
                if r.returncode == 0:
                    got = np.fromfile(out, dtype='<f4').reshape(len(tokens), -1).astype(np.float64)
                    rel = np.abs(got - ref).max() / np.abs(ref).max()
                    ok = rel <= TOL
                else:
                    print('  error: %s' % r.stderr.strip())
                print('%-4s %-22s %-8s rel %.2e' % ('PASS' if ok else 'FAIL', '%s%s %d/%d %s %s' % (
                    label, policy, sinks, budget, positions, prefill), 'decode', rel))
                passed += ok
                failed += not ok
                if label.startswith('mpt'):
                    worst[label.strip() + ' evicting'] = max(worst.get(label.strip() + ' evicting', 0.0), rel)
    for label in sorted(worst):
        print('worst %-34s rel %.2e' % (label, worst[label]))

    if not a.keep:
        shutil.rmtree(a.tmp, ignore_errors=True)
    print('%d passed, %d failed' % (passed, failed))
    return 1 if failed or not passed else 0


if __name__ == '__main__':
    sys.exit(main())
