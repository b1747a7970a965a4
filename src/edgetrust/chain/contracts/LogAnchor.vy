# pragma version 0.4.3
# pragma evm-version cancun
"""
@title LogAnchor
@license Apache-2.0
@notice Anchors the signed checkpoints of RFC 9162 transparency logs on an EVM chain, and makes
        a misbehaving log operator lose its bond.

        A log is registered under its C2SP origin string by its operator, who posts a bond.
        Only the operator anchors; sizes never decrease. The latest anchor is kept in storage
        and every anchor in events. Two kinds of misbehaviour are punished:

        - equivocation: two different roots anchored for the same size. Anyone who reports
          them receives the bond.
        - forking (not append-only): anyone may name two anchored sizes n1 < n2 and post a
          challenge bond. The operator must answer before a deadline with an RFC 9162
          consistency proof between the two anchored roots (RFC 9162 section 2.1.4.2),
          verified here; otherwise the challenger takes the operator's bond.
@dev    The operator address and the latest size share one storage slot (address in the low
        160 bits, size above it), because `anchor` is the hot path and one cold SLOAD costs
        2,100 gas: the issue's budget for an anchor is 55,000 gas.
"""

MAX_ORIGIN: constant(uint256) = 128
MAX_NOTE_KEY: constant(uint256) = 256
# A consistency proof for trees of up to 2**63 leaves has at most 2 * 63 hashes.
MAX_PROOF: constant(uint256) = 128
ADDRESS_MASK: constant(uint256) = (1 << 160) - 1

event LogRegistered:
    log_id: indexed(bytes32)
    operator: indexed(address)
    origin: String[MAX_ORIGIN]
    note_key: Bytes[MAX_NOTE_KEY]
    binding_sig: Bytes[64]
    bond: uint256

event Anchored:
    log_id: indexed(bytes32)
    size: uint256
    root: bytes32

event EquivocationRecorded:
    log_id: indexed(bytes32)
    size: uint256
    root_a: bytes32
    root_b: bytes32

event ChallengeOpened:
    challenge_id: indexed(uint256)
    log_id: indexed(bytes32)
    challenger: indexed(address)
    size1: uint256
    size2: uint256
    deadline: uint256

event ChallengeAnswered:
    challenge_id: indexed(uint256)
    log_id: indexed(bytes32)

event ChallengeTimedOut:
    challenge_id: indexed(uint256)
    log_id: indexed(bytes32)

event Slashed:
    log_id: indexed(bytes32)
    beneficiary: indexed(address)
    amount: uint256
    reason: String[32]

# A challenge in three slots (the answer reads them cold, 2,100 gas each): the log, then
# challenger (160 bits) | deadline << 160 (64 bits) | open << 224, then
# size1 (64 bits) | size2 << 64 (64 bits) | bond << 128 (128 bits).
struct Challenge:
    log_id: bytes32
    party: uint256
    terms: uint256

MASK64: constant(uint256) = (1 << 64) - 1

# Per log: operator (low 160 bits) | latest size << 160. Zero means "not registered".
_head: HashMap[bytes32, uint256]
# Per log: the first root anchored for each size, and a second, different one if the operator
# ever anchored one (the evidence of equivocation).
root_at: public(HashMap[bytes32, HashMap[uint256, bytes32]])
conflicting_root_at: public(HashMap[bytes32, HashMap[uint256, bytes32]])
bond_of: public(HashMap[bytes32, uint256])
slashed: public(HashMap[bytes32, bool])
note_key_of: public(HashMap[bytes32, Bytes[MAX_NOTE_KEY]])

challenges: HashMap[uint256, Challenge]
challenge_count: public(uint256)

MIN_BOND: public(immutable(uint256))
CHALLENGE_BOND: public(immutable(uint256))
RESPONSE_WINDOW: public(immutable(uint256))


@deploy
def __init__(min_bond: uint256, challenge_bond: uint256, response_window: uint256):
    """
    @param min_bond Smallest bond (wei) an operator must post to register a log.
    @param challenge_bond Bond (wei) a challenger posts; paid to whoever answers it.
    @param response_window Seconds the operator has to answer an append-only challenge.
    """
    assert response_window > 0, "response window must be positive"
    MIN_BOND = min_bond
    CHALLENGE_BOND = challenge_bond
    RESPONSE_WINDOW = response_window


@pure
@internal
def _log_id(origin: String[MAX_ORIGIN]) -> bytes32:
    return keccak256(origin)


@view
@external
def log_id(origin: String[MAX_ORIGIN]) -> bytes32:
    """
    @notice The key of a log in this contract: keccak256 of its origin string.
    """
    return keccak256(origin)


@view
@external
def operator_of(log_id: bytes32) -> address:
    """
    @notice The operator of a registered log (the zero address if none or slashed).
    """
    return convert(self._head[log_id] & ADDRESS_MASK, address)


@view
@external
def latest(log_id: bytes32) -> (uint256, bytes32):
    """
    @notice The latest anchored (size, root) of a log; (0, 0x0) before its first anchor.
    """
    size: uint256 = self._head[log_id] >> 160
    return size, self.root_at[log_id][size]


@payable
@external
def register_log(
    origin: String[MAX_ORIGIN], note_key: Bytes[MAX_NOTE_KEY], binding_sig: Bytes[64]
) -> bytes32:
    """
    @notice Register the log named `origin`, operated by the sender, with a bond.
    @param origin The log's C2SP checkpoint origin line (e.g. "example.com/log").
    @param note_key The log's C2SP signed-note verifier key, so that watchers can check the
           checkpoints it serves against the anchored ones.
    @param binding_sig The log key's Ed25519 signature binding it to this operator address,
           chain and contract (checked off chain by watchers; EVM has no Ed25519 precompile,
           so it is only logged).
    """
    assert len(origin) > 0, "origin is empty"
    assert msg.value >= MIN_BOND, "bond below minimum"
    log_id: bytes32 = keccak256(origin)
    assert self._head[log_id] == 0 and not self.slashed[log_id], "origin already registered"
    self._head[log_id] = convert(msg.sender, uint256)
    self.bond_of[log_id] = msg.value
    self.note_key_of[log_id] = note_key
    log LogRegistered(
        log_id=log_id,
        operator=msg.sender,
        origin=origin,
        note_key=note_key,
        binding_sig=binding_sig,
        bond=msg.value,
    )
    return log_id


@external
def anchor(origin: String[MAX_ORIGIN], size: uint256, root: bytes32):
    """
    @notice Anchor the checkpoint (size, root) of the sender's log.
    @dev Anchoring the same size again with the same root is a no-op; with a different root it
         is recorded as evidence of equivocation, for anyone to report.
    """
    log_id: bytes32 = keccak256(origin)
    head: uint256 = self._head[log_id]
    assert head & ADDRESS_MASK == convert(msg.sender, uint256), "not the log operator"
    assert size < (1 << 64), "size out of range"
    assert size >= head >> 160, "size decreased"
    assert root != empty(bytes32), "root is zero"
    first: bytes32 = self.root_at[log_id][size]
    if first == empty(bytes32):
        self.root_at[log_id][size] = root
        self._head[log_id] = (size << 160) | (head & ADDRESS_MASK)
    elif first != root:
        if self.conflicting_root_at[log_id][size] == empty(bytes32):
            self.conflicting_root_at[log_id][size] = root
            log EquivocationRecorded(log_id=log_id, size=size, root_a=first, root_b=root)
    log Anchored(log_id=log_id, size=size, root=root)


@internal
def _slash(log_id: bytes32, beneficiary: address, extra: uint256, reason: String[32]):
    amount: uint256 = self.bond_of[log_id]
    self.bond_of[log_id] = 0
    self.slashed[log_id] = True
    # Clearing the head removes the operator: a slashed log can no longer anchor.
    self._head[log_id] = 0
    log Slashed(log_id=log_id, beneficiary=beneficiary, amount=amount, reason=reason)
    send(beneficiary, amount + extra)


@external
def report_equivocation(log_id: bytes32, size: uint256, root_a: bytes32, root_b: bytes32):
    """
    @notice Report two different roots the operator anchored for the same size; the bond is
            sent to the reporter.
    """
    assert not self.slashed[log_id], "log already slashed"
    assert root_a != root_b, "roots are equal"
    first: bytes32 = self.root_at[log_id][size]
    second: bytes32 = self.conflicting_root_at[log_id][size]
    assert first != empty(bytes32) and second != empty(bytes32), "no equivocation at this size"
    assert (root_a == first and root_b == second) or (
        root_a == second and root_b == first
    ), "roots were not anchored at this size"
    self._slash(log_id, msg.sender, 0, "equivocation")


@payable
@external
def challenge(log_id: bytes32, size1: uint256, size2: uint256) -> uint256:
    """
    @notice Ask the operator to prove that the anchored tree of size2 extends that of size1.
    @return The challenge id.
    """
    assert not self.slashed[log_id], "log already slashed"
    assert self._head[log_id] != 0, "log not registered"
    assert msg.value == CHALLENGE_BOND, "wrong challenge bond"
    assert msg.value < (1 << 128), "bond out of range"
    assert size1 > 0 and size1 < size2, "need 0 < size1 < size2"
    assert size2 < (1 << 64), "size out of range"
    assert self.root_at[log_id][size1] != empty(bytes32), "size1 not anchored"
    assert self.root_at[log_id][size2] != empty(bytes32), "size2 not anchored"
    challenge_id: uint256 = self.challenge_count
    self.challenge_count = challenge_id + 1
    deadline: uint256 = block.timestamp + RESPONSE_WINDOW
    self.challenges[challenge_id] = Challenge(
        log_id=log_id,
        party=convert(msg.sender, uint256) | (deadline << 160) | (1 << 224),
        terms=size1 | (size2 << 64) | (msg.value << 128),
    )
    log ChallengeOpened(
        challenge_id=challenge_id,
        log_id=log_id,
        challenger=msg.sender,
        size1=size1,
        size2=size2,
        deadline=deadline,
    )
    return challenge_id


@external
def answer_challenge(challenge_id: uint256, proof: DynArray[bytes32, MAX_PROOF]):
    """
    @notice Answer an append-only challenge with an RFC 9162 consistency proof between the
            two anchored roots. A valid proof closes the challenge and pays the challenger's
            bond to the sender; an invalid one reverts and leaves the challenge open.
    @dev Anyone may answer (the operator, or a watcher defending the log): only the proof
         matters.
    """
    c: Challenge = self.challenges[challenge_id]
    assert (c.party >> 224) & 1 == 1, "challenge is not open"
    assert block.timestamp <= (c.party >> 160) & MASK64, "deadline passed"
    size1: uint256 = c.terms & MASK64
    size2: uint256 = (c.terms >> 64) & MASK64
    assert self._verify_consistency(
        size1,
        size2,
        self.root_at[c.log_id][size1],
        self.root_at[c.log_id][size2],
        proof,
    ), "consistency proof does not verify"
    # Deleting a closed challenge refunds its storage (EIP-3529); events keep its history.
    self.challenges[challenge_id] = empty(Challenge)
    log ChallengeAnswered(challenge_id=challenge_id, log_id=c.log_id)
    # The challenger's bond rewards whoever produced the proof (normally the operator). Paying
    # the sender, not a stored address, saves a cold read and a cold account access.
    send(msg.sender, c.terms >> 128)


@external
def claim_timeout(challenge_id: uint256):
    """
    @notice After the deadline of an unanswered challenge, slash the operator: the challenger
            receives the operator's bond and their own challenge bond back.
    """
    c: Challenge = self.challenges[challenge_id]
    assert (c.party >> 224) & 1 == 1, "challenge is not open"
    assert block.timestamp > (c.party >> 160) & MASK64, "deadline not passed"
    self.challenges[challenge_id] = empty(Challenge)
    challenger: address = convert(c.party & ADDRESS_MASK, address)
    bond: uint256 = c.terms >> 128
    log ChallengeTimedOut(challenge_id=challenge_id, log_id=c.log_id)
    if self.slashed[c.log_id]:
        # Slashed meanwhile by someone else: only the challenge bond is returned.
        send(challenger, bond)
        return
    self._slash(c.log_id, challenger, bond, "append-only")


@view
@external
def challenge_info(
    challenge_id: uint256,
) -> (bytes32, address, uint256, uint256, uint256, uint256, bool):
    """
    @notice An open challenge: (log id, challenger, size1, size2, deadline, bond, True); all
            zero once it is closed (answered or timed out; see the events).
    """
    c: Challenge = self.challenges[challenge_id]
    return (
        c.log_id,
        convert(c.party & ADDRESS_MASK, address),
        c.terms & MASK64,
        (c.terms >> 64) & MASK64,
        (c.party >> 160) & MASK64,
        c.terms >> 128,
        (c.party >> 224) & 1 == 1,
    )


@pure
@internal
def _hash_children(left: bytes32, right: bytes32) -> bytes32:
    # RFC 9162 section 2.1.1: MTH of an interior node is SHA-256(0x01 || left || right).
    return sha256(concat(b"\x01", left, right))


@pure
@internal
def _verify_consistency(
    size1: uint256,
    size2: uint256,
    root1: bytes32,
    root2: bytes32,
    proof: DynArray[bytes32, MAX_PROOF],
) -> bool:
    # RFC 9162 section 2.1.4.2, step by step.
    if size1 > size2:
        return False
    if size1 == size2:
        return len(proof) == 0 and root1 == root2
    if size1 == 0:
        # Every tree extends the empty tree; a proof from size 0 is empty.
        return len(proof) == 0
    if len(proof) == 0:
        return False
    # Step 2: when size1 is a power of two, root1 is the first node of the path.
    start: uint256 = 0
    fr: bytes32 = empty(bytes32)
    if size1 & (size1 - 1) == 0:
        fr = root1
    else:
        fr = proof[0]
        start = 1
    sr: bytes32 = fr
    # Step 3 and 4.
    fn: uint256 = size1 - 1
    sn: uint256 = size2 - 1
    for _: uint256 in range(64):
        if fn & 1 == 0:
            break
        fn >>= 1
        sn >>= 1
    # Step 6.
    for i: uint256 in range(start, start + MAX_PROOF, bound=MAX_PROOF):
        if i >= len(proof):
            break
        c: bytes32 = proof[i]
        if sn == 0:
            return False
        if fn & 1 == 1 or fn == sn:
            fr = self._hash_children(c, fr)
            sr = self._hash_children(c, sr)
            for _: uint256 in range(64):
                if fn & 1 == 1 or fn == 0:
                    break
                fn >>= 1
                sn >>= 1
        else:
            sr = self._hash_children(sr, c)
        fn >>= 1
        sn >>= 1
    # Step 7.
    return fr == root1 and sr == root2 and sn == 0


@pure
@external
def verify_consistency(
    size1: uint256,
    size2: uint256,
    root1: bytes32,
    root2: bytes32,
    proof: DynArray[bytes32, MAX_PROOF],
) -> bool:
    """
    @notice RFC 9162 section 2.1.4.2: whether `proof` shows that the tree of size2 with root2
            extends the tree of size1 with root1.
    """
    return self._verify_consistency(size1, size2, root1, root2, proof)


@pure
@external
def verify_inclusion(
    index: uint256,
    size: uint256,
    leaf_hash: bytes32,
    root: bytes32,
    proof: DynArray[bytes32, MAX_PROOF],
) -> bool:
    """
    @notice RFC 9162 section 2.1.3.2: whether `proof` shows that the leaf with hash `leaf_hash`
            is at `index` in the tree of `size` leaves with `root`.
    """
    if index >= size:
        return False
    fn: uint256 = index
    sn: uint256 = size - 1
    r: bytes32 = leaf_hash
    for p: bytes32 in proof:
        if sn == 0:
            return False
        if fn & 1 == 1 or fn == sn:
            r = self._hash_children(p, r)
            for _: uint256 in range(64):
                if fn & 1 == 1 or fn == 0:
                    break
                fn >>= 1
                sn >>= 1
        else:
            r = self._hash_children(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root
