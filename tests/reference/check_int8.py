"""Checks kvbench's int8 kernel mode (--kernels int8) against a numpy
forward that rounds every matrix product's input as llama.cpp's CPU
backend does for the weight's type (its vec_dot_type), written from
ggml's block definitions:

- Q8_0 and Q4_0 weights: activations in blocks of 32 as block_q8_0, the
  scale amax/127 kept in fp16, values round(x * 127/amax), ties to even;
- K-quant weights: blocks of 256 as block_q8_K, the scale the reciprocal
  of the fp32 multiplier 127/amax (the sign of the block's extreme,
  which ggml carries in both, cancels);
- F16 / BF16 weights: activations rounded to that type;
- GELU (gemma2's GeGLU) through ggml's fp16 table (gelu_ggml).

One token (position 0: the attention returns the value row), on
synthetic Llama files of each type and Gemma 2 files of three, written by
`kvbench synth`; the
logits must agree within 1e-5 of the largest. Then, on each file, 31
tokens read in one forward, a token at a time and in chunks of 7 must
give bit-identical logits in int8 mode (prefill computes each token as
decode does). The float mode, against the
unrounded forward, within 1e-5 too; and the two references differ by
more than ten times that (the rounding is what is checked). Prints a line per
check, then "N passed, M failed".

usage: /usr/bin/python3 check_int8.py --kvbench BIN --tmp DIR
"""
import argparse
import os
import shutil
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import arch_ref  # noqa: E402

TOL = 1e-5
TYPES = ['q8_0', 'q4_0', 'q4_k', 'q5_k', 'q6_k', 'q3_k', 'q2_k', 'f16', 'bf16']
GEMMA_TYPES = ['q8_0', 'q4_k', 'bf16']  # GeGLU: llama.cpp's fp16 GELU table in int8 mode
TOKEN = 5


def to_f16(x):
    return x.astype(np.float32).astype(np.float16).astype(np.float32)


def to_bf16(x):
    """Round to nearest even in the top 16 bits of the fp32 pattern."""
    u = np.asarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    u = (u + 0x7FFF + ((u >> 16) & 1)) >> 16 << 16
    return u.astype(np.uint32).view(np.float32)


def q8_blocks(x, blk):
    x = x.astype(np.float32).reshape(-1, blk)
    amax = np.abs(x).max(axis=1)
    mult = np.where(amax > 0, np.float32(127) / np.where(amax > 0, amax, 1), 0).astype(np.float32)
    q = np.rint(x * mult[:, None])
    if blk == 32:
        d = to_f16(amax / np.float32(127))
    else:
        d = np.where(mult > 0, np.float32(1) / np.where(mult > 0, mult, 1), 0).astype(np.float32)
    return (q * d[:, None]).reshape(-1)


def rounding(wtype):
    if wtype in ('q8_0', 'q4_0'):
        return lambda x: q8_blocks(x, 32)
    if wtype.endswith('_k'):
        return lambda x: q8_blocks(x, 256)
    return {'f16': to_f16, 'bf16': to_bf16}[wtype]


def gelu_ggml(x):
    """llama.cpp's GELU as its CPU backend is built by default (GGML_GELU_FP16,
    ggml_vec_geglu_f32): 0 at or below -10, x at or above 10, else the input
    rounded to fp16 indexes a table of the tanh form computed in fp32 at that
    fp16 value and rounded to fp16."""
    x32 = np.asarray(x, dtype=np.float32)
    h = x32.astype(np.float16).astype(np.float32)
    k, a, half, one = np.float32(0.79788456080286535587989211986876), np.float32(0.044715), np.float32(0.5), np.float32(1)
    g = (half * h * (one + np.tanh(k * h * (one + a * h * h)))).astype(np.float32)
    y = g.astype(np.float16).astype(np.float32)
    return np.where(x32 <= -10, np.float32(0), np.where(x32 >= 10, x32, y)).astype(np.float64)


def forward_first(model, rnd, gelu=arch_ref.gelu_tanh):
    """The logits of one token at position 0; rnd(x) rounds each product's
    input. Gemma: embeddings times sqrt(dim), (1 + w) norms, the post-norms,
    GeGLU with `gelu`, the final soft-cap (one key: the attention's cap
    changes nothing)."""
    c = model['cfg']
    H, KV, hd, gemma = c['n_heads'], c['n_kv_heads'], c['head_dim'], c['gemma']
    mm = lambda h, W: rnd(h[0]).astype(np.float64)[None, :] @ W.T.astype(np.float64)  # noqa: E731
    norm = lambda x, w: arch_ref.rmsnorm(x, w, c['eps'], gemma)  # noqa: E731
    x = model['emb'][TOKEN][None, :].astype(np.float64) * (np.sqrt(np.float32(c['dim'])) if gemma else 1.0)
    for L in model['layers']:
        v = mm(norm(x, L['attn_norm']), L['wv'])
        o = np.concatenate([v[0, (h // (H // KV)) * hd:(h // (H // KV) + 1) * hd] for h in range(H)])[None, :]
        a = mm(o, L['wo'])
        x = x + (norm(a, L['post_attn']) if L['post_attn'] is not None else a)
        h = norm(x, L['ffn_norm'])
        g, u = mm(h, L['w_gate']), mm(h, L['w_up'])
        m = mm((gelu(g) if gemma else g / (1 + np.exp(-g))) * u, L['w_down'])
        x = x + (norm(m, L['post_ffn']) if L['post_ffn'] is not None else m)
    logit = mm(norm(x, model['out_norm']), model['out'])[0]
    return c['final_cap'] * np.tanh(logit / c['final_cap']) if c['final_cap'] else logit


def kv_logits(kvbench, path, out, kernels):
    r = subprocess.run([kvbench, 'logits', '--model', path, '--tokens', str(TOKEN), '--out', out, '--threads', '2'],
                       capture_output=True, text=True, env=dict(os.environ, KVBENCH_KERNELS=kernels))
    if r.returncode != 0:
        raise RuntimeError(r.stderr.strip())
    return np.fromfile(out, dtype='<f4').astype(np.float64)


def kv_sequence(kvbench, path, out, mode, tokens, kv_type='f32'):
    """Every position's logits of `tokens` in int8 mode, read as `mode`
    (prefill: one forward; decode: a token a step; chunk:N)."""
    r = subprocess.run([kvbench, 'logits', '--model', path, '--tokens', ','.join(map(str, tokens)), '--mode', mode,
                        '--out', out, '--threads', '2', '--kv-type', kv_type],
                       capture_output=True, text=True, env=dict(os.environ, KVBENCH_KERNELS='int8'))
    if r.returncode != 0:
        raise RuntimeError(r.stderr.strip())
    return np.fromfile(out, dtype='<f4').reshape(len(tokens), -1)


def same_bits(kvbench, path, out, kv_type='f32'):
    """int8 mode computes a prompt's every token as a decode step does, so
    one forward, a token at a time and chunks of 7 give the same bits (int8
    rounding is discontinuous: any other summation order flips roundings
    and results would depend on how the prompt is cut)."""
    tokens = [1] + [3 + (37 * i) % 300 for i in range(30)]
    a = kv_sequence(kvbench, path, out, 'prefill', tokens, kv_type)
    return all(np.array_equal(a, kv_sequence(kvbench, path, out, m, tokens, kv_type)) for m in ('decode', 'chunk:7'))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--kvbench', required=True)
    ap.add_argument('--tmp', required=True)
    a = ap.parse_args()
    shutil.rmtree(a.tmp, ignore_errors=True)
    os.makedirs(a.tmp)
    ok = bad = 0
    for arch, wtype in [('llama', t) for t in TYPES] + [('gemma2', t) for t in GEMMA_TYPES]:
        path = os.path.join(a.tmp, arch + wtype + '.gguf')
        subprocess.run([a.kvbench, 'synth', path, '--arch', arch, '--dim', '256', '--hidden', '512', '--layers', '2',
                        '--heads', '4', '--kv-heads', '2', '--vocab', '320', '--type', wtype, '--seed', '3'],
                       check=True, capture_output=True)
        model = arch_ref.from_gguf(path)
        exact = forward_first(model, lambda x: x)
        rounded = forward_first(model, rounding(wtype), gelu_ggml)
        out = os.path.join(a.tmp, 'logits.f32')
        scale = np.abs(rounded).max()
        d8 = np.abs(kv_logits(a.kvbench, path, out, 'int8') - rounded).max() / scale
        df = np.abs(kv_logits(a.kvbench, path, out, 'float') - exact).max() / np.abs(exact).max()
        apart = np.abs(rounded - exact).max() / scale
        bits = same_bits(a.kvbench, path, out)
        good = d8 <= TOL and df <= TOL and apart > 10 * TOL and bits
        ok, bad = ok + good, bad + (not good)
        print('%s %-6s %-5s int8 vs llama.cpp-rounded reference %.2e, float vs exact %.2e (the references %.2e apart); '
              'int8 prefill, decode and chunks of 7 %s'
              % ('ok  ' if good else 'FAIL', arch, wtype, d8, df, apart, 'bit-identical' if bits else 'DIFFER'),
              flush=True)
    # the other families (ALiBi, biases, q/k norms, fused weights, local rope) and cache types
    for arch, kv_type in [('mpt', 'f32'), ('qwen2', 'f16'), ('qwen3', 'q8_0'), ('phi3', 'f32'), ('gemma3', 'f32')]:
        path = os.path.join(a.tmp, arch + 'q8_0.gguf')
        subprocess.run([a.kvbench, 'synth', path, '--arch', arch, '--dim', '256', '--hidden', '512', '--layers', '2',
                        '--heads', '4', '--kv-heads', '4' if arch == 'mpt' else '2', '--vocab', '320', '--type', 'q8_0',
                        '--seed', '3'], check=True, capture_output=True)
        good = same_bits(a.kvbench, path, os.path.join(a.tmp, 'logits.f32'), kv_type)
        ok, bad = ok + good, bad + (not good)
        print('%s %-6s q8_0, %s cache: int8 prefill, decode and chunks of 7 %s'
              % ('ok  ' if good else 'FAIL', arch, kv_type, 'bit-identical' if good else 'DIFFER'), flush=True)
    print('%d passed, %d failed' % (ok, bad))
    return 1 if bad else 0


if __name__ == '__main__':
    sys.exit(main())
