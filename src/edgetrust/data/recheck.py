"""The device's own consent check: a device re-checks the grant it gave before it trains.

The coordinator's gate (`edgetrust.data.consent.TrainConsent`) is the coordinator's word that
a round is consented; a device does not take that word. `DeviceConsent` holds the chain the
device issued (root first), its own view of the log and its own count of what the chain has
spent, and `DeviceConsent.check` runs before the device trains in a round: (1) the config is
signed by the chain's audience and names this device; (2) the session's first model is known
(the round-1 config's input model, seen by the device or read from the log); (3)
`verify_chain`: issued by this device, ``train`` on that model, inside its window now, and the
freshness rule of `RevocationView` against the last checkpoint the device verified
(`DeviceConsent.refresh`: the log key's signature, then the entries against its root); (4)
one more use and the round's ε fit every grant of the chain, counting the usage records in
the log (signed by the device or the coordinator) and the rounds the device trained in itself,
each job once. A refusal raises `ConsentError` and the device trains nothing.

`ConsentedWorker` is a `ClientWorker` that runs the check in `compute_update`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from edgetrust.collab.rounds import ROUND_CONFIG_PREDICATE_TYPE, RoundConfig, envelope_sha256
from edgetrust.collab.session import ClientWorker
from edgetrust.data.consent import ConsentError, _check_budget, train_job_id
from edgetrust.data.grant import GrantError, RevocationView, VerifiedChain, read_grant, verify_chain
from edgetrust.data.records import USAGE_PREDICATE_TYPE, UsageRecord
from edgetrust.dsse import Envelope, parse_envelope
from edgetrust.errors import Error, VerificationError
from edgetrust.log.checkpoint import verify_checkpoint
from edgetrust.log.merkle import leaf_hash, root_from_leaves
from edgetrust.statement import open_signed_statement

__all__ = ["ConsentedWorker", "DeviceConsent"]

_PAGE = 4096


def _round_epsilon(config: RoundConfig) -> float | None:
    """ε one round of `config` costs a device (None: no noise, unbounded)."""
    if config.noise_multiplier <= 0:
        return None
    from edgetrust.collab.dp import epsilon_after

    return epsilon_after(
        1,
        noise_multiplier=config.noise_multiplier,
        sampling_rate=config.sampling_rate,
        delta=config.delta,
    )


class DeviceConsent:
    """What one device knows of the grant chain it gave a coordinator, and the check it runs.

    `chain` is the chain (root first) whose root this device issued; `log_key` the log's
    verifier key (C2SP vkey) the device trusts; `max_age` is T of the freshness rule.
    """

    def __init__(
        self,
        did: str,
        chain: Sequence[Envelope],
        *,
        log_key: str,
        max_age: float = 300.0,
    ) -> None:
        if not chain:
            raise GrantError("a device needs the grant chain it gave", step="1 consent")
        self.did = did
        self.chain = tuple(chain)
        self.root = read_grant(self.chain[0])
        self.coordinator = read_grant(self.chain[-1]).aud
        """The chain's audience: the only coordinator this device trains for."""
        self.log_key = log_key
        self.view = RevocationView(max_age=max_age)
        self._leaves: list[bytes] = []
        self._uses: dict[str, tuple[tuple[str, ...], float]] = {}
        """Job id -> (chain digests, ε): every use seen in the log or made by this device."""
        self._bases: dict[str, str] = {}
        """Session -> the input model of its round 1, by the coordinator."""

    # -- the device's view of the log ---------------------------------------------------------

    def refresh(self, log: Any, *, at: float | None = None) -> int:
        """Read the log up to its latest checkpoint, verified; return the checkpoint's size.

        `log` has ``checkpoint() -> note``, ``entries(start, count)`` (an embedded `Log`).
        The note must be signed by `log_key` and the entries must hash to its root; the view
        then counts as fresh at `at` (now). On any failure the view keeps its old age.

        Raises:
            VerificationError: a bad checkpoint signature, a shrunk log or a root mismatch.
        """
        checkpoint = verify_checkpoint(log.checkpoint(), self.log_key)
        start, size = self.view.size, checkpoint.size
        if size < start:
            raise VerificationError(
                f"the log's checkpoint ({size}) is smaller than one already seen ({start})",
                step="checkpoint",
            )
        new: list[bytes] = []
        for page in range(start, size, _PAGE):
            new += log.entries(page, min(_PAGE, size - page))
        leaves = self._leaves + [leaf_hash(e) for e in new]
        if root_from_leaves(leaves) != checkpoint.root:
            raise VerificationError("the log's entries do not match its checkpoint", step="root")
        self._leaves = leaves
        for raw in new:
            self._note(raw)
        self.view.observe(start, new, size=size, at=at)
        return size

    def _note(self, raw: bytes) -> None:
        """Remember a usage record of our chain, or a round-1 config of our coordinator."""
        try:
            signed = open_signed_statement(parse_envelope(raw))
        except Error:  # not a signed statement
            return
        kind = signed.statement.predicate_type
        if kind == USAGE_PREDICATE_TYPE and signed.signer in {self.did, self.coordinator}:
            try:
                rec = UsageRecord.from_predicate(signed.statement.predicate)
            except Error:
                return
            self._uses.setdefault(rec.job, (rec.chain, rec.epsilon))
        elif kind == ROUND_CONFIG_PREDICATE_TYPE and signed.signer == self.coordinator:
            try:
                cfg = RoundConfig.from_predicate(signed.statement.predicate)
            except Error:
                return
            if cfg.round == 1:
                self._bases.setdefault(cfg.session, cfg.input_model)

    def spent(self, digest: str) -> tuple[int, float]:
        """Uses and ε of grant `digest` that this device knows of (each job once)."""
        n, eps = 0, 0.0
        for chain, e in self._uses.values():
            if digest in chain:
                n, eps = n + 1, eps + e
        return n, eps

    # -- the check ------------------------------------------------------------------------------

    def check(
        self, config: RoundConfig, signer: str, config_sha256: str, *, now: float | None = None
    ) -> VerifiedChain:
        """Check that this device may train in the round of `config`, signed by `signer`.

        Raises:
            ConsentError: the step that refused (see the module doc); nothing is spent.
        """
        t = time.time() if now is None else now
        job = train_job_id(config_sha256, self.did)
        # 1. our coordinator, our round
        if signer != self.coordinator:
            raise ConsentError(
                "the round is run by another party than the grant's audience",
                participant=self.did,
                step="1 consent",
            )
        if self.did not in config.participants:
            raise ConsentError(
                "the round does not name this device", participant=self.did, step="1 consent"
            )
        # 2. the session's first model
        if config.round == 1:
            self._bases.setdefault(config.session, config.input_model)
        base = self._bases.get(config.session)
        if base is None:
            raise ConsentError(
                "the session's first model is unknown (refresh from the log first)",
                participant=self.did,
                step="4 use",
            )
        # 3. the chain, now, against our own view of revocations
        try:
            verified = verify_chain(
                self.chain,
                owner=self.did,
                dataset=self.root.sub,
                requester=signer,
                action="train",
                algorithm=base,
                revocations=self.view,
                now=t,
            )
        except GrantError as exc:
            raise ConsentError(exc.message, participant=self.did, step=exc.step) from exc
        # 4. uses and budget; a round already counted (replayed config) is not counted twice
        epsilon = _round_epsilon(config)
        if job not in self._uses:
            spent = {d: self.spent(d) for d in verified.digests}
            _check_budget(self.did, verified.grants, verified.digests, spent, epsilon)
        return verified

    def spend(self, config_sha256: str, verified: VerifiedChain, epsilon: float | None) -> None:
        """Count one use of the chain for the round `config_sha256` (after training in it)."""
        job = train_job_id(config_sha256, self.did)
        self._uses.setdefault(job, (verified.digests, 0.0 if epsilon is None else epsilon))


class ConsentedWorker(ClientWorker):
    """A `ClientWorker` that trains only after its own `DeviceConsent.check` passes.

    `log` is refreshed before every check when given (the device's link to the log); without
    it, or when it cannot be read, the device checks against the view it has, and the
    freshness rule refuses once that view is older than `DeviceConsent.view.max_age`.
    """

    def __init__(
        self,
        *,
        consent: DeviceConsent,
        log: Any = None,
        **kw: Any,
    ) -> None:
        super().__init__(coordinator=consent.coordinator, **kw)
        self.consent = consent
        self.log = log
        self._opened: dict[tuple[str, int], tuple[str, str]] = {}

    def open_config(self, envelope: bytes | Envelope) -> tuple[RoundConfig, bytes]:
        """Verify the round config (as `ClientWorker`) and remember its signer and digest."""
        env = envelope if isinstance(envelope, Envelope) else parse_envelope(envelope)
        config, round_id = super().open_config(env)
        signer = open_signed_statement(env).signer
        self._opened[(config.session, config.round)] = (signer, envelope_sha256(env))
        return config, round_id

    def compute_update(
        self, config: RoundConfig, model_bytes: bytes, *, seed: int
    ) -> npt.NDArray[np.uint32]:
        """Re-check consent, then train (as `ClientWorker`) and count the use.

        Raises:
            ConsentError: the device's own check refuses; it trains nothing.
        """
        opened = self._opened.get((config.session, config.round))
        if opened is None:
            raise ConsentError(
                "the round's config was not opened by this device",
                participant=self.did,
                step="1 consent",
            )
        signer, sha = opened
        if self.log is not None:
            try:
                self.consent.refresh(self.log)
            except VerificationError as exc:  # a forged or inconsistent log: refuse outright
                raise ConsentError(
                    f"the log does not verify: {exc.message}",
                    participant=self.did,
                    step="5 revocation",
                ) from exc
            except (Error, OSError):  # unreachable: the old view, and its age, stay
                pass
        verified = self.consent.check(config, signer, sha)
        update = super().compute_update(config, model_bytes, seed=seed)
        eps = _round_epsilon(config)
        self.consent.spend(sha, verified, None if eps is None or math.isinf(eps) else eps)
        return update
