"""Secure aggregation (Bonawitz et al. 2017; SecAgg+, Bell et al. 2020) as state machines.

The server learns the modular *sum* of the surviving clients' vectors and nothing else about
any one of them, even when clients drop out mid-round. Each client masks its quantized vector
with a self mask ``PRG(b_u)`` and, for each peer v, a pairwise mask ``±PRG(KA(s_u, s_v))``
that v adds with the opposite sign; pairwise masks cancel in the sum, and each client secret
is Shamir-shared so that the server can remove the masks a dropout leaves behind. For each
client the server may learn the self-mask seed (if it survived) *or* the masking key (if it
dropped), never both: honest clients enforce this.

Stages, in order (the server's ``close_*`` methods end one and produce the next broadcast)::

    0 AdvertiseKeys     client → server   two X25519 public keys, signed       (U1)
    1 ShareKeys         client → server   Shamir shares sealed for each peer  (U2)
    2 MaskedInput       client → server   y_u = x_u + PRG(b_u) + Σ ±PRG(s_uv)  (U3)
    3 ConsistencyCheck  client → server   signature on U3                      (U4)
    4 Unmask            client → server   b-shares of U3, key shares of U2-U3 (U5)

Nothing here does I/O: a driver moves the messages (in-process for simulation, Flower for a
deployment). Primitives come from `cryptography`: X25519, HKDF-SHA256, ChaCha20-Poly1305 for
shares, AES-256-CTR as the mask PRG (expanded straight into numpy uint32 vectors).

With `neighbours` set, each client shares and masks only with `neighbours` peers on a ring
whose order is derived from the round id (a Harary graph, as in SecAgg+ and Flower), so the
work per client is O(k) instead of O(n); the threshold then applies within each neighbourhood.
"""

from __future__ import annotations

import hmac
import json
import os
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import numpy.typing as npt
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from edgetrust.collab._secagg import (
    _CIPHERTEXT_BYTES,
    _ZERO_NONCE,
    MAX_VECTOR_LENGTH,
    RoundAbortedError,
    SecAggConfig,
    SecAggResult,
    Stage,
    _agree,
    _check_vector,
    _expect_round,
    _expect_stage,
    _hkdf,
    _pair_key,
    _raw_private,
    _raw_public,
    _seed_commitment,
    _self_key,
    _share_aad,
    expand_mask,
)
from edgetrust.collab.messages import (
    AdvertiseKeys,
    ConsistencyRequest,
    ConsistencySignature,
    EncryptedShare,
    ForwardedShares,
    KeyDirectory,
    MaskedInput,
    RevealedShare,
    ShareKeys,
    UnmaskRequest,
    UnmaskResponse,
    survivors_digest,
)
from edgetrust.collab.quantize import mod_mask
from edgetrust.collab.shamir import SHARE_BYTES, Share, combine_secret, split_secret
from edgetrust.errors import ConflictError, InvalidInputError, VerificationError
from edgetrust.identity import Identity

__all__ = [
    "MAX_VECTOR_LENGTH",
    "RoundAbortedError",
    "SecAggClient",
    "SecAggConfig",
    "SecAggResult",
    "SecAggServer",
    "Stage",
    "expand_mask",
]

# --- client --------------------------------------------------------------------------------


class SecAggClient:
    """One client's side of a round. Call the methods in stage order, once each.

    An honest client never reveals, for any peer, both the share of its masking key and the
    share of its self-mask seed: it answers one unmask request only, refuses requests that list
    a peer as both surviving and dropped, and (with the consistency check) refuses unless
    `threshold` of its peers signed the same survivor list.
    """

    def __init__(self, *, config: SecAggConfig, identity: Identity) -> None:
        if identity.did not in config.participants:
            raise InvalidInputError(f"{identity.did} is not a participant of this round")
        self.config = config
        self.identity = identity
        self.did = identity.did
        self.stage = Stage.ADVERTISE
        self._group = config.group(self.did)
        self._cipher_key = X25519PrivateKey.generate()
        self._mask_key = X25519PrivateKey.generate()
        self._seed = b""
        self._peers: dict[str, AdvertiseKeys] = {}
        self._cipher_shared: dict[str, bytes] = {}  # X25519 secrets for sealing shares
        self._holdings: dict[str, tuple[Share, Share]] = {}  # owner -> (key share, seed share)
        self._u2: frozenset[str] = frozenset()
        self._signed_survivors: tuple[str, ...] | None = None
        self.revealed: dict[str, str] = {}
        """Which share type this client revealed for each owner ("key" or "self-mask")."""

    def export_state(self) -> bytes:
        """The client's whole state, for transports that run each stage in a new process.

        It holds the round's private keys and the peers' shares: keep it where the client's
        identity key is kept (Flower: the SuperNode's per-run context), never send it.
        """
        state = {
            "stage": int(self.stage),
            "cipherKey": _raw_private(self._cipher_key).hex(),
            "maskKey": _raw_private(self._mask_key).hex(),
            "seed": self._seed.hex(),
            "peers": [p.to_bytes().hex() for p in self._peers.values()],
            "cipherShared": {d: v.hex() for d, v in self._cipher_shared.items()},
            "holdings": {
                d: (k.to_bytes() + s.to_bytes()).hex() for d, (k, s) in self._holdings.items()
            },
            "u2": sorted(self._u2),
            "signed": None if self._signed_survivors is None else list(self._signed_survivors),
            "revealed": dict(self.revealed),
        }
        return json.dumps(state, sort_keys=True).encode()

    @classmethod
    def from_state(cls, data: bytes, *, config: SecAggConfig, identity: Identity) -> SecAggClient:
        """Rebuild a client from `export_state` output (trusted: the client's own storage)."""
        try:
            st = json.loads(data)
            client = cls(config=config, identity=identity)
            client.stage = Stage(st["stage"])
            client._cipher_key = X25519PrivateKey.from_private_bytes(bytes.fromhex(st["cipherKey"]))
            client._mask_key = X25519PrivateKey.from_private_bytes(bytes.fromhex(st["maskKey"]))
            client._seed = bytes.fromhex(st["seed"])
            peers = [AdvertiseKeys.from_bytes(bytes.fromhex(p)) for p in st["peers"]]
            client._peers = {p.sender: p for p in peers}
            client._cipher_shared = {d: bytes.fromhex(v) for d, v in st["cipherShared"].items()}
            for d, v in st["holdings"].items():
                raw = bytes.fromhex(v)
                client._holdings[d] = (
                    Share.from_bytes(raw[:SHARE_BYTES]),
                    Share.from_bytes(raw[SHARE_BYTES:]),
                )
            client._u2 = frozenset(st["u2"])
            signed = st["signed"]
            client._signed_survivors = None if signed is None else tuple(signed)
            client.revealed = dict(st["revealed"])
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidInputError(f"secure aggregation client state is corrupt: {exc}") from exc
        return client

    def advertise_keys(self) -> AdvertiseKeys:
        """Stage 0: publish two fresh X25519 public keys, signed."""
        _expect_stage(self.stage, Stage.ADVERTISE, "client")
        self.stage = Stage.SHARE
        msg = AdvertiseKeys(
            self.config.round_id,
            self.did,
            _raw_public(self._cipher_key),
            _raw_public(self._mask_key),
        )
        return msg.sign(self.identity)

    def share_keys(self, directory: KeyDirectory) -> ShareKeys:
        """Stage 1: check the peers' signed keys, then send each peer its sealed shares."""
        _expect_stage(self.stage, Stage.SHARE, "client")
        _expect_round(self.config, directory.round_id)
        entries: dict[str, AdvertiseKeys] = {}
        for entry in directory.entries:
            if entry.sender not in self.config.participants:
                raise InvalidInputError(f"key directory names {entry.sender}, not in the round")
            if entry.sender in entries:
                raise InvalidInputError(f"key directory repeats {entry.sender}")
            entries[entry.sender] = entry
        mine = entries.get(self.did)
        if (
            mine is None
            or mine.cipher_public_key != _raw_public(self._cipher_key)
            or (mine.mask_public_key != _raw_public(self._mask_key))
        ):
            raise VerificationError(
                "key directory does not carry this client's own keys", step="keys"
            )
        peers = {d: e for d, e in entries.items() if d in self._group}
        for did, entry in peers.items():
            _expect_round(self.config, entry.round_id)
            if did != self.did:
                entry.verify()
            if entry.cipher_public_key == entry.mask_public_key:
                raise VerificationError(f"{did} reuses one key for masking and encryption")
        if len(peers) < self.config.threshold:
            raise RoundAbortedError(
                f"only {len(peers)} of this client's share group advertised keys, "
                f"{self.config.threshold} needed",
                stage="share",
                have=len(peers),
                need=self.config.threshold,
            )
        self._peers = peers
        self._seed = os.urandom(32)
        holders = sorted(peers)
        xs = [self.config.x_of(d) for d in holders]
        t = self.config.threshold
        key_shares = split_secret(_raw_private(self._mask_key), threshold=t, xs=xs)
        seed_shares = split_secret(self._seed, threshold=t, xs=xs)
        sealed = []
        for did, ks, ss in zip(holders, key_shares, seed_shares, strict=True):
            if did == self.did:
                self._holdings[did] = (ks, ss)
                continue
            self._cipher_shared[did] = _agree(self._cipher_key, peers[did].cipher_public_key)
            key = _hkdf(
                self._cipher_shared[did],
                self.config.round_id,
                "share-encryption",
                self.did,
                did,
            )
            ct = ChaCha20Poly1305(key).encrypt(
                _ZERO_NONCE,
                ks.to_bytes() + ss.to_bytes(),
                _share_aad(self.config.round_id, self.did, did),
            )
            sealed.append(EncryptedShare(did, ct))
        self.stage = Stage.MASK
        msg = ShareKeys(
            self.config.round_id,
            self.did,
            _seed_commitment(self._seed, self.config.round_id, self.did),
            tuple(sealed),
        )
        return msg.sign(self.identity)

    def masked_input(self, forwarded: ForwardedShares, vector: npt.ArrayLike) -> MaskedInput:
        """Stage 2: open the peers' shares, then mask `vector` (uint32, in Z_(2^k))."""
        _expect_stage(self.stage, Stage.MASK, "client")
        _expect_round(self.config, forwarded.round_id)
        if forwarded.receiver != self.did:
            raise InvalidInputError("forwarded shares are addressed to another client")
        x = _check_vector(vector, self.config, "input vector")
        for item in forwarded.shares:
            sender = item.peer
            if sender == self.did or sender not in self._peers:
                raise InvalidInputError(f"forwarded share from {sender}, not a peer in this round")
            if len(item.ciphertext) != _CIPHERTEXT_BYTES:
                raise InvalidInputError(f"sealed share from {sender} has the wrong length")
            key = _hkdf(
                self._cipher_shared[sender],
                self.config.round_id,
                "share-encryption",
                sender,
                self.did,
            )
            try:
                plain = ChaCha20Poly1305(key).decrypt(
                    _ZERO_NONCE, item.ciphertext, _share_aad(self.config.round_id, sender, self.did)
                )
            except InvalidTag as exc:
                raise VerificationError(
                    f"sealed share from {sender} does not open", step="shares"
                ) from exc
            ks, ss = Share.from_bytes(plain[:SHARE_BYTES]), Share.from_bytes(plain[SHARE_BYTES:])
            if ks.x != self.config.x_of(self.did) or ss.x != ks.x:
                raise VerificationError(f"share from {sender} is for another holder", step="shares")
            self._holdings[sender] = (ks, ss)
        u2 = frozenset(s.peer for s in forwarded.shares) | {self.did}
        if len(u2) < self.config.threshold:
            raise RoundAbortedError(
                f"only {len(u2)} of this client's share group shared keys, "
                f"{self.config.threshold} needed",
                stage="mask",
                have=len(u2),
                need=self.config.threshold,
            )
        self._u2 = u2
        k = self.config.modulus_bits
        n = self.config.vector_length
        y = x.copy()
        y += expand_mask(_self_key(self._seed, self.config.round_id, self.did), n, k)
        for peer in sorted(u2 - {self.did}):
            shared = _agree(self._mask_key, self._peers[peer].mask_public_key)
            mask = expand_mask(_pair_key(shared, self.config.round_id, self.did, peer), n, k)
            if self.did < peer:
                y += mask
            else:
                y -= mask
        if k < 32:
            y &= mod_mask(k)
        self.stage = Stage.CONSISTENCY if self.config.consistency_check else Stage.UNMASK
        return MaskedInput(self.config.round_id, self.did, y).sign(self.identity)

    def _check_survivors(self, survivors: Sequence[str]) -> None:
        if self.did not in survivors:
            raise InvalidInputError("survivor list leaves out this client, which sent its input")
        unknown = [d for d in survivors if d not in self.config.participants]
        if unknown:
            raise InvalidInputError(f"survivor list names {unknown[0]}, not in the round")
        mine = [d for d in survivors if d in self._group]
        strangers = [d for d in mine if d not in self._u2]
        if strangers:
            raise InvalidInputError(
                f"survivor list names {strangers[0]}, which shared no keys here"
            )
        if len(mine) < self.config.threshold:
            raise RoundAbortedError(
                f"only {len(mine)} of this client's share group survived, "
                f"{self.config.threshold} needed",
                stage="consistency",
                have=len(mine),
                need=self.config.threshold,
            )

    def consistency(self, request: ConsistencyRequest) -> ConsistencySignature:
        """Stage 3: sign the survivor list the server claims, after checking it."""
        _expect_stage(self.stage, Stage.CONSISTENCY, "client")
        _expect_round(self.config, request.round_id)
        self._check_survivors(request.survivors)
        self._signed_survivors = tuple(request.survivors)
        self.stage = Stage.UNMASK
        digest = survivors_digest(self.config.round_id, request.survivors)
        return ConsistencySignature(self.config.round_id, self.did, digest).sign(self.identity)

    def unmask(self, request: UnmaskRequest) -> UnmaskResponse:
        """Stage 4: reveal self-mask shares of survivors and key shares of dropouts, once."""
        _expect_stage(self.stage, Stage.UNMASK, "client")
        _expect_round(self.config, request.round_id)
        survivors, dropped = set(request.survivors), set(request.dropped)
        both = survivors & dropped
        if both:
            raise VerificationError(
                f"unmask request lists {sorted(both)[0]} as both surviving and dropped; "
                "revealing both shares would expose its input",
                step="unmask",
            )
        if self.config.consistency_check:
            if self._signed_survivors != tuple(request.survivors):
                raise VerificationError(
                    "unmask request's survivor list differs from the one this client signed",
                    step="consistency",
                )
            self._verify_consistency(request)
        else:
            self._check_survivors(request.survivors)
        seed_out, key_out = [], []
        for owner in sorted(survivors & self._group):
            if owner not in self._holdings:
                raise InvalidInputError(f"no share held for survivor {owner}")
            seed_out.append(RevealedShare(owner, self._holdings[owner][1].to_bytes()))
        for owner in sorted(dropped & self._group):
            if owner == self.did:
                raise InvalidInputError("unmask request calls this client dropped")
            if owner not in self._holdings:
                continue  # dropped before sharing with us: its key was never used here
            key_out.append(RevealedShare(owner, self._holdings[owner][0].to_bytes()))
        for r in seed_out:
            self._record_reveal(r.owner, "self-mask")
        for r in key_out:
            self._record_reveal(r.owner, "key")
        self.stage = Stage.DONE
        return UnmaskResponse(self.config.round_id, self.did, tuple(seed_out), tuple(key_out)).sign(
            self.identity
        )

    def _record_reveal(self, owner: str, kind: str) -> None:
        previous = self.revealed.get(owner)
        if previous is not None and previous != kind:  # unreachable by the checks above
            raise VerificationError(f"refusing to reveal both shares of {owner}", step="unmask")
        self.revealed[owner] = kind

    def _verify_consistency(self, request: UnmaskRequest) -> None:
        digest = survivors_digest(self.config.round_id, request.survivors)
        valid: set[str] = set()
        for sig in request.signatures:
            if sig.sender not in self._group or sig.sender not in request.survivors:
                continue
            if sig.digest != digest or sig.round_id != self.config.round_id:
                raise VerificationError(
                    f"{sig.sender} signed a different survivor list", step="consistency"
                )
            sig.verify()
            valid.add(sig.sender)
            if len(valid) >= self.config.threshold:
                return
        raise VerificationError(
            f"only {len(valid)} peers signed the survivor list, {self.config.threshold} needed",
            step="consistency",
        )


# --- server --------------------------------------------------------------------------------


class SecAggServer:
    """The aggregator's side of a round: collects messages, and at the end, the sum.

    `receive_*` checks and stores one client message (refusing other rounds, non-participants,
    replays, bad signatures and wrong lengths); `close_*` ends a stage once the driver decides
    no more messages will come, and returns what to send next. Fewer than `min_survivors`
    clients at any stage raises `RoundAbortedError`.
    """

    def __init__(self, *, config: SecAggConfig) -> None:
        self.config = config
        self.stage = Stage.ADVERTISE
        self._keys: dict[str, AdvertiseKeys] = {}
        self._shares: dict[str, ShareKeys] = {}
        self._inputs: dict[str, MaskedInput] = {}
        self._signatures: dict[str, ConsistencySignature] = {}
        self._responses: dict[str, UnmaskResponse] = {}
        self._survivors: tuple[str, ...] = ()
        self._dropped: tuple[str, ...] = ()

    # 1 checks shared by every receive_*
    def _admit(
        self,
        msg: AdvertiseKeys | ShareKeys | MaskedInput | ConsistencySignature | UnmaskResponse,
        stage: Stage,
        eligible: Iterable[str],
        seen: Mapping[str, object],
    ) -> None:
        _expect_stage(self.stage, stage, "server")
        _expect_round(self.config, msg.round_id)
        if msg.sender not in self.config.participants:
            raise InvalidInputError(f"{msg.sender} is not a participant of this round")
        if msg.sender in seen:
            raise ConflictError(f"{msg.sender} already sent its {msg.KIND} message (replay?)")
        if msg.sender not in set(eligible):
            raise InvalidInputError(f"{msg.sender} is not in this stage of the round")
        msg.verify()

    def _require(self, have: int, stage: str) -> None:
        need = self.config.survivors_needed
        if have < need:
            self.stage = Stage.DONE
            raise RoundAbortedError(
                f"round aborted at stage {stage}: {have} clients left, {need} needed",
                stage=stage,
                have=have,
                need=need,
            )

    def receive_advertise(self, msg: AdvertiseKeys) -> None:
        """Stage 0: store a client's signed public keys."""
        self._admit(msg, Stage.ADVERTISE, self.config.participants, self._keys)
        self._keys[msg.sender] = msg

    def close_advertise(self) -> KeyDirectory:
        """End stage 0; the directory of keys goes to every client in U1."""
        _expect_stage(self.stage, Stage.ADVERTISE, "server")
        self._require(len(self._keys), "advertise")
        self.stage = Stage.SHARE
        return KeyDirectory(self.config.round_id, tuple(self._keys[d] for d in sorted(self._keys)))

    def receive_shares(self, msg: ShareKeys) -> None:
        """Stage 1: store a client's sealed shares; they must go to exactly its group in U1."""
        self._admit(msg, Stage.SHARE, self._keys, self._shares)
        expected = sorted((self.config.group(msg.sender) & set(self._keys)) - {msg.sender})
        if [s.peer for s in msg.shares] != expected:
            raise InvalidInputError(f"{msg.sender} did not send one share to each of its peers")
        if any(len(s.ciphertext) != _CIPHERTEXT_BYTES for s in msg.shares):
            raise InvalidInputError(f"a sealed share from {msg.sender} has the wrong length")
        self._shares[msg.sender] = msg

    def close_shares(self) -> dict[str, ForwardedShares]:
        """End stage 1; returns, for each client in U2, the shares addressed to it."""
        _expect_stage(self.stage, Stage.SHARE, "server")
        self._require(len(self._shares), "share")
        self.stage = Stage.MASK
        inbox: dict[str, list[EncryptedShare]] = {d: [] for d in self._shares}
        for sender in sorted(self._shares):
            for item in self._shares[sender].shares:
                if item.peer in inbox:
                    inbox[item.peer].append(EncryptedShare(sender, item.ciphertext))
        return {
            d: ForwardedShares(self.config.round_id, d, tuple(items)) for d, items in inbox.items()
        }

    def receive_masked_input(self, msg: MaskedInput) -> None:
        """Stage 2: store a client's masked vector and its signed commitment."""
        _expect_stage(self.stage, Stage.MASK, "server")
        _check_vector(msg.vector, self.config, "masked input")
        self._admit(msg, Stage.MASK, self._shares, self._inputs)
        self._inputs[msg.sender] = msg

    def close_masked_input(self) -> ConsistencyRequest | UnmaskRequest:
        """End stage 2; returns the consistency request (or the unmask request without it)."""
        _expect_stage(self.stage, Stage.MASK, "server")
        self._require(len(self._inputs), "mask")
        self._survivors = tuple(sorted(self._inputs))
        self._dropped = tuple(sorted(set(self._shares) - set(self._inputs)))
        if self.config.consistency_check:
            self.stage = Stage.CONSISTENCY
            return ConsistencyRequest(self.config.round_id, self._survivors)
        self.stage = Stage.UNMASK
        return UnmaskRequest(self.config.round_id, self._survivors, self._dropped)

    def receive_consistency(self, msg: ConsistencySignature) -> None:
        """Stage 3: store a survivor's signature on the survivor list."""
        self._admit(msg, Stage.CONSISTENCY, self._survivors, self._signatures)
        if msg.digest != survivors_digest(self.config.round_id, self._survivors):
            raise VerificationError(
                f"{msg.sender} signed another survivor list", step="consistency"
            )
        self._signatures[msg.sender] = msg

    def close_consistency(self) -> UnmaskRequest:
        """End stage 3; returns the unmask request with the signatures collected."""
        _expect_stage(self.stage, Stage.CONSISTENCY, "server")
        self._require(len(self._signatures), "consistency")
        self.stage = Stage.UNMASK
        sigs = tuple(self._signatures[d] for d in sorted(self._signatures))
        return UnmaskRequest(self.config.round_id, self._survivors, self._dropped, sigs)

    def receive_unmask(self, msg: UnmaskResponse) -> None:
        """Stage 4: store a client's revealed shares, checking each is one it could hold."""
        eligible = self._signatures if self.config.consistency_check else self._survivors
        self._admit(msg, Stage.UNMASK, eligible, self._responses)
        group = self.config.group(msg.sender)
        survivors, dropped = set(self._survivors), set(self._dropped)
        for items, allowed in ((msg.self_mask_shares, survivors), (msg.key_shares, dropped)):
            for r in items:
                if r.owner not in allowed or r.owner not in group:
                    raise InvalidInputError(f"{msg.sender} revealed a share it was not asked for")
                share = Share.from_bytes(r.share)
                if share.x != self.config.x_of(msg.sender):
                    raise InvalidInputError(f"{msg.sender} revealed a share with the wrong x")
        self._responses[msg.sender] = msg

    def finish(self) -> SecAggResult:
        """End the round: reconstruct the secrets, remove every mask, return the sum."""
        _expect_stage(self.stage, Stage.UNMASK, "server")
        self.stage = Stage.DONE
        cfg = self.config
        k, n = cfg.modulus_bits, cfg.vector_length
        seed_shares: dict[str, list[Share]] = {d: [] for d in self._survivors}
        key_shares: dict[str, list[Share]] = {d: [] for d in self._dropped}
        for sender in sorted(self._responses):
            resp = self._responses[sender]
            for r in resp.self_mask_shares:
                seed_shares[r.owner].append(Share.from_bytes(r.share))
            for r in resp.key_shares:
                key_shares[r.owner].append(Share.from_bytes(r.share))
        total = np.zeros(n, dtype=np.uint32)
        for d in self._survivors:
            total += self._inputs[d].vector
        # 1 remove each survivor's self mask
        for owner, shares in seed_shares.items():
            seed = self._reconstruct(owner, shares, "self-mask seed")
            commitment = self._shares[owner].self_mask_commitment
            if not hmac.compare_digest(_seed_commitment(seed, cfg.round_id, owner), commitment):
                raise VerificationError(
                    f"self-mask seed of {owner} does not match its commitment", step="unmask"
                )
            total -= expand_mask(_self_key(seed, cfg.round_id, owner), n, k)
        # 2 remove the pairwise masks survivors added for each dropped client
        for owner, shares in key_shares.items():
            raw = self._reconstruct(owner, shares, "masking key")
            key = X25519PrivateKey.from_private_bytes(raw)
            if not hmac.compare_digest(_raw_public(key), self._keys[owner].mask_public_key):
                raise VerificationError(
                    f"masking key of {owner} does not match its public key", step="unmask"
                )
            for peer in sorted(cfg.group(owner) & set(self._survivors)):
                shared = _agree(key, self._keys[peer].mask_public_key)
                mask = expand_mask(_pair_key(shared, cfg.round_id, owner, peer), n, k)
                if peer < owner:
                    total -= mask
                else:
                    total += mask
        if k < 32:
            total &= mod_mask(k)
        dropped = tuple(d for d in cfg.participants if d not in set(self._survivors))
        return SecAggResult(
            total,
            self._survivors,
            dropped,
            tuple(self._inputs[d] for d in self._survivors),
        )

    def _reconstruct(self, owner: str, shares: list[Share], what: str) -> bytes:
        t = self.config.threshold
        if len(shares) < t:
            raise RoundAbortedError(
                f"round aborted at stage unmask: {len(shares)} shares of the {what} of {owner}, "
                f"{t} needed",
                stage="unmask",
                have=len(shares),
                need=t,
            )
        return combine_secret(shares, threshold=t)
