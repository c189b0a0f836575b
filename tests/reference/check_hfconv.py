"""`kvbench convert HFDIR OUT.gguf` against the numpy reference (hf_io.py).

Synthetic Hugging Face folders (tiny shapes, GQA, a byte-level
tokenizer.json) are written, converted, and checked:
  - logits: `kvbench logits` of the GGUF (prefill and decode) equal the
    Hugging Face forward of hf_io.py on the safetensors directly, within
        max |engine - reference| / max |reference| <= 1e-4,
    for the architectures in ENGINE_ARCHS (F32, BF16 sharded, F16 sources);
    a Q8_0 conversion within 2e-2;
  - files: the GGUF keys, tensor names, shapes and values llama.cpp's
    converter writes for every model type (qwen2, qwen3 and gemma2 included);
  - refusals: malformed or inconsistent folders fail naming the file and the
    tensor or key, and leave neither OUT nor OUT.tmp behind.
Prints a line per check and then "N passed, M failed".

usage: /usr/bin/python3 check_hfconv.py --kvbench BIN --models DIR --tmp DIR [--only NAME]
"""
import argparse
import json
import math
import os
import shutil
import struct
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gguf_io  # noqa: E402
import hf_io  # noqa: E402

TOL = 1e-4
# The GGUF architectures whose forward kvbench runs. The numpy forward of
# hf_io.py already covers qwen2, qwen3 and gemma2: add each here when
# engine/context.c runs it, and check_logits compares it like llama.
ENGINE_ARCHS = {'llama', 'qwen2', 'qwen3', 'gemma2'}
TOKENS = [260, 72, 101, 108, 108, 111, 32, 116, 104, 101, 114, 101, 256, 258, 259, 44, 33, 10, 97, 110]


class Checks:
    def __init__(self):
        self.passed = self.failed = 0

    def ok(self, cond, label, detail=''):
        if cond:
            self.passed += 1
            print('ok   %s %s' % (label, detail))
        else:
            self.failed += 1
            print('FAIL %s %s' % (label, detail))
        return cond


def run(cmd):
    return subprocess.run(cmd, capture_output=True, text=True)


def convert(a, src, out, *extra):
    if os.path.exists(out):
        os.remove(out)
    return run([a.kvbench, 'convert', src, out] + list(extra))


def engine_logits(a, model, mode, vocab):
    out = os.path.join(a.tmp, 'logits.bin')
    r = run([a.kvbench, 'logits', '--model', model, '--tokens', ','.join(map(str, TOKENS)), '--mode', mode,
             '--out', out, '--threads', '2'])
    if r.returncode != 0:
        raise RuntimeError('kvbench logits: ' + r.stderr.strip())
    return np.fromfile(out, dtype='<f4').reshape(len(TOKENS), vocab).astype(np.float64)


def folder(a, name, cfg, dtype='F32', shards=1, seed=0, tokenizer=True, tensors=None):
    d = os.path.join(a.tmp, name)
    shutil.rmtree(d, ignore_errors=True)
    tok, tcfg = hf_io.byte_level_tokenizer() if tokenizer else (None, None)
    t = hf_io.make_tensors(cfg, seed) if tensors is None else tensors
    hf_io.write_folder(d, cfg, t, dtype, shards, tok, tcfg)
    return d


def check_logits(a, ck, label, d, out, tol=TOL):
    cfg, t = hf_io.read_folder(d)
    ref = hf_io.logits(cfg, t, TOKENS)
    for mode in ('prefill', 'decode'):
        got = engine_logits(a, out, mode, cfg['vocab_size'])
        rel = np.abs(got - ref).max() / np.abs(ref).max()
        ck.ok(rel <= tol, '%s logits %s' % (label, mode), 'rel %.2e (tol %.0e)' % (rel, tol))


# ------------------------------------------------------------ logits

def logits_cases(a, ck):
    cases = [  # label, config, source dtype, shards, --type, tolerance
        ('llama-f32', hf_io.config('llama', vocab_size=272), 'F32', 1, 'f32', TOL),
        ('mistral-bf16-sharded-tied', hf_io.config('mistral', tie_word_embeddings=True, sliding_window=None),
         'BF16', 3, 'f32', TOL),
        ('llama-f16-to-f16', hf_io.config('llama', num_key_value_heads=1), 'F16', 1, 'f16', TOL),
        ('llama-to-q8_0', hf_io.config('llama'), 'F32', 1, 'q8_0', 2e-2),
        ('llama-bias', hf_io.config('llama', attention_bias=True), 'F32', 1, 'f32', TOL),
        ('qwen2', hf_io.config('qwen2', tie_word_embeddings=True), 'F32', 1, 'f32', TOL),
        ('qwen3', hf_io.config('qwen3', head_dim=24), 'F32', 1, 'f32', TOL),
        ('gemma2', hf_io.config('gemma2', head_dim=16, query_pre_attn_scalar=16, sliding_window=6,
                                attn_logit_softcapping=50.0, final_logit_softcapping=30.0), 'F32', 1, 'f32', TOL),
    ]
    for i, (label, cfg, dt, shards, ty, tol) in enumerate(cases):
        if a.only and a.only not in label:
            continue
        d = folder(a, label, cfg, dt, shards, seed=10 + i)
        out = d + '.gguf'
        r = convert(a, d, out, '--type', ty)
        if not ck.ok(r.returncode == 0 and os.path.exists(out), '%s converts' % label, r.stderr.strip()):
            continue
        arch = gguf_io.read(out)[0]['general.architecture']
        if arch in ENGINE_ARCHS:
            check_logits(a, ck, label, d, out, tol)
        else:
            print('skip %s logits: the engine does not run %s yet (ENGINE_ARCHS)' % (label, arch))


# ------------------------------------------------------------ files

def permuted(w, heads):
    """llama.cpp's LlamaModel.permute, restated: each head's rows from halves to pairs."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def check_file(a, ck, label, cfg, want_keys, want_tensors, extra=(), check=None, dtype='F32'):
    if a.only and a.only not in label:
        return
    d = folder(a, label, cfg, dtype, seed=3)
    out = d + '.gguf'
    r = convert(a, d, out, *extra)
    if not ck.ok(r.returncode == 0, '%s converts' % label, r.stderr.strip()):
        return
    meta, t, types = gguf_io.read(out)
    bad = {k: (meta.get(k), v) for k, v in want_keys.items()
           if not (k in meta and (meta[k] == v or (isinstance(v, float) and abs(meta[k] - v) <= 1e-6 * abs(v))))}
    ck.ok(not bad, '%s keys' % label, 'differ: %s' % bad if bad else '')
    names = set(t) - {n for n in t if False}
    ck.ok(names == set(want_tensors), '%s tensor names' % label,
          'missing %s, extra %s' % (sorted(set(want_tensors) - names), sorted(names - set(want_tensors)))
          if names != set(want_tensors) else '(%d)' % len(names))
    shapes = {n: s for n, s in want_tensors.items() if n in t and tuple(t[n].shape) != tuple(s)}
    ck.ok(not shapes, '%s tensor shapes' % label, str({n: (t[n].shape, s) for n, s in shapes.items()}))
    if check:
        _, hf = hf_io.read_folder(d)
        check(meta, t, types, hf)


def layer_names(cfg, extra):
    D, F, H = cfg['hidden_size'], cfg['intermediate_size'], cfg['num_attention_heads']
    KV, hd = cfg.get('num_key_value_heads', H), cfg.get('head_dim', cfg['hidden_size'] // H)
    out = {'token_embd.weight': (cfg['vocab_size'], D), 'output_norm.weight': (D,)}
    for l in range(cfg['num_hidden_layers']):
        b = 'blk.%d.' % l
        out.update({b + 'attn_norm.weight': (D,), b + 'attn_q.weight': (H * hd, D), b + 'attn_k.weight': (KV * hd, D),
                    b + 'attn_v.weight': (KV * hd, D), b + 'attn_output.weight': (D, H * hd),
                    b + 'ffn_norm.weight': (D,), b + 'ffn_gate.weight': (F, D), b + 'ffn_up.weight': (F, D),
                    b + 'ffn_down.weight': (D, F)})
        for n, s in extra.items():
            out[b + n] = s
    return out


def file_cases(a, ck):
    # llama: the permutation, rope.dimension_count, vocab_size, output present
    c = hf_io.config('llama', rope_scaling={'rope_type': 'linear', 'factor': 2.0})

    def llama_values(meta, t, types, hf):
        q, k = hf['model.layers.1.self_attn.q_proj.weight'], hf['model.layers.1.self_attn.k_proj.weight']
        ck.ok(np.array_equal(t['blk.1.attn_q.weight'], permuted(q, 4)) and
              np.array_equal(t['blk.1.attn_k.weight'], permuted(k, 2)), 'llama q/k rows permuted as llama.cpp does')
        ck.ok(np.array_equal(t['output.weight'], hf['lm_head.weight']), 'llama output = lm_head')
    check_file(a, ck, 'llama-file', c,
               {'general.architecture': 'llama', 'llama.context_length': 256, 'llama.embedding_length': 64,
                'llama.block_count': 2, 'llama.feed_forward_length': 96, 'llama.attention.head_count': 4,
                'llama.attention.head_count_kv': 2, 'llama.attention.layer_norm_rms_epsilon': 1e-5,
                'llama.rope.freq_base': 10000.0, 'llama.rope.dimension_count': 16, 'llama.vocab_size': 261,
                'llama.rope.scaling.type': 'linear', 'llama.rope.scaling.factor': 2.0, 'general.file_type': 0,
                'tokenizer.ggml.model': 'gpt2', 'tokenizer.ggml.pre': 'gpt-2', 'tokenizer.ggml.eos_token_id': 260,
                'tokenizer.chat_template': hf_io.CHAT_TEMPLATE},
               dict(layer_names(c, {}), **{'output.weight': (261, 64)}), check=llama_values)

    # llama with attention_bias: the q and k biases permuted like their rows
    # (the logits of such a file: the 'llama-bias' case above)
    c = hf_io.config('llama', attention_bias=True)

    def bias_values(meta, t, types, hf):
        b = 'model.layers.0.self_attn.%s_proj.bias'
        ck.ok(np.array_equal(t['blk.0.attn_q.bias'], permuted(hf[b % 'q'], 4).astype(np.float32)) and
              np.array_equal(t['blk.0.attn_k.bias'], permuted(hf[b % 'k'], 2).astype(np.float32)) and
              np.array_equal(t['blk.0.attn_v.bias'], hf[b % 'v'].astype(np.float32)),
              'llama attention_bias: q/k biases permuted, v kept')
    check_file(a, ck, 'llama-bias-file', c, {'general.architecture': 'llama'},
               dict(layer_names(c, {'attn_q.bias': (64,), 'attn_k.bias': (32,), 'attn_v.bias': (32,)}),
                    **{'output.weight': (261, 64)}), check=bias_values)

    # llama3 rope scaling: rope_freqs.weight, checked against the frequencies
    # the transformers documentation defines (inv_freq / rope_freqs)
    c = hf_io.config('llama', hidden_size=128, num_attention_heads=2, rope_theta=500000.0,
                     rope_scaling={'rope_type': 'llama3', 'factor': 8.0, 'low_freq_factor': 1.0,
                                   'high_freq_factor': 4.0, 'original_max_position_embeddings': 8192})

    def llama3_values(meta, t, types, hf):
        base = hf_io.inv_freq(dict(c, rope_scaling=None), 64)
        want = base / hf_io.inv_freq(c, 64)
        got = t['rope_freqs.weight']
        rel = np.abs(got - want).max() / want.max()
        ck.ok(rel < 1e-5 and got.min() == 1.0 and got.max() == 8.0, 'llama3 rope_freqs = inv_freq / scaled inv_freq',
              'rel %.1e, range %g..%g' % (rel, got.min(), got.max()))
        ck.ok('llama.rope.scaling.type' not in meta, 'llama3 writes no rope.scaling.type')
    check_file(a, ck, 'llama3-rope', c, {'llama.rope.freq_base': 500000.0},
               dict(layer_names(c, {}), **{'output.weight': (261, 128), 'rope_freqs.weight': (32,)}),
               check=llama3_values)

    # qwen2: biases, no permutation, tied (no output), padded vocabulary, YaRN keys, BF16 output
    c = hf_io.config('qwen2', vocab_size=272, tie_word_embeddings=True,
                     rope_scaling={'type': 'yarn', 'factor': 4.0, 'original_max_position_embeddings': 64})

    def qwen2_values(meta, t, types, hf):
        q = hf['model.layers.0.self_attn.q_proj.weight']
        got = t['blk.0.attn_q.weight']
        ck.ok(np.abs(got - q).max() <= np.abs(q).max() / 128, 'qwen2 q rows kept in order (not permuted)')
        ck.ok(np.array_equal(t['blk.0.attn_k.bias'], hf['model.layers.0.self_attn.k_proj.bias'].astype(np.float32)),
              'qwen2 k bias copied in F32')
        toks, tt = meta['tokenizer.ggml.tokens'], meta['tokenizer.ggml.token_type']
        ck.ok(len(toks) == 272 and toks[271] == '[PAD271]' and tt[271] == 5 and tt[260] == 3,
              'qwen2 vocabulary padded to vocab_size with [PADn] (UNUSED)', '%d tokens' % len(toks))
        ck.ok(types['blk.0.attn_q.weight'] == gguf_io.BF16 and types['blk.0.attn_q.bias'] == gguf_io.F32,
              'qwen2 --type bf16: matrices BF16, vectors F32')
    qb = {'attn_q.bias': (64,), 'attn_k.bias': (32,), 'attn_v.bias': (32,)}
    check_file(a, ck, 'qwen2-file', c,
               {'general.architecture': 'qwen2', 'qwen2.context_length': 256, 'qwen2.embedding_length': 64,
                'qwen2.attention.head_count_kv': 2, 'qwen2.rope.freq_base': 10000.0,
                'qwen2.rope.scaling.type': 'yarn', 'qwen2.rope.scaling.factor': 4.0,
                'qwen2.rope.scaling.original_context_length': 64, 'general.file_type': 32},
               layer_names(c, qb), extra=('--type', 'bf16'), check=qwen2_values)

    # qwen3: head_dim apart from hidden/heads, q/k norms
    c = hf_io.config('qwen3', head_dim=24)
    check_file(a, ck, 'qwen3-file', c,
               {'general.architecture': 'qwen3', 'qwen3.attention.key_length': 24,
                'qwen3.attention.value_length': 24, 'qwen3.attention.head_count': 4},
               dict(layer_names(c, {'attn_q_norm.weight': (24,), 'attn_k_norm.weight': (24,)}),
                    **{'output.weight': (261, 64)}))

    # gemma2: norms + 1, post norms, softcapping keys, sliding window, lm_head skipped
    c = hf_io.config('gemma2', head_dim=16, query_pre_attn_scalar=16, sliding_window=8,
                     attn_logit_softcapping=50.0, final_logit_softcapping=30.0)
    t = hf_io.make_tensors(c, 3)

    def gemma2_values(meta, tt, types, hf):
        w = hf['model.layers.1.post_feedforward_layernorm.weight']
        ck.ok(np.abs(tt['blk.1.post_ffw_norm.weight'] - (w + 1)).max() < 1e-6 and
              np.abs(tt['output_norm.weight'] - (hf['model.norm.weight'] + 1)).max() < 1e-6,
              'gemma2 norm weights stored as 1 + w')
        ck.ok(np.array_equal(tt['blk.0.ffn_norm.weight'],
                             (hf['model.layers.0.pre_feedforward_layernorm.weight'] + 1).astype(np.float32)),
              'gemma2 pre_feedforward_layernorm -> ffn_norm')
    check_file(a, ck, 'gemma2-file', c,
               {'general.architecture': 'gemma2', 'gemma2.attn_logit_softcapping': 50.0,
                'gemma2.final_logit_softcapping': 30.0, 'gemma2.attention.sliding_window': 8,
                'gemma2.attention.key_length': 16},
               layer_names(c, {'post_attention_norm.weight': (64,), 'post_ffw_norm.weight': (64,)}),
               check=gemma2_values)
    del t


# ------------------------------------------------------------ tokenizers

def tokenizer_cases(a, ck):
    if a.only and a.only not in 'spm-tokenizer':
        return
    spm = os.path.join(a.models, 'tokenizers', 'hf', 'llama2', 'tokenizer.json')
    tok512 = os.path.join(a.models, 'stories260K', 'tok512.bin')
    if not (os.path.exists(spm) and os.path.exists(tok512)):
        print('skip spm-tokenizer: %s or %s not found' % (spm, tok512))
        return
    d = folder(a, 'spm-tokenizer', hf_io.config('llama', vocab_size=512), tokenizer=False)
    os.symlink(spm, os.path.join(d, 'tokenizer.json'))
    out = d + '.gguf'
    r = convert(a, d, out)
    # a SentencePiece tokenizer.json converts (scores from its merges), but
    # not into a model of another vocabulary size: refused, naming both files
    ck.ok(r.returncode != 0 and 'tokenizer.json' in r.stderr and 'vocab_size 512' in r.stderr
          and not os.path.exists(out), 'spm tokenizer.json of another size refused, naming it', r.stderr.strip())
    r = convert(a, d, out, '--tokenizer', tok512)
    ok = ck.ok(r.returncode == 0, 'spm folder converts with --tokenizer tok512.bin', r.stderr.strip())
    if ok:
        meta = gguf_io.read(out)[0]
        ck.ok(meta.get('tokenizer.ggml.model') == 'llama' and len(meta['tokenizer.ggml.scores']) == 512,
              'spm: the given tokenizer written with its scores')
        check_logits(a, ck, 'spm-tokenizer', d, out)
    d2 = folder(a, 'no-tokenizer', hf_io.config('llama'), tokenizer=False)
    r = convert(a, d2, d2 + '.gguf')
    ck.ok(r.returncode != 0 and 'no tokenizer.json' in r.stderr, 'no tokenizer.json refused', r.stderr.strip())


# ------------------------------------------------------------ refusals

def rewrite_header(path, edit):
    """Applies edit(header dict) to a safetensors file's header, keeping its data."""
    with open(path, 'rb') as f:
        data = f.read()
    n = struct.unpack_from('<Q', data, 0)[0]
    h = json.loads(data[8:8 + n])
    edit(h)
    hb = json.dumps(h).encode()
    hb += b' ' * ((-len(hb)) % 8)
    with open(path, 'wb') as f:
        f.write(struct.pack('<Q', len(hb)) + hb + data[8 + n:])


def refusal_cases(a, ck):
    base = hf_io.config('llama')
    K = 'model.layers.1.self_attn.k_proj.weight'

    def truncate(d):
        p = os.path.join(d, 'model.safetensors')
        with open(p, 'rb') as f:
            data = f.read()
        with open(p, 'wb') as f:
            f.write(data[:len(data) - 100])

    def overlap(d):
        def e(h):
            b, _ = h[K]['data_offsets']
            h[K]['data_offsets'] = [b - 4, b - 4 + (h[K]['data_offsets'][1] - b)]
        rewrite_header(os.path.join(d, 'model.safetensors'), e)

    def out_of_range(d):
        def e(h):
            h[K]['data_offsets'] = [10 ** 12, 10 ** 12 + 4096]
        rewrite_header(os.path.join(d, 'model.safetensors'), e)

    def bad_dtype(d):
        def e(h):
            h[K]['dtype'] = 'I8'
        rewrite_header(os.path.join(d, 'model.safetensors'), e)

    def header_len(d):
        p = os.path.join(d, 'model.safetensors')
        with open(p, 'r+b') as f:
            f.write(struct.pack('<Q', 1 << 40))

    def edit_config(**kw):
        def f(d):
            p = os.path.join(d, 'config.json')
            c = json.load(open(p))
            c.update(kw)
            json.dump(c, open(p, 'w'))
        return f

    def missing_shard(d):
        os.remove(os.path.join(d, 'model-00002-of-00002.safetensors'))

    def drop_tensor(d):
        cfg, t = hf_io.read_folder(d)
        del t['model.layers.0.mlp.up_proj.weight']
        hf_io.write_folder(d, cfg, t)

    def extra_tensor(d):
        cfg, t = hf_io.read_folder(d)
        t['model.layers.0.self_attn.rotary_emb.inv_freq'] = np.ones(8)  # skipped, as llama.cpp does
        t['model.layers.0.mystery.weight'] = np.ones(8)
        hf_io.write_folder(d, cfg, t)

    cases = [  # label, edit, shards, substrings stderr must hold
        ('truncated', truncate, 1, ['model.safetensors', 'data_offsets', 'out of range']),
        ('header length', header_len, 1, ['model.safetensors', 'offset 0', 'header length']),
        ('overlapping offsets', overlap, 1, ['model.safetensors', 'overlap']),
        ('offsets out of range', out_of_range, 1, ['model.safetensors', K, 'out of range']),
        ('unsupported dtype', bad_dtype, 1, ['model.safetensors', K, 'I8']),
        ('shape vs config', edit_config(num_key_value_heads=4), 1,
         ['model.safetensors', 'k_proj.weight', 'shape [32, 64]', '[64, 64]', 'config.json']),
        ('missing tensor', drop_tensor, 1, ['model.layers.0.mlp.up_proj.weight', 'missing']),
        ('unknown tensor', extra_tensor, 1, ['model.layers.0.mystery.weight']),
        ('missing shard', missing_shard, 2, ['model-00002-of-00002.safetensors']),
        ('unknown model_type', edit_config(model_type='gpt_neox'), 1, ['config.json', 'gpt_neox']),
        ('unsupported rope_scaling', edit_config(rope_scaling={'type': 'dynamic', 'factor': 2.0}), 1,
         ['config.json', 'dynamic']),
        ('config missing key', edit_config(hidden_size=None), 1, ['config.json', 'hidden_size']),
        ('vocab_size below the tokenizer', edit_config(vocab_size=200), 1, ['tokenizer', '261', 'vocab_size 200']),
    ]
    for label, edit, shards, want in cases:
        if a.only and a.only not in label:
            continue
        d = folder(a, 'bad', base, shards=shards, seed=5)
        edit(d)
        out = os.path.join(a.tmp, 'bad.gguf')
        r = convert(a, d, out)
        msg = r.stderr.strip()
        ck.ok(r.returncode == 1 and all(w in msg for w in want) and not os.path.exists(out)
              and not os.path.exists(out + '.tmp'), 'refused: %s' % label, msg)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--kvbench', required=True)
    ap.add_argument('--models', required=True)
    ap.add_argument('--tmp', required=True)
    ap.add_argument('--only', default=None)
    a = ap.parse_args()
    os.makedirs(a.tmp, exist_ok=True)
    ck = Checks()
    logits_cases(a, ck)
    file_cases(a, ck)
    tokenizer_cases(a, ck)
    refusal_cases(a, ck)
    print('%d passed, %d failed' % (ck.passed, ck.failed))
    return 1 if ck.failed or not ck.passed else 0


if __name__ == '__main__':
    sys.exit(main())
