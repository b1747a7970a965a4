"""Compute-to-data: signed job requests, the owner's job runner, and usage records.

A job is a DSSE in-toto statement (`https://edgetrust.dev/job/v1`) signed by the requester:
the dataset, the action (``stats``, ``infer`` or ``train``), the algorithm (a statistic name,
or the digest of an ONNX model), parameters, the digest of the grant it is run under and a nonce.
The job's id is the digest of its signed bytes; sending the same job again is a replay and gets
the stored answer, not a second use. `DataOwner.run_job` runs one in numbered steps and answers
with the result only, a usage record (`https://edgetrust.dev/usage/v1`, signed by the owner and
logged) and, for ``infer``, the fixed-point inference receipt, so the requester can dispute it.

Guards against an algorithm that copies its inputs out: ``stats`` results are DP-noised and
refuse groups smaller than k; an ``infer`` job's outputs must have the shapes the model card
declares and at most `DataOwner.max_output_ratio` times the input's bytes. What a grant
cannot stop (a model allowed by the grant that memorizes) is said in docs/data.md.
"""

from __future__ import annotations

import base64
import binascii
import math
import os
import secrets
import signal
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgetrust.data.dataset import DatasetCard
from edgetrust.data.grant import (
    ACTIONS,
    GrantError,
    RevocationView,
    VerifiedChain,
    grant_digest,
    parse_chain,
    read_revocation,
    revoke,
    verify_chain,
)
from edgetrust.data.ledger import BudgetExhaustedError, JobLedger
from edgetrust.data.stats import StatsQuery, run_stats
from edgetrust.data.store import DataStore
from edgetrust.data.train import TrainQuery, run_train
from edgetrust.dsse import Envelope, envelope_from_dict, parse_envelope, sign_envelope
from edgetrust.encoding import canonical_json, digest_bytes, digest_hex, parse_digest, parse_json
from edgetrust.errors import InvalidInputError, NotFoundError, ResourceLimitError, UnsupportedError
from edgetrust.home import resolve_home
from edgetrust.identity import Identity, Keystore, public_bytes_from_did
from edgetrust.statement import (
    IN_TOTO_PAYLOAD_TYPE,
    Statement,
    Subject,
    encode_statement,
    open_signed_statement,
    register_predicate_type,
)

__all__ = [
    "JOB_PREDICATE_TYPE",
    "MAX_JOB_BYTES",
    "USAGE_PREDICATE_TYPE",
    "DataOwner",
    "Job",
    "UsageRecord",
    "make_job",
    "parse_job_request",
    "read_usage",
    "usage_from_entries",
]

JOB_PREDICATE_TYPE = "https://edgetrust.dev/job/v1"
USAGE_PREDICATE_TYPE = "https://edgetrust.dev/usage/v1"
MAX_JOB_BYTES = 16 * 2**20
"""Largest job request (with its grants and an optional model upload), 16 MiB."""
_PAGE = 4096
FAULT_ENV = "EDGETRUST_DATA_FAULT"
"""Test hook: ``after-run`` or ``after-record`` makes the runner SIGKILL itself there."""


@dataclass(frozen=True)
class Job:
    """What a requester asks an owner to run."""

    requester: str
    dataset: str
    action: str
    algorithm: str
    """A statistic name for ``stats``; the model digest for ``infer`` and ``train``."""
    params: Mapping[str, Any]
    grant: str
    """Digest of the leaf grant of the chain the job runs under."""
    nonce: str
    time: int

    def to_predicate(self) -> dict[str, Any]:
        """The `https://edgetrust.dev/job/v1` predicate."""
        return {
            "requester": self.requester,
            "dataset": self.dataset,
            "action": self.action,
            "algorithm": self.algorithm,
            "params": dict(self.params),
            "grant": self.grant,
            "nonce": self.nonce,
            "time": self.time,
        }

    @classmethod
    def from_predicate(cls, pred: Mapping[str, Any]) -> Job:
        """Parse a job predicate."""
        keys = {"requester", "dataset", "action", "algorithm", "params", "grant", "nonce", "time"}
        if set(pred) != keys:
            raise InvalidInputError(f"a job has exactly {sorted(keys)}")
        public_bytes_from_did(pred["requester"])
        parse_digest(pred["dataset"])
        parse_digest(pred["grant"])
        if pred["action"] not in ACTIONS:
            raise InvalidInputError(f"job action must be one of {ACTIONS}")
        alg = pred["algorithm"]
        if not isinstance(alg, str) or not 0 < len(alg) <= 80:
            raise InvalidInputError("job algorithm must be a name or digest")
        if not isinstance(pred["params"], dict):
            raise InvalidInputError("job params must be an object")
        if not isinstance(pred["nonce"], str) or not 0 < len(pred["nonce"]) <= 64:
            raise InvalidInputError("job nonce must be 1-64 characters")
        t = pred["time"]
        if not isinstance(t, int) or isinstance(t, bool) or t < 0:
            raise InvalidInputError("job time must be a non-negative integer")
        return cls(
            pred["requester"],
            pred["dataset"],
            pred["action"],
            alg,
            pred["params"],
            pred["grant"],
            pred["nonce"],
            t,
        )


def _validate_job(statement: Statement, signer: str) -> None:
    job = Job.from_predicate(statement.predicate)
    if signer != job.requester:
        raise InvalidInputError("a job must be signed by its requester")


@dataclass(frozen=True)
class UsageRecord:
    """One use of a dataset, as the owner logs it."""

    job: str
    """The job's id (digest of its signed statement)."""
    dataset: str
    grant: str
    """The leaf grant the job ran under."""
    chain: tuple[str, ...]
    """Every grant of the chain, root first: the use counts against each."""
    requester: str
    action: str
    algorithm: str
    epsilon: float
    """Differential-privacy ε this use spent (0 for ``infer``)."""
    result: str
    """Digest of the canonical JSON result released."""
    receipt: str | None
    """Digest of the inference receipt envelope, for ``infer``."""
    time: int

    def to_predicate(self) -> dict[str, Any]:
        """The `https://edgetrust.dev/usage/v1` predicate."""
        return {
            "job": self.job,
            "dataset": self.dataset,
            "grant": self.grant,
            "chain": list(self.chain),
            "requester": self.requester,
            "action": self.action,
            "algorithm": self.algorithm,
            "epsilon": self.epsilon,
            "result": self.result,
            "receipt": self.receipt,
            "time": self.time,
        }

    @classmethod
    def from_predicate(cls, pred: Mapping[str, Any]) -> UsageRecord:
        """Parse a usage predicate."""
        try:
            for k in ("job", "dataset", "grant", "result"):
                parse_digest(pred[k])
            chain = pred["chain"]
            if not isinstance(chain, list) or not chain:
                raise InvalidInputError("usage chain must be a non-empty list")
            for d in chain:
                parse_digest(d)
            if pred["receipt"] is not None:
                parse_digest(pred["receipt"])
            public_bytes_from_did(pred["requester"])
            eps = pred["epsilon"]
            if not isinstance(eps, int | float) or isinstance(eps, bool) or eps < 0:
                raise InvalidInputError("usage epsilon must be a non-negative number")
            return cls(
                pred["job"],
                pred["dataset"],
                pred["grant"],
                tuple(chain),
                pred["requester"],
                str(pred["action"]),
                str(pred["algorithm"]),
                float(eps),
                pred["result"],
                pred["receipt"],
                int(pred["time"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidInputError(f"malformed usage record: {exc}") from exc


def _validate_usage(statement: Statement, signer: str) -> None:
    UsageRecord.from_predicate(statement.predicate)


register_predicate_type(JOB_PREDICATE_TYPE, _validate_job)
register_predicate_type(USAGE_PREDICATE_TYPE, _validate_usage)


def read_usage(data: bytes | Envelope) -> tuple[UsageRecord, str]:
    """Open a signed usage record: the record and the owner DID that signed it."""
    signed = open_signed_statement(data)
    if signed.statement.predicate_type != USAGE_PREDICATE_TYPE:
        raise InvalidInputError(f"not a usage record: {signed.statement.predicate_type:.80}")
    return UsageRecord.from_predicate(signed.statement.predicate), signed.signer


def usage_from_entries(
    entries: Sequence[bytes], *, start: int = 0
) -> list[tuple[int, UsageRecord, str]]:
    """Every usage record among log entries: (index, record, signer), in log order."""
    out = []
    for i, raw in enumerate(entries, start):
        try:
            rec, signer = read_usage(raw)
        except Exception:  # other entry types are not usage records
            continue
        out.append((i, rec, signer))
    return out


def make_job(
    requester: Identity,
    chain: Sequence[Envelope],
    *,
    action: str,
    algorithm: str,
    params: Mapping[str, Any] | None = None,
    model: bytes | None = None,
    nonce: str | None = None,
) -> dict[str, Any]:
    """A signed job request body for ``POST /v1/jobs`` under the grant `chain` (root first)."""
    if not chain:
        raise InvalidInputError("a job needs a grant chain")
    from edgetrust.data.grant import read_grant

    leaf = read_grant(chain[-1])
    job = Job(
        requester.did,
        leaf.sub,
        action,
        algorithm,
        dict(params or {}),
        grant_digest(chain[-1]),
        nonce or secrets.token_hex(12),
        int(time.time()),
    )
    payload = encode_statement(
        [Subject("dataset", digest_hex(job.dataset))], JOB_PREDICATE_TYPE, job.to_predicate()
    )
    body: dict[str, Any] = {
        "job": sign_envelope(payload, IN_TOTO_PAYLOAD_TYPE, requester).to_dict(),
        "grants": [e.to_dict() for e in chain],
    }
    if model is not None:
        body["model"] = base64.b64encode(model).decode("ascii")
    return body


@dataclass(frozen=True)
class JobRequest:
    """A parsed, signature-checked job request."""

    envelope: Envelope
    job: Job
    job_id: str
    chain: tuple[Envelope, ...]
    model: bytes | None


def parse_job_request(
    data: bytes | Mapping[str, Any], *, max_bytes: int = MAX_JOB_BYTES
) -> JobRequest:
    """Parse an untrusted ``POST /v1/jobs`` body and check the job's signature."""
    obj = (
        data
        if isinstance(data, Mapping)
        else parse_json(data, what="job request", max_bytes=max_bytes)
    )
    if not isinstance(obj, Mapping) or not {"job", "grants"} <= set(obj) <= {
        "job",
        "grants",
        "model",
    }:
        raise InvalidInputError("a job request is {job, grants[, model]}")
    env = envelope_from_dict(obj["job"])
    signed = open_signed_statement(env)
    if signed.statement.predicate_type != JOB_PREDICATE_TYPE:
        raise InvalidInputError(f"not a job: {signed.statement.predicate_type:.80}")
    job = Job.from_predicate(signed.statement.predicate)
    chain = parse_chain(obj["grants"])
    model = None
    if obj.get("model") is not None:
        if not isinstance(obj["model"], str):
            raise InvalidInputError("job model must be base64 text")
        try:
            model = base64.b64decode(obj["model"], validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InvalidInputError("job model is not valid base64") from exc
    return JobRequest(env, job, digest_bytes(env.payload), chain, model)


def _fault(point: str) -> None:
    if os.environ.get(FAULT_ENV) == point:
        os.kill(os.getpid(), signal.SIGKILL)


class DataOwner:
    """An owner's side of the protocol: datasets, grants, revocations and the job runner.

    Holds the owner's identity, `DataStore`, embedded log, `JobLedger` and `RevocationView`.
    Thread-safe: jobs may run concurrently (the ledger serializes what they spend).
    """

    def __init__(
        self,
        home: str | os.PathLike[str] | None = None,
        *,
        identity: str = "default",
        max_age: float = 300.0,
        max_output_ratio: float = 0.25,
        max_records: int = 1_000_000,
        log: Any = None,
    ) -> None:
        from edgetrust.log.service import Log

        self.home: Path = resolve_home(home)
        self.identity: Identity = Keystore(self.home).load_or_create(identity)
        self.store = DataStore(self.home)
        self._own_log = log is None
        self.log: Log = log if log is not None else Log.open(self.home)
        self.ledger = JobLedger(self.home / "data" / "ledger.db")
        self.revocations = RevocationView(max_age=max_age)
        self.max_output_ratio = max_output_ratio
        """An ``infer`` job's outputs may be at most this many times its input's bytes."""
        self.max_records = max_records
        self._device: Any = None
        self._tables: dict[str, Any] = {}
        self._cards: dict[str, DatasetCard] = {}
        self._external: dict[str, tuple[int, float]] = {}
        """Uses and ε of this owner's grants spent outside its jobs: FL rounds (``train``)."""
        self._external_jobs: set[str] = set()
        self._observe_lock = threading.Lock()
        self.recovered = self.ledger.recover(self.log.append)
        """(reservations dropped, records logged) by the crash recovery at start."""

    def close(self) -> None:
        """Close the ledger and (if this owner opened it) the log."""
        self.ledger.close()
        if self._device is not None:
            self._device.close()
        if self._own_log:
            self.log.close()

    def __enter__(self) -> DataOwner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- datasets, grants, revocations ---------------------------------------------------------

    def add_dataset(self, path: str | os.PathLike[str], **kw: Any) -> tuple[DatasetCard, int]:
        """Store a dataset file, sign its card and log it; returns the card and log index."""
        card, env = self.store.add_file(path, owner=self.identity, **kw)
        return card, self.log.append(env.to_json())

    def revoke(self, grant: Envelope, *, reason: str = "") -> int:
        """Log a revocation of `grant` by this owner; returns the log index."""
        index = self.log.append(revoke(grant, self.identity, reason=reason).to_json())
        self._observe()
        return index

    # -- jobs ------------------------------------------------------------------------------------

    def run_job(self, data: bytes | Mapping[str, Any]) -> dict[str, Any]:
        """Check and run one job; return the answer (result, usage record, receipt).

        Steps: (1) the request parses and the job is signed by its requester; (2) a job already
        answered is answered again from the ledger (a replay spends nothing); (3) the dataset
        is this owner's; (4) the grant chain authorizes the requester, action and algorithm
        now, and no grant in it is revoked (`verify_chain`, fresh revocation view); (5) one use
        and the job's ε are reserved against every grant of the chain; (6) the algorithm runs
        on the owner's records, its output is bounded; (7) result and usage record are stored,
        (8) the record is logged, and only then (9) the result is released.

        Raises:
            GrantError: the grants do not authorize the job, or no use or ε is left.
            InvalidInputError: a malformed job or parameters, a group below k.
            ResourceLimitError: the output is over its bound.
        """
        # 1. parse, signature
        req = parse_job_request(data)
        job = req.job
        # 2. a replay gets the stored answer
        done = self.ledger.get(req.job_id)
        if done is not None and done.state != "reserved" and done.response is not None:
            if done.state == "recorded" and done.usage is not None:
                self.ledger.logged(req.job_id, self.log.append(done.usage))
            return done.response
        # 3. our dataset
        try:
            card = self._card(job.dataset)
        except NotFoundError as exc:
            raise NotFoundError("this owner holds no such dataset") from exc
        if card.owner != self.identity.did:
            raise GrantError("the dataset is not this owner's", step="2 chain")
        if req.chain and grant_digest(req.chain[-1]) != job.grant:
            raise GrantError("the job names another grant than the chain's leaf", step="4 use")
        # 4. grants, revocation
        self._observe()
        chain = verify_chain(
            req.chain,
            owner=card.owner,
            dataset=card.digest,
            requester=job.requester,
            action=job.action,
            algorithm=job.algorithm,
            revocations=self.revocations,
        )
        # Parameters are checked before anything is reserved.
        query = StatsQuery.parse(job.algorithm, job.params) if job.action == "stats" else None
        training = TrainQuery.parse(job.params) if job.action == "train" else None
        epsilon = query.epsilon if query is not None else 0.0
        if training is not None:
            epsilon = _train_epsilon(training, chain)
        # 5. reserve
        created = int(time.time())
        self.ledger.reserve(
            job=req.job_id,
            chain=list(zip(chain.digests, chain.grants, strict=True)),
            dataset=card.digest,
            requester=job.requester,
            action=job.action,
            algorithm=job.algorithm,
            epsilon=epsilon,
            created=created,
            extra=self._external,
        )
        try:
            # 6. run
            if query is not None:
                result = run_stats(
                    self._table(card.digest),
                    query,
                    k=chain.leaf.min_group,
                    rng=np.random.default_rng(secrets.randbits(128)),
                )
                receipt = None
            elif training is not None:
                result, receipt = self._train(card, job, req.model, training), None
            else:
                result, receipt = self._infer(card, job, req.model)
            _fault("after-run")
            result_digest = digest_bytes(canonical_json(result))
            usage = self._usage(req.job_id, job, chain, epsilon, result_digest, receipt, created)
            response = {
                "job": req.job_id,
                "result": result,
                "usage": usage.to_dict(),
                "receipt": receipt,
            }
            # 7. record
            self.ledger.record(req.job_id, response, usage.to_json())
        except BaseException:
            self.ledger.release(req.job_id)
            raise
        _fault("after-record")
        # 8. log
        index = self.log.append(usage.to_json())
        self.ledger.logged(req.job_id, index)
        # 9. release
        return response

    def _usage(
        self,
        job_id: str,
        job: Job,
        chain: VerifiedChain,
        epsilon: float,
        result: str,
        receipt: dict[str, Any] | None,
        created: int,
    ) -> Envelope:
        rec = UsageRecord(
            job_id,
            job.dataset,
            chain.digests[-1],
            chain.digests,
            job.requester,
            job.action,
            job.algorithm,
            epsilon,
            result,
            None if receipt is None else digest_bytes(canonical_json(receipt["envelope"])),
            created,
        )
        payload = encode_statement(
            [Subject("result", digest_hex(result))], USAGE_PREDICATE_TYPE, rec.to_predicate()
        )
        return sign_envelope(payload, IN_TOTO_PAYLOAD_TYPE, self.identity)

    def _model(self, job: Job, model: bytes | None) -> tuple[Any, bytes]:
        """The job's model (uploaded with it, or registered here), checked against its digest."""
        from edgetrust.device import Device

        if self._device is None:
            self._device = Device(self.home, identity=self.identity.name)
        parse_digest(job.algorithm)
        if model is not None:
            if digest_bytes(model) != job.algorithm:
                raise InvalidInputError("the uploaded model does not match the job's algorithm")
            self._device.registry.add_bytes(model, publisher=self.identity)
        card, data = self._device.model(job.algorithm)
        return card, data

    def _train(
        self, card: DatasetCard, job: Job, model: bytes | None, query: TrainQuery
    ) -> dict[str, Any]:
        mcard, data = self._model(job, model)
        return run_train(
            self._table(card.digest),
            data,
            mcard.digest,
            query,
            max_output_ratio=self.max_output_ratio,
            rng=np.random.default_rng(secrets.randbits(128)),
        )

    def _infer(
        self, card: DatasetCard, job: Job, model: bytes | None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        from edgetrust.device import LocalLogWriter

        mcard, _ = self._model(job, model)
        device = self._device
        if set(job.params) - {"column"}:
            raise InvalidInputError("infer params are {column}")
        column = job.params.get("column", "x")
        table = self._table(card.digest)
        if not isinstance(column, str) or column not in table:
            raise InvalidInputError(f"the dataset has no column {column!r:.40}")
        if len(mcard.inputs) != 1:
            raise UnsupportedError("infer jobs run models with exactly one input")
        spec = mcard.inputs[0]
        x = table[column]
        if len(x) > self.max_records:
            raise ResourceLimitError(
                f"{len(x)} records, over {self.max_records}", limit=self.max_records
            )
        try:
            x = x.astype(np.dtype(spec.dtype))
        except TypeError as exc:
            raise UnsupportedError(f"model input dtype {spec.dtype} is not numeric") from exc
        run = device.infer(
            mcard.digest,
            {spec.name: x},
            executor="fixed",
            log=LocalLogWriter(self.log),
        )
        out_bytes = 0
        outputs: dict[str, Any] = {}
        for ospec in mcard.outputs:
            y = np.asarray(run.outputs[ospec.name])
            if ospec.shape is not None and (
                len(ospec.shape) != y.ndim
                or any(
                    isinstance(d, int) and d != s for d, s in zip(ospec.shape, y.shape, strict=True)
                )
            ):
                raise InvalidInputError(f"output {ospec.name} has shape {y.shape}, not the card's")
            out_bytes += y.nbytes
            outputs[ospec.name] = {
                "dtype": y.dtype.name,
                "shape": list(y.shape),
                "values": y.reshape(-1).tolist(),
            }
        if out_bytes > self.max_output_ratio * x.nbytes:
            raise ResourceLimitError(
                f"outputs are {out_bytes} bytes, over {self.max_output_ratio:g}× the input's "
                f"{x.nbytes}",
                limit=int(self.max_output_ratio * x.nbytes),
            )
        return {"model": mcard.digest, "outputs": outputs}, run.bundle.to_dict()

    def _observe(self) -> None:
        """Read the log's new entries once: revocations, and ``train`` uses of our grants.

        A federated round's usage records are signed by its coordinator (the party that used
        the data), not by this owner, so the job ledger would not see them; they count
        against the same grants' uses and ε, and are added to what the ledger reserves.
        """
        with self._observe_lock:
            self._observe_locked()

    def _observe_locked(self) -> None:
        from edgetrust.statement import parse_statement

        start, size = self.revocations.size, self.log.size()
        new: list[bytes] = []
        for page in range(start, size, _PAGE):
            new += self.log.entries(page, min(_PAGE, size - page))
        self.revocations.observe(start, new, size=size)
        for raw in new:
            try:  # cheap structural look first; only train usage records pay a verification
                st = parse_statement(parse_envelope(raw).payload)
                if st.predicate_type != USAGE_PREDICATE_TYPE or st.predicate["action"] != "train":
                    continue
                rec, signer = read_usage(raw)
            except Exception:  # other entries, damaged entries
                continue
            if signer != rec.requester or rec.job in self._external_jobs:
                continue
            self._external_jobs.add(rec.job)
            for d in rec.chain:
                n, e = self._external.get(d, (0, 0.0))
                self._external[d] = (n + 1, e + rec.epsilon)

    def _card(self, digest: str) -> DatasetCard:
        """A dataset's card, read and signature-checked once per owner lifetime (immutable)."""
        card = self._cards.get(digest)
        if card is None:
            card = self._cards[digest] = self.store.card(digest)[0]
        return card

    def _table(self, digest: str) -> Any:
        """The records of a dataset, parsed and digest-checked once per owner lifetime.

        The store is the owner's own 0600 directory; a file changed behind a running owner is
        caught at the next start (every read re-digests).
        """
        table = self._tables.get(digest)
        if table is None:
            table = self._tables[digest] = self.store.table(digest)
        return table

    # -- usage -----------------------------------------------------------------------------------

    def usage(self, *, dataset: str | None = None) -> list[tuple[int, UsageRecord, str]]:
        """Every usage record this owner logged (from the log itself), optionally per dataset."""
        found = []
        size = self.log.size()
        for start in range(0, size, _PAGE):
            page = self.log.entries(start, min(_PAGE, size - start))
            found += usage_from_entries(page, start=start)
        return [
            u
            for u in found
            if u[2] == self.identity.did and (dataset is None or u[1].dataset == dataset)
        ]


def _train_epsilon(query: TrainQuery, chain: VerifiedChain) -> float:
    """The ε a ``train`` job spends; without noise it is unbounded, which no ε cap admits."""
    eps = query.epsilon
    if eps is not None:
        return eps
    for g, d in zip(chain.grants, chain.digests, strict=True):
        cap = g.eps_per_use if g.eps_per_use is not None else g.eps_total
        if cap is not None:
            raise BudgetExhaustedError(
                f"grant {d[:19]}… caps ε and the job adds no noise (ε unbounded)",
                spent=math.inf,
                budget=cap,
            )
    return 0.0


def revocations_in(entries: Sequence[bytes]) -> list[str]:
    """Digests of the grants revoked among `entries` (any signer)."""
    out = []
    for raw in entries:
        try:
            out.append(read_revocation(raw).grant)
        except Exception:  # not a revocation
            continue
    return out
