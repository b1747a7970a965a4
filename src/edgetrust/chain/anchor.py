"""The `LogAnchor` contract from Python: register a log, anchor checkpoints, punish forks.

The contract (`contracts/LogAnchor.vy`) keeps, per log origin, the operator's EVM address and
bond, the first root anchored for each size, and any second root the operator anchored for a
size it had already anchored (equivocation evidence). History is in `Anchored` events.
`LogAnchor` here wraps its ABI with typed methods; every transaction returns a `TxResult` with
the gas it used, and every revert becomes a `RevertError` carrying the contract's reason.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from eth_account.signers.local import LocalAccount
from web3 import Web3
from web3.types import TxReceipt

from edgetrust.chain.accounts import binding_message
from edgetrust.chain.artifacts import load_artifact
from edgetrust.chain.rpc import Chain, checksum_address
from edgetrust.errors import InvalidInputError, NotFoundError, VerificationError
from edgetrust.identity import Identity, did_from_public_bytes, verify_signature

__all__ = [
    "AnchorParams",
    "Anchored",
    "ChallengeState",
    "LogAnchor",
    "LogRegistration",
    "TxResult",
    "note_key_public_bytes",
    "note_verifier_key",
]

ETHER = 10**18
MAX_ORIGIN = 128
MAX_NOTE_KEY = 256
MAX_PROOF = 128


@dataclass(frozen=True)
class TxResult:
    """A mined transaction."""

    tx_hash: str
    """The transaction hash, 0x-prefixed hex."""
    gas_used: int
    """Gas the transaction consumed."""
    block_number: int
    """The block it was mined in."""

    @classmethod
    def of(cls, receipt: TxReceipt) -> TxResult:
        """Summarize a web3 receipt."""
        return cls(
            tx_hash="0x" + bytes(receipt["transactionHash"]).hex(),
            gas_used=int(receipt["gasUsed"]),
            block_number=int(receipt["blockNumber"]),
        )


@dataclass(frozen=True)
class AnchorParams:
    """Deployment parameters of a `LogAnchor` contract; immutable once deployed."""

    min_bond: int = ETHER
    """Smallest bond (wei) an operator posts to register a log."""
    challenge_bond: int = ETHER // 10
    """Bond (wei) an append-only challenger posts; whoever answers the challenge receives it."""
    response_window: int = 24 * 3600
    """Seconds an operator has to answer an append-only challenge."""

    def __post_init__(self) -> None:
        if self.min_bond < 0:
            raise InvalidInputError("`min_bond` must not be negative")
        if self.challenge_bond < 0:
            raise InvalidInputError("`challenge_bond` must not be negative")
        if self.response_window <= 0:
            raise InvalidInputError("`response_window` must be a positive number of seconds")


@dataclass(frozen=True)
class Anchored:
    """One anchored checkpoint, read from an `Anchored` event."""

    size: int
    """Tree size."""
    root: bytes
    """RFC 9162 root hash (32 bytes)."""
    block_number: int
    """Block of the anchoring transaction."""
    tx_hash: str
    """Anchoring transaction hash."""


@dataclass(frozen=True)
class LogRegistration:
    """A log's registration, read from its `LogRegistered` event."""

    log_id: bytes
    """keccak256 of the origin: the log's key in the contract."""
    origin: str
    """The log's C2SP checkpoint origin."""
    operator: str
    """The operator's EVM address (checksummed)."""
    note_key: str
    """The log's C2SP signed-note verifier key."""
    binding_sig: bytes
    """Ed25519 signature of the note key over `binding_message()`."""
    bond: int
    """Bond posted at registration (wei)."""


@dataclass(frozen=True)
class ChallengeState:
    """An append-only challenge as stored in the contract."""

    challenge_id: int
    """Sequential id."""
    log_id: bytes
    """The challenged log."""
    challenger: str
    """Who opened it (and receives the bond if unanswered)."""
    size1: int
    """Smaller anchored size."""
    size2: int
    """Larger anchored size."""
    deadline: int
    """Unix time after which an unanswered challenge slashes the operator."""
    bond: int
    """Challenge bond (wei)."""
    open: bool
    """Whether it is still waiting for an answer."""


def note_key_public_bytes(note_key: str) -> bytes:
    """The raw Ed25519 public key in a C2SP signed-note verifier key.

    A verifier key is ``<name>+<hash>+<base64(0x01 || 32-byte key)>`` (C2SP signed-note,
    "Verifier keys"); 0x01 is the Ed25519 algorithm byte.

    Raises:
        InvalidInputError: not a verifier key for an Ed25519 key.
    """
    parts = note_key.split("+", 2)  # base64 may contain "+"; the name may not
    if len(parts) != 3 or not parts[0]:
        raise InvalidInputError("a note verifier key is <name>+<hash>+<base64 key>")
    try:
        raw = base64.b64decode(parts[2], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidInputError("note verifier key: key data is not base64") from exc
    if len(raw) != 33 or raw[0] != 0x01:
        raise InvalidInputError("note verifier key is not an Ed25519 key")
    return raw[1:]


def note_verifier_key(name: str, identity: Identity) -> str:
    """The C2SP signed-note verifier key of an Ed25519 `identity` under key name `name`.

    A log's key name is its origin; this is `edgetrust.log.checkpoint.NoteSigner.vkey`.
    """
    from edgetrust.log.checkpoint import NoteSigner

    return NoteSigner(name, identity).vkey


def _b32(value: bytes, what: str) -> bytes:
    if not isinstance(value, bytes | bytearray) or len(value) != 32:
        raise InvalidInputError(f"`{what}` must be 32 bytes")
    return bytes(value)


def _size(value: int, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**64:
        raise InvalidInputError(f"`{what}` must be an integer in [0, 2**64)")
    return value


def _origin(origin: str) -> str:
    if not isinstance(origin, str) or not origin:
        raise InvalidInputError("`origin` must be a non-empty string")
    if len(origin.encode()) > MAX_ORIGIN:
        raise InvalidInputError(f"`origin` must be at most {MAX_ORIGIN} bytes")
    return origin


def _proof(proof: Sequence[bytes]) -> list[bytes]:
    if len(proof) > MAX_PROOF:
        raise InvalidInputError(f"a proof has at most {MAX_PROOF} hashes")
    return [_b32(h, "proof hash") for h in proof]


class LogAnchor:
    """A deployed `LogAnchor` contract."""

    def __init__(self, chain: Chain, address: str) -> None:
        self.chain = chain
        self.address = checksum_address(address)
        self.contract: Any = chain.w3.eth.contract(
            address=self.address, abi=load_artifact("LogAnchor").abi
        )

    @classmethod
    def deploy(
        cls, chain: Chain, account: LocalAccount, params: AnchorParams | None = None
    ) -> tuple[LogAnchor, TxResult]:
        """Deploy a new `LogAnchor` from the committed build."""
        p = params or AnchorParams()
        art = load_artifact("LogAnchor")
        address, receipt = chain.deploy(
            account,
            art.abi,
            art.bytecode,
            p.min_bond,
            p.challenge_bond,
            p.response_window,
            name="LogAnchor",
        )
        return cls(chain, address), TxResult.of(receipt)

    def _tx(self, account: LocalAccount, fn: Any, action: str, value: int = 0) -> TxResult:
        return TxResult.of(self.chain.transact(account, fn, action=action, value=value))

    # -- registration -----------------------------------------------------------------------

    def log_id(self, origin: str) -> bytes:
        """The contract's key for `origin` (keccak256 of the UTF-8 origin)."""
        return bytes(Web3.keccak(text=_origin(origin)))

    def register_log(
        self,
        account: LocalAccount,
        *,
        origin: str,
        note_key: str,
        log_identity: Identity,
        bond: int,
    ) -> TxResult:
        """Register log `origin`, operated by `account`, posting `bond` wei.

        `log_identity` is the log's Ed25519 signing key (the one behind `note_key`); it signs
        `binding_message()` so that the registration proves the log key agreed to be
        represented by `account`.
        """
        _origin(origin)
        public = note_key_public_bytes(note_key)
        if public != log_identity.public_bytes:
            raise InvalidInputError("`log_identity` is not the key in `note_key`")
        if len(note_key.encode()) > MAX_NOTE_KEY:
            raise InvalidInputError(f"`note_key` must be at most {MAX_NOTE_KEY} bytes")
        message = binding_message(
            chain_id=self.chain.chain_id,
            contract=self.address,
            operator=account.address,
            origin=origin,
        )
        sig = log_identity.sign(message)
        fn = self.contract.functions.register_log(origin, note_key.encode(), sig)
        return self._tx(account, fn, "register log", value=bond)

    def registration(self, origin: str) -> LogRegistration:
        """Read the registration of `origin` from its event.

        Raises:
            NotFoundError: the log is not registered on this contract.
        """
        log_id = self.log_id(origin)
        events = self.contract.events.LogRegistered().get_logs(
            from_block=0, argument_filters={"log_id": log_id}
        )
        if not events:
            raise NotFoundError(f"log {origin!r} is not registered on {self.address}")
        a = events[0]["args"]
        return LogRegistration(
            log_id=bytes(a["log_id"]),
            origin=str(a["origin"]),
            operator=Web3.to_checksum_address(a["operator"]),
            note_key=bytes(a["note_key"]).decode("utf-8", "replace"),
            binding_sig=bytes(a["binding_sig"]),
            bond=int(a["bond"]),
        )

    def verify_registration(self, origin: str) -> None:
        """Check that the log key in the registration signed the binding to its operator.

        Raises:
            VerificationError: the binding signature does not verify.
        """
        reg = self.registration(origin)
        try:
            public = note_key_public_bytes(reg.note_key)
        except InvalidInputError as exc:
            raise VerificationError(str(exc), step="registration") from exc
        message = binding_message(
            chain_id=self.chain.chain_id,
            contract=self.address,
            operator=reg.operator,
            origin=reg.origin,
        )
        try:
            verify_signature(did_from_public_bytes(public), reg.binding_sig, message)
        except VerificationError as exc:
            raise VerificationError(
                "the log key did not sign the binding to its operator", step="registration"
            ) from exc

    # -- anchoring --------------------------------------------------------------------------

    def anchor(self, account: LocalAccount, *, origin: str, size: int, root: bytes) -> TxResult:
        """Anchor checkpoint (`size`, `root`) of log `origin`; `account` must be its operator."""
        fn = self.contract.functions.anchor(
            _origin(origin), _size(size, "size"), _b32(root, "root")
        )
        return self._tx(account, fn, "anchor")

    def operator(self, origin: str) -> str | None:
        """The operator of `origin`, or None if unregistered or slashed."""
        addr = self.chain.call(
            self.contract.functions.operator_of(self.log_id(origin)), action="operator_of"
        )
        return None if int(addr, 16) == 0 else Web3.to_checksum_address(addr)

    def latest(self, origin: str) -> tuple[int, bytes]:
        """The latest anchored (size, root) of `origin`; (0, 32 zero bytes) before any."""
        size, root = self.chain.call(
            self.contract.functions.latest(self.log_id(origin)), action="latest"
        )
        return int(size), bytes(root)

    def root_at(self, origin: str, size: int) -> bytes | None:
        """The first root anchored for `size`, or None."""
        root = bytes(
            self.chain.call(
                self.contract.functions.root_at(self.log_id(origin), _size(size, "size")),
                action="root_at",
            )
        )
        return None if root == bytes(32) else root

    def conflicting_root_at(self, origin: str, size: int) -> bytes | None:
        """A second, different root the operator anchored for `size`, or None."""
        root = bytes(
            self.chain.call(
                self.contract.functions.conflicting_root_at(
                    self.log_id(origin), _size(size, "size")
                ),
                action="conflicting_root_at",
            )
        )
        return None if root == bytes(32) else root

    def bond(self, origin: str) -> int:
        """The operator's bond still held (0 once slashed)."""
        return int(
            self.chain.call(self.contract.functions.bond_of(self.log_id(origin)), action="bond")
        )

    def is_slashed(self, origin: str) -> bool:
        """Whether the log's operator has been slashed."""
        return bool(
            self.chain.call(self.contract.functions.slashed(self.log_id(origin)), action="slashed")
        )

    def history(self, origin: str, *, from_block: int = 0) -> list[Anchored]:
        """Every checkpoint anchored for `origin`, oldest first (from `Anchored` events)."""
        events = self.contract.events.Anchored().get_logs(
            from_block=from_block, argument_filters={"log_id": self.log_id(origin)}
        )
        return [
            Anchored(
                size=int(e["args"]["size"]),
                root=bytes(e["args"]["root"]),
                block_number=int(e["blockNumber"]),
                tx_hash="0x" + bytes(e["transactionHash"]).hex(),
            )
            for e in events
        ]

    # -- equivocation -----------------------------------------------------------------------

    def equivocations(self, origin: str, *, from_block: int = 0) -> list[tuple[int, bytes, bytes]]:
        """Sizes at which the operator anchored two roots: (size, first root, second root)."""
        events = self.contract.events.EquivocationRecorded().get_logs(
            from_block=from_block, argument_filters={"log_id": self.log_id(origin)}
        )
        return [
            (int(e["args"]["size"]), bytes(e["args"]["root_a"]), bytes(e["args"]["root_b"]))
            for e in events
        ]

    def report_equivocation(
        self, account: LocalAccount, *, origin: str, size: int, root_a: bytes, root_b: bytes
    ) -> TxResult:
        """Report two roots anchored for the same size; the operator's bond goes to `account`."""
        fn = self.contract.functions.report_equivocation(
            self.log_id(origin), _size(size, "size"), _b32(root_a, "root_a"), _b32(root_b, "root_b")
        )
        return self._tx(account, fn, "report equivocation")

    # -- append-only challenges -------------------------------------------------------------

    def challenge_bond(self) -> int:
        """The bond (wei) a challenger must post."""
        return int(self.chain.call(self.contract.functions.CHALLENGE_BOND(), action="bond"))

    def response_window(self) -> int:
        """Seconds an operator has to answer a challenge."""
        return int(self.chain.call(self.contract.functions.RESPONSE_WINDOW(), action="window"))

    def challenge(
        self, account: LocalAccount, *, origin: str, size1: int, size2: int
    ) -> tuple[int, TxResult]:
        """Challenge log `origin` to prove that anchored size2 extends anchored size1.

        Returns the challenge id and the transaction.
        """
        fn = self.contract.functions.challenge(
            self.log_id(origin), _size(size1, "size1"), _size(size2, "size2")
        )
        receipt = self.chain.transact(account, fn, action="challenge", value=self.challenge_bond())
        events = self.contract.events.ChallengeOpened().process_receipt(receipt)
        return int(events[0]["args"]["challenge_id"]), TxResult.of(receipt)

    def challenge_state(self, challenge_id: int) -> ChallengeState:
        """Challenge `challenge_id`: from storage while open, from its events once closed."""
        c = self.chain.call(
            self.contract.functions.challenge_info(challenge_id), action="challenge"
        )
        if bool(c[6]):
            return ChallengeState(
                challenge_id=challenge_id,
                log_id=bytes(c[0]),
                challenger=Web3.to_checksum_address(c[1]),
                size1=int(c[2]),
                size2=int(c[3]),
                deadline=int(c[4]),
                bond=int(c[5]),
                open=True,
            )
        opened = self.contract.events.ChallengeOpened().get_logs(
            from_block=0, argument_filters={"challenge_id": challenge_id}
        )
        if not opened:
            raise NotFoundError(f"no challenge {challenge_id} on {self.address}")
        a = opened[0]["args"]
        return ChallengeState(
            challenge_id=challenge_id,
            log_id=bytes(a["log_id"]),
            challenger=Web3.to_checksum_address(a["challenger"]),
            size1=int(a["size1"]),
            size2=int(a["size2"]),
            deadline=int(a["deadline"]),
            bond=self.challenge_bond(),
            open=False,
        )

    def open_challenges(self, origin: str, *, from_block: int = 0) -> list[ChallengeState]:
        """Challenges against `origin` still waiting for an answer."""
        events = self.contract.events.ChallengeOpened().get_logs(
            from_block=from_block, argument_filters={"log_id": self.log_id(origin)}
        )
        states = [self.challenge_state(int(e["args"]["challenge_id"])) for e in events]
        return [s for s in states if s.open]

    def answer_challenge(
        self, account: LocalAccount, *, challenge_id: int, proof: Sequence[bytes]
    ) -> TxResult:
        """Answer a challenge with the RFC 9162 consistency proof between its two sizes."""
        fn = self.contract.functions.answer_challenge(challenge_id, _proof(proof))
        return self._tx(account, fn, "answer challenge")

    def claim_timeout(self, account: LocalAccount, *, challenge_id: int) -> TxResult:
        """Slash the operator of an unanswered challenge whose deadline has passed."""
        fn = self.contract.functions.claim_timeout(challenge_id)
        return self._tx(account, fn, "claim timeout")

    # -- proofs (pure view calls: cost nothing, show what the chain will accept) -------------

    def verify_consistency(
        self, *, size1: int, size2: int, root1: bytes, root2: bytes, proof: Sequence[bytes]
    ) -> None:
        """Run the contract's RFC 9162 consistency check (section 2.1.4.2) as a free call.

        Raises:
            VerificationError: the contract does not accept the proof.
        """
        ok = self.chain.call(
            self.contract.functions.verify_consistency(
                _size(size1, "size1"),
                _size(size2, "size2"),
                _b32(root1, "root1"),
                _b32(root2, "root2"),
                _proof(proof),
            ),
            action="verify_consistency",
        )
        if not ok:
            raise VerificationError("consistency proof rejected on chain", step="consistency")

    def verify_inclusion(
        self, *, index: int, size: int, leaf_hash: bytes, root: bytes, proof: Sequence[bytes]
    ) -> None:
        """Run the contract's RFC 9162 inclusion check (section 2.1.3.2) as a free call.

        Raises:
            VerificationError: the contract does not accept the proof.
        """
        ok = self.chain.call(
            self.contract.functions.verify_inclusion(
                _size(index, "index"),
                _size(size, "size"),
                _b32(leaf_hash, "leaf_hash"),
                _b32(root, "root"),
                _proof(proof),
            ),
            action="verify_inclusion",
        )
        if not ok:
            raise VerificationError("inclusion proof rejected on chain", step="inclusion")
