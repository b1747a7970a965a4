"""The `Referee` contract from Python: from a logged receipt to a slashed bond.

The contract (`contracts/Referee.vy`) checks everything against the receipt's own commitments in
trace layout v2 (`edgetrust.runtime.trace`): the trace root, the weights root, and the op table
(`op_table`: one record per trace entry, derived from the model and plan like the weights root).
The sequence, each move before its deadline:

1. `register_device`: a device's did:key is bound to its EVM account and a bond; the Ed25519
   binding signature is in the event and `verify_registration` checks it.
2. `cosign`: at receipt time the device's EVM key signs (EIP-712) the logged envelope's SHA-256
   with the receipt's `ReceiptClaim`.
3. `open_dispute` (challenger, with a bond): log inclusion against an anchored root, the
   co-signature, replay.
4. Commit-reveal bisection: the device reveals all entry-leaf hashes (`DeviceSide`), the
   challenger names the first entry that differs from its own re-execution
   (`ChallengerSide`), the device reveals that entry's leaf and chunk hashes, the challenger
   names a differing chunk, the device reveals it.
5. `final_step`: the challenger opens the dense node's input row and weights; the contract
   recomputes one element. `claim_timeout` settles a silent party.

`edgetrust.chain.referee_play.play_dispute` runs the whole sequence between a `DeviceSide` and
a `ChallengerSide`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from eth_abi.abi import encode as abi_encode
from eth_account.messages import encode_typed_data
from eth_account.signers.local import LocalAccount
from web3 import Web3

from edgetrust.chain.anchor import TxResult
from edgetrust.chain.artifacts import load_artifact
from edgetrust.chain.rpc import Chain, checksum_address
from edgetrust.errors import InvalidInputError, NotFoundError, UnsupportedError, VerificationError
from edgetrust.identity import Identity, did_from_public_bytes, verify_signature
from edgetrust.log.merkle import leaf_hash
from edgetrust.runtime.trace import LAYOUT_V2, MerkleLevels, WeightCommitments

if TYPE_CHECKING:
    from edgetrust.runtime.fixed import FixedExecutor

__all__ = [
    "DEVICE_BINDING_CONTEXT",
    "DEVICE_BINDING_PAYLOAD_TYPE",
    "DEVICE_BINDING_TYPE",
    "KIND_CONV",
    "KIND_DENSE",
    "REVERTS",
    "DeviceRegistration",
    "DisputeOutcome",
    "Referee",
    "RefereeParams",
    "ReceiptClaim",
    "device_binding_message",
    "op_table",
]

DEVICE_BINDING_CONTEXT = b"edgetrust.dev/device-binding/v1\n"
DEVICE_BINDING_TYPE = "https://edgetrust.dev/device-binding/v1"
DEVICE_BINDING_PAYLOAD_TYPE = "application/vnd.edgetrust.device-binding+json"
KIND_DENSE = 1
KIND_CONV = 2
CHUNK = LAYOUT_V2.chunk_bytes
_OP_TYPES = ["uint256"] * 8
_CONV_TYPES = ["uint256"] * 19
_PHASES = {
    1: "device reveals entries",
    2: "challenger names an entry",
    3: "device reveals the entry",
    4: "challenger names a chunk",
    5: "device reveals the chunk",
    6: "challenger's final step",
    7: "settled",
}
REVERTS = {
    "NotRegistered": "the device is not registered on the referee",
    "NotBonded": "the device's bond is below the minimum (already slashed?)",
    "AlreadyRegistered": "this account is already registered",
    "KeyAlreadyBound": "this did:key is already bound to another account",
    "BondTooSmall": "the bond is below the referee's minimum",
    "WrongBond": "the challenge bond must be exactly the referee's CHALLENGE_BOND",
    "RootNotAnchored": "no root is anchored for that log and tree size",
    "ReceiptNotInLog": "the receipt is not under the anchored root (unlogged, or wrong proof)",
    "DisputeReplayed": "this receipt has already been disputed",
    "BadCoSignature": "the device did not co-sign this receipt and claim",
    "OutOfTurn": "it is not this party's move",
    "DeadlinePassed": "the move's deadline has passed",
    "DeadlineNotPassed": "the move's deadline has not passed yet",
    "NotOpen": "the dispute is settled",
    "NoSuchDispute": "no such dispute",
    "ClaimMismatch": "the claim is not the one the dispute was opened with",
    "EntriesDoNotHash": "the entry hashes do not hash to the trace root",
    "LeafNotInTrace": "the entry leaf is not in the trace",
    "ChunksDoNotHash": "the chunk hashes do not hash to the tensor root",
    "ChunkNotInTensor": "the chunk is not in the entry's tensor",
    "BadPadding": "the chunk's padding is not zero",
    "OpNotInTable": "the op record is not in the op table",
    "UnsupportedOp": "the on-chain referee recomputes Gemm and Conv elements only",
    "WrongRecompute": "the Conv recompute answered for another claim, entry or element",
    "ChunkMismatch": "the output chunk is not the one the device revealed",
    "LeafMismatch": "the output leaf is not the one the device revealed",
    "ElementNotInChunk": "the element is not in the revealed chunk",
    "DisputeOpen": "a dispute against this device is open",
    "ParamNotInWeights": "a weight leaf is not under the weights root",
    "InputsDoNotOpen": "the input row does not open under its tensor root",
    "ParamDoesNotOpen": "a weight does not open under its tensor root",
    "IndexOutOfRange": "an index is out of range",
    "BadAuditPath": "an audit path has the wrong length",
}


def device_binding_message(*, chain_id: int, contract: str, account: str, did: str) -> bytes:
    """The bytes a device's Ed25519 key signs to bind itself to an EVM account on a referee."""
    return (
        DEVICE_BINDING_CONTEXT
        + (
            f"chain_id {chain_id}\ncontract {contract.lower()}\naccount {account.lower()}\n"
            f"did {did}\n"
        ).encode()
    )


@dataclass(frozen=True)
class ReceiptClaim:
    """What a device co-signs for a receipt and a dispute is about."""

    trace_root: bytes
    trace_size: int
    weights_root: bytes
    weights_size: int
    ops_root: bytes

    def args(self) -> tuple[bytes, int, bytes, int, bytes]:
        """As the contract's `Claim` struct."""
        return (
            self.trace_root,
            self.trace_size,
            self.weights_root,
            self.weights_size,
            self.ops_root,
        )

    @staticmethod
    def of(executor: FixedExecutor, trace_root: bytes) -> ReceiptClaim:
        """The claim of a receipt with `trace_root` by `executor` (its model and plan)."""
        if executor.trace_layout != LAYOUT_V2:
            raise UnsupportedError("the on-chain referee checks trace layout v2 receipts only")
        weights = executor.weight_commitments()
        ops = MerkleLevels([leaf_hash(r) for r in op_table(executor, weights)])
        return ReceiptClaim(trace_root, len(executor.entries), weights.root, weights.size, ops.root)


def op_table(executor: FixedExecutor, weights: WeightCommitments | None = None) -> list[bytes]:
    """The op table: one abi-encoded record per trace entry.

    (kind, node, input entry, qmax, weight-leaf indices of w, b, mult, shift) for a Gemm with
    constant weights (kind 1); the same followed by (KH, KW, strides, dilations, pads top, left,
    group, pads bottom, right) for a Conv with explicit padding (kind 2); zeros otherwise (graph
    inputs, ops the contract does not recompute). All of it follows from the model and plan.
    """
    from edgetrust.runtime.fixed._conv import Conv
    from edgetrust.runtime.fixed._linear import Gemm

    weights = weights or executor.weight_commitments()
    out = []
    for entry in executor.entries:
        i = entry.node_index
        rec: list[int] = [0] * 8
        types = _OP_TYPES
        op = executor.ops[i] if i is not None else None
        if i is not None and op is not None and entry.output == 0:
            src = executor.entry_of_tensor(executor.nodes[i].input[0])
            keys = [(i, n) for n in ("w", "b", "mult", "shift")]
            known = src is not None and all(k in weights.index for k in keys)
            head = [i, src or 0, op.qmax, *(weights.index.get(k, 0) for k in keys)]
            if known and isinstance(op, Gemm) and op.b_const and not op.trans_a:
                rec = [KIND_DENSE, *head]
            elif known and type(op) is Conv and op.auto_pad in ("NOTSET", "VALID"):
                pt, pl, pb, pr = op.pads_attr if op.auto_pad == "NOTSET" else (0, 0, 0, 0)
                geo = [op.kh, op.kw, *op.strides, *op.dilations, pt, pl, op.group, pb, pr]
                rec, types = [KIND_CONV, *head, *geo], _CONV_TYPES
        out.append(abi_encode(types, rec))
    return out


@dataclass(frozen=True)
class RefereeParams:
    """Deployment parameters of a `Referee`."""

    min_bond: int = 10**18
    challenge_bond: int = 10**17
    response_window: int = 3600

    def __post_init__(self) -> None:
        if self.response_window <= 0 or self.min_bond < 0 or self.challenge_bond < 0:
            raise InvalidInputError("referee parameters must be positive")


@dataclass(frozen=True)
class DeviceRegistration:
    """A device's registration as the `DeviceRegistered` event has it."""

    account: str
    did: str
    bond: int
    binding_sig: bytes


@dataclass
class DisputeOutcome:
    """How a dispute ended, with the gas of every move."""

    dispute_id: int
    convicted: bool
    reason: str
    claimed: int
    recomputed: int
    gas: dict[str, int] = field(default_factory=dict)

    @property
    def challenger_gas(self) -> int:
        """Gas the challenger paid (its moves)."""
        return sum(
            v for k, v in self.gas.items() if k in ("open", "name entry", "name chunk", "final")
        )


class Referee:
    """A deployed `Referee` contract."""

    def __init__(self, chain: Chain, address: str) -> None:
        self.chain = chain
        self.address = checksum_address(address)
        self.contract: Any = chain.w3.eth.contract(
            address=self.address, abi=load_artifact("Referee").abi
        )

    @classmethod
    def deploy(
        cls, chain: Chain, account: LocalAccount, anchor: str, params: RefereeParams | None = None
    ) -> tuple[Referee, TxResult]:
        """Deploy a `Referee` reading anchored roots from the `LogAnchor` at `anchor`."""
        p = params or RefereeParams()
        conv = load_artifact("ConvReferee")
        conv_address, _ = chain.deploy(account, conv.abi, conv.bytecode, name="ConvReferee")
        art = load_artifact("Referee")
        address, receipt = chain.deploy(
            account,
            art.abi,
            art.bytecode,
            checksum_address(anchor),
            conv_address,
            p.min_bond,
            p.challenge_bond,
            p.response_window,
            name="Referee",
        )
        return cls(chain, address), TxResult.of(receipt)

    def _tx(self, account: LocalAccount, fn: Any, action: str, value: int = 0) -> Any:
        return self.chain.transact(account, fn, action=action, value=value)

    def _view(self, name: str, *args: Any) -> Any:
        return self.chain.call(getattr(self.contract.functions, name)(*args), action=name)

    # -- registration ----------------------------------------------------------------------

    def register_device(self, account: LocalAccount, identity: Identity, *, bond: int) -> TxResult:
        """Bind `identity` (the device's did:key) to `account` with `bond` wei."""
        message = device_binding_message(
            chain_id=self.chain.chain_id,
            contract=self.address,
            account=account.address,
            did=identity.did,
        )
        fn = self.contract.functions.register_device(identity.public_bytes, identity.sign(message))
        return TxResult.of(self._tx(account, fn, "register device", bond))

    def registration(self, account: str) -> DeviceRegistration:
        """The registration of `account`, from its event."""
        addr = checksum_address(account)
        events = self.contract.events.DeviceRegistered().get_logs(
            from_block=0, argument_filters={"account": addr}
        )
        if not events:
            raise NotFoundError(f"{addr} is not registered on the referee {self.address}")
        a = events[-1]["args"]
        did = did_from_public_bytes(bytes(a["key"]))
        return DeviceRegistration(addr, did, self.bond_of(addr), bytes(a["binding_sig"]))

    def verify_registration(self, account: str) -> DeviceRegistration:
        """Check that the registered did:key signed the binding to `account`.

        Raises:
            VerificationError: the binding signature does not verify.
        """
        reg = self.registration(account)
        message = device_binding_message(
            chain_id=self.chain.chain_id, contract=self.address, account=reg.account, did=reg.did
        )
        try:
            verify_signature(reg.did, reg.binding_sig, message)
        except VerificationError as exc:
            raise VerificationError(
                "the device key did not sign its binding to the account", step="registration"
            ) from exc
        return reg

    def binding_entry(self, identity: Identity, account: str) -> bytes:
        """The registration as a log entry: a DSSE envelope signed by the device's did:key.

        Its payload names the chain, the referee, the account and the did, so that a log's
        readers see the binding without reading the chain (`log_registration` appends it).
        """
        from edgetrust.dsse import sign_envelope
        from edgetrust.encoding import canonical_json

        payload = canonical_json(
            {
                "type": DEVICE_BINDING_TYPE,
                "chainId": self.chain.chain_id,
                "referee": self.address,
                "account": checksum_address(account),
                "did": identity.did,
            }
        )
        return sign_envelope(payload, DEVICE_BINDING_PAYLOAD_TYPE, identity).to_json()

    def log_registration(self, identity: Identity, account: str, log: Any) -> int:
        """Append the registration of `identity` to `account` to `log`; returns its index.

        Raises:
            VerificationError: the chain does not hold this registration.
        """
        reg = self.verify_registration(account)
        if reg.did != identity.did:
            raise VerificationError(
                "the account is registered to another did:key", step="registration"
            )
        return int(log.append(self.binding_entry(identity, account)))

    def bond_of(self, account: str) -> int:
        """The bond (wei) `account` holds."""
        return int(self._view("devices", checksum_address(account))[1])

    def account_of(self, did_public: bytes) -> str | None:
        """The account a did:key's public bytes are bound to, or None."""
        addr = str(self._view("account_of", did_public))
        return None if int(addr, 16) == 0 else Web3.to_checksum_address(addr)

    # -- co-signature ----------------------------------------------------------------------

    def typed_data(self, envelope: bytes, claim: ReceiptClaim) -> dict[str, Any]:
        """The EIP-712 message a device co-signs for the logged `envelope` bytes."""
        return {
            "types": {
                "EIP712Domain": [
                    {"name": "name", "type": "string"},
                    {"name": "version", "type": "string"},
                    {"name": "chainId", "type": "uint256"},
                    {"name": "verifyingContract", "type": "address"},
                ],
                "Receipt": [
                    {"name": "envelope", "type": "bytes32"},
                    {"name": "traceRoot", "type": "bytes32"},
                    {"name": "traceSize", "type": "uint256"},
                    {"name": "weightsRoot", "type": "bytes32"},
                    {"name": "weightsSize", "type": "uint256"},
                    {"name": "opsRoot", "type": "bytes32"},
                ],
            },
            "primaryType": "Receipt",
            "domain": {
                "name": "edgetrust",
                "version": "1",
                "chainId": self.chain.chain_id,
                "verifyingContract": self.address,
            },
            "message": {
                "envelope": hashlib.sha256(envelope).digest(),
                "traceRoot": claim.trace_root,
                "traceSize": claim.trace_size,
                "weightsRoot": claim.weights_root,
                "weightsSize": claim.weights_size,
                "opsRoot": claim.ops_root,
            },
        }

    def cosign(self, device: LocalAccount, envelope: bytes, claim: ReceiptClaim) -> bytes:
        """The device's EIP-712 co-signature (65 bytes) of a receipt, made at receipt time."""
        msg = encode_typed_data(full_message=self.typed_data(envelope, claim))
        return bytes(device.sign_message(msg).signature)

    # -- the dispute -----------------------------------------------------------------------

    def challenge_bond(self) -> int:
        """The bond (wei) a challenger posts."""
        return int(self._view("CHALLENGE_BOND"))

    def open_dispute(
        self,
        challenger: LocalAccount,
        *,
        device: str,
        envelope: bytes,
        log_id: bytes,
        tree_size: int,
        index: int,
        proof: list[bytes],
        claim: ReceiptClaim,
        cosignature: bytes,
        bond: int | None = None,
    ) -> tuple[int, TxResult]:
        """Dispute the logged `envelope` (index `index` of the anchored tree of `tree_size`)."""
        if len(cosignature) != 65:
            raise InvalidInputError("a co-signature is 65 bytes (r, s, v)")
        r, s, v = cosignature[:32], cosignature[32:64], cosignature[64]
        fn = self.contract.functions.open_dispute(
            checksum_address(device),
            envelope,
            log_id,
            tree_size,
            index,
            proof,
            claim.args(),
            v,
            r,
            s,
        )
        value = self.challenge_bond() if bond is None else bond
        receipt = self._tx(challenger, fn, "open dispute", value)
        ev = self.contract.events.DisputeOpened().process_receipt(receipt)
        return int(ev[0]["args"]["dispute_id"]), TxResult.of(receipt)

    def _event(self, receipt: Any, name: str) -> Any:
        return getattr(self.contract.events, name)().process_receipt(receipt)[0]["args"]

    def reveal_entries(
        self, device: LocalAccount, dispute_id: int, claim: ReceiptClaim, hashes: list[bytes]
    ) -> TxResult:
        """Device: every entry-leaf hash."""
        fn = self.contract.functions.reveal_entries(dispute_id, claim.args(), hashes)
        return TxResult.of(self._tx(device, fn, "reveal entries"))

    def name_entry(
        self, challenger: LocalAccount, dispute_id: int, claim: ReceiptClaim, entry: int
    ) -> TxResult:
        """Challenger: the disputed entry."""
        fn = self.contract.functions.name_entry(dispute_id, claim.args(), entry)
        return TxResult.of(self._tx(challenger, fn, "name entry"))

    def reveal_entry(
        self,
        device: LocalAccount,
        dispute_id: int,
        claim: ReceiptClaim,
        reveal: tuple[bytes, list[bytes], list[bytes]],
    ) -> TxResult:
        """Device: the named entry's leaf, its audit path and its chunk hashes."""
        fn = self.contract.functions.reveal_entry(dispute_id, claim.args(), *reveal)
        return TxResult.of(self._tx(device, fn, "reveal entry"))

    def name_chunk(
        self, challenger: LocalAccount, dispute_id: int, claim: ReceiptClaim, chunk: int
    ) -> TxResult:
        """Challenger: the disputed chunk."""
        fn = self.contract.functions.name_chunk(dispute_id, claim.args(), chunk)
        return TxResult.of(self._tx(challenger, fn, "name chunk"))

    def reveal_chunk(
        self,
        device: LocalAccount,
        dispute_id: int,
        claim: ReceiptClaim,
        reveal: tuple[bytes, bytes, list[bytes]],
    ) -> TxResult:
        """Device: the named chunk (with the entry leaf and the chunk's audit path)."""
        fn = self.contract.functions.reveal_chunk(dispute_id, claim.args(), *reveal)
        return TxResult.of(self._tx(device, fn, "reveal chunk"))

    def final_step(
        self, challenger: LocalAccount, dispute_id: int, claim: ReceiptClaim, args: list[Any]
    ) -> tuple[DisputeOutcome, TxResult]:
        """Challenger: the openings for one element; the contract recomputes and rules."""
        fn = self.contract.functions.final_step(dispute_id, claim.args(), *args)
        receipt = self._tx(challenger, fn, "final step")
        return self._outcome(receipt), TxResult.of(receipt)

    def final_step_conv(
        self,
        challenger: LocalAccount,
        dispute_id: int,
        claim: ReceiptClaim,
        head: tuple[bytes, bytes, int],
        call: bytes,
    ) -> tuple[DisputeOutcome, TxResult]:
        """Challenger: a Conv element; `call` is `ConvReferee.recompute` calldata."""
        fn = self.contract.functions.final_step_conv(dispute_id, claim.args(), *head, call)
        receipt = self._tx(challenger, fn, "final step")
        return self._outcome(receipt), TxResult.of(receipt)

    def conv_referee(self) -> Any:
        """The `ConvReferee` contract this referee calls."""
        address = self._view("CONV_REFEREE")
        return self.chain.w3.eth.contract(address=address, abi=load_artifact("ConvReferee").abi)

    def claim_timeout(self, account: LocalAccount, dispute_id: int) -> DisputeOutcome:
        """Settle a dispute whose current mover let the deadline pass."""
        receipt = self._tx(account, self.contract.functions.claim_timeout(dispute_id), "timeout")
        return self._outcome(receipt)

    def _outcome(self, receipt: Any) -> DisputeOutcome:
        a = self._event(receipt, "Verdict")
        out = DisputeOutcome(
            int(a["dispute_id"]),
            bool(a["convicted"]),
            str(a["reason"]),
            int(a["claimed"]),
            int(a["recomputed"]),
        )
        out.gas["settle"] = int(receipt["gasUsed"])
        return out

    def phase(self, dispute_id: int) -> str:
        """Whose move it is (or "settled")."""
        d = self._view("disputes", dispute_id)
        if int(d[4]) == 0:
            raise NotFoundError(f"no dispute {dispute_id} on {self.address}")
        return _PHASES.get(int(d[4]), "unknown")
