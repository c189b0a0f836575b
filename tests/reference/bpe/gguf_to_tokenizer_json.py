#!/usr/bin/env python3
"""Writes a Hugging Face tokenizer.json for a GGUF `gpt2` vocabulary (tokens,
token types, merges), so that an independent implementation of Hugging Face's
tokenizers can encode with it. Control tokens become special added tokens,
user-defined ones (MPT's runs of spaces) non-special added tokens, as in the
models' own tokenizer.json; llama.cpp's [PADnnnnn] fillers are left out.

usage: gguf_to_tokenizer_json.py VOCAB.gguf OUT.json
Not run by the test suite: see make_reference.sh."""
import json
import struct
import sys

SCALAR = {0: 'B', 1: 'b', 2: 'H', 3: 'h', 4: 'I', 5: 'i', 6: 'f', 7: '?', 10: 'Q', 11: 'q', 12: 'd'}


def read(f, fmt):
    return struct.unpack('<' + fmt, f.read(struct.calcsize(fmt)))[0]


def read_str(f):
    return f.read(read(f, 'Q')).decode('utf-8')


def read_value(f, t):
    if t == 8:
        return read_str(f)
    if t == 9:
        et, n = read(f, 'I'), read(f, 'Q')
        return [read_value(f, et) for _ in range(n)]
    return read(f, SCALAR[t])


def metadata(path):
    with open(path, 'rb') as f:
        assert f.read(4) == b'GGUF'
        read(f, 'I'), read(f, 'Q')
        n_kv = read(f, 'Q')
        kv = {}
        for _ in range(n_kv):
            k = read_str(f)
            kv[k] = read_value(f, read(f, 'I'))
        return kv


def main():
    kv = metadata(sys.argv[1])
    assert kv['tokenizer.ggml.model'] == 'gpt2'
    tokens, types = kv['tokenizer.ggml.tokens'], kv['tokenizer.ggml.token_type']
    added = []
    for i, (t, ty) in enumerate(zip(tokens, types)):
        if ty in (3, 4) and not t.startswith('[PAD'):
            added.append(dict(id=i, content=t, single_word=False, lstrip=False, rstrip=False,
                              normalized=ty == 4, special=ty == 3))
    byte_level = {'type': 'ByteLevel', 'add_prefix_space': False, 'trim_offsets': True, 'use_regex': True}
    out = {
        'version': '1.0', 'truncation': None, 'padding': None, 'added_tokens': added,
        'normalizer': None, 'pre_tokenizer': byte_level, 'post_processor': None, 'decoder': byte_level,
        'model': {'type': 'BPE', 'dropout': None, 'unk_token': None, 'continuing_subword_prefix': None,
                  'end_of_word_suffix': None, 'fuse_unk': False, 'byte_fallback': False,
                  'vocab': {t: i for i, t in enumerate(tokens) if not t.startswith('[PAD')},
                  'merges': kv['tokenizer.ggml.merges']},
    }
    with open(sys.argv[2], 'w', encoding='utf-8') as f:
        json.dump(out, f, ensure_ascii=False)


if __name__ == '__main__':
    main()
