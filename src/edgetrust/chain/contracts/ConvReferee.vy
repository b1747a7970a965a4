# pragma version 0.4.3
# pragma evm-version cancun
"""
@title ConvReferee
@license Apache-2.0
@notice The Conv final step of `Referee`, as a stateless contract (the two together exceed
        EIP-170's code size limit): recompute output `element` of a Conv node (NCHW, groups,
        strides, dilations, padding) from one run of the device's committed input per (input
        channel, kernel row) inside the image (padding reads as zero, as in Conv.element) and
        the committed weights, every opening checked against the claim's roots (trace layout
        v2). Returns what `Referee.final_step_conv` checks against its dispute.
"""

MAX_PROOF: constant(uint256) = 48
CHUNK: constant(uint256) = 256
MAX_K: constant(uint256) = 256
MAX_RUN_CHUNKS: constant(uint256) = 9
MAX_RUN: constant(uint256) = CHUNK * MAX_RUN_CHUNKS
MAX_TAPS: constant(uint256) = 48
MAX_TAP: constant(uint256) = 2 * CHUNK
KIND_CONV: constant(uint256) = 2
NAME_W: constant(bytes32) = 0x7700000000000000000000000000000000000000000000000000000000000000
NAME_B: constant(bytes32) = 0x6200000000000000000000000000000000000000000000000000000000000000
NAME_MULT: constant(bytes32) = 0x6d756c7400000000000000000000000000000000000000000000000000000000
NAME_SHIFT: constant(bytes32) = 0x7368696674000000000000000000000000000000000000000000000000000000

struct Claim:
    trace_root: bytes32
    trace_size: uint256
    weights_root: bytes32
    weights_size: uint256
    ops_root: bytes32

struct ConvOp:
    kind: uint256
    node: uint256
    input_entry: uint256
    qmax: uint256
    w_leaf: uint256
    b_leaf: uint256
    mult_leaf: uint256
    shift_leaf: uint256
    kh: uint256
    kw: uint256
    sy: uint256
    sx: uint256
    dy: uint256
    dx: uint256
    pt: uint256
    pl: uint256
    group: uint256
    pb: uint256
    pr: uint256

struct Tap:
    data: Bytes[MAX_TAP]
    proof: DynArray[bytes32, MAX_PROOF]

struct Leaf:
    data: Bytes[160]
    proof: DynArray[bytes32, MAX_PROOF]

struct Run:
    data: Bytes[MAX_RUN]
    proof: DynArray[bytes32, MAX_PROOF]

struct One:
    data: Bytes[CHUNK]
    proof: DynArray[bytes32, MAX_PROOF]

struct Parsed:
    itemsize: uint256
    rank: uint256
    d0: uint256
    d1: uint256
    d2: uint256
    d3: uint256
    count: uint256
    root: bytes32


@pure
@internal
def _node(left: bytes32, right: bytes32) -> bytes32:
    return sha256(concat(b"\x01", left, right))


@pure
@internal
def _inclusion_root(
    leaf_hash: bytes32, index: uint256, size: uint256, proof: DynArray[bytes32, MAX_PROOF]
) -> bytes32:
    # RFC 9162 section 2.1.3.2.
    assert index < size, "IndexOutOfRange"
    fn: uint256 = index
    sn: uint256 = size - 1
    r: bytes32 = leaf_hash
    for p: bytes32 in proof:
        assert sn != 0, "BadAuditPath"
        if fn & 1 == 1 or fn == sn:
            r = self._node(p, r)
            for _: uint256 in range(64):
                if fn & 1 == 1 or fn == 0:
                    break
                fn >>= 1
                sn >>= 1
        else:
            r = self._node(r, p)
        fn >>= 1
        sn >>= 1
    assert sn == 0, "BadAuditPath"
    return r


@pure
@internal
def _run_root(
    data: Bytes[MAX_RUN], c0: uint256, size: uint256, proof: DynArray[bytes32, MAX_PROOF]
) -> bytes32:
    # The root of a tree of `size` chunks implied by chunks [c0, c0 + len(data) / 256) and the
    # proof (per level, bottom up: left neighbour if the range starts on a right child, right
    # neighbour if it ends on a left child that has a sibling).
    assert len(data) > 0 and len(data) % CHUNK == 0, "BadRun"
    count: uint256 = len(data) // CHUNK
    assert c0 + count <= size, "RunOutOfRange"
    nodes: DynArray[bytes32, MAX_RUN_CHUNKS] = []
    for j: uint256 in range(MAX_RUN_CHUNKS):
        if j == count:
            break
        nodes.append(sha256(concat(b"\x00", slice(data, CHUNK * j, CHUNK))))
    lo: uint256 = c0
    sz: uint256 = size
    p: uint256 = 0
    for _: uint256 in range(64):
        if sz == 1:
            break
        nxt: DynArray[bytes32, MAX_RUN_CHUNKS] = []
        i: uint256 = 0
        n: uint256 = len(nodes)
        if lo % 2 == 1:
            assert p < len(proof), "BadRangeProof"
            nxt.append(self._node(proof[p], nodes[0]))
            p += 1
            i = 1
        for _j: uint256 in range(MAX_RUN_CHUNKS):
            if i >= n:
                break
            if i + 1 < n:
                nxt.append(self._node(nodes[i], nodes[i + 1]))
                i += 2
            elif lo + i + 1 < sz:
                assert p < len(proof), "BadRangeProof"
                nxt.append(self._node(nodes[i], proof[p]))
                p += 1
                i += 1
            else:
                nxt.append(nodes[i])
                i += 1
        nodes = nxt
        lo = lo // 2
        sz = (sz + 1) // 2
    assert p == len(proof), "BadRangeProof"
    return nodes[0]


@pure
@internal
def _parse(leaf: Bytes[160]) -> Parsed:
    # An entry or param leaf of trace layout v2 (96 or 160 bytes).
    assert len(leaf) == 96 or len(leaf) == 160, "BadLeaf"
    w0: uint256 = convert(extract32(leaf, 0), uint256)
    assert w0 >> 248 == 2, "BadLeaf"
    isz: uint256 = (w0 >> 240) & 255
    assert isz == 1 or isz == 2 or isz == 4 or isz == 8, "BadLeaf"
    return Parsed(
        itemsize=isz,
        rank=(w0 >> 232) & 255,
        d0=(w0 >> 192) & 4294967295,
        d1=(w0 >> 160) & 4294967295,
        d2=(w0 >> 128) & 4294967295,
        d3=(w0 >> 96) & 4294967295,
        count=convert(extract32(leaf, 32), uint256),
        root=extract32(leaf, 64),
    )


@pure
@internal
def _chunks_of(p: Parsed) -> uint256:
    return (p.count * p.itemsize + CHUNK - 1) // CHUNK


@pure
@internal
def _elem(data: Bytes[MAX_RUN], off: uint256, isz: uint256) -> int256:
    # The big-endian two's-complement element of `isz` bytes at byte offset `off`.
    raw: uint256 = 0
    mask: uint256 = (1 << (8 * isz)) - 1
    if off + isz >= 32:
        raw = convert(extract32(data, off + isz - 32), uint256) & mask
    else:
        raw = (convert(extract32(data, 0), uint256) >> (8 * (32 - off - isz))) & mask
    v: int256 = convert(raw, int256)
    if raw >> (8 * isz - 1) == 1:
        v -= convert(1 << (8 * isz), int256)
    return v


@pure
@internal
def _elem1(data: Bytes[CHUNK], off: uint256, isz: uint256) -> int256:
    return self._elem(data, off, isz)


@pure
@internal
def _claim_hash(c: Claim) -> bytes32:
    return keccak256(abi_encode(c.trace_root, c.trace_size, c.weights_root, c.weights_size, c.ops_root))


@pure
@internal
def _requantize(acc: int256, mult: int256, rshift: int256, qmax: int256) -> int256:
    # edgetrust.runtime.fixed._arith.apply_rescale then saturate: half away from zero; a shift
    # below 31 first moves |acc| left to 31, clamped at 2**61 as the executor clamps it.
    a: int256 = abs(acc)
    s: uint256 = convert(rshift, uint256)
    if s < 31:
        left: uint256 = 31 - s
        a = min(a, convert(1 << (61 - left), int256)) << left
        s = 31
    r: int256 = (a * mult + convert(1 << (s - 1), int256)) >> s
    if acc < 0:
        r = -r
    return max(-qmax, min(qmax, r))


@view
@internal
def _param(claim: Claim, index: uint256, leaf: Leaf, node: uint256, name: bytes32) -> Parsed:
    lh: bytes32 = sha256(concat(b"\x00", leaf.data))
    assert self._inclusion_root(lh, index, claim.weights_size, leaf.proof) == claim.weights_root, "ParamNotInWeights"
    assert len(leaf.data) == 160, "BadLeaf"
    assert convert(extract32(leaf.data, 96), uint256) == node and extract32(leaf.data, 128) == name, "WrongParam"
    return self._parse(leaf.data)


@view
@internal
def _one(claim: Claim, index: uint256, leaf: Leaf, node: uint256, name: bytes32, channel: uint256, o: One) -> int256:
    # Element `channel` of a per-channel param, or its only element.
    p: Parsed = self._param(claim, index, leaf, node, name)
    element: uint256 = 0
    if p.count > 1:
        element = channel
    assert element < p.count, "IndexOutOfRange"
    assert self._run_root(o.data, element * p.itemsize // CHUNK, self._chunks_of(p), o.proof) == p.root, "ParamDoesNotOpen"
    return self._elem1(o.data, (element * p.itemsize) % CHUNK, p.itemsize)


@view
@external
def recompute(
    claim: Claim,
    entry: uint256,
    out_leaf: Bytes[96],
    element: uint256,
    op: ConvOp,
    op_proof: DynArray[bytes32, MAX_PROOF],
    x_leaf: Leaf,
    taps: DynArray[Tap, MAX_TAPS],
    w_leaf: Leaf,
    w: Run,
    b_leaf: Leaf,
    b: One,
    m_leaf: Leaf,
    m: One,
    s_leaf: Leaf,
    s: One,
) -> (bytes32, uint256, bytes32, uint256, bool, int256):
    """
    @notice Recompute output `element` of trace entry `entry` (a Conv node).
    @return (claim hash, entry, output leaf hash, element, output shape matches, recomputed).
    """
    y: Parsed = self._parse(out_leaf)
    lh: bytes32 = sha256(concat(b"\x00", out_leaf))
    assert element < y.count, "ElementNotInChunk"
    op_leaf: bytes32 = sha256(concat(b"\x00", abi_encode(op)))
    assert self._inclusion_root(op_leaf, entry, claim.trace_size, op_proof) == claim.ops_root, "OpNotInTable"
    assert op.kind == KIND_CONV, "UnsupportedOp"
    assert op.input_entry < entry, "BadOp"
    xh: bytes32 = sha256(concat(b"\x00", x_leaf.data))
    assert self._inclusion_root(xh, op.input_entry, claim.trace_size, x_leaf.proof) == claim.trace_root, "LeafNotInTrace"
    assert len(x_leaf.data) == 96, "BadLeaf"
    xp: Parsed = self._parse(x_leaf.data)
    wp: Parsed = self._param(claim, op.w_leaf, w_leaf, op.node, NAME_W)
    assert xp.rank == 4 and wp.rank == 2, "ShapeMismatch"
    assert op.group > 0 and xp.d1 % op.group == 0 and wp.d0 % op.group == 0, "BadOp"
    cg: uint256 = xp.d1 // op.group
    k: uint256 = wp.d1
    assert k == cg * op.kh * op.kw and op.sy > 0 and op.sx > 0 and op.dy > 0 and op.dx > 0, "BadOp"
    ekh: uint256 = op.dy * (op.kh - 1) + 1
    ekw: uint256 = op.dx * (op.kw - 1) + 1
    assert xp.d2 + op.pt + op.pb >= ekh and xp.d3 + op.pl + op.pr >= ekw, "BadOp"
    oh: uint256 = (xp.d2 + op.pt + op.pb - ekh) // op.sy + 1
    ow: uint256 = (xp.d3 + op.pl + op.pr - ekw) // op.sx + 1
    if y.rank != 4 or y.d0 != xp.d0 or y.d1 != wp.d0 or y.d2 != oh or y.d3 != ow:
        return self._claim_hash(claim), entry, lh, element, False, 0
    ox: uint256 = element % ow
    oy: uint256 = (element // ow) % oh
    oc: uint256 = (element // (ow * oh)) % wp.d0
    nb: uint256 = element // (ow * oh * wp.d0)
    g: uint256 = oc // (wp.d0 // op.group)
    w0: uint256 = oc * k * wp.itemsize
    assert self._run_root(w.data, w0 // CHUNK, self._chunks_of(wp), w.proof) == wp.root, "ParamDoesNotOpen"
    assert len(w.data) >= (w0 % CHUNK) + k * wp.itemsize, "ParamDoesNotOpen"
    acc: int256 = self._one(claim, op.b_leaf, b_leaf, op.node, NAME_B, oc, b)
    ix0: int256 = convert(ox * op.sx, int256) - convert(op.pl, int256)
    dx: int256 = convert(op.dx, int256)
    wi: int256 = convert(xp.d3, int256)
    kx_lo: uint256 = 0
    if ix0 < 0:
        kx_lo = convert((-ix0 + dx - 1) // dx, uint256)
    kx_hi: uint256 = 0
    if wi > ix0:
        kx_hi = min(op.kw, convert((wi - ix0 + dx - 1) // dx, uint256))
    x_chunks: uint256 = self._chunks_of(xp)
    t: uint256 = 0
    for c: uint256 in range(MAX_K):
        if c == cg:
            break
        for ky: uint256 in range(MAX_K):
            if ky == op.kh:
                break
            iy: int256 = convert(oy * op.sy + ky * op.dy, int256) - convert(op.pt, int256)
            if iy < 0 or iy >= convert(xp.d2, int256) or kx_lo >= kx_hi:
                continue
            start: uint256 = ((nb * xp.d1 + g * cg + c) * xp.d2 + convert(iy, uint256)) * xp.d3 + convert(ix0 + convert(kx_lo, int256) * dx, uint256)
            assert t < len(taps), "InputsDoNotOpen"
            b0: uint256 = start * xp.itemsize
            assert self._run_root(taps[t].data, b0 // CHUNK, x_chunks, taps[t].proof) == xp.root, "InputsDoNotOpen"
            off: uint256 = b0 % CHUNK
            for kx: uint256 in range(MAX_K):
                if kx + kx_lo == kx_hi:
                    break
                acc += self._elem(taps[t].data, off + kx * op.dx * xp.itemsize, xp.itemsize) * self._elem(
                    w.data, (w0 % CHUNK) + ((c * op.kh + ky) * op.kw + kx_lo + kx) * wp.itemsize, wp.itemsize
                )
            t += 1
    assert t == len(taps), "InputsDoNotOpen"
    mult: int256 = self._one(claim, op.mult_leaf, m_leaf, op.node, NAME_MULT, oc, m)
    rshift: int256 = self._one(claim, op.shift_leaf, s_leaf, op.node, NAME_SHIFT, 0, s)
    assert rshift >= 0 and rshift <= 62, "BadShift"
    recomputed: int256 = self._requantize(acc, mult, rshift, convert(op.qmax, int256))
    return self._claim_hash(claim), entry, lh, element, True, recomputed
