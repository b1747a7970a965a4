# pragma version 0.4.3
# pragma evm-version cancun
"""
@title Referee
@license Apache-2.0
@notice One path from a logged receipt to a slashed bond, against the receipt's own traceRoot
        (runtime.trace layout v2: fixed-size binary entry leaves, 256-byte big-endian chunks,
        SHA-256 with RFC 9162 prefixes).

        1. A device registers: its did:key (Ed25519 public key) is bound to its EVM account and
           a bond. The Ed25519 binding signature is kept in the `DeviceRegistered` event (the
           EVM has no Ed25519 precompile; `edgetrust.chain.referee` verifies it off chain).
        2. At receipt time the device co-signs (EIP-712, its bound EVM key) the logged envelope's
           SHA-256 with the receipt's trace root and size, weights root and size, and the root of
           the op table (one record per trace entry).
        3. A challenger opens a dispute with a bond: the envelope's log inclusion is checked
           against a root anchored in `LogAnchor`, the co-signature by ecrecover.
        4. Commit-reveal bisection, each move before its deadline: the device reveals every entry
           leaf hash (checked against traceRoot); the challenger names an entry; the device
           reveals that entry's leaf and its chunk hashes (checked against the leaf's tensor
           root); the challenger names a chunk; the device reveals the chunk (checked, zero
           padding too); the challenger submits the final step.
        5. Final step: one output element of a dense node (Gemm/MatMul with constant weights)
           recomputed from the device's own committed inputs (under traceRoot) and the committed
           weights (under weightsRoot) with the fixed-point rule. Different -> the device's bond
           and the challenger's bond go to the challenger; equal -> the challenger's bond goes
           to the device. A party that lets its deadline pass loses the same way.
        Reverts carry one CamelCase name each (`edgetrust.chain.referee.REVERTS`).
"""

interface Anchor:
    def root_at(log_id: bytes32, size: uint256) -> bytes32: view

MAX_ENVELOPE: constant(uint256) = 8192
MAX_PROOF: constant(uint256) = 48
MAX_ENTRIES: constant(uint256) = 1024
MAX_CHUNKS: constant(uint256) = 1024
CHUNK: constant(uint256) = 256
MAX_K: constant(uint256) = 256
# K elements of up to 8 bytes span at most 9 chunks.
MAX_RUN_CHUNKS: constant(uint256) = 9
MAX_RUN: constant(uint256) = CHUNK * MAX_RUN_CHUNKS
KIND_DENSE: constant(uint256) = 1
KIND_CONV: constant(uint256) = 2
# A Conv element opens one run of its input per (input channel, kernel row) inside the image.
MAX_CONV_CALL: constant(uint256) = 40000
# Phases: odd = the device's turn, even = the challenger's.
P_ENTRIES: constant(uint256) = 1
P_NAME_ENTRY: constant(uint256) = 2
P_ENTRY: constant(uint256) = 3
P_NAME_CHUNK: constant(uint256) = 4
P_CHUNK: constant(uint256) = 5
P_FINAL: constant(uint256) = 6
P_DONE: constant(uint256) = 7

NAME_W: constant(bytes32) = 0x7700000000000000000000000000000000000000000000000000000000000000
NAME_B: constant(bytes32) = 0x6200000000000000000000000000000000000000000000000000000000000000
NAME_MULT: constant(bytes32) = 0x6d756c7400000000000000000000000000000000000000000000000000000000
NAME_SHIFT: constant(bytes32) = 0x7368696674000000000000000000000000000000000000000000000000000000

RECEIPT_TYPEHASH: constant(bytes32) = keccak256(
    "Receipt(bytes32 envelope,bytes32 traceRoot,uint256 traceSize,bytes32 weightsRoot,uint256 weightsSize,bytes32 opsRoot)"
)
DOMAIN_TYPEHASH: constant(bytes32) = keccak256(
    "EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
)

struct Claim:
    trace_root: bytes32
    trace_size: uint256
    weights_root: bytes32
    weights_size: uint256
    ops_root: bytes32

struct Device:
    key: bytes32
    bond: uint256
    open_disputes: uint256

struct Dispute:
    device: address
    challenger: address
    claim_hash: bytes32
    bond: uint256
    phase: uint256
    deadline: uint256
    entry: uint256
    entry_leaf: bytes32
    chunks: uint256
    chunk: uint256
    chunk_hash: bytes32

struct DenseOp:
    kind: uint256
    node: uint256
    input_entry: uint256
    qmax: uint256
    w_leaf: uint256
    b_leaf: uint256
    mult_leaf: uint256
    shift_leaf: uint256

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

event DeviceRegistered:
    account: indexed(address)
    key: indexed(bytes32)
    bond: uint256
    binding_sig: Bytes[64]

event BondWithdrawn:
    account: indexed(address)
    amount: uint256

event DisputeOpened:
    dispute_id: indexed(uint256)
    device: indexed(address)
    challenger: indexed(address)
    envelope_hash: bytes32
    trace_root: bytes32
    deadline: uint256

event EntriesRevealed:
    dispute_id: indexed(uint256)
    hashes: DynArray[bytes32, MAX_ENTRIES]

event EntryNamed:
    dispute_id: indexed(uint256)
    entry: uint256

event EntryRevealed:
    dispute_id: indexed(uint256)
    leaf: Bytes[96]
    chunk_hashes: DynArray[bytes32, MAX_CHUNKS]

event ChunkNamed:
    dispute_id: indexed(uint256)
    chunk: uint256

event ChunkRevealed:
    dispute_id: indexed(uint256)
    data: Bytes[CHUNK]

event Verdict:
    dispute_id: indexed(uint256)
    device: indexed(address)
    convicted: bool
    claimed: int256
    recomputed: int256
    reason: String[16]

devices: public(HashMap[address, Device])
account_of: public(HashMap[bytes32, address])
disputes: public(HashMap[uint256, Dispute])
disputed: public(HashMap[bytes32, bool])
dispute_count: public(uint256)

ANCHOR: public(immutable(address))
CONV_REFEREE: public(immutable(address))
MIN_BOND: public(immutable(uint256))
CHALLENGE_BOND: public(immutable(uint256))
RESPONSE_WINDOW: public(immutable(uint256))


@deploy
def __init__(
    anchor: address, conv_referee: address, min_bond: uint256, challenge_bond: uint256, response_window: uint256
):
    """
    @param anchor The LogAnchor whose anchored roots receipts must be under.
    @param conv_referee The ConvReferee that recomputes Conv elements.
    @param min_bond Smallest device bond (wei).
    @param challenge_bond Bond (wei) a challenger posts; the device receives it if cleared.
    @param response_window Seconds each move has before the mover loses by timeout.
    """
    assert response_window > 0, "BadWindow"
    ANCHOR = anchor
    CONV_REFEREE = conv_referee
    MIN_BOND = min_bond
    CHALLENGE_BOND = challenge_bond
    RESPONSE_WINDOW = response_window


# -- registration ---------------------------------------------------------------------------


@payable
@external
def register_device(key: bytes32, binding_sig: Bytes[64]):
    """
    @notice Bind Ed25519 key `key` (the did:key's public bytes) to msg.sender with a bond.
    @param binding_sig The key's signature over edgetrust.dev/device-binding/v1 + chain id,
           this contract, the account and the key (checked off chain; kept in the event).
    """
    assert key != empty(bytes32), "BadKey"
    assert self.devices[msg.sender].key == empty(bytes32), "AlreadyRegistered"
    assert self.account_of[key] == empty(address), "KeyAlreadyBound"
    assert msg.value >= MIN_BOND, "BondTooSmall"
    self.devices[msg.sender] = Device(key=key, bond=msg.value, open_disputes=0)
    self.account_of[key] = msg.sender
    log DeviceRegistered(account=msg.sender, key=key, bond=msg.value, binding_sig=binding_sig)


@external
def withdraw_bond():
    """
    @notice Take the bond back (refused while a dispute against the device is open).
    """
    dev: Device = self.devices[msg.sender]
    assert dev.key != empty(bytes32), "NotRegistered"
    assert dev.open_disputes == 0, "DisputeOpen"
    self.devices[msg.sender].bond = 0
    log BondWithdrawn(account=msg.sender, amount=dev.bond)
    send(msg.sender, dev.bond)


# -- hashing --------------------------------------------------------------------------------


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
def _list_root(hashes: DynArray[bytes32, MAX_CHUNKS]) -> bytes32:
    # MTH over a full list of leaf hashes: pair neighbours, promote an unpaired last node.
    assert len(hashes) > 0, "EmptyList"
    level: DynArray[bytes32, MAX_CHUNKS] = hashes
    for _: uint256 in range(16):
        n: uint256 = len(level)
        if n == 1:
            break
        nxt: DynArray[bytes32, MAX_CHUNKS] = []
        for i: uint256 in range(MAX_CHUNKS // 2):
            if 2 * i >= n:
                break
            if 2 * i + 1 < n:
                nxt.append(self._node(level[2 * i], level[2 * i + 1]))
            else:
                nxt.append(level[2 * i])
        level = nxt
    return level[0]


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


# -- disputes -------------------------------------------------------------------------------


@view
@internal
def _domain() -> bytes32:
    return keccak256(
        abi_encode(DOMAIN_TYPEHASH, keccak256("edgetrust"), keccak256("1"), chain.id, self)
    )


@pure
@internal
def _claim_hash(c: Claim) -> bytes32:
    return keccak256(abi_encode(c.trace_root, c.trace_size, c.weights_root, c.weights_size, c.ops_root))


@view
@external
def receipt_digest(envelope_hash: bytes32, claim: Claim) -> bytes32:
    """
    @notice The EIP-712 digest a device co-signs for a receipt (exposed for clients and tests).
    """
    return self._digest(envelope_hash, claim)


@view
@internal
def _digest(envelope_hash: bytes32, c: Claim) -> bytes32:
    struct_hash: bytes32 = keccak256(
        abi_encode(
            RECEIPT_TYPEHASH,
            envelope_hash,
            c.trace_root,
            c.trace_size,
            c.weights_root,
            c.weights_size,
            c.ops_root,
        )
    )
    return keccak256(concat(b"\x19\x01", self._domain(), struct_hash))


@payable
@external
def open_dispute(
    device: address,
    envelope: Bytes[MAX_ENVELOPE],
    log_id: bytes32,
    tree_size: uint256,
    index: uint256,
    proof: DynArray[bytes32, MAX_PROOF],
    claim: Claim,
    v: uint8,
    r: bytes32,
    s: bytes32,
) -> uint256:
    """
    @notice Dispute a logged receipt (`envelope`, the bytes the log holds) that `device`
            co-signed with `claim`. Requires exactly CHALLENGE_BOND.
    @return The dispute id.
    """
    assert msg.value == CHALLENGE_BOND, "WrongBond"
    dev: Device = self.devices[device]
    assert dev.key != empty(bytes32), "NotRegistered"
    assert dev.bond >= MIN_BOND, "NotBonded"
    root: bytes32 = staticcall Anchor(ANCHOR).root_at(log_id, tree_size)
    assert root != empty(bytes32), "RootNotAnchored"
    leaf: bytes32 = sha256(concat(b"\x00", envelope))
    assert self._inclusion_root(leaf, index, tree_size, proof) == root, "ReceiptNotInLog"
    env_hash: bytes32 = sha256(envelope)
    assert not self.disputed[env_hash], "DisputeReplayed"
    signer: address = ecrecover(
        self._digest(env_hash, claim), convert(v, uint256), convert(r, uint256), convert(s, uint256)
    )
    assert signer == device, "BadCoSignature"
    assert claim.trace_size > 0 and claim.weights_size > 0, "BadClaim"
    self.disputed[env_hash] = True
    dispute_id: uint256 = self.dispute_count
    self.dispute_count = dispute_id + 1
    deadline: uint256 = block.timestamp + RESPONSE_WINDOW
    self.disputes[dispute_id] = Dispute(
        device=device,
        challenger=msg.sender,
        claim_hash=self._claim_hash(claim),
        bond=msg.value,
        phase=P_ENTRIES,
        deadline=deadline,
        entry=0,
        entry_leaf=empty(bytes32),
        chunks=0,
        chunk=0,
        chunk_hash=empty(bytes32),
    )
    self.devices[device].open_disputes = dev.open_disputes + 1
    log DisputeOpened(
        dispute_id=dispute_id,
        device=device,
        challenger=msg.sender,
        envelope_hash=env_hash,
        trace_root=claim.trace_root,
        deadline=deadline,
    )
    return dispute_id


@internal
def _move(dispute_id: uint256, phase: uint256, claim: Claim) -> Dispute:
    # The move of `phase`: its mover, before its deadline; then the other party's turn.
    d: Dispute = self.disputes[dispute_id]
    assert d.phase != 0, "NoSuchDispute"
    assert d.phase != P_DONE, "NotOpen"
    assert d.phase == phase, "OutOfTurn"
    if phase % 2 == 1:
        assert msg.sender == d.device, "OutOfTurn"
    else:
        assert msg.sender == d.challenger, "OutOfTurn"
    assert block.timestamp <= d.deadline, "DeadlinePassed"
    assert self._claim_hash(claim) == d.claim_hash, "ClaimMismatch"
    self.disputes[dispute_id].phase = phase + 1
    self.disputes[dispute_id].deadline = block.timestamp + RESPONSE_WINDOW
    return d


@external
def reveal_entries(dispute_id: uint256, claim: Claim, hashes: DynArray[bytes32, MAX_ENTRIES]):
    """
    @notice Device: every entry leaf hash of the trace (they must hash to traceRoot).
    """
    self._move(dispute_id, P_ENTRIES, claim)
    assert len(hashes) == claim.trace_size, "EntriesDoNotHash"
    assert self._list_root(hashes) == claim.trace_root, "EntriesDoNotHash"
    log EntriesRevealed(dispute_id=dispute_id, hashes=hashes)


@external
def name_entry(dispute_id: uint256, claim: Claim, entry: uint256):
    """
    @notice Challenger: the trace entry (a node's output) it disputes.
    """
    self._move(dispute_id, P_NAME_ENTRY, claim)
    assert entry < claim.trace_size, "IndexOutOfRange"
    self.disputes[dispute_id].entry = entry
    log EntryNamed(dispute_id=dispute_id, entry=entry)


@external
def reveal_entry(
    dispute_id: uint256,
    claim: Claim,
    leaf: Bytes[96],
    proof: DynArray[bytes32, MAX_PROOF],
    chunk_hashes: DynArray[bytes32, MAX_CHUNKS],
):
    """
    @notice Device: the named entry's leaf (under traceRoot) and its chunk hashes (under the
            leaf's tensor root).
    """
    d: Dispute = self._move(dispute_id, P_ENTRY, claim)
    lh: bytes32 = sha256(concat(b"\x00", leaf))
    assert self._inclusion_root(lh, d.entry, claim.trace_size, proof) == claim.trace_root, "LeafNotInTrace"
    p: Parsed = self._parse(leaf)
    assert len(chunk_hashes) == self._chunks_of(p), "ChunksDoNotHash"
    assert self._list_root(chunk_hashes) == p.root, "ChunksDoNotHash"
    self.disputes[dispute_id].entry_leaf = lh
    self.disputes[dispute_id].chunks = len(chunk_hashes)
    log EntryRevealed(dispute_id=dispute_id, leaf=leaf, chunk_hashes=chunk_hashes)


@external
def name_chunk(dispute_id: uint256, claim: Claim, chunk: uint256):
    """
    @notice Challenger: the chunk of the entry's tensor it disputes.
    """
    d: Dispute = self._move(dispute_id, P_NAME_CHUNK, claim)
    assert chunk < d.chunks, "IndexOutOfRange"
    self.disputes[dispute_id].chunk = chunk
    log ChunkNamed(dispute_id=dispute_id, chunk=chunk)


@external
def reveal_chunk(
    dispute_id: uint256,
    claim: Claim,
    leaf: Bytes[96],
    data: Bytes[CHUNK],
    proof: DynArray[bytes32, MAX_PROOF],
):
    """
    @notice Device: the named chunk, under the entry's tensor root, its padding zero.
    """
    d: Dispute = self._move(dispute_id, P_CHUNK, claim)
    assert sha256(concat(b"\x00", leaf)) == d.entry_leaf, "LeafMismatch"
    p: Parsed = self._parse(leaf)
    assert len(data) == CHUNK, "BadChunk"
    ch: bytes32 = sha256(concat(b"\x00", data))
    assert self._inclusion_root(ch, d.chunk, d.chunks, proof) == p.root, "ChunkNotInTensor"
    used: uint256 = p.count * p.itemsize - d.chunk * CHUNK
    if used < CHUNK:
        for i: uint256 in range(CHUNK):
            if used + i == CHUNK:
                break
            assert convert(slice(data, used + i, 1), uint256) == 0, "BadPadding"
    self.disputes[dispute_id].chunk_hash = ch
    log ChunkRevealed(dispute_id=dispute_id, data=data)


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


@external
def final_step(
    dispute_id: uint256,
    claim: Claim,
    out_leaf: Bytes[96],
    out_chunk: Bytes[CHUNK],
    element: uint256,
    op: DenseOp,
    op_proof: DynArray[bytes32, MAX_PROOF],
    a_leaf: Leaf,
    a: Run,
    w_leaf: Leaf,
    w: Run,
    b_leaf: Leaf,
    b: One,
    m_leaf: Leaf,
    m: One,
    s_leaf: Leaf,
    s: One,
) -> bool:
    """
    @notice Challenger: recompute output `element` of the disputed entry (inside the revealed
            chunk) from the device's committed input row and the committed weights.
    @return True if the device is convicted.
    """
    d: Dispute = self._move(dispute_id, P_FINAL, claim)
    assert sha256(concat(b"\x00", out_leaf)) == d.entry_leaf, "LeafMismatch"
    assert sha256(concat(b"\x00", out_chunk)) == d.chunk_hash, "ChunkMismatch"
    y: Parsed = self._parse(out_leaf)
    assert element < y.count and element * y.itemsize // CHUNK == d.chunk, "ElementNotInChunk"
    claimed: int256 = self._elem1(out_chunk, (element * y.itemsize) % CHUNK, y.itemsize)
    # The op record of the entry, in the op table.
    op_leaf: bytes32 = sha256(
        concat(
            b"\x00",
            abi_encode(op.kind, op.node, op.input_entry, op.qmax, op.w_leaf, op.b_leaf, op.mult_leaf, op.shift_leaf),
        )
    )
    assert self._inclusion_root(op_leaf, d.entry, claim.trace_size, op_proof) == claim.ops_root, "OpNotInTable"
    assert op.kind == KIND_DENSE, "UnsupportedOp"
    assert op.input_entry < d.entry, "BadOp"
    # Input A (M, K): its leaf under traceRoot.
    ah: bytes32 = sha256(concat(b"\x00", a_leaf.data))
    assert self._inclusion_root(ah, op.input_entry, claim.trace_size, a_leaf.proof) == claim.trace_root, "LeafNotInTrace"
    assert len(a_leaf.data) == 96, "BadLeaf"
    ap: Parsed = self._parse(a_leaf.data)
    wp: Parsed = self._param(claim, op.w_leaf, w_leaf, op.node, NAME_W)
    assert ap.rank == 2 and wp.rank == 2 and ap.d1 == wp.d1, "ShapeMismatch"
    k: uint256 = ap.d1
    assert k > 0 and k <= MAX_K, "ShapeMismatch"
    n_out: uint256 = wp.d0
    if y.rank != 2 or y.d0 != ap.d0 or y.d1 != n_out:
        # The output's shape is not the node's: the device's entry is wrong as committed.
        return self._settle(dispute_id, d, True, claimed, 0, "shape")
    row: uint256 = element // n_out
    col: uint256 = element % n_out
    a0: uint256 = row * k * ap.itemsize
    assert self._run_root(a.data, a0 // CHUNK, self._chunks_of(ap), a.proof) == ap.root, "InputsDoNotOpen"
    assert len(a.data) >= (a0 % CHUNK) + k * ap.itemsize, "InputsDoNotOpen"
    w0: uint256 = col * k * wp.itemsize
    assert self._run_root(w.data, w0 // CHUNK, self._chunks_of(wp), w.proof) == wp.root, "ParamDoesNotOpen"
    assert len(w.data) >= (w0 % CHUNK) + k * wp.itemsize, "ParamDoesNotOpen"
    acc: int256 = self._one(claim, op.b_leaf, b_leaf, op.node, NAME_B, col, b)
    a_off: uint256 = a0 % CHUNK
    w_off: uint256 = w0 % CHUNK
    for j: uint256 in range(MAX_K):
        if j == k:
            break
        acc += self._elem(a.data, a_off + j * ap.itemsize, ap.itemsize) * self._elem(
            w.data, w_off + j * wp.itemsize, wp.itemsize
        )
    mult: int256 = self._one(claim, op.mult_leaf, m_leaf, op.node, NAME_MULT, col, m)
    rshift: int256 = self._one(claim, op.shift_leaf, s_leaf, op.node, NAME_SHIFT, 0, s)
    assert rshift >= 0 and rshift <= 62, "BadShift"
    recomputed: int256 = self._requantize(acc, mult, rshift, convert(op.qmax, int256))
    return self._settle(dispute_id, d, recomputed != claimed, claimed, recomputed, "recomputed")


@internal
def _settle(
    dispute_id: uint256, d: Dispute, convicted: bool, claimed: int256, recomputed: int256, reason: String[16]
) -> bool:
    self.disputes[dispute_id].phase = P_DONE
    self.devices[d.device].open_disputes -= 1
    log Verdict(
        dispute_id=dispute_id,
        device=d.device,
        convicted=convicted,
        claimed=claimed,
        recomputed=recomputed,
        reason=reason,
    )
    if convicted:
        amount: uint256 = self.devices[d.device].bond
        self.devices[d.device].bond = 0
        send(d.challenger, amount + d.bond)
    else:
        send(d.device, d.bond)
    return convicted


@internal
def _open_output(dispute_id: uint256, claim: Claim, out_leaf: Bytes[96], out_chunk: Bytes[CHUNK], element: uint256) -> (Dispute, Parsed, int256):
    d: Dispute = self._move(dispute_id, P_FINAL, claim)
    assert sha256(concat(b"\x00", out_leaf)) == d.entry_leaf, "LeafMismatch"
    assert sha256(concat(b"\x00", out_chunk)) == d.chunk_hash, "ChunkMismatch"
    y: Parsed = self._parse(out_leaf)
    assert element < y.count and element * y.itemsize // CHUNK == d.chunk, "ElementNotInChunk"
    return d, y, self._elem1(out_chunk, (element * y.itemsize) % CHUNK, y.itemsize)


@external
def final_step_conv(
    dispute_id: uint256,
    claim: Claim,
    out_leaf: Bytes[96],
    out_chunk: Bytes[CHUNK],
    element: uint256,
    call: Bytes[MAX_CONV_CALL],
) -> bool:
    """
    @notice Challenger: the final step of a Conv node. `call` is the calldata of
            `ConvReferee.recompute` (a stateless contract, kept apart for the EIP-170 code size
            limit), which checks every opening against the claim's roots; this contract checks
            that it answered for this dispute's claim, entry, leaf and element.
    @return True if the device is convicted.
    """
    d: Dispute = empty(Dispute)
    y: Parsed = empty(Parsed)
    claimed: int256 = 0
    d, y, claimed = self._open_output(dispute_id, claim, out_leaf, out_chunk, element)
    out: Bytes[192] = raw_call(CONV_REFEREE, call, max_outsize=192, is_static_call=True)
    c_hash: bytes32 = empty(bytes32)
    entry: uint256 = 0
    leaf_hash: bytes32 = empty(bytes32)
    el: uint256 = 0
    shape_ok: bool = False
    recomputed: int256 = 0
    c_hash, entry, leaf_hash, el, shape_ok, recomputed = abi_decode(out, (bytes32, uint256, bytes32, uint256, bool, int256))
    assert c_hash == d.claim_hash and entry == d.entry and leaf_hash == d.entry_leaf and el == element, "WrongRecompute"
    if not shape_ok:
        return self._settle(dispute_id, d, True, claimed, 0, "shape")
    return self._settle(dispute_id, d, recomputed != claimed, claimed, recomputed, "recomputed")


@external
def claim_timeout(dispute_id: uint256) -> bool:
    """
    @notice After a move's deadline, the party whose move it was loses (anyone may call).
    @return True if the device is convicted.
    """
    d: Dispute = self.disputes[dispute_id]
    assert d.phase != 0, "NoSuchDispute"
    assert d.phase != P_DONE, "NotOpen"
    assert block.timestamp > d.deadline, "DeadlineNotPassed"
    return self._settle(dispute_id, d, d.phase % 2 == 1, 0, 0, "timeout")
