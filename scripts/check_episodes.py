#!/usr/bin/python3
"""check_episodes.py - do train_probe.py's episodes fill the length asked for?

An episode whose text comes out longer than its length is made again with a
smaller text budget. Until 2026-12-08 that budget fell by the excess in
tokens, while RULER's needle haystack turned it into lines of 24 tokens
each; its lines cost about 52 (uuids: 80), so the second try had a budget
under zero and a haystack of one or two lines. The model shipped until then
never saw niah_multikey_2/3's real haystack of dozens of same-form needles
(docs/PROBE.md).

For every retrieval kind of every mix, this makes episodes at 1,024 and
2,048 tokens and checks that each holds at least --min-fill of the length,
that a needle haystack has the lines of one, and that at most a quarter
lost their answer. Exits 1 on any miss. Needs PyTorch (train_probe.py
imports it); by hand, about 5 s:
    /usr/bin/python3 scripts/check_episodes.py [--fit scale|subtract]
(--fit subtract, the old rule, fails.)
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import train_probe as tp  # noqa: E402

NOT_FITTED = ('lm', 'repeat', 'repeat_words', 'drill')  # cut to the length, or not RULER-sized


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--fit', choices=('scale', 'subtract'), default='scale')
    p.add_argument('--per-kind', type=int, default=8)
    p.add_argument('--min-fill', type=float, default=0.6)
    args = p.parse_args()
    sp = tp.load_tokenizer(tp.TOKENIZER)
    corpus = tp.Corpus()
    newline = sp.encode('a\nb')[2]  # the piece of '\n' (after the dummy-prefix 'a')
    seen, bad = set(), 0
    for mix, kinds in tp.Episodes.MIXES.items():
        for kind in kinds:
            if kind[1] in NOT_FITTED or kind[1:] in seen:
                continue
            seen.add(kind[1:])
            ep = tp.Episodes(sp, corpus, 11, restate=True, ruler_restate=True, fit=args.fit)
            ep.KINDS = [kind]
            for n_tok in (1024, 2048):
                worst, fewest, cut = n_tok, 1 << 30, 0
                for _ in range(args.per_kind):
                    ids, ans = ep.sample(n_tok)
                    worst = min(worst, len(ids))
                    cut += 1 not in ans
                    fewest = min(fewest, ids.count(newline))
                short = worst < args.min_fill * n_tok
                # a needle haystack at this length holds a line per 40-90 tokens
                few = kind[1] == 'ruler' and kind[2][0] == 'needle' and fewest < n_tok // 100
                # still over after four tries, an episode is cut at the length
                # and loses its answer: rare (multiquery at 2,048, about 1 in 30)
                lost = cut * 4 > args.per_kind
                print('%-4s %-9s %-48s %4d: shortest %4d tokens, fewest lines %3d, cut %d of %d' %
                      ('FAIL' if short or few or lost else 'ok', mix, kind[1:], n_tok, worst, fewest, cut, args.per_kind))
                bad |= short or few or lost
    return int(bad)


if __name__ == '__main__':
    sys.exit(main())
