"""K-quant super-blocks (GGUF types Q2_K 10, Q3_K 11, Q4_K 12, Q5_K 13,
Q6_K 14) in numpy, written from the GGUF specification's block layouts
(ggml-common.h's block_q*_K, decoded as ggml's reference dequantizers
define it) -- not from kvbench's C code.

decode() rounds to float32 at each step, in the order the reference
dequantizers compute (scale = d * sc, then scale * q - dmin * m), so a
faithful decoder gives the same float32 bits; encode() is a simple
quantizer for the synthetic models (any valid blocks will do there).

Run as a script, it is the block-by-block check: GGUF files whose K-quant
weights are random bytes (every scale, sign and bit pattern, with finite
fp16 super-block scales) are converted to F32 by `kvbench convert` under
each ISA (KVBENCH_ISA=scalar, avx2, avx512: the portable decoder and both
vector ones; a CPU without one runs its best lower one), and every value
must equal this decoder's bit for bit.
"""
import argparse
import os
import subprocess
import sys

import numpy as np

Q2_K, Q3_K, Q4_K, Q5_K, Q6_K = 10, 11, 12, 13, 14
QK_K = 256
BLOCK_BYTES = {Q2_K: 84, Q3_K: 110, Q4_K: 144, Q5_K: 176, Q6_K: 210}
NAMES = {Q2_K: 'q2_k', Q3_K: 'q3_k', Q4_K: 'q4_k', Q5_K: 'q5_k', Q6_K: 'q6_k'}
f32 = np.float32


def _f16(b):
    """(nb, 2) bytes -> (nb, 1) float32 from little-endian fp16."""
    return np.ascontiguousarray(b).view('<f2').astype(f32)


def _scale_min_6bit(s):
    """Q4_K/Q5_K: the 12 scale bytes (nb, 12) -> 6-bit scales and mins, (nb, 8) each.
    Sub-blocks 0..3: scale = low 6 bits of byte j, min = low 6 bits of byte j+4.
    Sub-blocks 4..7: low 4 bits from byte j+4 (scale: its low nibble, min: its
    high nibble), top 2 bits from the top 2 bits of byte j-4 (scale) / j (min)."""
    s = s.astype(np.int32)
    sc, mn = np.zeros((len(s), 8), np.int32), np.zeros((len(s), 8), np.int32)
    for j in range(4):
        sc[:, j] = s[:, j] & 63
        mn[:, j] = s[:, j + 4] & 63
    for j in range(4, 8):
        sc[:, j] = (s[:, j + 4] & 0xF) | ((s[:, j - 4] >> 6) << 4)
        mn[:, j] = (s[:, j + 4] >> 4) | ((s[:, j] >> 6) << 4)
    return sc, mn


def _q3_scales(s):
    """Q3_K: 12 bytes -> 16 signed 6-bit scales. Scale k's low 4 bits are the
    low nibble of byte k (k < 8) or the high nibble of byte k-8; its high 2
    bits are bits 2(k//4)..2(k//4)+1 of byte 8 + k%4; stored with +32."""
    s = s.astype(np.int32)
    out = np.zeros((len(s), 16), np.int32)
    for k in range(16):
        lo = s[:, k] & 0xF if k < 8 else s[:, k - 8] >> 4
        hi = (s[:, 8 + k % 4] >> (2 * (k // 4))) & 3
        out[:, k] = (lo | (hi << 4)) - 32
    return out


def decode(ttype, raw, n):
    """n values (a multiple of 256) of K-quant type ttype from bytes raw, as float32."""
    nb = n // QK_K
    blk = np.frombuffer(raw, dtype=np.uint8, count=nb * BLOCK_BYTES[ttype]).reshape(nb, -1).astype(np.int32)
    q = np.zeros((nb, QK_K), np.int32)
    if ttype in (Q2_K, Q3_K):
        if ttype == Q2_K:   # scales[16] qs[64] d dmin
            sb, qs = blk[:, :16], blk[:, 16:80]
            d, dmin = _f16(blk[:, 80:82].astype(np.uint8)), _f16(blk[:, 82:84].astype(np.uint8))
        else:               # hmask[32] qs[64] scales[12] d
            hm, qs, sb = blk[:, :32], blk[:, 32:96], blk[:, 96:108]
            d = _f16(blk[:, 108:110].astype(np.uint8))
        # 128 values at a time: value 128c + 32j + l is the 2-bit field j of qs[32c + l]
        for c in range(2):
            for j in range(4):
                e = 128 * c + 32 * j
                q[:, e:e + 32] = (qs[:, 32 * c:32 * c + 32] >> (2 * j)) & 3
                if ttype == Q3_K:   # third bit: hmask[l] bit 4c + j; without it, minus 4
                    q[:, e:e + 32] -= np.where((hm >> (4 * c + j)) & 1, 0, 4)
        if ttype == Q2_K:
            dl = d * (sb & 0xF).astype(f32)       # (nb, 16): per 16 values
            ml = dmin * (sb >> 4).astype(f32)
        else:
            dl = d * _q3_scales(sb).astype(f32)
            ml = np.zeros_like(dl)
        per = 16
    elif ttype in (Q4_K, Q5_K):    # d dmin scales[12] (qh[32]) qs[128]
        d, dmin = _f16(blk[:, 0:2].astype(np.uint8)), _f16(blk[:, 2:4].astype(np.uint8))
        sc, mn = _scale_min_6bit(blk[:, 4:16])
        qs = blk[:, 16:144] if ttype == Q4_K else blk[:, 48:176]
        # 64 values at a time: low nibbles of qs[32g..32g+31] then their high nibbles
        for g in range(4):
            q[:, 64 * g:64 * g + 32] = qs[:, 32 * g:32 * g + 32] & 0xF
            q[:, 64 * g + 32:64 * g + 64] = qs[:, 32 * g:32 * g + 32] >> 4
            if ttype == Q5_K:  # fifth bit: qh[l] bit 2g (low nibbles) / 2g+1 (high)
                qh = blk[:, 16:48]
                q[:, 64 * g:64 * g + 32] += ((qh >> (2 * g)) & 1) * 16
                q[:, 64 * g + 32:64 * g + 64] += ((qh >> (2 * g + 1)) & 1) * 16
        dl, ml = d * sc.astype(f32), dmin * mn.astype(f32)     # per 32 values
        per = 32
    elif ttype == Q6_K:            # ql[128] qh[64] scales[16] (int8) d
        ql, qh = blk[:, :128], blk[:, 128:192]
        sc = blk[:, 192:208].astype(np.uint8).view(np.int8).astype(f32)
        d = _f16(blk[:, 208:210].astype(np.uint8))
        # 128 values at a time from ql[64c..64c+63] and qh[32c..32c+31]:
        # values l, l+32, l+64, l+96 are the low nibbles of ql[l], ql[l+32],
        # then their high nibbles, each with two bits of qh[l] (bits 0-1, 2-3, 4-5, 6-7)
        for c in range(2):
            L, H = ql[:, 64 * c:64 * c + 64], qh[:, 32 * c:32 * c + 32]
            parts = [L[:, :32] & 0xF, L[:, 32:] & 0xF, L[:, :32] >> 4, L[:, 32:] >> 4]
            for j in range(4):
                q[:, 128 * c + 32 * j:128 * c + 32 * j + 32] = (parts[j] | (((H >> (2 * j)) & 3) << 4)) - 32
        dl, ml = d * sc, np.zeros((nb, 16), f32)
        per = 16
    else:
        raise ValueError('not a K-quant type: %d' % ttype)
    dl, ml = np.repeat(dl, per, axis=1), np.repeat(ml, per, axis=1)
    return (dl * q.astype(f32) - ml).reshape(-1)


# ------------------------------------------------------------------ encoding

def _fp16_round(x):
    return np.asarray(x, f32).astype('<f2').astype(f32)


def _affine(b, sub, nmax, smax):
    """Q2_K/Q4_K/Q5_K: blocks b (nb, 256) -> d, dmin (nb,), sub-block scale and
    min integers (nb, 256/sub) and quants (nb, 256)."""
    nb = len(b)
    s = b.reshape(nb, -1, sub)
    lo, hi = np.minimum(s.min(axis=2), 0), s.max(axis=2)
    scale, mins = np.where(hi > lo, (hi - lo) / nmax, 0).astype(f32), (-lo).astype(f32)
    d, dmin = _fp16_round(scale.max(axis=1) / smax), _fp16_round(mins.max(axis=1) / smax)
    ls = np.where(d[:, None] > 0, np.clip(np.rint(scale / np.where(d > 0, d, 1)[:, None]), 0, smax), 0).astype(np.int32)
    lm = np.where(dmin[:, None] > 0, np.clip(np.ceil(mins / np.where(dmin > 0, dmin, 1)[:, None]), 0, smax), 0).astype(np.int32)
    ds, ms = d[:, None] * ls, dmin[:, None] * lm
    q = np.where(ds[:, :, None] > 0, np.clip(np.rint((s + ms[:, :, None]) / np.where(ds > 0, ds, 1)[:, :, None]), 0, nmax), 0)
    return d, dmin, ls, lm, q.reshape(nb, QK_K).astype(np.int32)


def _symmetric(b, half, shalf):
    """Q3_K/Q6_K: d (nb,), signed sub-block scales (nb, 16), quants in [-half, half)."""
    nb = len(b)
    s = b.reshape(nb, 16, 16)
    idx = np.abs(s).argmax(axis=2)
    sc = np.take_along_axis(s, idx[:, :, None], axis=2)[:, :, 0] / -half
    big = np.take_along_axis(sc, np.abs(sc).argmax(axis=1)[:, None], axis=1)[:, 0]
    safe = np.where(big != 0, big, 1)
    iscale = -shalf / safe
    d = np.where(big != 0, _fp16_round(1 / iscale), 0).astype(f32)
    ls = np.where(big[:, None] != 0, np.clip(np.rint(iscale[:, None] * sc), -shalf, shalf - 1), 0).astype(np.int32)
    ds = d[:, None] * ls
    q = np.where(ds[:, :, None] != 0, np.clip(np.rint(s / np.where(ds != 0, ds, 1)[:, :, None]), -half, half - 1), 0)
    return d, ls, q.reshape(nb, QK_K).astype(np.int32)


def _pack2(q):
    """(nb, 256) values 0..3 -> (nb, 64): value 128c + 32j + l in bits 2j of byte 32c + l."""
    out = np.zeros((len(q), 64), np.int32)
    for c in range(2):
        for j in range(4):
            out[:, 32 * c:32 * c + 32] |= q[:, 128 * c + 32 * j:128 * c + 32 * j + 32] << (2 * j)
    return out


def _f16_bytes(v):
    return np.asarray(v, f32).astype('<f2').reshape(-1, 1).view(np.uint8).astype(np.int32)


def encode(ttype, x):
    """Bytes of float array x (size a multiple of 256) in K-quant type ttype."""
    b = np.asarray(x, dtype=f32).reshape(-1, QK_K)
    nb = len(b)
    if ttype == Q2_K:
        d, dmin, ls, lm, q = _affine(b, 16, 3, 15)
        out = np.concatenate([ls | (lm << 4), _pack2(q), _f16_bytes(d), _f16_bytes(dmin)], axis=1)
    elif ttype in (Q4_K, Q5_K):
        d, dmin, ls, lm, q = _affine(b, 32, 15 if ttype == Q4_K else 31, 63)
        s = np.zeros((nb, 12), np.int32)
        s[:, 0:4], s[:, 4:8] = ls[:, :4], lm[:, :4]
        s[:, 8:12] = (ls[:, 4:] & 0xF) | ((lm[:, 4:] & 0xF) << 4)
        s[:, 0:4] |= (ls[:, 4:] >> 4) << 6
        s[:, 4:8] |= (lm[:, 4:] >> 4) << 6
        qs = np.zeros((nb, 128), np.int32)
        qh = np.zeros((nb, 32), np.int32)
        for g in range(4):
            lo, hi = q[:, 64 * g:64 * g + 32], q[:, 64 * g + 32:64 * g + 64]
            qs[:, 32 * g:32 * g + 32] = (lo & 0xF) | ((hi & 0xF) << 4)
            qh |= ((lo >> 4) << (2 * g)) | ((hi >> 4) << (2 * g + 1))
        parts = [_f16_bytes(d), _f16_bytes(dmin), s] + ([qh] if ttype == Q5_K else []) + [qs]
        out = np.concatenate(parts, axis=1)
    elif ttype == Q3_K:
        d, ls, q = _symmetric(b, 4, 32)
        u = q + 4
        hm = np.zeros((nb, 32), np.int32)
        for k in range(8):           # value e: bit e // 32 of hmask[e % 32]
            hm |= (u[:, 32 * k:32 * k + 32] >> 2) << k
        v = ls + 32
        s = np.zeros((nb, 12), np.int32)
        for k in range(16):
            s[:, k % 8] |= (v[:, k] & 0xF) << (0 if k < 8 else 4)
            s[:, 8 + k % 4] |= (v[:, k] >> 4) << (2 * (k // 4))
        out = np.concatenate([hm, _pack2(u & 3), s, _f16_bytes(d)], axis=1)
    elif ttype == Q6_K:
        d, ls, q = _symmetric(b, 32, 128)
        u = q + 32
        ql, qh = np.zeros((nb, 128), np.int32), np.zeros((nb, 64), np.int32)
        for c in range(2):
            p = [u[:, 128 * c + 32 * j:128 * c + 32 * j + 32] for j in range(4)]
            ql[:, 64 * c:64 * c + 32] = (p[0] & 0xF) | ((p[2] & 0xF) << 4)
            ql[:, 64 * c + 32:64 * c + 64] = (p[1] & 0xF) | ((p[3] & 0xF) << 4)
            qh[:, 32 * c:32 * c + 32] = sum((p[j] >> 4) << (2 * j) for j in range(4))
        out = np.concatenate([ql, qh, ls & 0xFF, _f16_bytes(d)], axis=1)
    else:
        raise ValueError('not a K-quant type: %d' % ttype)
    return out.astype(np.uint8).tobytes()


# ------------------------------------------------------------------ the check

def random_blocks(ttype, nb, rng):
    """nb blocks of random bytes whose fp16 super-block scales are finite
    (random sign, magnitudes 2^-14 .. 2^-2): every other byte pattern occurs."""
    raw = rng.integers(0, 256, size=(nb, BLOCK_BYTES[ttype]), dtype=np.uint8)
    at = {Q2_K: (80, 82), Q3_K: (108,), Q4_K: (0, 2), Q5_K: (0, 2), Q6_K: (208,)}[ttype]
    for o in at:
        v = (rng.choice([-1, 1], nb) * np.exp2(rng.uniform(-14, -2, nb))).astype('<f2')
        raw[:, o:o + 2] = v.reshape(-1, 1).view(np.uint8)
    return raw.tobytes()


def main():
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import gguf_io as G
    import make_synthetic
    ap = argparse.ArgumentParser()
    ap.add_argument('--kvbench', required=True)
    ap.add_argument('--tmp', required=True)
    a = ap.parse_args()
    os.makedirs(a.tmp, exist_ok=True)
    rng = np.random.default_rng(2024)
    failed = runs = 0
    for t, isa in [(t, isa) for t in (Q2_K, Q3_K, Q4_K, Q5_K, Q6_K) for isa in ('scalar', 'avx2', 'avx512')]:
        runs += 1
        src, dst = os.path.join(a.tmp, 'blocks_%s.gguf' % NAMES[t]), os.path.join(a.tmp, 'blocks_%s_f32.gguf' % NAMES[t])
        blobs = make_synthetic.make_raw(src, t, lambda nb: random_blocks(t, nb, rng))
        r = subprocess.run([a.kvbench, 'convert', src, dst, '--type', 'f32'], capture_output=True, text=True,
                           env=dict(os.environ, KVBENCH_ISA=isa))
        if r.returncode != 0:
            print('FAIL %s %s: kvbench convert: %s' % (NAMES[t], isa, r.stderr.strip()))
            failed += 1
            continue
        _, got, types = G.read(dst)
        nblk = same = 0
        worst = 0.0
        for name, (raw, n) in blobs.items():
            want = decode(t, raw, n)
            have = got[name].reshape(-1).astype(f32)
            eq = (want.view(np.uint32) == have.view(np.uint32)).reshape(-1, QK_K)
            nblk += len(eq)
            same += int(eq.all(axis=1).sum())
            worst = max(worst, float(np.abs(want.astype(np.float64) - have).max()))
        ok = same == nblk
        failed += not ok
        print('%s %-5s %-6s %6d blocks, %6d bit-identical, max |diff| %.3g' % ('PASS' if ok else 'FAIL', NAMES[t], isa,
                                                                                nblk, same, worst))
    # a K-quant tensor whose rows are no whole super-blocks is refused, by name
    bad = os.path.join(a.tmp, 'bad_row.gguf')
    G.write(bad, {'general.architecture': (G.STRING, 'llama')},
            [('blk.0.attn_q.weight', G.Raw((2, 128), bytes(BLOCK_BYTES[Q4_K])), Q4_K)])
    r = subprocess.run([a.kvbench, 'convert', bad, bad + '.out', '--type', 'f32'], capture_output=True, text=True)
    ok = r.returncode != 0 and "'blk.0.attn_q.weight'" in r.stderr and '256' in r.stderr
    failed += not ok
    runs += 1
    print('%s row of 128 Q4_K values refused: %s' % ('PASS' if ok else 'FAIL', r.stderr.strip()))
    print('%d passed, %d failed' % (runs - failed, failed))
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
