"""A slow pure-Python-integer reference of the fixed-point integer definitions.

Written independently of the vectorised kernels: Python ints (no overflow, no BLAS), loops,
`fractions.Fraction` for exact rounding. Tests compare the executor with these bit for bit.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

from edgetrust.runtime.fixed import _nonlinear as nl


def rha(x: Fraction | int) -> int:
    """Round half away from zero, exactly."""
    x = Fraction(x)
    sign = -1 if x < 0 else 1
    a = abs(x)
    return sign * math.floor(a + Fraction(1, 2))


def rescale(x: int, mult: int, shift: int) -> int:
    return rha(Fraction(x * mult, 2**shift))


def sat(x: int, qmax: int) -> int:
    return max(-qmax, min(qmax, x))


def rdiv(x: int, d: int) -> int:
    return rha(Fraction(x, d))


def interp(table: list[int], idx: int, frac: int, bits: int) -> int:
    lo, hi = table[idx], table[idx + 1]
    return lo + rha(Fraction((hi - lo) * frac, 2**bits))


def exp_neg_q30(u: int) -> int:
    u = min(u, 64 << 16)
    y = rha(Fraction(u * nl._log2e_q30(), 2**16))
    k, f = y >> 30, y & ((1 << 30) - 1)
    m = interp(nl._exp2_neg_table().tolist(), f >> 22, f & ((1 << 22) - 1), 22)
    k = min(k, 62)
    return (m + (1 << (k - 1))) >> k if k > 0 else m


def exp_parts(u: int) -> tuple[int, int]:
    u = max(-(64 << 16), min(u, 64 << 16))
    y = rha(Fraction(u * nl._log2e_q30(), 2**16))
    k, f = y >> 30, y & ((1 << 30) - 1)
    return interp(nl._exp2_pos_table().tolist(), f >> 22, f & ((1 << 22) - 1), 22), k


def erf_q30(u: int) -> int:
    a = abs(u)
    table = nl._erf_table().tolist()
    if a >= 4 << 16:
        v = table[-1]
    else:
        v = interp(table, a >> 9, a & 511, 9)
    return -v if u < 0 else v


def sigmoid_q30(u: int) -> int:
    e = exp_neg_q30(abs(u))
    pos = rdiv(1 << 60, (1 << 30) + e)
    return (1 << 30) - pos if u < 0 else pos


def tanh_q30(u: int) -> int:
    e = exp_neg_q30(2 * abs(u))
    t = rdiv(((1 << 30) - e) << 30, (1 << 30) + e)
    return -t if u < 0 else t


def softmax_row(row: list[int], mult: int, shift: int, qmax: int) -> list[int]:
    m = max(row)
    es = [exp_neg_q30(rescale(m - v, mult, shift)) for v in row]
    total = sum(es)
    return [rdiv(e * qmax, total) for e in es]


def layernorm_row(
    row: list[int],
    scale: float,
    eps: float,
    g: list[int],
    b: list[int],
    mult: int,
    shift: int,
    qmax: int,
) -> list[int]:
    n = len(row)
    s1 = sum(row)
    c = [v * n - s1 for v in row]
    cmax = 2 * qmax * n
    p = 0
    while n * (((cmax + (1 << p) - 1) >> p) + 1) ** 2 >= 1 << 62:
        p += 1
    cp = [rha(Fraction(v, 2**p)) for v in c]
    v = sum(x * x for x in cp)
    eps_i = int(
        min(
            float(np.float64(rha(Fraction(eps * float(n) ** 3 / (scale * scale * 4.0**p))))),
            2.0**62,
        )
    )
    d = max(1, math.isqrt((v + eps_i) * (1 << 16) // n))
    normed = [rdiv(x << 24, d << p) for x in c]
    return [
        sat(rescale(nv * gi + bi, mult, shift), qmax)
        for nv, gi, bi in zip(normed, g, b, strict=True)
    ]


def conv2d(x: np.ndarray, w: np.ndarray, b: np.ndarray, stride: int, pad: int) -> np.ndarray:
    """Integer convolution by loops (N, C, H, W) × (OC, C, KH, KW) + b, Python ints."""
    n, c, h, wd = x.shape
    oc, _, kh, kw = w.shape
    oh = (h + 2 * pad - kh) // stride + 1
    ow = (wd + 2 * pad - kw) // stride + 1
    out = np.zeros((n, oc, oh, ow), dtype=object)
    xl = x.tolist()
    wl = w.tolist()
    for ni in range(n):
        for o in range(oc):
            for y in range(oh):
                for xx in range(ow):
                    acc = int(b[o])
                    for ci in range(c):
                        for i in range(kh):
                            for j in range(kw):
                                iy, ix = y * stride - pad + i, xx * stride - pad + j
                                if 0 <= iy < h and 0 <= ix < wd:
                                    acc += xl[ni][ci][iy][ix] * wl[o][ci][i][j]
                    out[ni, o, y, xx] = acc
    return out
