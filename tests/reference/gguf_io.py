"""GGUF v3 reading and writing in numpy, written from the GGUF specification
(ggml docs/gguf.md, summarised in shared/docs/FORMATS.md): little-endian
header "GGUF", u32 version, u64 tensor count, u64 metadata count; typed
metadata values; tensor infos (name, dims with ne[0] fastest, type, offset);
a data section aligned to general.alignment (default 32).

Independent of kvbench's C code: this is what the engine is checked against.
"""
import struct

import numpy as np

import kquant_ref as KQ

F32, F16, Q4_0, Q8_0, BF16 = 0, 1, 2, 8, 30
Q2_K, Q3_K, Q4_K, Q5_K, Q6_K = KQ.Q2_K, KQ.Q3_K, KQ.Q4_K, KQ.Q5_K, KQ.Q6_K   # super-blocks of 256: kquant_ref.py
QK = 32

# metadata value types
U8, I8, U16, I16, U32, I32, FLOAT32, BOOL, STRING, ARRAY, U64, I64, FLOAT64 = range(13)
_SCALAR = {U8: '<B', I8: '<b', U16: '<H', I16: '<h', U32: '<I', I32: '<i', FLOAT32: '<f',
           BOOL: '<?', U64: '<Q', I64: '<q', FLOAT64: '<d'}


class Reader:
    def __init__(self, data):
        self.d = data
        self.o = 0

    def take(self, fmt):
        v = struct.unpack_from(fmt, self.d, self.o)
        self.o += struct.calcsize(fmt)
        return v[0]

    def string(self):
        n = self.take('<Q')
        s = self.d[self.o:self.o + n]
        self.o += n
        return s.decode('utf-8', errors='surrogateescape')

    def value(self, t):
        if t == STRING:
            return self.string()
        if t == ARRAY:
            et, n = self.take('<I'), self.take('<Q')
            return [self.value(et) for _ in range(n)]
        return self.take(_SCALAR[t])


def _f16_block_scale(raw):
    return np.frombuffer(raw, dtype='<f2').astype(np.float64)


def decode(ttype, raw, n):
    """n values of ggml type `ttype` from bytes `raw`, as float64."""
    if ttype == F32:
        return np.frombuffer(raw, dtype='<f4', count=n).astype(np.float64)
    if ttype == F16:
        return np.frombuffer(raw, dtype='<f2', count=n).astype(np.float64)
    if ttype == BF16:
        u = np.frombuffer(raw, dtype='<u2', count=n).astype(np.uint32) << 16
        return u.view(np.float32).astype(np.float64)
    if ttype in KQ.BLOCK_BYTES:
        return KQ.decode(ttype, raw, n).astype(np.float64)
    nb = n // QK
    if ttype == Q8_0:
        blk = np.frombuffer(raw, dtype=np.uint8, count=nb * 34).reshape(nb, 34)
        d = blk[:, :2].copy().view('<f2').astype(np.float64)          # (nb, 1)
        q = blk[:, 2:].copy().view(np.int8).astype(np.float64)        # (nb, 32)
        return (q * d).reshape(-1)
    if ttype == Q4_0:
        blk = np.frombuffer(raw, dtype=np.uint8, count=nb * 18).reshape(nb, 18)
        d = blk[:, :2].copy().view('<f2').astype(np.float64)
        qs = blk[:, 2:]
        lo = (qs & 0x0F).astype(np.float64) - 8   # elements 0..15
        hi = (qs >> 4).astype(np.float64) - 8     # elements 16..31
        return (np.concatenate([lo, hi], axis=1) * d).reshape(-1)
    raise ValueError('unsupported ggml type %d' % ttype)


def type_nbytes(ttype, n):
    if ttype in KQ.BLOCK_BYTES:
        return n // KQ.QK_K * KQ.BLOCK_BYTES[ttype]
    return {F32: 4 * n, F16: 2 * n, BF16: 2 * n, Q8_0: n // QK * 34, Q4_0: n // QK * 18}[ttype]


def read(path):
    """Returns (metadata dict, {name: float64 array in PyTorch order}, {name: ggml type})."""
    with open(path, 'rb') as f:
        data = f.read()
    r = Reader(data)
    if data[:4] != b'GGUF':
        raise ValueError('%s: not a GGUF file' % path)
    r.o = 4
    version = r.take('<I')
    if version not in (2, 3):
        raise ValueError('%s: GGUF version %d' % (path, version))
    n_tensors, n_kv = r.take('<Q'), r.take('<Q')
    meta = {}
    for _ in range(n_kv):
        key = r.string()
        meta[key] = r.value(r.take('<I'))
    infos = []
    for _ in range(n_tensors):
        name = r.string()
        nd = r.take('<I')
        ne = [r.take('<Q') for _ in range(nd)]
        ttype, off = r.take('<I'), r.take('<Q')
        infos.append((name, ne, ttype, off))
    align = int(meta.get('general.alignment', 32))
    base = (r.o + align - 1) // align * align
    tensors, types = {}, {}
    for name, ne, ttype, off in infos:
        n = int(np.prod(ne))
        raw = data[base + off: base + off + type_nbytes(ttype, n)]
        # ne[0] varies fastest: numpy shape is ne reversed ([out, in] for a matrix)
        tensors[name] = decode(ttype, raw, n).reshape(list(reversed(ne)))
        types[name] = ttype
    return meta, tensors, types


# ------------------------------------------------------------------ writing

def f32_to_bf16_bits(x):
    u = np.asarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = (u + 0x7FFF + ((u >> 16) & 1)) >> 16   # round to nearest even
    return rounded.astype(np.uint16)


def encode(ttype, x):
    """Bytes of float array x (flattened, row-major) in ggml type ttype."""
    x = np.asarray(x, dtype=np.float32).reshape(-1)
    if ttype == F32:
        return x.astype('<f4').tobytes()
    if ttype == F16:
        return x.astype('<f2').tobytes()
    if ttype == BF16:
        return f32_to_bf16_bits(x).astype('<u2').tobytes()
    if ttype in KQ.BLOCK_BYTES:
        return KQ.encode(ttype, x)
    b = x.reshape(-1, QK)
    if ttype == Q8_0:
        amax = np.abs(b).max(axis=1)
        d = amax / 127.0
        inv = np.where(d != 0, 1.0 / np.where(d != 0, d, 1), 0).astype(np.float32)
        q = np.round(b * inv[:, None]).astype(np.int8)       # numpy rounds half to even; ties are measure-zero here
        out = np.zeros((len(b), 34), dtype=np.uint8)
        out[:, :2] = d.astype('<f2').reshape(-1, 1).view(np.uint8)
        out[:, 2:] = q.view(np.uint8)
        return out.tobytes()
    if ttype == Q4_0:
        idx = np.abs(b).argmax(axis=1)
        m = b[np.arange(len(b)), idx]                         # value of largest magnitude, sign kept
        d = m / -8.0
        inv = np.where(d != 0, 1.0 / np.where(d != 0, d, 1), 0).astype(np.float32)
        q = np.minimum(15, np.floor(b * inv[:, None] + 8.5)).astype(np.uint8)
        out = np.zeros((len(b), 18), dtype=np.uint8)
        out[:, :2] = d.astype('<f2').reshape(-1, 1).view(np.uint8)
        out[:, 2:] = q[:, :16] | (q[:, 16:] << 4)
        return out.tobytes()
    raise ValueError('unsupported ggml type %d' % ttype)


def _pack_value(t, v):
    if t == STRING:
        b = v.encode('utf-8')
        return struct.pack('<Q', len(b)) + b
    if t == ARRAY:
        et, items = v
        return struct.pack('<IQ', et, len(items)) + b''.join(_pack_value(et, i) for i in items)
    return struct.pack(_SCALAR[t], v)


class Raw:
    """A tensor given as its stored bytes: shape in PyTorch order, data already in its type."""
    def __init__(self, shape, data):
        self.shape, self.data = tuple(shape), data


def write(path, meta, tensors, align=32):
    """meta: {key: (type, value)} (arrays: (ARRAY, (elem_type, list)));
    tensors: list of (name, float array in PyTorch order or Raw, ggml type)."""
    head = b'GGUF' + struct.pack('<IQQ', 3, len(tensors), len(meta))
    for k, (t, v) in meta.items():
        head += _pack_value(STRING, k) + struct.pack('<I', t) + _pack_value(t, v)
    blobs, off = [], 0
    for name, arr, ttype in tensors:
        ne = list(reversed(arr.shape))
        head += _pack_value(STRING, name) + struct.pack('<I', len(ne)) + b''.join(struct.pack('<Q', n) for n in ne)
        head += struct.pack('<IQ', ttype, off)
        blob = arr.data if isinstance(arr, Raw) else encode(ttype, arr)
        pad = (-len(blob)) % align
        blobs.append(blob + b'\0' * pad)
        off += len(blob) + pad
    head += b'\0' * ((-len(head)) % align)
    with open(path, 'wb') as f:
        f.write(head)
        for b in blobs:
            f.write(b)
