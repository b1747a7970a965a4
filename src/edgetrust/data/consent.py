"""Federated learning under consent: who may join a round, what it costs them, and the audit.

Each device in a federated session is the owner of the data it trains on. It consents by
issuing a grant (`edgetrust.data.grant`) to the coordinator: action ``train``, algorithms
naming the digest of the session's first model (``Coordinator.base_model``; later rounds
descend from it, which `collab.audit.audit_log` checks), and optional use and ε caps.

`TrainConsent` is the coordinator's gate (``Coordinator(consent=...)``): before a round's
config is logged it verifies every participant's chain (issued by that participant, for this
coordinator, ``train`` on this model, unrevoked in the log, inside its window) and that one
more use and the round's ε fit every grant of the chain; a refusal raises `ConsentError`
naming the participant and nothing is logged. Admitted chains are logged (so an auditor can
read them), the round record carries ``consent`` (the time, model, ε and every participant's
chain digests), and after the record the gate logs one usage record per survivor: a use is
counted when a device's update went into the aggregate, not for a device that dropped out.

The ε a round costs each device is that round's own ε at the config's noise and δ (the
accountant's `round_epsilon`), and a grant's total is the sum over its uses: basic
composition, an upper bound on what the session's PLD accountant composes to. A round without
DP noise has no ε bound, so any grant with an ε cap refuses it.

`audit_consent` replays a log and checks every consented round the same way, from the log
alone: the chain entries, the revocations logged before the round's config, the usage
records logged before it (budget), and one usage record per survivor after it.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from edgetrust.data.grant import (
    GRANT_PREDICATE_TYPE,
    REVOCATION_PREDICATE_TYPE,
    Grant,
    GrantError,
    Revocation,
    RevocationView,
    grant_digest,
    read_grant,
    verify_chain,
)
from edgetrust.data.records import USAGE_PREDICATE_TYPE, UsageRecord
from edgetrust.dsse import Envelope, parse_envelope, sign_envelope
from edgetrust.encoding import canonical_json, digest_bytes, digest_hex, parse_digest
from edgetrust.errors import Error, InvalidInputError
from edgetrust.identity import public_bytes_from_did
from edgetrust.statement import (
    IN_TOTO_PAYLOAD_TYPE,
    Subject,
    encode_statement,
    open_signed_statement,
)

__all__ = [
    "Admission",
    "run_round",
    "ConsentAudit",
    "ConsentError",
    "ConsentRound",
    "TrainConsent",
    "audit_consent",
    "train_job_id",
]

_ROUND_TYPE = "https://edgetrust.dev/fl-round/v1"
_CONFIG_TYPE = "https://edgetrust.dev/fl-round-config/v1"


class ConsentError(GrantError):
    """A participant of a federated round does not hold a grant that covers it."""

    def __init__(self, message: str, *, participant: str, step: str | None = None) -> None:
        super().__init__(f"participant {participant[:24]}…: {message}", step=step)
        self.participant = participant
        """The DID of the device whose consent is missing or insufficient."""


def train_job_id(config_sha256: str, participant: str) -> str:
    """The id of one device's use in one round: a digest of the round config and the device."""
    return digest_bytes(canonical_json({"config": config_sha256, "participant": participant}))


@dataclass(frozen=True)
class Admission:
    """What the gate admitted for one round; the round record's ``consent`` field."""

    time: int
    """When the chains were checked (Unix seconds): the time their windows must hold."""
    model: str
    """The session's first model: the algorithm every ``train`` grant must allow."""
    epsilon: float | None
    """ε the round costs each device (one round of the Gaussian mechanism); None: no DP."""
    grants: Mapping[str, tuple[str, ...]]
    """Participant DID -> digests of its grant chain, root first."""

    def to_predicate(self) -> dict[str, Any]:
        """JSON form, as the round record carries it."""
        return {
            "time": self.time,
            "model": self.model,
            "epsilon": self.epsilon,
            "grants": {d: list(c) for d, c in sorted(self.grants.items())},
        }

    @classmethod
    def from_predicate(cls, p: Mapping[str, Any]) -> Admission:
        """Parse a round record's ``consent`` field."""
        if set(p) != {"time", "model", "epsilon", "grants"}:
            raise InvalidInputError("round consent must have exactly time model epsilon grants")
        t = p["time"]
        if not isinstance(t, int) or isinstance(t, bool) or t < 0:
            raise InvalidInputError("round consent time must be a non-negative integer")
        parse_digest(p["model"])
        eps = p["epsilon"]
        if eps is not None and (
            not isinstance(eps, int | float)
            or isinstance(eps, bool)
            or not math.isfinite(eps)
            or eps < 0
        ):
            raise InvalidInputError("round consent epsilon must be a non-negative number or null")
        grants = p["grants"]
        if not isinstance(grants, dict) or not grants:
            raise InvalidInputError("round consent grants must be a non-empty object")
        out: dict[str, tuple[str, ...]] = {}
        for did, chain in grants.items():
            public_bytes_from_did(did)
            if not isinstance(chain, list) or not chain:
                raise InvalidInputError("round consent: each chain is a non-empty list")
            for d in chain:
                parse_digest(d)
            out[did] = tuple(chain)
        return cls(t, p["model"], None if eps is None else float(eps), out)


def _check_budget(
    participant: str,
    grants: Sequence[Grant],
    digests: Sequence[str],
    spent: Mapping[str, tuple[int, float]],
    epsilon: float | None,
) -> None:
    """One more use at `epsilon` fits every grant of the chain, or raise `ConsentError`."""
    for g, d in zip(grants, digests, strict=True):
        uses, eps = spent.get(d, (0, 0.0))
        if g.max_uses is not None and uses + 1 > g.max_uses:
            raise ConsentError(
                f"grant {d[:19]}… has no use left ({uses} of {g.max_uses})",
                participant=participant,
                step="6 uses",
            )
        capped = g.eps_per_use is not None or g.eps_total is not None
        if capped and epsilon is None:
            raise ConsentError(
                f"grant {d[:19]}… caps ε and the round adds no DP noise (ε unbounded)",
                participant=participant,
                step="6 budget",
            )
        if epsilon is None:
            continue
        if g.eps_per_use is not None and epsilon > g.eps_per_use:
            raise ConsentError(
                f"the round's ε {epsilon:.4g} is over grant {d[:19]}…'s per-use cap "
                f"{g.eps_per_use:g}",
                participant=participant,
                step="6 budget",
            )
        if g.eps_total is not None and eps + epsilon > g.eps_total + 1e-12:
            raise ConsentError(
                f"grant {d[:19]}…'s ε budget is exhausted: {eps:.4g} spent of "
                f"{g.eps_total:g}, the round asks {epsilon:.4g}",
                participant=participant,
                step="6 budget",
            )


@dataclass
class _LogState:
    """What the gate has read of the log: revocations and the spend of every grant."""

    view: RevocationView
    spent: dict[str, dict[str, tuple[int, float]]] = field(default_factory=dict)
    """Grant digest -> signer of the usage records -> (uses, ε)."""
    jobs: set[str] = field(default_factory=set)

    def read(self, log: Any) -> None:
        from edgetrust.data.records import read_usage

        size = int(log.size())
        start = self.view.size
        for page in range(start, size, 4096):
            entries = log.entries(page, min(4096, size - page))
            for raw in entries:
                try:
                    rec, signer = read_usage(raw)
                except Error:  # another kind of entry
                    continue
                if rec.job in self.jobs:
                    continue
                self.jobs.add(rec.job)
                for d in rec.chain:
                    n, e = self.spent.setdefault(d, {}).get(signer, (0, 0.0))
                    self.spent[d][signer] = (n + 1, e + rec.epsilon)
            self.view.observe(self.view.size, entries, size=page + len(entries))
        self.view.size = size
        self.view.observed_at = time.time()

    def used(self, digest: str, signers: set[str]) -> tuple[int, float]:
        """Uses and ε of a grant in usage records signed by `signers` (not a stranger's)."""
        n, e = 0, 0.0
        for signer, (n1, e1) in self.spent.get(digest, {}).items():
            if signer in signers:
                n, e = n + n1, e + e1
        return n, e


class TrainConsent:
    """The coordinator's consent gate: pass as ``Coordinator(consent=TrainConsent(...))``.

    `chains` maps each device's DID to the grant chain (root first) it gave the coordinator.
    The gate reads `log` (the one the coordinator appends to, where revocations and usage
    records are) before every admission, so its revocation view is as fresh as the log.
    """

    def __init__(self, log: Any, chains: Mapping[str, Sequence[Envelope]]) -> None:
        self.log = log
        self.chains = {did: tuple(c) for did, c in chains.items()}
        self._state = _LogState(RevocationView(max_age=math.inf))
        self._pending: dict[str, tuple[int, float]] = {}
        self._lock = threading.Lock()

    def admit(self, coordinator: Any, participants: Sequence[str]) -> Admission:
        """Check every participant's consent for the coordinator's next round.

        Steps per participant: (1) it gave the coordinator a chain; (2) `verify_chain`: issued
        by the participant, for the coordinator, ``train`` on the session's first model,
        valid now, unrevoked in the log; (3) one more use and the round's ε fit every grant
        of the chain, counting the uses already logged and rounds admitted but not recorded.
        Then the chains are logged. Nothing is logged if any participant is refused.

        Raises:
            ConsentError: names the first participant refused and the step.
        """
        spec = coordinator.spec
        epsilon = coordinator.accountant.round_epsilon() if spec.dp.enabled else None
        model = str(coordinator.base_model)
        requester = str(coordinator.identity.did)
        now = int(time.time())
        with self._lock:
            self._state.read(self.log)
            admitted: dict[str, tuple[str, ...]] = {}
            for did in sorted(participants):
                chain = self.chains.get(did)
                # 1. a chain
                if not chain:
                    raise ConsentError(
                        "holds no train grant for this coordinator",
                        participant=did,
                        step="1 consent",
                    )
                # 2. the chain authorizes this round
                try:
                    verified = verify_chain(
                        chain,
                        owner=did,
                        dataset=read_grant(chain[0]).sub,
                        requester=requester,
                        action="train",
                        algorithm=model,
                        revocations=self._state.view,
                        now=now,
                    )
                except GrantError as exc:
                    raise ConsentError(exc.message, participant=did, step=exc.step) from exc
                except Error as exc:
                    raise ConsentError(exc.message, participant=did, step="1 grants") from exc
                # 3. uses and budget: the owner's jobs and our rounds, logged or admitted
                spent = {}
                for d in verified.digests:
                    n, e = self._state.used(d, {did, requester})
                    n1, e1 = self._pending.get(d, (0, 0.0))
                    spent[d] = (n + n1, e + e1)
                _check_budget(did, verified.grants, verified.digests, spent, epsilon)
                admitted[did] = verified.digests
            for did in admitted:
                for env in self.chains[did]:
                    self.log.append(env.to_json())
            for chain_digests in admitted.values():
                for d in chain_digests:
                    n, e = self._pending.get(d, (0, 0.0))
                    self._pending[d] = (n + 1, e + (epsilon or 0.0))
        return Admission(now, model, epsilon, admitted)

    def record_round(
        self, coordinator: Any, plan: Any, record: Any, record_index: int
    ) -> list[int]:
        """Log one usage record per survivor of a completed round; return their log indices.

        The record is signed by the coordinator, the party that used the data: it cites the
        device's whole chain, the round config (job id), the round's ε and the new model
        (result). Signatures are deterministic, so logging a record twice is one entry.
        """
        admission: Admission = plan.consent
        indices = []
        for did in record.survivors:
            chain = admission.grants[did]
            rec = UsageRecord(
                job=train_job_id(record.config, did),
                dataset=read_grant(self.chains[did][0]).sub,
                grant=chain[-1],
                chain=chain,
                requester=coordinator.identity.did,
                action="train",
                algorithm=admission.model,
                epsilon=admission.epsilon or 0.0,
                result=record.output_model,
                receipt=None,
                time=admission.time,
            )
            payload = encode_statement(
                [Subject("result", digest_hex(rec.result))],
                USAGE_PREDICATE_TYPE,
                rec.to_predicate(),
            )
            env = sign_envelope(payload, IN_TOTO_PAYLOAD_TYPE, coordinator.identity)
            indices.append(self.log.append(env.to_json()))
        with self._lock:
            for chain in admission.grants.values():
                for d in chain:
                    if d not in self._pending:  # admitted by another gate
                        continue
                    n, e = self._pending[d]
                    n, e = n - 1, e - (admission.epsilon or 0.0)
                    if n <= 0:
                        self._pending.pop(d)
                    else:
                        self._pending[d] = (n, e)
        return indices


# -- audit ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConsentRound:
    """One consented round the audit passed."""

    session: str
    round: int
    index: int
    """Log index of the round record."""
    epsilon: float | None
    grants: Mapping[str, tuple[str, ...]]
    """Participant -> chain digests (root first)."""
    uses: int
    """Usage records found for it (one per survivor)."""


@dataclass(frozen=True)
class ConsentAudit:
    """Every consented round of a log, in log order."""

    log_size: int
    rounds: tuple[ConsentRound, ...]
    unconsented: int
    """Round records that carry no consent (rounds run without a gate)."""


@dataclass
class _Seen:
    grants: dict[str, Envelope] = field(default_factory=dict)
    revocations: dict[str, list[tuple[int, str]]] = field(default_factory=dict)
    """Grant digest -> (log index, issuer) of each revocation."""
    configs: dict[str, tuple[int, Any]] = field(default_factory=dict)
    usage: list[tuple[int, UsageRecord, str]] = field(default_factory=list)
    base: dict[str, str] = field(default_factory=dict)
    """Session -> its first round's input model."""


def _spent_before(
    seen: _Seen, index: int, digest: str, signers: set[str]
) -> tuple[int, float, set[str]]:
    jobs: set[str] = set()
    n, eps = 0, 0.0
    for i, rec, signer in seen.usage:
        if i < index and digest in rec.chain and signer in signers and rec.job not in jobs:
            jobs.add(rec.job)
            n, eps = n + 1, eps + rec.epsilon
    return n, eps, jobs


def _audit_round(seen: _Seen, index: int, statement: Any, signer: str) -> ConsentRound:
    from edgetrust.collab.rounds import RoundRecord

    rec = RoundRecord.from_predicate(statement.predicate)
    where = f"round {rec.round} of session {rec.session[:8]}"
    adm = Admission.from_predicate(rec.consent or {})
    if rec.config not in seen.configs:
        raise GrantError(f"{where}: its config is not in the log", step="2 chain")
    config_index, cfg = seen.configs[rec.config]
    base = seen.base.setdefault(rec.session, cfg.input_model)
    if adm.model != base:
        raise GrantError(f"{where}: consent names another model than the session's", step="4 use")
    empty = RevocationView(max_age=math.inf, observed_at=adm.time)
    for did in cfg.participants:
        digests = adm.grants.get(did)
        if digests is None:
            raise ConsentError(f"{where}: no grant cited", participant=did, step="1 consent")
        envs = []
        for d in digests:
            env = seen.grants.get(d)
            if env is None:
                raise ConsentError(
                    f"{where}: grant {d[:19]}… is not in the log before the round",
                    participant=did,
                    step="1 consent",
                )
            envs.append(env)
        try:
            chain = verify_chain(
                envs,
                owner=did,
                dataset=read_grant(envs[0]).sub,
                requester=signer,
                action="train",
                algorithm=base,
                revocations=empty,
                now=adm.time,
            )
        except GrantError as exc:
            raise ConsentError(f"{where}: {exc.message}", participant=did, step=exc.step) from exc
        # Revoked before the round's config was logged, by the grant's issuer or one above it.
        issuers: set[str] = set()
        for g, d in zip(chain.grants, chain.digests, strict=True):
            issuers.add(g.iss)
            for i, by in seen.revocations.get(d, []):
                if i < config_index and by in issuers:
                    raise ConsentError(
                        f"{where}: grant {d[:19]}… was revoked at log index {i}, before the round",
                        participant=did,
                        step="5 revocation",
                    )
        # Budget: uses logged before the config, by the owner (jobs) or this coordinator.
        spent = {}
        for d in chain.digests:
            n, e, _ = _spent_before(seen, config_index, d, {chain.grants[0].iss, signer})
            spent[d] = (n, e)
        try:
            _check_budget(did, chain.grants, chain.digests, spent, adm.epsilon)
        except ConsentError as exc:
            raise ConsentError(
                f"{where}: {exc.message.split(': ', 1)[1]}", participant=did, step=exc.step
            ) from exc
    if adm.epsilon is not None and cfg.noise_multiplier > 0:
        from edgetrust.collab.dp import epsilon_after

        want = epsilon_after(
            1,
            noise_multiplier=cfg.noise_multiplier,
            sampling_rate=cfg.sampling_rate,
            delta=cfg.delta,
        )
        if not math.isclose(adm.epsilon, want, rel_tol=1e-6):
            raise GrantError(
                f"{where}: consent ε {adm.epsilon:.6g} is not one round's {want:.6g}",
                step="6 budget",
            )
    elif adm.epsilon is None and cfg.noise_multiplier > 0:
        raise GrantError(f"{where}: consent records no ε for a noised round", step="6 budget")
    return ConsentRound(rec.session, rec.round, index, adm.epsilon, dict(adm.grants), 0)


def audit_consent(log: Any, *, session: str | None = None) -> ConsentAudit:
    """Check every consented federated round in `log`, from the log alone.

    Per round, per participant: (1) the record cites a chain and its grants are logged
    before the record; (2-4) the chain verifies (issued by the participant, for the round's
    coordinator, ``train`` on the session's first model, its window holding the admission
    time); (5) no grant of it was revoked (by its issuer or one above) before the round's
    config; (6) one more use and the round's ε fit each grant, counting the usage records
    logged before the config; and after the round, exactly one usage record per survivor.

    Raises:
        ConsentError: names the participant whose consent is missing or insufficient.
        GrantError: the round's consent field is inconsistent with its config.
    """
    from edgetrust.collab.rounds import RoundConfig

    seen = _Seen()
    rounds: list[ConsentRound] = []
    unconsented = 0
    size = int(log.size())
    for page in range(0, size, 4096):
        for index, raw in enumerate(log.entries(page, min(4096, size - page)), page):
            try:
                envelope = parse_envelope(raw)
                signed = open_signed_statement(envelope)
            except Error:
                continue
            kind, pred = signed.statement.predicate_type, signed.statement.predicate
            if kind == GRANT_PREDICATE_TYPE:
                seen.grants[grant_digest(envelope)] = envelope
            elif kind == REVOCATION_PREDICATE_TYPE:
                rev = Revocation.from_predicate(pred)
                seen.revocations.setdefault(rev.grant, []).append((index, rev.issuer))
            elif kind == USAGE_PREDICATE_TYPE:
                seen.usage.append((index, UsageRecord.from_predicate(pred), signed.signer))
            elif kind == _CONFIG_TYPE:
                seen.configs[digest_hex(digest_bytes(raw))] = (
                    index,
                    RoundConfig.from_predicate(pred),
                )
            elif kind == _ROUND_TYPE:
                if session is not None and pred.get("session") != session:
                    continue
                if "consent" not in pred:
                    unconsented += 1
                    continue
                rounds.append(_audit_round(seen, index, signed.statement, signed.signer))
    # After the rounds: one usage record per survivor, signed by the round's coordinator.
    out = []
    for r in rounds:
        signed = open_signed_statement(log.entry(r.index))
        survivors = signed.statement.predicate["survivors"]
        config = signed.statement.predicate["config"]["sha256"]
        for did in survivors:
            job = train_job_id(config, did)
            found = {
                rec.job
                for i, rec, by in seen.usage
                if i > r.index and rec.job == job and by == signed.signer
            }
            if not found:
                raise ConsentError(
                    f"round {r.round} of session {r.session[:8]}: no usage record of its use",
                    participant=did,
                    step="7 usage",
                )
        out.append(ConsentRound(r.session, r.round, r.index, r.epsilon, r.grants, len(survivors)))
    return ConsentAudit(size, tuple(out), unconsented)


def run_round(coordinator: Any, workers: Mapping[str, Any], *, seed: int = 0) -> Any:
    """One federated round among `workers` (DID -> `ClientWorker`), every one surviving.

    The in-process counterpart of `collab.local.simulate` for sessions whose devices and
    data the caller holds (each device's own records, under its own grant). With a consent
    gate on the coordinator, a refused participant stops the round before anything is logged.
    """
    from edgetrust.collab.local import _plain_round, run_secagg_round
    from edgetrust.collab.secagg import SecAggClient, SecAggServer

    started = time.perf_counter()
    plan = coordinator.plan_round(sorted(workers))
    vectors = {}
    for k, (did, worker) in enumerate(sorted(workers.items())):
        config, _ = worker.open_config(plan.envelope.to_json())
        vectors[did] = worker.compute_update(
            config, plan.model_bytes, seed=seed * 1009 + plan.config.round * 31 + k
        )
    if plan.secagg is not None:
        server = SecAggServer(config=plan.secagg)
        clients = {
            d: SecAggClient(config=plan.secagg, identity=w.identity) for d, w in workers.items()
        }
        result = run_secagg_round(server, clients, vectors)
        return coordinator.complete_round(
            plan, inputs=result.commitments, total=result.total, started=started
        )
    inputs = _plain_round(plan, workers, vectors, {})
    return coordinator.complete_round(plan, inputs=inputs, started=started)
