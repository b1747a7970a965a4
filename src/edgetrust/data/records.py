"""Compute-to-data wire records: signed job requests and usage records, and their parsing.

A job is a DSSE in-toto statement (`https://edgetrust.dev/job/v1`) signed by the requester:
the dataset, the action (``stats``, ``infer`` or ``train``), the algorithm (a statistic name,
or the digest of an ONNX model), parameters, the digest of the grant it is run under and a nonce.
The job's id is the digest of its signed bytes. A usage record (`https://edgetrust.dev/usage/v1`)
is what an owner (or, for a federated round, the coordinator) signs and logs for one use.

Pure encoding: no store, no log, no execution (those are `edgetrust.data.jobs`).
"""

from __future__ import annotations

import base64
import binascii
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from edgetrust.data.grant import ACTIONS, grant_digest, parse_chain, read_grant, read_revocation
from edgetrust.dsse import Envelope, envelope_from_dict, sign_envelope
from edgetrust.encoding import (
    canonical_json,
    digest_bytes,
    digest_hex,
    parse_digest,
    parse_json,
)
from edgetrust.errors import InvalidInputError
from edgetrust.identity import Identity, public_bytes_from_did
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
    "Job",
    "JobRequest",
    "UsageRecord",
    "canonical_result",
    "make_job",
    "parse_job_request",
    "read_usage",
    "revocations_in",
    "usage_from_entries",
]

JOB_PREDICATE_TYPE = "https://edgetrust.dev/job/v1"
USAGE_PREDICATE_TYPE = "https://edgetrust.dev/usage/v1"
MAX_JOB_BYTES = 16 * 2**20
"""Largest job request (with its grants and an optional model upload), 16 MiB."""


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


def revocations_in(entries: Sequence[bytes]) -> list[str]:
    """Digests of the grants revoked among `entries` (any signer)."""
    out = []
    for raw in entries:
        try:
            out.append(read_revocation(raw).grant)
        except Exception:  # not a revocation
            continue
    return out


def canonical_result(value: Any) -> bytes:
    """`canonical_json` (RFC 8785) of a job's result, the same bytes, faster on numbers.

    A result holds thousands of floats (an ``infer`` job's outputs, a ``train`` update), and
    the reference serializer spends ~1 µs on each, half of it in ``repr`` and half in its
    layout code. ECMAScript's Number::toString, which RFC 8785 uses, and Python's ``repr``
    both print the shortest digits that round-trip; they differ only in layout: exponents
    (``1e-07`` against ``1e-7``, ``1e+16`` against ``10000000000000000``), ``.0`` on
    integral values and ``-0``. Floats whose ``repr`` has
    no exponent are written from it here; every other value goes to `canonical_json`. The
    test suite cross-checks both on random and edge values.
    """
    parts: list[str] = []
    _canon(value, parts)
    return "".join(parts).encode("utf-8")


def _float(x: float) -> str | None:
    """RFC 8785 text of a float from its ``repr``, or None where they differ in layout."""
    r = repr(x)
    if x == 0 or "e" in r or "n" in r:  # zero's sign, exponents, inf and nan
        return None
    return r[:-2] if r.endswith(".0") else r


def _canon(value: Any, out: list[str]) -> None:
    t = type(value)
    if t is float:
        text = _float(value)
        if text is not None:
            out.append(text)
            return
    elif t is list or t is tuple:
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            if type(item) is float:
                text = _float(item)
                if text is not None:
                    out.append(text)
                    continue
            _canon(item, out)
        out.append("]")
        return
    elif t is dict:
        if not all(type(k) is str for k in value):
            canonical_json(value)  # raises the usual error
        out.append("{")
        for i, k in enumerate(sorted(value, key=lambda k: k.encode("utf-16-be"))):
            if i:
                out.append(",")
            out.append(canonical_json(k).decode("utf-8"))
            out.append(":")
            _canon(value[k], out)
        out.append("}")
        return
    out.append(canonical_json(value).decode("utf-8"))
