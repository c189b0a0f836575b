"""probe_tokenizer.py - the encoder train_probe.py tokenizes its text with.

Kept apart from train_probe.py (which needs PyTorch) so that the test
tests/check_probe_tokenizer.py can check it against kvbench's own tokenizer
without PyTorch: the model is trained on exactly the tokens kvbench will
feed it.
"""
import struct


class L2CTokenizer:
    """Encoder of a llama2.c tokenizer.bin, written from llama2.c's encode():
    a dummy prefix space, each UTF-8 character its own piece (bytes at id
    byte + 3 when it has none), then the adjacent pair whose concatenation
    scores best merged until no pair is in the vocabulary. A piece holds a
    space after its first byte only if it is all spaces (Llama 2's runs of
    2-16; tok512 has none), so no merge joins a character to a space after
    it: the text is cut before each space that follows another character,
    and the pieces of each word (its leading spaces included) are cached."""

    def __init__(self, path):
        d = open(path, 'rb').read()
        o, self.pieces, self.scores = 4, [], []
        while o < len(d):
            score, n = struct.unpack_from('<fi', d, o)
            self.pieces.append(d[o + 8:o + 8 + n])
            self.scores.append(score)
            o += 8 + n
        self.ids = {piece: i for i, piece in enumerate(self.pieces)}
        assert all(p.strip(b' ') == b'' for p in self.pieces if b' ' in p[1:]), 'a piece with an inner space'
        self.cache = {}

    def vocab_size(self):
        return len(self.pieces)

    def _word(self, w):
        toks = self.cache.get(w)
        if toks is not None:
            return toks
        toks = []
        for ch in w:
            b = ch.encode('utf-8')
            toks.extend([self.ids[b]] if b in self.ids else [x + 3 for x in b])
        while True:
            best, at, merged = None, -1, -1
            for k in range(len(toks) - 1):
                m = self.ids.get(self.pieces[toks[k]] + self.pieces[toks[k + 1]])
                if m is not None and (best is None or self.scores[m] > best):
                    best, at, merged = self.scores[m], k, m
            if at < 0:
                break
            toks[at:at + 2] = [merged]
        if len(self.cache) < 1000000:
            self.cache[w] = toks
        return toks

    def encode(self, text):
        if not text:
            return []
        text = ' ' + text
        out, start = [], 0
        for k in range(1, len(text) + 1):
            if k == len(text) or (text[k] == ' ' and text[k - 1] != ' '):
                out.extend(self._word(text[start:k]))
                start = k
        return out
