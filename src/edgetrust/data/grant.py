"""Consent grants: signed, scoped capabilities over one dataset, delegable only by narrowing.

A grant is a DSSE in-toto statement (`https://edgetrust.dev/grant/v1`) shaped like a UCAN 1.0
delegation: ``iss`` (who grants), ``aud`` (who may use it), ``sub`` (the dataset digest),
``cmd`` (actions: ``infer``, ``train``, ``stats``), ``pol`` (constraints), ``nbf``/``exp``,
``nonce`` and ``prf`` (the digest of the grant it was delegated from; none for the root). A
chain is the list of grants from the root, issued by the dataset's owner, to the leaf, held by
whoever runs the job. `verify_chain` checks it in numbered steps; `check_narrows` is the rule
that makes delegation attenuation-only: a child may never widen actions, resource, uses,
time, algorithms or privacy budget, nor lower the minimum group size.

Revocations are statements (`https://edgetrust.dev/revocation/v1`) in the log; `RevocationView`
holds what one verifier has seen of them, with the freshness rule stated there.
"""

from __future__ import annotations

import functools
import math
import secrets
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from edgetrust.dsse import Envelope, parse_envelope, sign_envelope
from edgetrust.encoding import digest_bytes, digest_hex, parse_digest
from edgetrust.errors import InvalidInputError, VerificationError
from edgetrust.identity import Identity, public_bytes_from_did
from edgetrust.statement import (
    IN_TOTO_PAYLOAD_TYPE,
    Statement,
    Subject,
    encode_statement,
    open_signed_statement,
    parse_statement,
    register_predicate_type,
)

__all__ = [
    "ACTIONS",
    "GRANT_PREDICATE_TYPE",
    "MAX_CHAIN",
    "REVOCATION_PREDICATE_TYPE",
    "Grant",
    "GrantError",
    "Revocation",
    "RevocationView",
    "VerifiedChain",
    "check_narrows",
    "delegate",
    "grant_digest",
    "issue_grant",
    "parse_chain",
    "read_grant",
    "read_revocation",
    "revoke",
    "verify_chain",
]

GRANT_PREDICATE_TYPE = "https://edgetrust.dev/grant/v1"
REVOCATION_PREDICATE_TYPE = "https://edgetrust.dev/revocation/v1"
ACTIONS = ("infer", "stats", "train")
MAX_CHAIN = 8
"""Longest delegation chain accepted (root included)."""
MAX_ALGORITHMS = 64


class GrantError(VerificationError):
    """A grant chain does not authorize the use asked for; `step` names the failed check."""


@dataclass(frozen=True)
class Grant:
    """The content of one consent grant (the predicate), with no signature."""

    iss: str
    """did:key of the grantor: the dataset owner for a root grant, the parent's ``aud`` else."""
    aud: str
    """did:key of the grantee, the only party that may use (or delegate) the grant."""
    sub: str
    """Digest of the dataset the grant is over."""
    cmd: tuple[str, ...]
    """Allowed actions, sorted, a non-empty subset of `ACTIONS`."""
    nbf: int
    """Not before (Unix seconds)."""
    exp: int
    """Expiry (Unix seconds), after `nbf`."""
    max_uses: int | None = None
    """Most jobs the grant (with all its delegates together) may run; None: unlimited."""
    algorithms: tuple[str, ...] | None = None
    """Allowed model digests (``infer``/``train``) or statistic names (``stats``); None: any."""
    eps_per_use: float | None = None
    """Most differential-privacy ε one job may spend; None: no per-job cap."""
    eps_total: float | None = None
    """Most ε all jobs under this grant may spend together; None: no total cap."""
    min_group: int = 1
    """``stats`` refuses any group of fewer records (k)."""
    nonce: str = ""
    prf: str | None = None
    """Digest of the parent grant's statement; None for a root grant."""

    def to_predicate(self) -> dict[str, Any]:
        """The `https://edgetrust.dev/grant/v1` predicate."""
        return {
            "iss": self.iss,
            "aud": self.aud,
            "sub": self.sub,
            "cmd": list(self.cmd),
            "nbf": self.nbf,
            "exp": self.exp,
            "pol": {
                "maxUses": self.max_uses,
                "algorithms": None if self.algorithms is None else list(self.algorithms),
                "epsPerUse": self.eps_per_use,
                "epsTotal": self.eps_total,
                "minGroup": self.min_group,
            },
            "nonce": self.nonce,
            "prf": self.prf,
        }

    @classmethod
    def from_predicate(cls, pred: Mapping[str, Any]) -> Grant:
        """Parse a grant predicate, one check per field."""
        if set(pred) != {"iss", "aud", "sub", "cmd", "nbf", "exp", "pol", "nonce", "prf"}:
            raise InvalidInputError("grant must have exactly iss aud sub cmd nbf exp pol nonce prf")
        pol = pred["pol"]
        if not isinstance(pol, dict) or set(pol) != {
            "maxUses",
            "algorithms",
            "epsPerUse",
            "epsTotal",
            "minGroup",
        }:
            raise InvalidInputError(
                "grant pol must have maxUses algorithms epsPerUse epsTotal minGroup"
            )
        for who in ("iss", "aud"):
            public_bytes_from_did(pred[who])
        parse_digest(pred["sub"])
        cmd = pred["cmd"]
        if not isinstance(cmd, list) or not cmd or not all(c in ACTIONS for c in cmd):
            raise InvalidInputError(f"grant cmd must be a non-empty list of {ACTIONS}")
        if cmd != sorted(set(cmd)):
            raise InvalidInputError("grant cmd must be sorted and without repeats")
        nbf, exp = _int(pred["nbf"], "nbf"), _int(pred["exp"], "exp")
        if exp <= nbf:
            raise InvalidInputError("grant exp must be after nbf")
        max_uses = None if pol["maxUses"] is None else _int(pol["maxUses"], "maxUses")
        algorithms = pol["algorithms"]
        if algorithms is not None:
            if (
                not isinstance(algorithms, list)
                or len(algorithms) > MAX_ALGORITHMS
                or not all(isinstance(a, str) and 0 < len(a) <= 80 for a in algorithms)
            ):
                raise InvalidInputError(f"grant algorithms must be ≤ {MAX_ALGORITHMS} names")
            if algorithms != sorted(set(algorithms)):
                raise InvalidInputError("grant algorithms must be sorted and without repeats")
            algorithms = tuple(algorithms)
        eps_per_use = _eps(pol["epsPerUse"], "epsPerUse")
        eps_total = _eps(pol["epsTotal"], "epsTotal")
        min_group = _int(pol["minGroup"], "minGroup")
        if min_group < 1:
            raise InvalidInputError("grant minGroup must be at least 1")
        nonce = pred["nonce"]
        if not isinstance(nonce, str) or len(nonce) > 64:
            raise InvalidInputError("grant nonce must be a string of ≤ 64 characters")
        prf = pred["prf"]
        if prf is not None:
            parse_digest(prf)
        return cls(
            pred["iss"],
            pred["aud"],
            pred["sub"],
            tuple(cmd),
            nbf,
            exp,
            max_uses,
            algorithms,
            eps_per_use,
            eps_total,
            min_group,
            nonce,
            prf,
        )


def _int(value: object, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**53:
        raise InvalidInputError(f"grant {name} must be a non-negative integer")
    return value


def _eps(value: object, name: str) -> float | None:
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise InvalidInputError(f"grant {name} must be a number or null")
    v = float(value)
    if not math.isfinite(v) or v < 0:
        raise InvalidInputError(f"grant {name} must be a finite non-negative number")
    return v


def grant_digest(envelope: Envelope) -> str:
    """A grant's identity: the digest of its signed statement bytes."""
    return digest_bytes(envelope.payload)


def _sign(grant: Grant, signer: Identity) -> Envelope:
    if signer.did != grant.iss:
        raise InvalidInputError("a grant is signed by its issuer")
    Grant.from_predicate(grant.to_predicate())  # same checks as a verifier's
    payload = encode_statement(
        [Subject("dataset", digest_hex(grant.sub))], GRANT_PREDICATE_TYPE, grant.to_predicate()
    )
    return sign_envelope(payload, IN_TOTO_PAYLOAD_TYPE, signer)


def issue_grant(
    owner: Identity,
    *,
    audience: str,
    dataset: str,
    actions: Iterable[str],
    expires: int,
    not_before: int | None = None,
    max_uses: int | None = None,
    algorithms: Iterable[str] | None = None,
    eps_per_use: float | None = None,
    eps_total: float | None = None,
    min_group: int = 1,
) -> Envelope:
    """Sign a root grant from a dataset's owner to `audience`."""
    grant = Grant(
        iss=owner.did,
        aud=audience,
        sub=dataset,
        cmd=tuple(sorted(set(actions))),
        nbf=int(time.time()) if not_before is None else not_before,
        exp=expires,
        max_uses=max_uses,
        algorithms=None if algorithms is None else tuple(sorted(set(algorithms))),
        eps_per_use=eps_per_use,
        eps_total=eps_total,
        min_group=min_group,
        nonce=secrets.token_hex(8),
    )
    return _sign(grant, owner)


_UNSET: Any = object()


def delegate(
    parent: Envelope,
    holder: Identity,
    *,
    audience: str,
    actions: Iterable[str] | None = None,
    expires: int | None = None,
    not_before: int | None = None,
    max_uses: int | None = _UNSET,
    algorithms: Iterable[str] | None = _UNSET,
    eps_per_use: float | None = _UNSET,
    eps_total: float | None = _UNSET,
    min_group: int | None = None,
) -> Envelope:
    """Delegate `parent` (held by `holder`) to `audience`, narrowed; unnamed fields are kept.

    Raises:
        GrantError: the delegation would widen the parent (the same check a verifier runs).
    """
    p = read_grant(parent)
    if holder.did != p.aud:
        raise GrantError("only a grant's audience can delegate it", step="delegate")
    child = replace(
        p,
        iss=holder.did,
        aud=audience,
        cmd=p.cmd if actions is None else tuple(sorted(set(actions))),
        nbf=p.nbf if not_before is None else not_before,
        exp=p.exp if expires is None else expires,
        max_uses=p.max_uses if max_uses is _UNSET else max_uses,
        algorithms=p.algorithms
        if algorithms is _UNSET
        else (None if algorithms is None else tuple(sorted(set(algorithms)))),
        eps_per_use=p.eps_per_use if eps_per_use is _UNSET else eps_per_use,
        eps_total=p.eps_total if eps_total is _UNSET else eps_total,
        min_group=p.min_group if min_group is None else min_group,
        nonce=secrets.token_hex(8),
        prf=grant_digest(parent),
    )
    check_narrows(p, child)
    return _sign(child, holder)


def _capped(parent: float | None, child: float | None) -> bool:
    """A child's cap is no looser than its parent's (None means no cap)."""
    if parent is None:
        return True
    return child is not None and child <= parent


def check_narrows(parent: Grant, child: Grant) -> None:
    """Raise unless `child` is `parent` narrowed: the attenuation rule of delegation.

    A child keeps the resource, is issued by the parent's audience, and has every action,
    time bound, use count, algorithm, ε cap and group size within the parent's.
    """
    if child.sub != parent.sub:
        raise GrantError("delegated grant names another dataset", step="3 narrowing")
    if child.iss != parent.aud:
        raise GrantError(
            "delegated grant is not issued by its parent's audience", step="3 narrowing"
        )
    if not set(child.cmd) <= set(parent.cmd):
        raise GrantError("delegated grant widens the actions", step="3 narrowing")
    if child.nbf < parent.nbf:
        raise GrantError("delegated grant starts before its parent", step="3 narrowing")
    if child.exp > parent.exp:
        raise GrantError("delegated grant expires after its parent", step="3 narrowing")
    if not _capped(parent.max_uses, child.max_uses):
        raise GrantError("delegated grant widens the number of uses", step="3 narrowing")
    if parent.algorithms is not None and (
        child.algorithms is None or not set(child.algorithms) <= set(parent.algorithms)
    ):
        raise GrantError("delegated grant widens the algorithms", step="3 narrowing")
    if not _capped(parent.eps_per_use, child.eps_per_use):
        raise GrantError("delegated grant widens the per-use privacy budget", step="3 narrowing")
    if not _capped(parent.eps_total, child.eps_total):
        raise GrantError("delegated grant widens the total privacy budget", step="3 narrowing")
    if child.min_group < parent.min_group:
        raise GrantError("delegated grant lowers the minimum group size", step="3 narrowing")


def _validate_grant(statement: Statement, signer: str) -> None:
    grant = Grant.from_predicate(statement.predicate)
    if statement.subjects[0].sha256 != digest_hex(grant.sub):
        raise InvalidInputError("grant subject differs from its sub")
    if signer != grant.iss:
        raise InvalidInputError("a grant must be signed by its issuer")


def read_grant(data: bytes | Envelope) -> Grant:
    """Open one signed grant (signature, type and issuer checked; not its chain)."""
    signed = open_signed_statement(data)
    if signed.statement.predicate_type != GRANT_PREDICATE_TYPE:
        raise InvalidInputError(f"not a grant: {signed.statement.predicate_type:.80}")
    return Grant.from_predicate(signed.statement.predicate)


@functools.lru_cache(maxsize=4096)
def _read_grant_once(envelope: Envelope) -> Grant:
    """`read_grant`, remembered per exact envelope (payload and signatures, compared as bytes).

    A grant's signature and fields are a property of its bytes alone, so a verifier that sees
    the same grant on every job checks it once. Revocation, time and use are not cached:
    `verify_chain` checks them on every call.
    """
    return read_grant(envelope)


# -- revocation -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Revocation:
    """A revocation entry: `issuer` withdraws grant `grant` (and everything delegated from it)."""

    grant: str
    issuer: str
    time: int
    reason: str = ""

    def to_predicate(self) -> dict[str, Any]:
        """The `https://edgetrust.dev/revocation/v1` predicate."""
        return {
            "grant": self.grant,
            "issuer": self.issuer,
            "time": self.time,
            "reason": self.reason,
        }

    @classmethod
    def from_predicate(cls, pred: Mapping[str, Any]) -> Revocation:
        """Parse a revocation predicate."""
        if set(pred) != {"grant", "issuer", "time", "reason"}:
            raise InvalidInputError("revocation must have exactly grant issuer time reason")
        parse_digest(pred["grant"])
        public_bytes_from_did(pred["issuer"])
        reason = pred["reason"]
        if not isinstance(reason, str) or len(reason) > 512:
            raise InvalidInputError("revocation reason must be ≤ 512 characters")
        return cls(pred["grant"], pred["issuer"], _int(pred["time"], "time"), reason)


def _validate_revocation(statement: Statement, signer: str) -> None:
    rev = Revocation.from_predicate(statement.predicate)
    if statement.subjects[0].sha256 != digest_hex(rev.grant):
        raise InvalidInputError("revocation subject differs from its grant")
    if signer != rev.issuer:
        raise InvalidInputError("a revocation must be signed by its issuer")


def revoke(
    grant: Envelope, issuer: Identity, *, reason: str = "", now: int | None = None
) -> Envelope:
    """Sign a revocation of `grant` by `issuer` (its issuer or any ancestor's); log it."""
    rev = Revocation(
        grant_digest(grant), issuer.did, int(time.time()) if now is None else now, reason
    )
    payload = encode_statement(
        [Subject("grant", digest_hex(rev.grant))], REVOCATION_PREDICATE_TYPE, rev.to_predicate()
    )
    return sign_envelope(payload, IN_TOTO_PAYLOAD_TYPE, issuer)


def read_revocation(data: bytes | Envelope) -> Revocation:
    """Open one signed revocation."""
    signed = open_signed_statement(data)
    if signed.statement.predicate_type != REVOCATION_PREDICATE_TYPE:
        raise InvalidInputError(f"not a revocation: {signed.statement.predicate_type:.80}")
    return Revocation.from_predicate(signed.statement.predicate)


register_predicate_type(GRANT_PREDICATE_TYPE, _validate_grant)
register_predicate_type(REVOCATION_PREDICATE_TYPE, _validate_revocation)


@dataclass
class RevocationView:
    """The revocations one verifier has seen in the log, and how fresh that sight is.

    The freshness rule: a grant is honoured at time ``now`` only if

    1. no revocation of any grant in its chain, signed by that grant's issuer or by the issuer
       of any grant above it, appears in any checkpoint this view has accepted — checked
       first and regardless of age, so a revocation once seen is final, even offline; and
    2. the view has read the log up to a checkpoint it verified at most `max_age` seconds
       before ``now`` (``now - observed_at <= max_age``); an older view refuses every grant.

    So a revocation logged at time t stops every verifier whose view is refreshed after t,
    and no verifier honours a grant more than `max_age` seconds after its revocation.
    """

    max_age: float = 300.0
    """T: seconds a checkpoint's view of the revocations stays usable."""
    size: int = 0
    """Entries of the log read so far (the size of the last checkpoint accepted)."""
    observed_at: float = 0.0
    """When (Unix seconds, this verifier's clock) that checkpoint was verified."""
    revoked: dict[str, set[str]] = field(default_factory=dict)
    """Grant digest -> DIDs that signed a revocation of it."""

    def observe(
        self, start: int, entries: Sequence[bytes], *, size: int, at: float | None = None
    ) -> None:
        """Read log entries ``start..`` (up to a checkpoint of `size`) and note revocations."""
        if start != self.size:
            raise InvalidInputError(f"view has read {self.size} entries, not {start}")
        for raw in entries:
            try:
                # A structural look first: only revocations pay for a signature check.
                if parse_statement(parse_envelope(raw).payload).predicate_type != (
                    REVOCATION_PREDICATE_TYPE
                ):
                    continue
                rev = read_revocation(raw)
            except Exception:  # other entry types and damaged entries are not revocations
                continue
            self.revoked.setdefault(rev.grant, set()).add(rev.issuer)
        self.size = size
        self.observed_at = time.time() if at is None else at

    def observe_log(self, log: Any, *, at: float | None = None) -> None:
        """Catch up with an embedded `edgetrust.log.service.Log` (new entries only)."""
        size = int(log.size())
        new: list[bytes] = []
        for start in range(self.size, size, 4096):
            new += log.entries(start, min(4096, size - start))
        self.observe(self.size, new, size=size, at=at)

    def check(self, chain: Sequence[Grant], digests: Sequence[str], *, now: float) -> None:
        """Apply the freshness rule to a chain (root first)."""
        issuers: list[str] = []
        for grant, digest in zip(chain, digests, strict=True):
            issuers.append(grant.iss)
            by = self.revoked.get(digest, set())
            if by & set(issuers):
                raise GrantError(f"grant {digest[:19]}… was revoked", step="5 revocation")
        if now - self.observed_at > self.max_age:
            raise GrantError(
                f"the revocation view is {now - self.observed_at:.0f} s old, over the "
                f"{self.max_age:.0f} s freshness limit",
                step="5 revocation",
            )


@dataclass(frozen=True)
class VerifiedChain:
    """A chain that authorizes one use: its grants (root first) and their digests."""

    grants: tuple[Grant, ...]
    digests: tuple[str, ...]
    envelopes: tuple[Envelope, ...]

    @property
    def leaf(self) -> Grant:
        """The grant the requester holds (its constraints are the tightest)."""
        return self.grants[-1]


def parse_chain(obj: object) -> tuple[Envelope, ...]:
    """Parse an untrusted chain: a JSON list of DSSE envelopes, root first."""
    from edgetrust.dsse import envelope_from_dict

    if not isinstance(obj, list) or not 0 < len(obj) <= MAX_CHAIN:
        raise InvalidInputError(f"a grant chain is a list of 1-{MAX_CHAIN} envelopes")
    return tuple(envelope_from_dict(e) for e in obj)


def verify_chain(
    chain: Sequence[Envelope | bytes],
    *,
    owner: str,
    dataset: str,
    requester: str,
    action: str,
    algorithm: str,
    revocations: RevocationView,
    now: float | None = None,
) -> VerifiedChain:
    """Check that `chain` lets `requester` run `action` with `algorithm` on `dataset` now.

    Steps: (1) every grant's signature, type and fields; (2) the root is issued by the
    dataset's `owner` over `dataset`, and each grant cites its parent (``prf``); (3) each
    grant narrows its parent (`check_narrows`); (4) the leaf's audience is the requester, its
    time window holds `now`, and it allows `action` and `algorithm`; (5) the freshness rule of
    `RevocationView`. Uses and ε budget are stateful and checked by the job ledger.

    Raises:
        GrantError: the chain does not authorize this use (`step` says which check).
        InvalidInputError: a malformed envelope or grant.
    """
    t = time.time() if now is None else now
    if not 0 < len(chain) <= MAX_CHAIN:
        raise GrantError(f"a grant chain has 1-{MAX_CHAIN} grants", step="1 grants")
    envelopes = tuple(e if isinstance(e, Envelope) else parse_envelope(e) for e in chain)
    # 1. signatures and fields
    try:
        grants = tuple(_read_grant_once(e) for e in envelopes)
    except VerificationError as exc:
        raise GrantError(exc.message, step="1 signature") from exc
    digests = tuple(grant_digest(e) for e in envelopes)
    # 2. root and links
    root = grants[0]
    if root.iss != owner:
        raise GrantError("the root grant is not issued by the dataset's owner", step="2 chain")
    if root.sub != dataset:
        raise GrantError("the grant is for another dataset", step="2 chain")
    if root.prf is not None:
        raise GrantError("the root grant cites a parent", step="2 chain")
    for i in range(1, len(grants)):
        if grants[i].prf != digests[i - 1]:
            raise GrantError(f"grant {i} does not cite grant {i - 1}", step="2 chain")
        # 3. narrowing
        check_narrows(grants[i - 1], grants[i])
    # 4. the leaf authorizes this use
    leaf = grants[-1]
    if leaf.aud != requester:
        raise GrantError("the grant is for another audience", step="4 use")
    if t < leaf.nbf:
        raise GrantError("the grant is not valid yet", step="4 use")
    if t >= leaf.exp:
        raise GrantError("the grant has expired", step="4 use")
    if action not in leaf.cmd:
        raise GrantError(f"the grant does not allow {action!r:.20}", step="4 use")
    if leaf.algorithms is not None and algorithm not in leaf.algorithms:
        raise GrantError(f"the grant does not allow algorithm {algorithm!r:.80}", step="4 use")
    # 5. revocation and freshness
    revocations.check(grants, digests, now=t)
    return VerifiedChain(grants, digests, envelopes)
