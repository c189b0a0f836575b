#!/usr/bin/env python3
"""Writes the fuzz targets' synthetic seeds into tests/fuzz/corpus/TARGET/.

Run from anywhere with numpy (tests/reference/gguf_io.py encodes the
weights): python3 tests/fuzz/make_corpus.py. Every seed is made here, small
(a few KB) and deterministic; nothing is copied from ../shared. Reproducers
of crashes the fuzzers found are added by hand (crash-*) and kept.
The results-database seeds need a kvbench build: --kvbench build/kvbench.
"""
import argparse
import json
import os
import sqlite3
import struct
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..', 'reference'))
import gguf_io as G  # noqa: E402
import hf_io  # noqa: E402

CORPUS = os.path.join(HERE, 'corpus')


def put(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode('utf-8')
    with open(os.path.join(d, name), 'wb') as f:
        f.write(data)


def gguf_bytes(meta, tensors):
    with tempfile.TemporaryDirectory() as t:
        p = os.path.join(t, 'x.gguf')
        G.write(p, meta, tensors)
        return open(p, 'rb').read()


# ------------------------------------------------------------ vocabularies

def spm_vocab(n, byte_tokens=False):
    toks = ['<unk>', '<s>', '</s>'] + (['<0x%02X>' % b for b in range(256)] if byte_tokens else [])
    words = ['\u2581', 'a', 'b', 'c', '\u2581a', '\u2581b', 'ab', '\u2581ab', 'é', '日']
    toks += (words + ['\u2581w%d' % i for i in range(n)])[:max(0, n - len(toks))]
    types = [2, 3, 3] + [6 if t.startswith('<0x') else 1 for t in toks[3:]]
    return toks, [-float(i) for i in range(len(toks))], types


def spm_meta(n, byte_tokens=False):
    toks, scores, types = spm_vocab(n, byte_tokens)
    return {
        'tokenizer.ggml.model': (G.STRING, 'llama'),
        'tokenizer.ggml.tokens': (G.ARRAY, (G.STRING, toks)),
        'tokenizer.ggml.scores': (G.ARRAY, (G.FLOAT32, scores)),
        'tokenizer.ggml.token_type': (G.ARRAY, (G.I32, types)),
        'tokenizer.ggml.bos_token_id': (G.U32, 1),
        'tokenizer.ggml.eos_token_id': (G.U32, 2),
    }


def byte_chars():
    """GPT-2's bytes_to_unicode: printable Latin-1 bytes stand for
    themselves, the others for code points from U+0100 on."""
    keep = list(range(ord('!'), ord('~') + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    out, extra = {}, 0
    for b in range(256):
        if b in keep:
            out[b] = chr(b)
        else:
            out[b] = chr(256 + extra)
            extra += 1
    return out


MERGES = ['Ġ t', 'h e', 'Ġt he', 'i n', 'Ġ a', 'e r', 'o n', 'Ġ s', 'e n', 'Ġ w', '1 2', 'Ġ Ġ']


def bpe_vocab(extra=()):
    bc = byte_chars()
    toks = [bc[b] for b in range(256)]
    for m in MERGES:
        a, b = m.split(' ')
        toks.append(a + b)
    toks += list(extra)
    return toks


def bpe_meta(pre='gpt-2', user=()):
    toks = bpe_vocab(user) + ['<|endoftext|>']
    types = [1] * (len(toks) - 1 - len(user)) + [4] * len(user) + [3]
    m = {
        'tokenizer.ggml.model': (G.STRING, 'gpt2'),
        'tokenizer.ggml.tokens': (G.ARRAY, (G.STRING, toks)),
        'tokenizer.ggml.token_type': (G.ARRAY, (G.I32, types)),
        'tokenizer.ggml.merges': (G.ARRAY, (G.STRING, MERGES)),
        'tokenizer.ggml.bos_token_id': (G.U32, len(toks) - 1),
        'tokenizer.ggml.eos_token_id': (G.U32, len(toks) - 1),
    }
    if pre:
        m['tokenizer.ggml.pre'] = (G.STRING, pre)
    return m


def llama2c_tokenizer(pieces):
    out = struct.pack('<i', max(len(p.encode()) for p in pieces))
    for i, p in enumerate(pieces):
        b = p.encode()
        out += struct.pack('<fi', -float(i), len(b)) + b
    return out


# ------------------------------------------------------------ models

def llama_gguf(dim, hid, L, H, KV, V, wt, et=G.F32, tied=True, arch='llama', seed=0):
    rng = np.random.default_rng(seed)
    hd = dim // H

    def mat(r, c):
        return rng.standard_normal((r, c)) / np.sqrt(c)

    def norm(n):
        return 1.0 + 0.1 * rng.standard_normal(n)
    meta = {'general.architecture': (G.STRING, arch),
            arch + '.context_length': (G.U32, 32),
            arch + '.embedding_length': (G.U32, dim),
            arch + '.block_count': (G.U32, L),
            arch + '.feed_forward_length': (G.U32, hid),
            arch + '.attention.head_count': (G.U32, H),
            arch + '.attention.head_count_kv': (G.U32, KV)}
    tensors = [('token_embd.weight', mat(V, dim), et), ('output_norm.weight', norm(dim), G.F32)]
    if arch == 'llama':
        meta['llama.attention.layer_norm_rms_epsilon'] = (G.FLOAT32, 1e-5)
        meta['llama.rope.freq_base'] = (G.FLOAT32, 10000.0)
    else:
        meta['mpt.attention.layer_norm_epsilon'] = (G.FLOAT32, 1e-5)
        meta['mpt.attention.max_alibi_bias'] = (G.FLOAT32, 8.0)
    meta.update(spm_meta(V))
    if not tied:
        tensors.append(('output.weight', mat(V, dim), wt))
    for l in range(L):
        b = 'blk.%d.' % l
        tensors += [(b + 'attn_norm.weight', norm(dim), G.F32), (b + 'ffn_norm.weight', norm(dim), G.F32)]
        if arch == 'llama':
            tensors += [(b + 'attn_q.weight', mat(H * hd, dim), wt), (b + 'attn_k.weight', mat(KV * hd, dim), wt),
                        (b + 'attn_v.weight', mat(KV * hd, dim), wt), (b + 'attn_output.weight', mat(dim, H * hd), wt),
                        (b + 'ffn_gate.weight', mat(hid, dim), wt), (b + 'ffn_down.weight', mat(dim, hid), wt),
                        (b + 'ffn_up.weight', mat(hid, dim), wt)]
        else:
            tensors += [(b + 'attn_qkv.weight', mat((H + 2 * KV) * hd, dim), wt),
                        (b + 'attn_output.weight', mat(dim, H * hd), wt),
                        (b + 'ffn_down.weight', mat(dim, hid), wt), (b + 'ffn_up.weight', mat(hid, dim), wt)]
    return gguf_bytes(meta, tensors)


def llama2c_legacy(dim=8, hid=16, L=1, H=2, KV=1, V=8, S=16, shared=True, seed=1):
    rng = np.random.default_rng(seed)
    hd, kvd = dim // H, KV * (dim // H)
    n = V * dim + L * dim + L * dim * dim * 2 + L * kvd * dim * 2 + L * dim + 3 * L * hid * dim + dim + S * hd
    if not shared:
        n += V * dim
    w = (rng.standard_normal(n) * 0.3).astype('<f4')
    return struct.pack('<7i', dim, hid, L, H, KV, V if shared else -V, S) + w.tobytes()


def llama2c_q8(dim=8, hid=16, L=1, H=2, KV=1, V=8, S=16, gs=4, shared=1, seed=2):
    rng = np.random.default_rng(seed)
    kvd = KV * (dim // H)
    head = struct.pack('<Ii7iBi', 0x616b3432, 2, dim, hid, L, H, KV, V, S, shared, gs)
    head += b'\0' * (256 - len(head))
    body = (1.0 + 0.1 * rng.standard_normal(2 * L * dim + dim)).astype('<f4').tobytes()

    def q8(r, c):
        q = rng.integers(-127, 128, r * c).astype(np.int8).tobytes()
        return q + (rng.random(r * c // gs) * 0.01).astype('<f4').tobytes()
    body += q8(V, dim)
    for shp in [(dim, dim), (kvd, dim), (kvd, dim), (dim, dim), (hid, dim), (dim, hid), (hid, dim)]:
        for _ in range(L):
            body += q8(*shp)
    if not shared:
        body += q8(V, dim)
    return head + body


def model_seeds():
    t = 'fuzz_model'
    put(t, 'llama_f32.gguf.in', llama_gguf(8, 16, 1, 2, 1, 12, G.F32))
    put(t, 'llama_q8_0_untied.gguf.in', llama_gguf(32, 32, 1, 2, 1, 12, G.Q8_0, tied=False))
    put(t, 'llama_q4_0.gguf.in', llama_gguf(32, 32, 1, 2, 2, 12, G.Q4_0, et=G.Q4_0))
    put(t, 'llama_f16_bf16.gguf.in', llama_gguf(16, 16, 1, 2, 1, 12, G.F16, et=G.BF16))
    put(t, 'mpt_f32.gguf.in', llama_gguf(8, 16, 1, 2, 2, 12, G.F32, arch='mpt'))
    put(t, 'l2c_legacy.bin', llama2c_legacy())
    put(t, 'l2c_legacy_unshared.bin', llama2c_legacy(shared=False, L=2))
    put(t, 'l2c_q8.bin', llama2c_q8())
    put(t, 'l2c_q8_unshared.bin', llama2c_q8(shared=0, L=2))
    # tricky: headers that claim more than the file holds, zeros, odd shapes
    g = llama_gguf(8, 16, 1, 2, 1, 12, G.F32)
    put(t, 'trick_gguf_truncated.gguf.in', g[:len(g) // 2])
    put(t, 'trick_gguf_header_only.gguf.in', g[:24])
    put(t, 'trick_gguf_huge_counts.gguf.in', b'GGUF' + struct.pack('<IQQ', 3, 2 ** 62, 2 ** 62))
    put(t, 'trick_gguf_v1.gguf.in', b'GGUF' + struct.pack('<III', 1, 0, 0))
    put(t, 'trick_l2c_zero_dims.bin', struct.pack('<7i', 0, 0, 0, 0, 0, 0, 0) + b'\0' * 64)
    put(t, 'trick_l2c_heads_not_dividing.bin', llama2c_legacy(dim=8, H=3, KV=1))
    put(t, 'trick_l2c_huge_dims.bin', struct.pack('<7i', 1 << 30, 1 << 30, 1 << 20, 8, 8, -(1 << 30), 1 << 30))
    q = bytearray(llama2c_q8())
    struct.pack_into('<i', q, 37, 0)  # group size 0
    put(t, 'trick_q8_group_zero.bin', bytes(q))
    q = bytearray(llama2c_q8())
    struct.pack_into('<i', q, 37, 3)  # group size not dividing dim
    put(t, 'trick_q8_group_3.bin', bytes(q))


def vocab_seeds():
    t = 'fuzz_vocab'

    def one_file(data, vocab=0):
        return bytes([0, max(0, vocab - 1) & 255]) + data

    def gpt2_files(enc, bpe):
        return b'\x01' + enc.encode('utf-8') + b'\0' + bpe.encode('utf-8')
    put(t, 'gguf_spm.gguf.in', one_file(gguf_bytes(spm_meta(16), [])))
    put(t, 'gguf_spm_bytes.gguf.in', one_file(gguf_bytes(spm_meta(272, byte_tokens=True), [])))
    put(t, 'gguf_bpe_gpt2.gguf.in', one_file(gguf_bytes(bpe_meta('gpt-2'), [])))
    put(t, 'gguf_bpe_mpt_user.gguf.in', one_file(gguf_bytes(bpe_meta('mpt', user=['  ', '   ', '<CL>']), [])))
    put(t, 'gguf_bpe_neox_nopre.gguf.in', one_file(gguf_bytes(bpe_meta(None), [])))
    put(t, 'l2c_tokenizer.bin.in', one_file(llama2c_tokenizer(['<unk>', '<s>', '</s>', ' ', 'a', 'b', ' a', 'ab']), 8))
    toks = bpe_vocab()
    enc = json.dumps({tok: i for i, tok in enumerate(toks + ['<|endoftext|>'])}, ensure_ascii=False)
    bpe = '#version: 0.2\n' + '\n'.join(MERGES) + '\n'
    put(t, 'gpt2_files.in', gpt2_files(enc, bpe))
    # tricky ones
    m = bpe_meta('gpt-2')
    m['tokenizer.ggml.merges'] = (G.ARRAY, (G.STRING, ['Ġ nothere', 'x']))
    put(t, 'trick_bad_merges.gguf.in', one_file(gguf_bytes(m, [])))
    m = bpe_meta('llama3')
    put(t, 'trick_unknown_pre.gguf.in', one_file(gguf_bytes(m, [])))
    m = spm_meta(16)
    m['tokenizer.ggml.scores'] = (G.ARRAY, (G.FLOAT32, [0.0] * 3))
    m['tokenizer.ggml.bos_token_id'] = (G.U32, 99)
    put(t, 'trick_short_scores_bad_bos.gguf.in', one_file(gguf_bytes(m, [])))
    m = spm_meta(16)
    m['tokenizer.ggml.tokens'] = (G.ARRAY, (G.STRING, ['a', 'a', '', 'b']))
    m['tokenizer.ggml.token_type'] = (G.ARRAY, (G.STRING, ['1', '2']))
    put(t, 'trick_dup_tokens_string_types.gguf.in', one_file(gguf_bytes(m, [])))
    put(t, 'trick_l2c_short.bin.in', one_file(struct.pack('<ifi', 4, 0.0, 1 << 20) + b'ab', 40))
    put(t, 'trick_gpt2_not_object.in', gpt2_files('[1, 2, "x"]', '#version: 0.2\na b c\n\n'))
    put(t, 'trick_gpt2_missing_bytes.in', gpt2_files('{"a": 0, "b": 1, "ab": 5}', 'a b\n'))


def tokenizer_seeds():
    t = 'fuzz_tokenizer'
    texts = {
        'english.txt': 'Once upon a time, there was a little girl named Lily. She loved to play outside.\n',
        'spaces.txt': '   leading and trailing   \n\n\t\ttabs  and    runs of spaces' + ' ' * 40 + 'x\n',
        'digits.txt': '1 12 123 1234 12345 3.14159 -7e10 0x1F 2024-01-01 1,000,000',
        'contractions.txt': "it's I'll we've they'd she'S don't O'Neil 'quoted' \"double\"",
        'punctuation.txt': '!!!??? ... --- ((()))[]{} @#$%^&*_+=|\\/<>~`',
        'unicode.txt': 'Привет мир. 日本語のテキスト。 한국어 العربية עברית ελληνικά café naïve Ångström',
        'emoji.txt': 'emoji: \U0001F600\U0001F44D\U0001F3FD \u2764\ufe0f flags \U0001F1EB\U0001F1F7 zwj \U0001F468\u200d\U0001F469',
        'combining.txt': 'e\u0301 a\u0308 \u1100\u1161 \u0915\u094d\u0937 \u200b\u200c\u200d\ufeff',
        'control_tokens.txt': '<|endoftext|>Hello<|endoftext|> <|padding|> <s> </s> <unk> <CL><CR>',
        'sentencepiece_marks.txt': '\u2581the \u2581\u2581 <0x41> <0xFF> \u2581',
        'newlines.txt': '\r\n\r\n\n\n line\rcarriage\x0bvertical\x0cform\n',
        'long_word.txt': 'a' * 2000 + ' ' + 'ab' * 500,
        'code.txt': 'int main(void) {\n    for (int i = 0; i < 10; i++) printf("%d\\n", i);\n}\n',
    }
    for name, s in texts.items():
        put(t, name, s)
    put(t, 'empty.txt', b'')
    put(t, 'invalid_utf8.bin', b'ok \xff\xfe \xc0\x80 \xed\xa0\x80 \xf5\x80\x80\x80 \xe2\x82 trunc \xf0\x9f\x98')
    put(t, 'nul_bytes.bin', b'a\0b\0\0c \0 <|endo\0ftext|>')
    put(t, 'all_bytes.bin', bytes(range(256)))
    put(t, 'high_bytes_runs.bin', bytes([0xC0, 0xC1] * 8 + list(range(0xF5, 0x100)) * 2))


# ------------------------------------------------------------ experiments

EXP_HEAD = '''[experiment]
name = fuzzseed
seed = 3
db = results/fuzz-seed.db

[model tiny]
path = stories260K/stories260K.bin
tokenizer = stories260K/tok512.bin
'''


def experiment_seeds():
    t = 'fuzz_experiment'
    put(t, 'summarization.ini', EXP_HEAD + '''
[task cnndm]
kind = summarization
data = cnn_dailymail/cnndm_test_500.csv
samples = 2
template = plain-summ
max_prompt_tokens = 200
max_new_tokens = 16
bad_rows = skip

[policy full]
policy = full

[policy h2o]
policy = h2o
recent = 0.5

[sweep]
models = tiny
tasks = cnndm
policies = full, h2o
budgets = 20%..80% step 20%, 64
''')
    put(t, 'every_kind.ini', EXP_HEAD + '''
[task dialog]
kind = conversation
data = dailydialog/dailydialog_resplit_test.jsonl
samples = 1
stop = newline
[task passkey]
kind = passkey
lengths = 120, 240
depths = 0, 50, 100
per_cell = 1
[task pg19]
kind = perplexity
data = pg19/10146.txt
min_chars = 0
tokens = 300
chunk = 16
curve_bucket = 50
[task needle]
kind = needle
haystack = niah/paul_graham_essays
lengths = 200
depths = 0, 100
[task ruler]
kind = ruler
data = niah/ruler_niah_multikey_3_4k.jsonl
[task wiki]
kind = fidelity
data = wikitext/wikitext2_test.txt
min_chars = 600
fidelity = true
[policy window]
policy = window
[policy sl]
policy = streamingllm
[sweep]
models = tiny
tasks = dialog, passkey, pg19, needle, ruler, wiki
policies = window, sl
budgets = 64, 128
''')
    put(t, 'env_expansion.ini', '''[experiment]
name = ${HOME}x
db = $HOME/none/x.db
[model m]
path = ${KVBENCH_MODELS}/stories260K/stories260K_q8.bin
[task t]
kind = summarization
data = $KVBENCH_DATA/govreport/govreport_leval_13.jsonl
[policy p]
policy = tova
[sweep]
models = m
tasks = t
policies = p
budgets = none
''')
    put(t, 'trick_unset_var.ini', '[experiment]\nname = ${NO_SUCH_VARIABLE_FUZZ}\ndb = ${\n')
    put(t, 'trick_bad_lines.ini', '[experiment\nname\n= value\n[]\n[model]\n[policy x y z]\npolicy=\n;c\n#c\nkey = "quoted\n')
    put(t, 'trick_budgets.ini', EXP_HEAD + '''[policy p]
policy = window
[task t]
kind = passkey
lengths = 99999999999, -1, 0
depths = 101
[sweep]
models = tiny, tiny, nosuch
tasks = t
policies = p
budgets = 90%..20% step 0%, 0, -5, 1e309, 100%%
''')
    put(t, 'trick_policy_params.ini', EXP_HEAD + '''[task t]
kind = fidelity
data = wikitext/wikitext2_test.txt
[policy a]
policy = h2o
recent = 2.5
nosuch = 1
[policy b]
policy = nosuchpolicy
[policy c]
policy = keyformer
selection = paper
[sweep]
models = tiny
tasks = t
policies = a, b, c
budgets = 10%
''')
    put(t, 'trick_many_sections.ini', ''.join('[policy p%d]\npolicy = full\n' % i for i in range(70)))
    put(t, 'trick_long_line.ini', '[experiment]\nname = ' + 'n' * 3000 + '\ndescription = ' + 'd' * 300 + '\n')
    put(t, 'trick_bom_nul.ini', b'\xef\xbb\xbf[experiment]\nname = a\0b\n[sweep]\nmodels =\n')


# ------------------------------------------------------------ datasets

def dataset_seeds():
    t = 'fuzz_dataset'

    def row(kind, body, skip=True, min_chars=0):
        return bytes([kind | (0 if skip else 8), min_chars]) + body.encode('utf-8')
    put(t, 'csv_cnndm.in', row(0, 'id,article,highlights\n1,"An article, with a comma.","A summary.\nTwo lines."\n'
                                  '2,Plain text,"He said ""hi"""\n'))
    put(t, 'csv_broken_quote.in', row(0, 'id,article,highlights\n1,"never closed,x\n2,a,b\n', skip=False))
    put(t, 'csv_missing_cols.in', row(0, 'article\nonly one column\n'))
    put(t, 'csv_extra_fields.in', row(0, 'id,article,highlights\n1,a,b,c,d\n2,,\n3,x,y\n'))
    put(t, 'jsonl_cnndm.in', row(1, '{"id": "a", "article": "Text.", "highlights": "Sum."}\n'
                                    '{"article": "Two", "highlights": ["x", "y"]}\n'))
    put(t, 'jsonl_govreport.in', row(1, '{"_id": 7, "document": "Doc \\u00e9 \\ud83d\\ude00", "reference": "Ref"}\n'))
    put(t, 'jsonl_multinews.in', row(1, '{"context": "Passage 1:\\nA", "answers": ["One.", "Two."]}\n'))
    put(t, 'jsonl_bad_rows.in', row(1, '{"article": 5, "highlights": null}\n[1,2]\n{"article": "a"\n\n'
                                       '{"article": "\\ud800", "highlights": "lone surrogate"}\n'))
    put(t, 'soda.in', row(2, json.dumps({'id': 's1', 'narrative': 'N.', 'speakers': ['A', 'B', 'A'],
                                         'turns': [{'speaker': 'A', 'text': 'Hi.'}, {'text': 'Hello.'},
                                                   {'speaker': 'A', 'text': 'Bye.'}]}) + '\n'))
    put(t, 'soda_stringified.in', row(3, json.dumps({'narrative': 'N', 'speakers': "['A', 'B']",
                                                     'dialogue': "['Hi there, it\\'s me.', \"Yes\"]"}) + '\n'))
    # a stringified list cut after a backslash: the escape must not step past the string's end
    put(t, 'soda_trailing_backslash.in', row(3, json.dumps({'narrative': 'N', 'speakers': "['A', 'B']",
                                                            'dialogue': "['Hi.', 'cut \\"}) + '\n'))
    put(t, 'dailydialog.in', row(2, '{"id": "dd", "turns": [{"speaker": "A", "text": "x"}, '
                                    '{"speaker": "B", "text": "y"}]}\n{"turns": []}\n{"turns": "[\'a\'"}\n'))
    put(t, 'text_jsonl.in', row(4, '{"id": "b", "title": "T", "text": "Book text.\\n\\nMore."}\n{"text": 1}\n'))
    put(t, 'text_plain.in', row(5, 'Para one.\n\nPara two is longer.\n\n\n\nThree\r\n\r\nfour', min_chars=2))
    put(t, 'text_plain_invalid_utf8.in', row(5, 'a\n\n', min_chars=0) + b'\xff\xfe\n\nb')
    put(t, 'ruler.in', row(6, '{"index": 0, "input": "Find the key.", "outputs": ["k1", "k2"]}\n'
                              '{"index": 1, "input": "x", "outputs": "not a list"}\n'))
    put(t, 'invalid_utf8_rows.in', row(1, '{"article": "', skip=False) + b'\xc0\x80"' +
        b', "highlights": "x"}\n')
    put(t, 'deep_nesting.in', row(1, '[' * 3000 + ']' * 3000 + '\n{"article":{"a":[[[[["x"]]]]]},"highlights":"y"}\n'))


# ------------------------------------------------------------ results databases

KEEP_METRICS = ('rouge1_f', 'rouge2_f', 'rougeLsum_f', 'fid_top1_agree', 'fid_kl', 'attn_mass_lost',
                'kv_bytes_prompt_peak', 'kv_bytes_steady_peak', 'ppl', 'kv_bytes_peak', 'ttft_ms')


def shrink(src, dst):
    """A copy of a results database with one sample per run, the metrics
    report shows by default (and one timing), a few curve and trace points,
    in 512-byte pages."""
    if os.path.exists(dst):
        os.unlink(dst)
    db = sqlite3.connect(src)
    db.execute("VACUUM INTO ?", (dst,))
    db.close()
    db = sqlite3.connect(dst)
    db.execute('PRAGMA journal_mode=DELETE')
    db.execute('DELETE FROM samples WHERE rowid NOT IN (SELECT min(rowid) FROM samples GROUP BY run)')
    for tb in ('metrics', 'curves', 'kv_trace'):
        db.execute('DELETE FROM %s WHERE (run, sample) NOT IN (SELECT run, sample FROM samples)' % tb)
    db.execute('DELETE FROM metrics WHERE name NOT IN (%s)' % ','.join('?' * len(KEEP_METRICS)), KEEP_METRICS)
    for tb in ('curves', 'kv_trace'):
        db.execute('DELETE FROM %s WHERE rowid NOT IN (SELECT min(rowid) FROM %s GROUP BY run, sample '
                   'UNION SELECT max(rowid) FROM %s GROUP BY run, sample)' % (tb, tb, tb))
    db.execute("UPDATE experiments SET text = substr(text, 1, 64)")
    db.commit()
    db.execute('PRAGMA page_size=512')
    db.execute('VACUUM')
    db.close()


def resultsdb_seeds(kvbench):
    t = 'fuzz_resultsdb'
    d = os.path.join(CORPUS, t)
    os.makedirs(d, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        ini = os.path.join(tmp, 'e.ini')
        full = os.path.join(tmp, 'full.db')
        with open(ini, 'w') as f:
            f.write('''[experiment]
name = seed
seed = 1
db = %s
[model s]
path = stories260K/stories260K.bin
tokenizer = stories260K/tok512.bin
[task cnndm]
kind = summarization
data = cnn_dailymail/cnndm_test_500.csv
samples = 2
template = plain-summ
max_prompt_tokens = 96
max_new_tokens = 6
fidelity = true
[task pg19]
kind = perplexity
data = pg19/10146.txt
min_chars = 0
tokens = 64
chunk = 16
curve_bucket = 16
samples = 1
[policy full]
policy = full
[policy window]
policy = window
[sweep]
models = s
tasks = cnndm, pg19
policies = full, window
budgets = 48
''' % full)
        subprocess.run([kvbench, 'run', ini], check=True, stdout=subprocess.DEVNULL)
        shrink(full, os.path.join(d, 'sweep.db'))
        db = sqlite3.connect(os.path.join(d, 'sweep.db'))
        names = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        db.close()
        # odd rows: NULLs and text where numbers are, a run without samples
        odd = os.path.join(d, 'trick_odd_rows.db')
        shrink(full, odd)
        db = sqlite3.connect(odd)
        if 'metrics' in names:
            db.execute("UPDATE metrics SET value = 'x' WHERE rowid % 2 = 0")
            db.execute("UPDATE metrics SET value = NULL WHERE rowid % 3 = 0")
        db.execute("UPDATE runs SET budget = 'x', budget_value = NULL WHERE rowid = 1")
        db.execute("DELETE FROM samples WHERE rowid = 2")
        db.commit()
        db.execute('VACUUM')
        db.close()
        old = os.path.join(d, 'trick_schema_v1.db')
        shrink(full, old)
        db = sqlite3.connect(old)
        db.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
        db.commit()
        db.close()
        sweep = open(os.path.join(d, 'sweep.db'), 'rb').read()
        put(t, 'trick_truncated.db', sweep[:len(sweep) // 3])
        bad = bytearray(sweep)
        for off in range(600, len(bad), 997):
            bad[off] ^= 0x5A
        put(t, 'trick_bitflips.db', bytes(bad))
    foreign = os.path.join(d, 'trick_foreign.db')
    if os.path.exists(foreign):
        os.unlink(foreign)
    db = sqlite3.connect(foreign)
    db.execute('PRAGMA page_size=512')
    db.execute('CREATE TABLE runs (x)')
    db.execute("INSERT INTO runs VALUES ('not a run')")
    db.execute('CREATE TABLE samples (id INTEGER PRIMARY KEY, run, sample)')
    db.commit()
    db.close()
    put(t, 'trick_empty.db', b'')
    put(t, 'trick_not_sqlite.db', b'SQLite format 2\0' + b'\xff' * 84)


# ------------------------------------------------------------ safetensors

def safetensors_seeds():
    """fuzz_safetensors: byte 0 even = a .safetensors file, odd = a shard
    index beside the target's own a.safetensors ("a.w", "a.b") and
    b.safetensors ("b.w")."""
    t = 'fuzz_safetensors'
    rng = np.random.default_rng(7)
    f = hf_io.safetensors_bytes([('model.embed_tokens.weight', rng.standard_normal((4, 8)), 'F32'),
                                 ('model.norm.weight', rng.standard_normal(8), 'BF16'),
                                 ('lm_head.weight', rng.standard_normal((4, 8)), 'F16'),
                                 ('scalar', np.float32(1.5), 'F32'),
                                 ('empty', np.zeros((0, 3)), 'F16')], {'format': 'pt'})
    put(t, 'file_every_dtype.in', b'\0' + f)
    put(t, 'file_no_metadata.in', b'\0' + hf_io.safetensors_bytes([('x', np.ones((2, 2)), 'BF16')]))
    put(t, 'trick_truncated.in', b'\0' + f[:len(f) - 7])
    put(t, 'trick_header_only.in', b'\0' + f[:8])
    put(t, 'trick_huge_header_len.in', b'\0' + struct.pack('<Q', 2 ** 63) + b'{}')
    hdr = b'{"a":{"dtype":"F16","shape":[4],"data_offsets":[0,8]},"b":{"dtype":"F16","shape":[2],"data_offsets":[6,10]}}'
    put(t, 'trick_overlap.in', b'\0' + struct.pack('<Q', len(hdr)) + hdr + b'\0' * 10)
    hdr = b'{"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,16]}}'
    put(t, 'trick_shape_overflow.in', b'\0' + struct.pack('<Q', len(hdr)) + hdr + b'\0' * 16)
    hdr = b'{"a":{"dtype":"I64","shape":[1],"data_offsets":[0,8]},"a":{"dtype":"F32","shape":[],"data_offsets":[8,12]}}'
    put(t, 'trick_dtype_duplicate.in', b'\0' + struct.pack('<Q', len(hdr)) + hdr + b'\0' * 12)
    hdr = b'{"a":{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}}  \x00x'
    put(t, 'trick_trailing_bytes.in', b'\0' + struct.pack('<Q', len(hdr)) + hdr + b'\0' * 4)
    put(t, 'index_good.in', b'\1{"metadata":{},"weight_map":{"a.w":"a.safetensors","a.b":"a.safetensors",'
                            b'"b.w":"b.safetensors"}}')
    put(t, 'index_missing_tensor.in', b'\1{"weight_map":{"a.w":"a.safetensors","c.w":"b.safetensors"}}')
    put(t, 'index_wrong_shard.in', b'\1{"weight_map":{"a.w":"b.safetensors","a.b":"a.safetensors","b.w":"a.safetensors"}}')
    put(t, 'index_traversal.in', b'\1{"weight_map":{"a.w":"../a.safetensors"}}')
    put(t, 'index_absent_shard.in', b'\1{"weight_map":{"a.w":"zzz.safetensors"}}')
    put(t, 'index_not_json.in', b'\1{"weight_map":{"a.w":')


# ------------------------------------------------------------ chat templates

def chat_seed(name, mode, bits, text):
    """fuzz_chat: byte mode + 3 * bits, then the text (see fuzz_chat.c)."""
    if isinstance(text, str):
        text = text.encode('utf-8')
    put('fuzz_chat', name, bytes([mode + 3 * bits]) + text)


# Short templates of our own holding each family's detection markers
# (datasets/chat.c's table), not the real templates' text.
CHAT_TEMPLATES = {
    'chatml': "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}",
    'qwen25': "{% if not sys %}<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. Be kind.<|im_end|>{% endif %}",
    'qwen3': "<|im_start|>{{ role }}{% if '</think>' in content %}{{ reasoning }}{% endif %}",
    'deepseek': "{{ bos_token }}{% for m in messages %}<｜User｜>{{ m }}<｜Assistant｜>{{ m.split('</think>')[-1] }}{% endfor %}",
    'llama31': "<|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\n",
    'llama3': "{{ '<|start_header_id|>' + m.role + '<|end_header_id|>\n\n' + m.content | trim }}",
    'mistral_v7': "{{ bos_token }}{% for m in messages %}[SYSTEM_PROMPT] {{ m }}[/SYSTEM_PROMPT][INST] {{ m }}[/INST]{% endfor %}",
    'mistral_v1': "{{ bos_token + ' [INST] ' + system_message + '\\n\\n' + m.content }}",
    'mistral_v3_tekken': "[AVAILABLE_TOOLS]{% if loop.last %}{{ \"[INST]\" + m.content + \"[/INST]\" }}{% endif %}",
    'mistral_v3': "[AVAILABLE_TOOLS] [{{ tools }}][/AVAILABLE_TOOLS][INST] {{ m.content }}[/INST]",
    'llama2': "{{ bos_token + '[INST] ' + '<<SYS>>\\n' + sys + '\\n<</SYS>>\\n\\n' + m | trim + ' [/INST]' }}",
    'gemma3': "{% set first_user_prefix = sys + '\n\n' %}<start_of_turn>{{ role }}\n{{ first_user_prefix }}",
    'gemma2': "{{ bos_token }}<start_of_turn>{{ role }}\n{{ m | trim }}<end_of_turn>\n",
    'phi3': "{{ '<|user|>' + '\n' + m + '<|end|>' + '\n' + '<|assistant|>' + '\n' }}",
    'phi35': "<|{{ m.role }}|>\n{{ m.content }}<|end|>\n{% if gp %}<|assistant|>\n{% endif %}",
    'none': "{% for m in messages %}### {{ m.role }}: {{ m.content }}\n{% endfor %}",
}

# Mistral v7 Tekken's default system message: a `set` of string literals
# and `today`, with escapes; the bad ones are refused.
V7T = "[SYSTEM_PROMPT]{{ system }}[/SYSTEM_PROMPT][AVAILABLE_TOOLS]"
V7T_SETS = {
    'v7t_ok': '{%- set default_system_message = "You are helpful.\\nToday is " + today + \'. \\u00e9\\x41\\t\\"q\\\'\' %}',
    'v7t_noeq': '{%- set default_system_message "x" %}',
    'v7t_unterminated': '{%- set default_system_message = "abc',
    'v7t_badtoken': '{%- set default_system_message = "a" + yesterday %}',
    'v7t_noplus': '{%- set default_system_message = "a" "b" %}',
    'v7t_badescape': '{%- set default_system_message = "a\\q" %}',
    'v7t_badhex': '{%- set default_system_message = "a\\xZZ" %}',
    'v7t_shorthex': '{%- set default_system_message = "a\\u00',
    'v7t_trailing_backslash': '{%- set default_system_message = "a\\',
    'v7t_surrogate': '{%- set default_system_message = "\\ud800\\uffff" %}',
    'v7t_nul': '{%- set default_system_message = "before\\x00after" %}',
    'v7t_nul_u': "{%- set default_system_message = 'a' + '\\u0000' %}",
    'v7t_name_only': 'default_system_message',
}


def chat_seeds():
    for i, (name, t) in enumerate(sorted(CHAT_TEMPLATES.items())):
        chat_seed('template_' + name, 0, i % 32, t)
    for i, (name, t) in enumerate(sorted(V7T_SETS.items())):
        chat_seed('template_' + name, 0, (i * 5) % 32, V7T + t)
    chat_seed('template_empty', 0, 0, '')
    chat_seed('template_markers_only', 0, 31, '<|im_start|></think><start_of_turn>[INST]')
    # tokenizer_config.json
    cfg = lambda **kw: json.dumps(kw)  # noqa: E731
    chat_seed('config_llama3', 1, 1, cfg(chat_template=CHAT_TEMPLATES['llama31'], bos_token='<|begin_of_text|>',
                                         eos_token='<|eot_id|>'))
    chat_seed('config_token_objects', 1, 2, cfg(chat_template=CHAT_TEMPLATES['llama2'],
                                               bos_token={'content': '<s>', 'lstrip': False},
                                               eos_token={'content': '</s>'}))
    chat_seed('config_null_tokens', 1, 3, cfg(chat_template=CHAT_TEMPLATES['gemma2'], bos_token=None, eos_token=None))
    chat_seed('config_v7t', 1, 0, cfg(chat_template=V7T + V7T_SETS['v7t_ok'], bos_token='<s>', eos_token=7))
    chat_seed('config_template_list', 1, 4, cfg(chat_template=[{'name': 'default', 'template': 'x'}]))
    chat_seed('config_no_template', 1, 0, cfg(bos_token='<s>', eos_token={'content': 5}))
    chat_seed('config_nul_escape', 1, 0, '{"chat_template": "<|im_start|>\\u0000", "bos_token": "\\u0000"}')
    chat_seed('config_array', 1, 0, '[1, 2, {"chat_template": "<|im_start|>"}]')
    chat_seed('config_truncated', 1, 0, '{"chat_template": "<|im_start|>{{ m }}", "bos_')
    chat_seed('config_duplicate', 1, 9, '{"chat_template": "<start_of_turn>", "chat_template": 3, "eos_token": {}}')
    chat_seed('config_raw_nul', 1, 0, b'{"chat_template": "<|im_start|>"}\x00garbage')
    # message texts
    for i, (name, t) in enumerate([
            ('empty', ''), ('spaces', ' \t\n\x1c\u2003\u3000 '), ('unicode_trim', '\u00a0\u0085caf\u00e9\u2029'),
            ('braces', '{{ x }} {% if %} }}{{'), ('think', '<think>\nplan\n</think>\n\nanswer</think>'),
            ('tool', '<tool_response>42</tool_response>'), ('markers', '<|im_start|>user\n[INST]<<SYS>><end_of_turn>'),
            ('multibyte', '日本語 😀 é\u0301'), ('long', 'word ' * 400)]):
        chat_seed('message_' + name, 2, i * 3 % 32, t)
    chat_seed('message_invalid_utf8', 2, 5, b'\xff\xfe\xe2\x80 \xc2 a \xe3\x80')
    chat_seed('message_raw_nul', 2, 1, b'abc\x00def')


# ------------------------------------------------------------ HF config.json

def hfconfig_seed(name, mode, text):
    """fuzz_hfconfig: byte mode (0 parse, 1 llama folder, 2 qwen3 folder,
    3 tokenizer_config.json beside the llama folder)."""
    if not isinstance(text, (str, bytes)):
        text = json.dumps(text, indent=1)
    if isinstance(text, str):
        text = text.encode('utf-8')
    put('fuzz_hfconfig', name, bytes([mode]) + text)


def tiny_config(model_type, **kw):
    """The tiny model of fuzz_hfconfig.c: vocab 8, hidden 4, 1 layer, 2 heads, 1 KV head."""
    c = {'model_type': model_type, 'vocab_size': 8, 'hidden_size': 4, 'intermediate_size': 8,
         'num_hidden_layers': 1, 'num_attention_heads': 2, 'num_key_value_heads': 1,
         'max_position_embeddings': 64, 'rms_norm_eps': 1e-5, 'rope_theta': 10000.0, 'tie_word_embeddings': False}
    c.update(kw)
    return {k: v for k, v in c.items() if v is not None}


def hfconfig_seeds():
    # matching the tiny model: they convert
    hfconfig_seed('llama', 1, tiny_config('llama'))
    hfconfig_seed('mistral', 1, tiny_config('mistral', sliding_window=16))
    hfconfig_seed('qwen3', 2, tiny_config('qwen3', head_dim=2))
    hfconfig_seed('llama_rope_llama3', 1, tiny_config('llama', rope_scaling={
        'rope_type': 'llama3', 'factor': 8.0, 'low_freq_factor': 1.0, 'high_freq_factor': 4.0,
        'original_max_position_embeddings': 16}))
    hfconfig_seed('llama_rope_linear', 1, tiny_config('llama', rope_scaling={'type': 'linear', 'factor': 2.0}))
    hfconfig_seed('llama_rope_yarn', 1, tiny_config('llama', rope_scaling={
        'rope_type': 'yarn', 'factor': 4.0, 'original_max_position_embeddings': 32}))
    # real-looking configs of each type that do not match the tiny model
    hfconfig_seed('qwen2_biases_missing', 1, tiny_config('qwen2', use_sliding_window=False))
    hfconfig_seed('gemma2', 1, tiny_config('gemma2', head_dim=2, query_pre_attn_scalar=2, attn_logit_softcapping=50.0,
                                           final_logit_softcapping=30.0, sliding_window=16))
    hfconfig_seed('llama_tied', 1, tiny_config('llama', tie_word_embeddings=True))
    hfconfig_seed('llama_two_layers', 1, tiny_config('llama', num_hidden_layers=2))
    hfconfig_seed('llama_vocab_huge', 1, tiny_config('llama', vocab_size=1 << 22))
    hfconfig_seed('qwen3_on_llama', 1, tiny_config('qwen3'))
    hfconfig_seed('llama_big', 0, tiny_config('llama', vocab_size=128256, hidden_size=4096, intermediate_size=14336,
                                              num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                                              max_position_embeddings=131072, rope_theta=500000.0))
    # refused, each for one reason
    bad = {
        'unknown_type': tiny_config('gpt2'),
        'type_not_string': tiny_config(5),
        'size_string': tiny_config('llama', hidden_size='4'),
        'size_fraction': tiny_config('llama', hidden_size=4.5),
        'size_negative': tiny_config('llama', num_hidden_layers=-1),
        'size_zero_heads': tiny_config('llama', num_attention_heads=0),
        'size_huge': tiny_config('llama', hidden_size=1e300),
        'size_2p63': tiny_config('llama', intermediate_size=9223372036854775808),
        'missing_vocab': tiny_config('llama', vocab_size=None),
        'null_size': tiny_config('llama', hidden_size=None, num_hidden_layers=None) | {'hidden_size': None},
        'heads_not_multiple': tiny_config('llama', num_attention_heads=3, num_key_value_heads=2),
        'head_dim_odd': tiny_config('llama', head_dim=3),
        'eps_negative': tiny_config('llama', rms_norm_eps=-1e-5),
        'tie_not_bool': tiny_config('llama', tie_word_embeddings=1),
        'mlp_bias': tiny_config('llama', mlp_bias=True),
        'rope_dynamic': tiny_config('llama', rope_scaling={'type': 'dynamic', 'factor': 2.0}),
        'rope_no_type': tiny_config('llama', rope_scaling={'factor': 2.0}),
        'rope_not_object': tiny_config('llama', rope_scaling=[1]),
        'rope_no_factor': tiny_config('llama', rope_scaling={'type': 'linear'}),
        'rope_yarn_beta': tiny_config('qwen2', rope_scaling={'type': 'yarn', 'factor': 4.0, 'beta_fast': 32}),
        'rope_llama3_on_qwen': tiny_config('qwen2', rope_scaling={'rope_type': 'llama3', 'factor': 8.0}),
        'rope_llama3_equal': tiny_config('llama', rope_scaling={'rope_type': 'llama3', 'factor': 8.0,
                                                                'low_freq_factor': 2.0, 'high_freq_factor': 2.0}),
        'qwen_sliding': tiny_config('qwen3', use_sliding_window=True),
        'gemma2_scalar': tiny_config('gemma2', query_pre_attn_scalar=3.0),
    }
    for i, (name, c) in enumerate(sorted(bad.items())):
        hfconfig_seed('bad_' + name, i % 3, c)
    hfconfig_seed('bad_empty', 0, '')
    hfconfig_seed('bad_array', 0, '[{"model_type": "llama"}]')
    hfconfig_seed('bad_truncated', 1, json.dumps(tiny_config('llama'))[:60])
    hfconfig_seed('bad_nul_inside', 1, json.dumps(tiny_config('llama')).encode()[:30] + b'\x00' +
                  json.dumps(tiny_config('llama')).encode()[30:])
    hfconfig_seed('bad_duplicate_type', 1, '{"model_type": "llama", "model_type": "qwen2", ' +
                  json.dumps(tiny_config('llama'))[1:])
    hfconfig_seed('bad_deep', 0, '{"model_type": ' + '[' * 2000 + ']' * 2000 + '}')
    # tokenizer_config.json beside the tiny llama: its chat_template goes into the GGUF
    hfconfig_seed('tc_string', 3, {'chat_template': CHAT_TEMPLATES['llama31'], 'bos_token': '<s>'})
    hfconfig_seed('tc_list', 3, {'chat_template': [{'name': 'default', 'template': CHAT_TEMPLATES['chatml']},
                                                   {'name': 'tool_use', 'template': '{{ tools }}'},
                                                   {'name': 'x' * 300, 'template': 'long name'},
                                                   {'name': 'tool_use', 'template': 'again'}]})
    hfconfig_seed('tc_list_bad', 3, {'chat_template': [{'name': 'default'}, 3]})
    hfconfig_seed('tc_nul', 3, '{"chat_template": "a\\u0000b"}')
    hfconfig_seed('tc_number', 3, {'chat_template': 5})
    hfconfig_seed('tc_not_object', 3, '["chat_template"]')
    hfconfig_seed('tc_truncated', 3, '{"chat_template": "<|im_start|>')


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--kvbench', help='a kvbench binary: also write the results-database seeds')
    a = ap.parse_args()
    model_seeds()
    vocab_seeds()
    tokenizer_seeds()
    experiment_seeds()
    dataset_seeds()
    safetensors_seeds()
    chat_seeds()
    hfconfig_seeds()
    if a.kvbench:
        resultsdb_seeds(a.kvbench)


if __name__ == '__main__':
    main()
