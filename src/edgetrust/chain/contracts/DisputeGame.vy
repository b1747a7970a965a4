# pragma version 0.4.3
# pragma evm-version cancun
"""
@title DisputeGame
@license Apache-2.0
@notice The on-chain referee for the last step of an edgetrust dispute: one output element of a
        dense node (Gemm/MatMul with constant weights) recomputed from its inputs and weights
        with the deterministic executor's fixed-point rule, and the device that committed a
        different value loses its stake.

        The bisection runs off chain and names (node, element). On chain:
        1. A device stakes. A challenger opens a dispute over a computation the device signed
           (model root, trace root, with their tree sizes; EIP-191 signature by the device's
           EVM key), naming the node and output element, with a challenge bond.
        2. Anyone (in practice the device, or the challenger) resolves it before the deadline
           by opening the node's record in the model commitment, the input and output tensor
           records in the trace commitment, and the K inputs, K weights, bias, multiplier and
           claimed output under their tensor roots (RFC 9162 Merkle trees, contiguous ranges).
           The contract recomputes the element: equal -> the device is cleared and receives
           the challenge bond; different -> the device is convicted and its stake goes to the
           challenger with the bond back.
        3. If nobody resolves before the deadline, the device (which holds the trace) stopped
           answering: the challenger claims the timeout and the stake.

        Referee commitment v1 (what the Merkle trees hold):
        - a tensor: RFC 9162 tree over its elements in C order, 8 per leaf: leaf data = up to
          8 elements, each an 8-byte big-endian two's-complement int64;
        - the trace: RFC 9162 tree whose leaf t is abi.encode(rows, cols, tensor_root) of the
          t-th traced tensor (a 2-D view of it);
        - the model: RFC 9162 tree whose leaf i is abi.encode(NodeRecord fields, in order) of
          node i.
        Fixed-point rule (edgetrust.runtime.fixed, Gemm/MatMul `element`): acc =
        sum(a[m*K + j] * w[n*K + j]) + b[n]; y = clamp(sign(acc) * floor((|acc| * mult[n] +
        2**(s-1)) / 2**s), -qmax, qmax) with s = shift (for s < 31, |acc| is first shifted left
        to s = 31, clamped at 2**61), i.e. acc * mult / 2**s rounded half away from zero.
"""

MAX_K: constant(uint256) = 256
# Elements per Merkle leaf: 8 int64 (64 bytes), so that opening K contiguous elements costs
# about K/8 leaf hashes instead of K (the final step's budget is 300,000 gas).
CHUNK: constant(uint256) = 8
MAX_CHUNKS: constant(uint256) = MAX_K // CHUNK + 2
MAX_VALUES: constant(uint256) = 8 * CHUNK * MAX_CHUNKS
MAX_PROOF: constant(uint256) = 64
KIND_DENSE: constant(uint256) = 1
KIND_CONV: constant(uint256) = 2
# A Conv element reads one run of input elements per (input channel, kernel row) it covers.
# Bounds are tight on purpose: Vyper lays arguments out at their maximum size, and memory
# expansion is quadratic in gas.
MAX_TAPS: constant(uint256) = 48
MAX_TAP_VALUES: constant(uint256) = 8 * CHUNK * 4
MAX_TAP_PROOF: constant(uint256) = 40

struct NodeRecord:
    kind: uint256
    input_index: uint256
    output_index: uint256
    n: uint256
    k: uint256
    qmax: uint256
    w_root: bytes32
    b_root: bytes32
    b_count: uint256
    mult_root: bytes32
    mult_count: uint256
    rshift: uint256

struct ConvRecord:
    kind: uint256
    input_index: uint256
    output_index: uint256
    oc: uint256
    k: uint256
    qmax: uint256
    w_root: bytes32
    b_root: bytes32
    b_count: uint256
    mult_root: bytes32
    mult_count: uint256
    rshift: uint256
    c_in: uint256
    h: uint256
    w: uint256
    kh: uint256
    kw: uint256
    sy: uint256
    sx: uint256
    dy: uint256
    dx: uint256
    pt: uint256
    pl: uint256
    group: uint256
    oh: uint256
    ow: uint256

struct TensorRecord:
    rows: uint256
    cols: uint256
    root: bytes32

struct Opening:
    values: Bytes[MAX_VALUES]
    proof: DynArray[bytes32, MAX_PROOF]

struct TapOpening:
    values: Bytes[MAX_TAP_VALUES]
    proof: DynArray[bytes32, MAX_TAP_PROOF]

struct Dispute:
    device: address
    challenger: address
    model_root: bytes32
    model_size: uint256
    trace_root: bytes32
    trace_size: uint256
    node_index: uint256
    element: uint256
    deadline: uint256
    bond: uint256
    status: uint256

STATUS_OPEN: constant(uint256) = 1
STATUS_CLEARED: constant(uint256) = 2
STATUS_CONVICTED: constant(uint256) = 3
STATUS_TIMED_OUT: constant(uint256) = 4

event Staked:
    device: indexed(address)
    amount: uint256

event Withdrawn:
    device: indexed(address)
    amount: uint256

event DisputeOpened:
    dispute_id: indexed(uint256)
    device: indexed(address)
    challenger: indexed(address)
    model_root: bytes32
    trace_root: bytes32
    node_index: uint256
    element: uint256
    deadline: uint256

event Verdict:
    dispute_id: indexed(uint256)
    device: indexed(address)
    convicted: bool
    claimed: int256
    recomputed: int256
    reason: String[16]

stake_of: public(HashMap[address, uint256])
open_disputes_of: public(HashMap[address, uint256])
disputes: public(HashMap[uint256, Dispute])
dispute_count: public(uint256)

MIN_STAKE: public(immutable(uint256))
CHALLENGE_BOND: public(immutable(uint256))
RESPONSE_WINDOW: public(immutable(uint256))


@deploy
def __init__(min_stake: uint256, challenge_bond: uint256, response_window: uint256):
    """
    @param min_stake Smallest stake (wei) a device must hold to be disputed.
    @param challenge_bond Bond (wei) a challenger posts; the device receives it if cleared.
    @param response_window Seconds to resolve a dispute before it times out.
    """
    assert response_window > 0, "response window must be positive"
    MIN_STAKE = min_stake
    CHALLENGE_BOND = challenge_bond
    RESPONSE_WINDOW = response_window


@payable
@external
def stake():
    """
    @notice Add to the sender's stake: what a lying device loses.
    """
    assert msg.value > 0, "nothing staked"
    self.stake_of[msg.sender] += msg.value
    log Staked(device=msg.sender, amount=msg.value)


@external
def withdraw(amount: uint256):
    """
    @notice Withdraw stake; refused while a dispute against the sender is open.
    """
    assert self.open_disputes_of[msg.sender] == 0, "a dispute is open"
    assert amount <= self.stake_of[msg.sender], "more than staked"
    self.stake_of[msg.sender] -= amount
    log Withdrawn(device=msg.sender, amount=amount)
    send(msg.sender, amount)


@view
@external
def commitment_digest(
    model_root: bytes32, model_size: uint256, trace_root: bytes32, trace_size: uint256
) -> bytes32:
    """
    @notice The EIP-191 message digest a device signs to commit to a computation here.
    """
    return self._commitment_digest(model_root, model_size, trace_root, trace_size)


@view
@internal
def _commitment_digest(
    model_root: bytes32, model_size: uint256, trace_root: bytes32, trace_size: uint256
) -> bytes32:
    inner: bytes32 = keccak256(
        abi_encode(
            keccak256("edgetrust.dev/dispute-commitment/v1"),
            chain.id,
            self,
            model_root,
            model_size,
            trace_root,
            trace_size,
        )
    )
    return keccak256(concat(b"\x19Ethereum Signed Message:\n32", inner))


@payable
@external
def open_dispute(
    device: address,
    model_root: bytes32,
    model_size: uint256,
    trace_root: bytes32,
    trace_size: uint256,
    device_sig: Bytes[65],
    node_index: uint256,
    element: uint256,
) -> uint256:
    """
    @notice Dispute output `element` of node `node_index` in a computation `device` signed.
    @return The dispute id.
    """
    assert msg.value == CHALLENGE_BOND, "wrong challenge bond"
    assert self.stake_of[device] >= MIN_STAKE, "device stake below minimum"
    assert node_index < model_size, "node index out of range"
    assert len(device_sig) == 65, "signature must be 65 bytes"
    digest: bytes32 = self._commitment_digest(model_root, model_size, trace_root, trace_size)
    r: bytes32 = extract32(device_sig, 0)
    s: bytes32 = extract32(device_sig, 32)
    v: uint8 = convert(slice(device_sig, 64, 1), uint8)
    signer: address = ecrecover(digest, v, r, s)
    assert signer == device and signer != empty(address), "not signed by the device"
    dispute_id: uint256 = self.dispute_count
    self.dispute_count = dispute_id + 1
    deadline: uint256 = block.timestamp + RESPONSE_WINDOW
    self.disputes[dispute_id] = Dispute(
        device=device,
        challenger=msg.sender,
        model_root=model_root,
        model_size=model_size,
        trace_root=trace_root,
        trace_size=trace_size,
        node_index=node_index,
        element=element,
        deadline=deadline,
        bond=msg.value,
        status=STATUS_OPEN,
    )
    self.open_disputes_of[device] += 1
    log DisputeOpened(
        dispute_id=dispute_id,
        device=device,
        challenger=msg.sender,
        model_root=model_root,
        trace_root=trace_root,
        node_index=node_index,
        element=element,
        deadline=deadline,
    )
    return dispute_id


@pure
@internal
def _node(left: bytes32, right: bytes32) -> bytes32:
    # RFC 9162 section 2.1.1: an interior node is SHA-256(0x01 || left || right).
    return sha256(concat(b"\x01", left, right))


@pure
@internal
def _leaf(data: Bytes[832]) -> bytes32:
    # RFC 9162 section 2.1.1: a leaf is SHA-256(0x00 || data).
    return sha256(concat(b"\x00", data))


@pure
@internal
def _range_root(
    values: Bytes[MAX_VALUES],
    start: uint256,
    count: uint256,
    size: uint256,
    proof: DynArray[bytes32, MAX_PROOF],
) -> bytes32:
    """
    @dev The root of a tensor of `size` int64 elements from an opening of the chunks that
         cover elements [start, start + count): `values` holds those chunks' elements (8 bytes
         each; a chunk is CHUNK elements, the tensor's last one possibly fewer) and `proof`
         the neighbouring hashes, per level, bottom up: the left neighbour of the range when
         its first node is a right child, then the right neighbour when its last node is a
         left child that has a sibling. A level's node with no sibling is carried up
         unchanged, which is exactly RFC 9162's split at the largest power of two (section
         2.1.1); for one chunk the proof is the RFC's audit path (section 2.1.3.1).
    """
    assert count > 0 and count <= MAX_K, "range count out of bounds"
    assert start + count <= size, "range outside the tensor"
    c0: uint256 = start // CHUNK
    c1: uint256 = (start + count - 1) // CHUNK + 1
    leaves: uint256 = (size + CHUNK - 1) // CHUNK
    end: uint256 = min(c1 * CHUNK, size)
    assert len(values) == 8 * (end - c0 * CHUNK), "values length differs from the chunks"
    nodes: DynArray[bytes32, MAX_CHUNKS] = []
    for j: uint256 in range(MAX_CHUNKS):
        if c0 + j == c1:
            break
        lo_e: uint256 = (c0 + j) * CHUNK
        hi_e: uint256 = min(lo_e + CHUNK, size)
        nodes.append(
            sha256(concat(b"\x00", slice(values, 8 * (lo_e - c0 * CHUNK), 8 * (hi_e - lo_e))))
        )
    lo: uint256 = c0
    sz: uint256 = leaves
    p: uint256 = 0
    for _: uint256 in range(64):
        if sz == 1:
            break
        nxt: DynArray[bytes32, MAX_CHUNKS] = []
        i: uint256 = 0
        n: uint256 = len(nodes)
        if lo % 2 == 1:
            assert p < len(proof), "range proof too short"
            nxt.append(self._node(proof[p], nodes[0]))
            p += 1
            i = 1
        for _j: uint256 in range(MAX_CHUNKS):
            if i >= n:
                break
            if i + 1 < n:
                nxt.append(self._node(nodes[i], nodes[i + 1]))
                i += 2
            elif lo + i + 1 < sz:
                assert p < len(proof), "range proof too short"
                nxt.append(self._node(nodes[i], proof[p]))
                p += 1
                i += 1
            else:
                nxt.append(nodes[i])
                i += 1
        nodes = nxt
        lo = lo // 2
        sz = (sz + 1) // 2
    assert p == len(proof), "range proof too long"
    return nodes[0]


@pure
@internal
def _inclusion_root(
    leaf_hash: bytes32, index: uint256, size: uint256, proof: DynArray[bytes32, MAX_PROOF]
) -> bytes32:
    # RFC 9162 section 2.1.3.2: the root an audit path implies for a leaf.
    assert index < size, "leaf index out of range"
    fn: uint256 = index
    sn: uint256 = size - 1
    r: bytes32 = leaf_hash
    for p: bytes32 in proof:
        assert sn != 0, "audit path too long"
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
    assert sn == 0, "audit path too short"
    return r


@pure
@internal
def _int64_at(values: Bytes[MAX_VALUES], j: uint256) -> int256:
    return convert(convert(convert(slice(values, 8 * j, 8), bytes8), int64), int256)


@pure
@external
def requantize(acc: int256, mult: int256, rshift: uint256, qmax: int256) -> int256:
    """
    @notice The fixed-point rescale and saturation of one accumulator (exposed for tests).
    """
    return self._requantize(acc, mult, rshift, qmax)


@pure
@internal
def _requantize(acc: int256, mult: int256, rshift: uint256, qmax: int256) -> int256:
    # edgetrust.runtime.fixed._arith.apply_rescale then saturate: on the magnitude,
    # floor((|acc| * mult + 2**(s-1)) / 2**s), the sign put back (half away from zero). A shift
    # below 31 (a ratio >= 1) first moves |acc| left to shift 31, clamped at 2**61 exactly as
    # the executor clamps it (such values saturate anyway).
    a: int256 = abs(acc)
    s: uint256 = rshift
    if s < 31:
        left: uint256 = 31 - s
        a = min(a, convert(1 << (61 - left), int256)) << left
        s = 31
    r: int256 = (a * mult + convert(1 << (s - 1), int256)) >> s
    if acc < 0:
        r = -r
    return max(-qmax, min(qmax, r))


@external
def resolve(
    dispute_id: uint256,
    node: NodeRecord,
    node_proof: DynArray[bytes32, MAX_PROOF],
    a_rec: TensorRecord,
    a_rec_proof: DynArray[bytes32, MAX_PROOF],
    y_rec: TensorRecord,
    y_rec_proof: DynArray[bytes32, MAX_PROOF],
    a: Opening,
    w: Opening,
    b: Opening,
    mult: Opening,
    y: Opening,
) -> bool:
    """
    @notice Settle a dispute by recomputing its output element from openings of the committed
            model and trace. Reverts if any opening does not verify.
    @return True if the device is convicted (its committed element is wrong).
    """
    d: Dispute = self.disputes[dispute_id]
    assert d.status == STATUS_OPEN, "dispute is not open"
    assert block.timestamp <= d.deadline, "deadline passed"
    # 1. The node's record is leaf `node_index` of the model commitment.
    assert node.kind == KIND_DENSE, "unsupported node kind"
    node_leaf: bytes32 = self._leaf(
        abi_encode(
            node.kind,
            node.input_index,
            node.output_index,
            node.n,
            node.k,
            node.qmax,
            node.w_root,
            node.b_root,
            node.b_count,
            node.mult_root,
            node.mult_count,
            node.rshift,
        )
    )
    assert self._inclusion_root(node_leaf, d.node_index, d.model_size, node_proof) == d.model_root, "node record not in model commitment"
    # 2. Its input A (M x K) and output Y (M x N) records are leaves of the trace commitment.
    a_leaf: bytes32 = self._leaf(abi_encode(a_rec.rows, a_rec.cols, a_rec.root))
    assert self._inclusion_root(a_leaf, node.input_index, d.trace_size, a_rec_proof) == d.trace_root, "input record not in trace"
    y_leaf: bytes32 = self._leaf(abi_encode(y_rec.rows, y_rec.cols, y_rec.root))
    assert self._inclusion_root(y_leaf, node.output_index, d.trace_size, y_rec_proof) == d.trace_root, "output record not in trace"
    assert a_rec.cols == node.k and y_rec.cols == node.n and y_rec.rows == a_rec.rows, "shapes do not match the node"
    assert d.element < y_rec.rows * y_rec.cols, "element out of range"
    m: uint256 = d.element // node.n
    n: uint256 = d.element % node.n
    k: uint256 = node.k
    # 3. Open the K inputs of row m, the K weights of channel n, bias, multiplier, output.
    assert self._range_root(a.values, m * k, k, a_rec.rows * k, a.proof) == a_rec.root, "inputs do not open"
    assert self._range_root(w.values, n * k, k, node.n * k, w.proof) == node.w_root, "weights do not open"
    b_index: uint256 = 0
    if node.b_count > 1:
        b_index = n
    assert self._range_root(b.values, b_index, 1, node.b_count, b.proof) == node.b_root, "bias does not open"
    mult_index: uint256 = 0
    if node.mult_count > 1:
        mult_index = n
    assert self._range_root(mult.values, mult_index, 1, node.mult_count, mult.proof) == node.mult_root, "multiplier does not open"
    assert self._range_root(y.values, d.element, 1, y_rec.rows * y_rec.cols, y.proof) == y_rec.root, "output does not open"
    # 4. Recompute: exact dot product, bias, rescale, saturate.
    a_off: uint256 = (m * k) % CHUNK
    w_off: uint256 = (n * k) % CHUNK
    acc: int256 = self._int64_at(b.values, b_index % CHUNK)
    for j: uint256 in range(MAX_K):
        if j == k:
            break
        acc += self._int64_at(a.values, a_off + j) * self._int64_at(w.values, w_off + j)
    recomputed: int256 = self._requantize(
        acc, self._int64_at(mult.values, mult_index % CHUNK), node.rshift, convert(node.qmax, int256)
    )
    claimed: int256 = self._int64_at(y.values, d.element % CHUNK)
    return self._settle(dispute_id, d, claimed, recomputed)


@internal
def _settle(dispute_id: uint256, d: Dispute, claimed: int256, recomputed: int256) -> bool:
    convicted: bool = recomputed != claimed
    self.open_disputes_of[d.device] -= 1
    if convicted:
        self.disputes[dispute_id].status = STATUS_CONVICTED
        amount: uint256 = self.stake_of[d.device]
        self.stake_of[d.device] = 0
        log Verdict(
            dispute_id=dispute_id,
            device=d.device,
            convicted=True,
            claimed=claimed,
            recomputed=recomputed,
            reason="recomputed",
        )
        send(d.challenger, amount + d.bond)
    else:
        self.disputes[dispute_id].status = STATUS_CLEARED
        log Verdict(
            dispute_id=dispute_id,
            device=d.device,
            convicted=False,
            claimed=claimed,
            recomputed=recomputed,
            reason="recomputed",
        )
        send(d.device, d.bond)
    return convicted


@external
def resolve_conv(
    dispute_id: uint256,
    node: ConvRecord,
    node_proof: DynArray[bytes32, MAX_PROOF],
    x_rec: TensorRecord,
    x_rec_proof: DynArray[bytes32, MAX_PROOF],
    y_rec: TensorRecord,
    y_rec_proof: DynArray[bytes32, MAX_PROOF],
    taps: DynArray[TapOpening, MAX_TAPS],
    w: Opening,
    b: Opening,
    mult: Opening,
    y: Opening,
) -> bool:
    """
    @notice Settle a dispute over one output of a Conv node (NCHW, groups, strides,
            dilations, padding): the receptive field is opened as one run of the input per
            (input channel, kernel row) inside the image; padding reads as zero, as in
            edgetrust.runtime.fixed's Conv.element.
    @return True if the device is convicted.
    """
    d: Dispute = self.disputes[dispute_id]
    assert d.status == STATUS_OPEN, "dispute is not open"
    assert block.timestamp <= d.deadline, "deadline passed"
    assert node.kind == KIND_CONV, "unsupported node kind"
    node_leaf: bytes32 = self._leaf(
        abi_encode(
            node.kind,
            node.input_index,
            node.output_index,
            node.oc,
            node.k,
            node.qmax,
            node.w_root,
            node.b_root,
            node.b_count,
            node.mult_root,
            node.mult_count,
            node.rshift,
            node.c_in,
            node.h,
            node.w,
            node.kh,
            node.kw,
            node.sy,
            node.sx,
            node.dy,
            node.dx,
            node.pt,
            node.pl,
            node.group,
            node.oh,
            node.ow,
        )
    )
    assert self._inclusion_root(node_leaf, d.node_index, d.model_size, node_proof) == d.model_root, "node record not in model commitment"
    x_leaf: bytes32 = self._leaf(abi_encode(x_rec.rows, x_rec.cols, x_rec.root))
    assert self._inclusion_root(x_leaf, node.input_index, d.trace_size, x_rec_proof) == d.trace_root, "input record not in trace"
    y_leaf: bytes32 = self._leaf(abi_encode(y_rec.rows, y_rec.cols, y_rec.root))
    assert self._inclusion_root(y_leaf, node.output_index, d.trace_size, y_rec_proof) == d.trace_root, "output record not in trace"
    # Shapes: Y is (batch, OC, OH, OW), X is (batch, C, H, W), groups divide both.
    plane: uint256 = node.oc * node.oh * node.ow
    y_size: uint256 = y_rec.rows * y_rec.cols
    x_size: uint256 = x_rec.rows * x_rec.cols
    assert plane > 0 and y_size % plane == 0, "output shape does not match the node"
    assert x_size == (y_size // plane) * node.c_in * node.h * node.w, "input shape does not match the node"
    assert node.group > 0 and node.oc % node.group == 0 and node.c_in % node.group == 0, "bad groups"
    cg: uint256 = node.c_in // node.group
    assert node.k == cg * node.kh * node.kw, "kernel size does not match the node"
    assert node.sy > 0 and node.sx > 0 and node.dy > 0 and node.dx > 0, "bad strides"
    assert d.element < y_size, "element out of range"
    ox: uint256 = d.element % node.ow
    oy: uint256 = (d.element // node.ow) % node.oh
    oc: uint256 = (d.element // (node.ow * node.oh)) % node.oc
    nb: uint256 = d.element // plane
    g: uint256 = oc // (node.oc // node.group)
    k: uint256 = node.k
    assert self._range_root(w.values, oc * k, k, node.oc * k, w.proof) == node.w_root, "weights do not open"
    b_index: uint256 = 0
    if node.b_count > 1:
        b_index = oc
    assert self._range_root(b.values, b_index, 1, node.b_count, b.proof) == node.b_root, "bias does not open"
    mult_index: uint256 = 0
    if node.mult_count > 1:
        mult_index = oc
    assert self._range_root(mult.values, mult_index, 1, node.mult_count, mult.proof) == node.mult_root, "multiplier does not open"
    assert self._range_root(y.values, d.element, 1, y_size, y.proof) == y_rec.root, "output does not open"
    w_off: uint256 = (oc * k) % CHUNK
    acc: int256 = self._int64_at(b.values, b_index % CHUNK)
    ix0: int256 = convert(ox * node.sx, int256) - convert(node.pl, int256)
    dx: int256 = convert(node.dx, int256)
    wi: int256 = convert(node.w, int256)
    # Kernel columns that land inside the image: ix0 + kx * dx in [0, W).
    kx_lo: uint256 = 0
    if ix0 < 0:
        kx_lo = convert((-ix0 + dx - 1) // dx, uint256)
    kx_hi: uint256 = 0
    if wi > ix0:
        kx_hi = min(node.kw, convert((wi - ix0 + dx - 1) // dx, uint256))
    t: uint256 = 0
    for c: uint256 in range(MAX_K):
        if c == cg:
            break
        for ky: uint256 in range(MAX_K):
            if ky == node.kh:
                break
            iy: int256 = convert(oy * node.sy + ky * node.dy, int256) - convert(node.pt, int256)
            if iy < 0 or iy >= convert(node.h, int256) or kx_lo >= kx_hi:
                continue
            start: uint256 = ((nb * node.c_in + g * cg + c) * node.h + convert(iy, uint256)) * node.w + convert(ix0 + convert(kx_lo, int256) * dx, uint256)
            count: uint256 = (kx_hi - 1 - kx_lo) * node.dx + 1
            assert t < len(taps), "too few input openings"
            assert self._range_root(taps[t].values, start, count, x_size, taps[t].proof) == x_rec.root, "inputs do not open"
            off: uint256 = start % CHUNK
            for kx: uint256 in range(MAX_K):
                if kx + kx_lo == kx_hi:
                    break
                acc += self._int64_at(taps[t].values, off + kx * node.dx) * self._int64_at(w.values, w_off + (c * node.kh + ky) * node.kw + kx_lo + kx)
            t += 1
    assert t == len(taps), "too many input openings"
    recomputed: int256 = self._requantize(
        acc, self._int64_at(mult.values, mult_index % CHUNK), node.rshift, convert(node.qmax, int256)
    )
    claimed: int256 = self._int64_at(y.values, d.element % CHUNK)
    return self._settle(dispute_id, d, claimed, recomputed)


@external
def claim_timeout(dispute_id: uint256):
    """
    @notice After the deadline of an unresolved dispute, convict the device (which holds the
            trace and stopped answering): its stake and the bond go to the challenger.
    """
    d: Dispute = self.disputes[dispute_id]
    assert d.status == STATUS_OPEN, "dispute is not open"
    assert block.timestamp > d.deadline, "deadline not passed"
    self.disputes[dispute_id].status = STATUS_TIMED_OUT
    self.open_disputes_of[d.device] -= 1
    amount: uint256 = self.stake_of[d.device]
    self.stake_of[d.device] = 0
    log Verdict(
        dispute_id=dispute_id, device=d.device, convicted=True, claimed=0, recomputed=0, reason="timeout"
    )
    send(d.challenger, amount + d.bond)
