"""Compute-to-data: the owner's job runner.

`DataOwner.run_job` runs one signed job request (`edgetrust.data.records`: the job and usage
record formats) in numbered steps and answers with the result only, a usage record (signed
by the owner and logged) and, for ``infer``, the fixed-point inference receipt, so the
requester can dispute it. A job sent again is a replay and gets the stored answer, not a
second use.

Guards against an algorithm that copies its inputs out: ``stats`` results are DP-noised and
refuse groups smaller than k; an ``infer`` job's outputs must have the shapes the model card
declares and at most `DataOwner.max_output_ratio` times the input's bytes. What a grant
cannot stop (a model allowed by the grant that memorizes) is said in docs/data.md.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import signal
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from edgetrust.data.dataset import DatasetCard
from edgetrust.data.grant import (
    GrantError,
    RevocationView,
    VerifiedChain,
    grant_digest,
    revoke,
    verify_chain,
)
from edgetrust.data.ledger import BudgetExhaustedError, JobLedger
from edgetrust.data.records import (
    JOB_PREDICATE_TYPE,
    MAX_JOB_BYTES,
    USAGE_PREDICATE_TYPE,
    Job,
    JobRequest,
    UsageRecord,
    canonical_result,
    make_job,
    parse_job_request,
    read_usage,
    revocations_in,
    usage_from_entries,
)
from edgetrust.data.stats import StatsQuery, run_stats
from edgetrust.data.store import DataStore
from edgetrust.data.train import TrainQuery, run_train
from edgetrust.dsse import Envelope, parse_envelope, sign_envelope
from edgetrust.encoding import canonical_json, digest_bytes, digest_hex, parse_digest
from edgetrust.errors import InvalidInputError, NotFoundError, ResourceLimitError, UnsupportedError
from edgetrust.home import resolve_home
from edgetrust.identity import Identity, Keystore
from edgetrust.statement import IN_TOTO_PAYLOAD_TYPE, Subject, encode_statement

__all__ = [
    "FAULT_ENV",
    "JOB_PREDICATE_TYPE",
    "MAX_JOB_BYTES",
    "USAGE_PREDICATE_TYPE",
    "DataOwner",
    "Job",
    "JobRequest",
    "UsageRecord",
    "make_job",
    "parse_job_request",
    "read_usage",
    "revocations_in",
    "usage_from_entries",
]

_PAGE = 4096
FAULT_ENV = "EDGETRUST_DATA_FAULT"
"""Test hook: ``after-run`` or ``after-record`` makes the runner SIGKILL itself there."""


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
        """Store a dataset, sign its card and log it; returns the card and log index.

        `path` is a file (``.npy``, ``.npz``, ``.csv``, ``.jsonl``) or a directory of signed
        EDF/BDF captures (`DataStore.add_captures`: the card cites their roots).
        """
        if Path(path).is_dir():
            if kw.pop("provenance", ()):
                raise InvalidInputError("a directory of captures takes its provenance from them")
            card, env = self.store.add_captures(path, owner=self.identity, **kw)
        else:
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

        See `run_job_json` for the steps and errors.
        """
        return self._run_job(data)[0]

    def run_job_json(self, data: bytes | Mapping[str, Any]) -> bytes:
        """`run_job`, answered as the JSON text the ledger stored (serialized once, not twice).

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
        answer, text = self._run_job(data)
        return (text if text is not None else json.dumps(answer, sort_keys=True)).encode()

    def _run_job(self, data: bytes | Mapping[str, Any]) -> tuple[dict[str, Any], str | None]:
        # 1. parse, signature
        req = parse_job_request(data)
        job = req.job
        # 2. a replay gets the stored answer
        done = self.ledger.get(req.job_id)
        if done is not None and done.state != "reserved" and done.response is not None:
            if done.state == "recorded" and done.usage is not None:
                self.ledger.logged(req.job_id, self.log.append(done.usage))
            return done.response, None
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
            result_digest = digest_bytes(canonical_result(result))
            usage = self._usage(req.job_id, job, chain, epsilon, result_digest, receipt, created)
            response = {
                "job": req.job_id,
                "result": result,
                "usage": usage.to_dict(),
                "receipt": receipt,
            }
            # 7. record
            text = json.dumps(response, sort_keys=True)
            self.ledger.record(req.job_id, response, usage.to_json(), text=text)
        except BaseException:
            self.ledger.release(req.job_id)
            raise
        _fault("after-record")
        # 8. log
        index = self.log.append(usage.to_json())
        self.ledger.logged(req.job_id, index)
        # 9. release
        return response, text

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
        from edgetrust.data.grant import REVOCATION_PREDICATE_TYPE
        from edgetrust.statement import parse_statement

        start, size = self.revocations.size, self.log.size()
        revocations: list[bytes] = []
        for page in range(start, size, _PAGE):
            for raw in self.log.entries(page, min(_PAGE, size - page)):
                try:  # one structural look per entry; only candidates pay a verification
                    st = parse_statement(parse_envelope(raw).payload)
                    if st.predicate_type == REVOCATION_PREDICATE_TYPE:
                        revocations.append(raw)
                        continue
                    if st.predicate_type != USAGE_PREDICATE_TYPE or (
                        st.predicate["action"] != "train"
                    ):
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
        # The view reads the revocations among entries start..size (the rest are not).
        self.revocations.observe(start, revocations, size=size)

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
