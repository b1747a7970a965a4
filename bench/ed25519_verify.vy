# pragma version 0.4.3
# pragma evm-version cancun
"""
@title Ed25519 verification in the EVM (measurement only, bench/bench_chain.py)
@notice RFC 8032 verification with no precompile: SHA-512 in 64-bit words over uint256, field
        arithmetic by mulmod/addmod (p = 2**255 - 19), inversion and square root by the modexp
        precompile, extended twisted-Edwards coordinates, Straus double-scalar multiplication
        [s]B - [h]A compared with R. Written to measure the cost the on-chain referee avoids by
        using an EIP-712 co-signature; not used by edgetrust's contracts.
"""

MAX_MSG: constant(uint256) = 4096
MAX_BLOCKS: constant(uint256) = (MAX_MSG + 64 + 17) // 128 + 1
M64: constant(uint256) = 18446744073709551615
P: constant(uint256) = 57896044618658097711785492504343953926634992332820282019728792003956564819949
L: constant(uint256) = 7237005577332262213973186563042994240857116359379907606001950938285454250989
D: constant(uint256) = 37095705934669439343138083508754565189542113879843219016388785533085940283555
D2: constant(uint256) = 16295367250680780974490674513165176452449235426866156013048779062215315747161
SQRT_M1: constant(uint256) = 19681161376707505956807079304988542015446066515923890162744021073123829784752
BX: constant(uint256) = 15112221349535400772501151409588531511454012693041857206046113283949847762202
BY: constant(uint256) = 46316835694926478169428394003475163141307993866256225615783033603165251855960
K512: constant(uint256[80]) = [4794697086780616226, 8158064640168781261, 13096744586834688815, 16840607885511220156, 4131703408338449720, 6480981068601479193, 10538285296894168987, 12329834152419229976, 15566598209576043074, 1334009975649890238, 2608012711638119052, 6128411473006802146, 8268148722764581231, 9286055187155687089, 11230858885718282805, 13951009754708518548, 16472876342353939154, 17275323862435702243, 1135362057144423861, 2597628984639134821, 3308224258029322869, 5365058923640841347, 6679025012923562964, 8573033837759648693, 10970295158949994411, 12119686244451234320, 12683024718118986047, 13788192230050041572, 14330467153632333762, 15395433587784984357, 489312712824947311, 1452737877330783856, 2861767655752347644, 3322285676063803686, 5560940570517711597, 5996557281743188959, 7280758554555802590, 8532644243296465576, 9350256976987008742, 10552545826968843579, 11727347734174303076, 12113106623233404929, 14000437183269869457, 14369950271660146224, 15101387698204529176, 15463397548674623760, 17586052441742319658, 1182934255886127544, 1847814050463011016, 2177327727835720531, 2830643537854262169, 3796741975233480872, 4115178125766777443, 5681478168544905931, 6601373596472566643, 7507060721942968483, 8399075790359081724, 8693463985226723168, 9568029438360202098, 10144078919501101548, 10430055236837252648, 11840083180663258601, 13761210420658862357, 14299343276471374635, 14566680578165727644, 15097957966210449927, 16922976911328602910, 17689382322260857208, 500013540394364858, 748580250866718886, 1242879168328830382, 1977374033974150939, 2944078676154940804, 3659926193048069267, 4368137639120453308, 4836135668995329356, 5532061633213252278, 6448918945643986474, 6902733635092675308, 7801388544844847127]
ZEROS: constant(Bytes[160]) = x"00000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"

struct Point:
    x: uint256
    y: uint256
    z: uint256
    t: uint256


@pure
@internal
def _rotr(x: uint256, n: uint256) -> uint256:
    return ((x >> n) | (x << (64 - n))) & M64


@pure
@internal
def _sha512(message: Bytes[MAX_MSG]) -> (bytes32, bytes32):
    n: uint256 = len(message)
    pad: uint256 = (239 - (n % 128)) % 128
    buf: Bytes[MAX_MSG + 305] = concat(message, b"\x80", slice(ZEROS, 0, pad), convert(convert(n * 8, uint128), bytes16), slice(ZEROS, 0, 32))
    h: uint256[8] = [7640891576956012808, 13503953896175478587, 4354685564936845355, 11912009170470909681, 5840696475078001361, 11170449401992604703, 2270897969802886507, 6620516959819538809]
    blocks: uint256 = (len(buf) - 32) // 128
    for bi: uint256 in range(MAX_BLOCKS):
        if bi == blocks:
            break
        w: uint256[80] = empty(uint256[80])
        for j: uint256 in range(16):
            w[j] = convert(extract32(buf, bi * 128 + j * 8), uint256) >> 192
        for j: uint256 in range(16, 80):
            x15: uint256 = w[j - 15]
            x2: uint256 = w[j - 2]
            s0: uint256 = self._rotr(x15, 1) ^ self._rotr(x15, 8) ^ (x15 >> 7)
            s1: uint256 = self._rotr(x2, 19) ^ self._rotr(x2, 61) ^ (x2 >> 6)
            w[j] = (w[j - 16] + s0 + w[j - 7] + s1) & M64
        a: uint256 = h[0]
        b: uint256 = h[1]
        c: uint256 = h[2]
        d: uint256 = h[3]
        e: uint256 = h[4]
        f: uint256 = h[5]
        g: uint256 = h[6]
        hh: uint256 = h[7]
        for j: uint256 in range(80):
            S1: uint256 = self._rotr(e, 14) ^ self._rotr(e, 18) ^ self._rotr(e, 41)
            ch: uint256 = (e & f) ^ ((e ^ M64) & g)
            t1: uint256 = (hh + S1 + ch + K512[j] + w[j]) & M64
            S0: uint256 = self._rotr(a, 28) ^ self._rotr(a, 34) ^ self._rotr(a, 39)
            mj: uint256 = (a & b) ^ (a & c) ^ (b & c)
            hh = g
            g = f
            f = e
            e = (d + t1) & M64
            d = c
            c = b
            b = a
            a = (t1 + S0 + mj) & M64
        h[0] = (h[0] + a) & M64
        h[1] = (h[1] + b) & M64
        h[2] = (h[2] + c) & M64
        h[3] = (h[3] + d) & M64
        h[4] = (h[4] + e) & M64
        h[5] = (h[5] + f) & M64
        h[6] = (h[6] + g) & M64
        h[7] = (h[7] + hh) & M64
    hi: uint256 = (h[0] << 192) | (h[1] << 128) | (h[2] << 64) | h[3]
    lo: uint256 = (h[4] << 192) | (h[5] << 128) | (h[6] << 64) | h[7]
    return convert(hi, bytes32), convert(lo, bytes32)


@pure
@external
def sha512(message: Bytes[MAX_MSG]) -> (bytes32, bytes32):
    return self._sha512(message)


@pure
@internal
def _le(b: bytes32) -> uint256:
    # A 32-byte little-endian integer.
    x: uint256 = convert(b, uint256)
    r: uint256 = 0
    for i: uint256 in range(32):
        r = (r << 8) | (x & 255)
        x >>= 8
    return r


@view
@internal
def _expmod(base: uint256, e: uint256) -> uint256:
    out: Bytes[32] = raw_call(
        0x0000000000000000000000000000000000000005,
        concat(convert(32, bytes32), convert(32, bytes32), convert(32, bytes32), convert(base, bytes32), convert(e, bytes32), convert(P, bytes32)),
        max_outsize=32,
        is_static_call=True,
    )
    return convert(extract32(out, 0), uint256)


@pure
@internal
def _sub(a: uint256, b: uint256) -> uint256:
    return uint256_addmod(a, P - b, P)


@pure
@internal
def _add(p: Point, q: Point) -> Point:
    # add-2008-hwcd-3 (a = -1).
    a: uint256 = uint256_mulmod(self._sub(p.y, p.x), self._sub(q.y, q.x), P)
    b: uint256 = uint256_mulmod(uint256_addmod(p.y, p.x, P), uint256_addmod(q.y, q.x, P), P)
    c: uint256 = uint256_mulmod(uint256_mulmod(p.t, D2, P), q.t, P)
    d: uint256 = uint256_mulmod(2 * p.z, q.z, P)
    e: uint256 = self._sub(b, a)
    f: uint256 = self._sub(d, c)
    g: uint256 = uint256_addmod(d, c, P)
    h: uint256 = uint256_addmod(b, a, P)
    return Point(x=uint256_mulmod(e, f, P), y=uint256_mulmod(g, h, P), z=uint256_mulmod(f, g, P), t=uint256_mulmod(e, h, P))


@pure
@internal
def _double(p: Point) -> Point:
    # dbl-2008-hwcd (a = -1).
    a: uint256 = uint256_mulmod(p.x, p.x, P)
    b: uint256 = uint256_mulmod(p.y, p.y, P)
    c: uint256 = uint256_mulmod(2 * p.z, p.z, P)
    h: uint256 = uint256_addmod(a, b, P)
    xy: uint256 = uint256_addmod(p.x, p.y, P)
    e: uint256 = self._sub(h, uint256_mulmod(xy, xy, P))
    g: uint256 = self._sub(a, b)
    f: uint256 = uint256_addmod(c, g, P)
    return Point(x=uint256_mulmod(e, f, P), y=uint256_mulmod(g, h, P), z=uint256_mulmod(f, g, P), t=uint256_mulmod(e, h, P))


@view
@internal
def _decompress(enc: bytes32) -> (Point, bool):
    v: uint256 = self._le(enc)
    sign: uint256 = v >> 255
    y: uint256 = v & ((1 << 255) - 1)
    if y >= P:
        return empty(Point), False
    yy: uint256 = uint256_mulmod(y, y, P)
    u: uint256 = self._sub(yy, 1)
    w: uint256 = uint256_addmod(uint256_mulmod(D, yy, P), 1, P)
    # x = u v^3 (u v^7)^((p-5)/8)
    w3: uint256 = uint256_mulmod(uint256_mulmod(w, w, P), w, P)
    w7: uint256 = uint256_mulmod(uint256_mulmod(w3, w3, P), w, P)
    x: uint256 = uint256_mulmod(uint256_mulmod(u, w3, P), self._expmod(uint256_mulmod(u, w7, P), (P - 5) // 8), P)
    wx2: uint256 = uint256_mulmod(w, uint256_mulmod(x, x, P), P)
    if wx2 != u:
        if wx2 != P - u:
            return empty(Point), False
        x = uint256_mulmod(x, SQRT_M1, P)
    if x & 1 != sign:
        if x == 0:
            return empty(Point), False
        x = P - x
    return Point(x=x, y=y, z=1, t=uint256_mulmod(x, y, P)), True


@view
@external
def verify(public_key: bytes32, signature: Bytes[64], message: Bytes[4000]) -> bool:
    """
    @notice RFC 8032 Ed25519 verification (cofactorless), all in EVM code.
    """
    assert len(signature) == 64
    r_enc: bytes32 = extract32(signature, 0)
    s: uint256 = self._le(extract32(signature, 32))
    if s >= L:
        return False
    a: Point = empty(Point)
    ok: bool = False
    a, ok = self._decompress(public_key)
    if not ok:
        return False
    hi: bytes32 = empty(bytes32)
    lo: bytes32 = empty(bytes32)
    hi, lo = self._sha512(concat(r_enc, public_key, message))
    # h = SHA-512 little-endian mod L: the low 32 bytes are the first half.
    k: uint256 = uint256_addmod(uint256_mulmod(self._le(lo), 7237005577332262213973186563042994240413239274941949949428319933631315875101, L), self._le(hi) % L, L)
    neg_a: Point = Point(x=P - a.x, y=a.y, z=1, t=P - a.t)
    base: Point = Point(x=BX, y=BY, z=1, t=uint256_mulmod(BX, BY, P))
    both: Point = self._add(base, neg_a)
    q: Point = Point(x=0, y=1, z=1, t=0)
    for i: uint256 in range(256):
        bit: uint256 = 255 - i
        q = self._double(q)
        sb: uint256 = (s >> bit) & 1
        kb: uint256 = (k >> bit) & 1
        if sb == 1 and kb == 1:
            q = self._add(q, both)
        elif sb == 1:
            q = self._add(q, base)
        elif kb == 1:
            q = self._add(q, neg_a)
    zi: uint256 = self._expmod(q.z, P - 2)
    x: uint256 = uint256_mulmod(q.x, zi, P)
    y: uint256 = uint256_mulmod(q.y, zi, P)
    return self._le(r_enc) == y | ((x & 1) << 255)
