"""A federated session under consent, simulated on one machine: grants, both gates, revocation.

`simulate_consented` gives every simulated device a share of the digits data and a ``train``
grant to the coordinator; the coordinator runs rounds through `TrainConsent` (its gate, which
may be switched off) and every device is a `ConsentedWorker` (its own check, always on). A
device may revoke its grant after a given round: the next round is refused, naming it, and
the session goes on without it. At the end the log is audited (`audit_consent`).
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass, field
from typing import Any

from edgetrust.errors import InvalidInputError

__all__ = ["ConsentedSession", "RoundOutcome", "simulate_consented"]


@dataclass(frozen=True)
class RoundOutcome:
    """One round attempted: who took part, and either its record or the refusal."""

    round: int
    participants: int
    record_index: int | None
    refused: str | None
    """DID of the participant refused (None: the round ran)."""
    by: str | None
    """Who refused: ``coordinator`` (its gate) or ``device`` (the device's own check)."""
    step: str | None
    message: str | None


@dataclass(frozen=True)
class ConsentedSession:
    """What `simulate_consented` did."""

    session: str
    coordinator: str
    rounds: tuple[RoundOutcome, ...]
    audited: int
    """Consented rounds `audit_consent` passed."""
    revoked: tuple[str, ...] = field(default=())


def simulate_consented(
    *,
    home: str | os.PathLike[str] | None = None,
    clients: int = 4,
    rounds: int = 3,
    revoke_after: int | None = None,
    gate: bool = True,
    max_uses: int | None = None,
    noise_multiplier: float = 1.0,
    eps_total: float | None = None,
) -> ConsentedSession:
    """Run `rounds` consented rounds among `clients` devices (see the module doc).

    `revoke_after`: after that round the first device revokes its grant. `gate`: whether
    the coordinator checks consent too (off, the devices' own checks still refuse).

    Raises:
        InvalidInputError: bad counts, or fewer than 2 devices left to run a round.
    """
    from edgetrust.collab.dp import DPConfig
    from edgetrust.collab.session import Coordinator, SessionSpec
    from edgetrust.data.consent import ConsentError, TrainConsent, audit_consent, run_round
    from edgetrust.data.dataset import digest_table
    from edgetrust.data.grant import issue_grant, revoke
    from edgetrust.data.recheck import ConsentedWorker, DeviceConsent
    from edgetrust.identity import Identity, Keystore
    from edgetrust.log import Log
    from edgetrust.zoo import load_digits_split

    if not 2 <= clients <= 200:
        raise InvalidInputError("clients must be in 2..200")
    if not 1 <= rounds <= 100:
        raise InvalidInputError("rounds must be in 1..100")
    if revoke_after is not None and not 0 <= revoke_after <= rounds:
        raise InvalidInputError("revoke-after must be a round number in 0..rounds")
    if not 0 <= noise_multiplier <= 1e3:
        raise InvalidInputError("noise multiplier must be in [0, 1000]")
    log = Log.open(home)
    try:
        x, _, y, _ = load_digits_split()
        spec = SessionSpec(
            rounds=rounds,
            secagg=False,
            dp=DPConfig(clip=1.0, noise_multiplier=noise_multiplier),
            hidden=(16,),
            local_epochs=1,
        )
        me = Keystore(home).load_or_create("fl-coordinator")
        coord = Coordinator(spec=spec, identity=me, log=log, home=home)
        per = len(y) // clients
        grants, workers, idents = {}, {}, {}
        for i in range(clients):
            ident = Identity.from_seed(
                hashlib.sha256(f"edgetrust-consent-sim/{coord.session}/{i}".encode()).digest()
            )
            sl = slice(per * i, per * (i + 1))
            g = issue_grant(
                ident,
                audience=me.did,
                dataset=digest_table({"x": x[sl], "label": y[sl]}),
                actions=["train"],
                expires=int(time.time()) + 3600,
                algorithms=[coord.base_model],
                max_uses=max_uses,
                eps_total=eps_total,
            )
            consent = DeviceConsent(ident.did, [g], log_key=log.verifier_key)
            consent.refresh(log)
            idents[ident.did], grants[ident.did] = ident, g
            workers[ident.did] = ConsentedWorker(
                consent=consent, log=log, identity=ident, x=x[sl], y=y[sl]
            )
        if gate:
            coord.consent = TrainConsent(log, {d: [g] for d, g in grants.items()})
        first = sorted(idents)[0]
        outcomes: list[RoundOutcome] = []
        revoked: list[str] = []
        for r in range(1, rounds + 1):
            if revoke_after is not None and r == revoke_after + 1:
                log.append(revoke(grants[first], idents[first], reason="simulated").to_json())
                revoked.append(first)
            if len(workers) < 2:
                raise InvalidInputError("fewer than 2 consenting devices are left")
            n, size = len(workers), log.size()
            try:
                rec = run_round(coord, workers, seed=r)
                outcomes.append(RoundOutcome(r, n, rec.record_index, None, None, None, None))
            except ConsentError as exc:
                # the gate refuses before the round's config is logged; a device only after it
                by = "device" if log.size() > size else "coordinator"
                outcomes.append(
                    RoundOutcome(r, n, None, exc.participant, by, exc.step, exc.message)
                )
                workers.pop(exc.participant, None)
                if gate:
                    coord.consent.chains.pop(exc.participant, None)
        audit = audit_consent(log, session=coord.session) if gate else None
        return ConsentedSession(
            coord.session,
            me.did,
            tuple(outcomes),
            0 if audit is None else len(audit.rounds),
            tuple(revoked),
        )
    finally:
        log.close()


def session_rows(result: ConsentedSession) -> list[dict[str, Any]]:
    """JSON rows of a session's rounds, for the CLI."""
    return [
        {
            "round": o.round,
            "participants": o.participants,
            "recordIndex": o.record_index,
            "refused": o.refused,
            "by": o.by,
            "step": o.step,
            "message": o.message,
        }
        for o in result.rounds
    ]
