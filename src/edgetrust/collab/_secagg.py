"""Secure aggregation's public parameters, result and primitives (see `collab.secagg`).

The round configuration (`SecAggConfig`, its share groups on the SecAgg+ ring), what the
server learns (`SecAggResult`), and the key derivations, PRG and checks that the client and
server state machines in `collab.secagg` share. Nothing here keeps state across calls.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from edgetrust.collab.messages import PROTOCOL, MaskedInput
from edgetrust.collab.quantize import MAX_MODULUS_BITS, MIN_MODULUS_BITS, mod_mask
from edgetrust.collab.shamir import SHARE_BYTES
from edgetrust.errors import ConflictError, Error, InvalidInputError, VerificationError
from edgetrust.identity import public_bytes_from_did

MAX_VECTOR_LENGTH = 2**28
"""Longest vector a round accepts (1 GiB of uint32)."""

_PLAINTEXT_BYTES = 2 * SHARE_BYTES  # key share || self-mask-seed share
_CIPHERTEXT_BYTES = _PLAINTEXT_BYTES + 16
_ZERO_NONCE = bytes(12)


class Stage(enum.IntEnum):
    """Protocol stages; a state machine accepts only the messages of its current stage."""

    ADVERTISE = 0
    SHARE = 1
    MASK = 2
    CONSISTENCY = 3
    UNMASK = 4
    DONE = 5


class RoundAbortedError(Error):
    """Too few clients remain at some stage: the round ends without revealing anything."""

    def __init__(self, message: str, *, stage: str, have: int, need: int) -> None:
        super().__init__(message)
        self.stage = stage
        """The stage at which the round could not go on."""
        self.have = have
        """How many clients (or shares) were available."""
        self.need = need
        """How many were needed."""


@dataclass(frozen=True, kw_only=True)
class SecAggConfig:
    """Public parameters of one secure aggregation round, agreed before it starts.

    All are security parameters, validated here with messages that name the parameter. The
    round id should be the digest of the logged round configuration, which binds every
    protocol message to that record.
    """

    round_id: bytes
    """32 bytes; every message and key derivation is bound to it."""
    participants: tuple[str, ...]
    """The DIDs invited to the round; anyone else is refused. Stored sorted."""
    threshold: int
    """t: shares needed to reconstruct a secret; more than half of each share group."""
    vector_length: int
    """Number of uint32 coordinates in every input."""
    modulus_bits: int = 32
    """k: inputs and the sum live in Z_(2^k)."""
    neighbours: int | None = None
    """SecAgg+ degree k (even); None for the complete graph of the original protocol."""
    min_survivors: int | None = None
    """Fewest inputs the sum may contain (default: `threshold`); DP noise is split for it."""
    consistency_check: bool = True
    """Run stage 3; turning it off lets a malicious server equivocate about dropouts."""

    def __post_init__(self) -> None:
        if not isinstance(self.round_id, bytes) or len(self.round_id) != 32:
            raise InvalidInputError("`round_id` must be 32 bytes")
        parts = tuple(self.participants)
        if len(parts) < 2:
            raise InvalidInputError("`participants` must name at least 2 clients")
        if len(set(parts)) != len(parts):
            raise InvalidInputError("`participants` must not repeat a DID")
        if len(parts) > 65535:
            raise InvalidInputError("`participants` may name at most 65535 clients")
        for did in parts:
            public_bytes_from_did(did)
        object.__setattr__(self, "participants", tuple(sorted(parts)))
        n = len(parts)
        if self.neighbours is not None:
            k = self.neighbours
            if isinstance(k, bool) or not isinstance(k, int) or k < 2 or k % 2:
                raise InvalidInputError("`neighbours` must be an even integer ≥ 2, or None")
            if k >= n - 1:
                object.__setattr__(self, "neighbours", None)  # every peer: the complete graph
        g = self.group_size
        if isinstance(self.threshold, bool) or not isinstance(self.threshold, int):
            raise InvalidInputError("`threshold` must be an integer")
        if self.threshold > g:
            raise InvalidInputError(f"`threshold` {self.threshold} exceeds the share group ({g})")
        if 2 * self.threshold <= g:
            raise InvalidInputError(
                f"`threshold` must be more than half the share group ({g}), so that two "
                "conflicting views of the round cannot both gather enough signatures"
            )
        if not 1 <= self.vector_length <= MAX_VECTOR_LENGTH:
            raise InvalidInputError(f"`vector_length` must be in 1..{MAX_VECTOR_LENGTH}")
        if not MIN_MODULUS_BITS <= self.modulus_bits <= MAX_MODULUS_BITS:
            raise InvalidInputError(
                f"`modulus_bits` must be in {MIN_MODULUS_BITS}..{MAX_MODULUS_BITS}"
            )
        if self.min_survivors is None:
            object.__setattr__(self, "min_survivors", self.threshold)
        # In the complete graph every unmasking needs `threshold` responders anyway.
        low = self.threshold if self.neighbours is None else 1
        m = self.min_survivors
        if isinstance(m, bool) or not isinstance(m, int) or not low <= m <= n:
            raise InvalidInputError(f"`min_survivors` must be an integer in {low}..{n}")

    @property
    def group_size(self) -> int:
        """How many clients (including itself) each client shares its secrets with."""
        n = len(self.participants)
        return n if self.neighbours is None else self.neighbours + 1

    @property
    def survivors_needed(self) -> int:
        """`min_survivors`, never None after construction."""
        return self.threshold if self.min_survivors is None else self.min_survivors

    def x_of(self, did: str) -> int:
        """The Shamir x-coordinate of a participant: its 1-based rank among the DIDs."""
        return self._index[did] + 1

    @property
    def _index(self) -> dict[str, int]:
        cached: dict[str, int] | None = self.__dict__.get("_index_cache")
        if cached is None:
            cached = {d: i for i, d in enumerate(self.participants)}
            object.__setattr__(self, "_index_cache", cached)
        return cached

    def group(self, did: str) -> frozenset[str]:
        """The share group of `did`: itself and its neighbours (everyone, in the full graph)."""
        cache: dict[str, frozenset[str]] = self.__dict__.setdefault("_group_cache", {})
        if did not in cache:
            cache[did] = self._compute_group(did)
        return cache[did]

    def _compute_group(self, did: str) -> frozenset[str]:
        if did not in self._index:
            raise InvalidInputError(f"{did} is not a participant of this round")
        if self.neighbours is None:
            return frozenset(self.participants)
        # Ring order from the round id, so the server cannot pick who neighbours whom.
        ring = sorted(
            self.participants,
            key=lambda d: hashlib.sha256(self.round_id + d.encode()).digest(),
        )
        pos = ring.index(did)
        half = self.neighbours // 2
        n = len(ring)
        return frozenset(ring[(pos + off) % n] for off in range(-half, half + 1))


@dataclass(frozen=True)
class SecAggResult:
    """What the server learns: the sum of the survivors' inputs, and who took part."""

    total: npt.NDArray[np.uint32]
    """Σ x_u mod 2^k over the survivors."""
    survivors: tuple[str, ...]
    """U3: clients whose inputs are in `total`."""
    dropped: tuple[str, ...]
    """Invited clients whose inputs are not in `total` (dropped at any stage)."""
    commitments: tuple[MaskedInput, ...] = field(repr=False)
    """The survivors' signed masked inputs (their signatures commit to the vectors)."""


# --- cryptographic helpers -----------------------------------------------------------------


def _hkdf(secret: bytes, salt: bytes, *info: str) -> bytes:
    label = "\x00".join((PROTOCOL, *info)).encode()
    return HKDF(hashes.SHA256(), 32, salt, label).derive(secret)


def _agree(private: X25519PrivateKey, public: bytes) -> bytes:
    try:
        return private.exchange(X25519PublicKey.from_public_bytes(public))
    except ValueError as exc:  # all-zero shared secret: a low-order point
        raise VerificationError("peer X25519 key is invalid", step="key agreement") from exc


def _raw_public(key: X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _raw_private(key: X25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )


def expand_mask(key: bytes, length: int, modulus_bits: int) -> npt.NDArray[np.uint32]:
    """PRG: AES-256-CTR keystream under `key` as `length` uint32 values in Z_(2^k).

    Each key is used for one vector only (keys are derived per round and per pair), so the
    all-zero counter block is safe.
    """
    encryptor = Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor()
    stream = encryptor.update(bytes(4 * length))
    out = np.frombuffer(stream, dtype="<u4").astype(np.uint32, copy=False)
    if modulus_bits < 32:
        out = out & mod_mask(modulus_bits)
    return out


def _pair_key(shared: bytes, round_id: bytes, a: str, b: str) -> bytes:
    lo, hi = sorted((a, b))
    return _hkdf(shared, round_id, "pairwise-mask", lo, hi)


def _self_key(seed: bytes, round_id: bytes, owner: str) -> bytes:
    return _hkdf(seed, round_id, "self-mask", owner)


def _seed_commitment(seed: bytes, round_id: bytes, owner: str) -> bytes:
    return hashlib.sha256(
        "\x00".join((PROTOCOL, "self-mask-commitment", round_id.hex(), owner)).encode() + seed
    ).digest()


def _share_aad(round_id: bytes, sender: str, receiver: str) -> bytes:
    return round_id + b"\x00" + sender.encode() + b"\x00" + receiver.encode()


def _check_vector(vector: npt.ArrayLike, config: SecAggConfig, what: str) -> npt.NDArray[np.uint32]:
    v = np.asarray(vector)
    if v.dtype != np.uint32 or v.ndim != 1:
        raise InvalidInputError(f"{what} must be a flat uint32 vector")
    if v.size != config.vector_length:
        raise InvalidInputError(
            f"{what} has {v.size} coordinates, the round expects {config.vector_length}"
        )
    if config.modulus_bits < 32 and np.any(v > mod_mask(config.modulus_bits)):
        raise InvalidInputError(f"{what} has values outside Z_(2^{config.modulus_bits})")
    return v


def _expect_stage(current: Stage, wanted: Stage, who: str) -> None:
    if current != wanted:
        if current > wanted:
            raise ConflictError(f"{who} is past stage {wanted.name.lower()} (replayed message?)")
        raise InvalidInputError(
            f"{who} is at stage {current.name.lower()}, not {wanted.name.lower()}"
        )


def _expect_round(config: SecAggConfig, round_id: bytes) -> None:
    if not hmac.compare_digest(round_id, config.round_id):
        raise InvalidInputError("message belongs to another round")
