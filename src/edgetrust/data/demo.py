"""The demo's data step: grants, jobs and an FL round under them, a revocation, usage, value."""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

__all__ = ["data_step"]


def _npz(path: Path, **arrays: Any) -> Path:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    path.write_bytes(buf.getvalue())
    return path


def data_step(console: Console, result: Any, root: Path) -> None:
    """Two owners keep digit datasets at home; a researcher runs jobs under their grants.

    `result` is the demo's `DemoResult` (its `expect` records each check).
    """
    from edgetrust.data.grant import issue_grant
    from edgetrust.data.jobs import DataOwner, make_job, usage_from_entries
    from edgetrust.data.value import knn_shapley, owner_shares
    from edgetrust.identity import Identity
    from edgetrust.log import Log
    from edgetrust.zoo import load_digits_split

    x_tr, x_te, y_tr, y_te = load_digits_split()
    rng = np.random.default_rng(0)
    researcher = Identity.generate("researcher")
    # One public log for owners and researcher: grants' revocations, usage records, FL rounds.
    log = Log.open(root / "data-log")
    owners: dict[str, DataOwner] = {}
    grants = {}
    labels = {"ana": y_tr[:300].copy(), "ben": y_tr[300:600].copy()}
    noisy = rng.choice(300, 90, replace=False)  # ben's labels are 30% wrong
    labels["ben"][noisy] = (labels["ben"][noisy] + rng.integers(1, 10, 90)) % 10
    feats = {"ana": x_tr[:300], "ben": x_tr[300:600]}
    for name in ("ana", "ben"):
        owner = owners[name] = DataOwner(root / f"data-{name}", identity=name, log=log)
        src = _npz(root / f"{name}-digits.npz", x=feats[name], label=labels[name])
        card, index = owner.add_dataset(src, licence="CC-BY-NC-4.0")
        grants[name] = issue_grant(
            owner.identity,
            audience=researcher.did,
            dataset=card.digest,
            actions=["stats", "train"],
            expires=int(time.time()) + 3600,
            max_uses=4,
            eps_per_use=1.0,
            eps_total=2.0,
            min_group=40,
        )
        console.print(
            f"{name} keeps {card.count} records at home; only the signed card is logged "
            f"(index {index}); grant to the researcher: stats+train, 4 uses, ε ≤ 2, k = 40"
        )
    params = {"columns": ["label"], "epsilon": 0.5, "bounds": {"label": [0, 9]}}

    def job(name: str, stat: str = "mean", p: dict[str, Any] | None = None) -> dict[str, Any]:
        body = make_job(
            researcher, [grants[name]], action="stats", algorithm=stat, params=p or params
        )
        return owners[name].run_job(body)

    for name in ("ana", "ben"):
        answer = job(name)
        mean = answer["result"]["groups"][0]["label"]
        console.print(f"job on {name}'s data: mean label ≈ {mean:.2f} (ε 0.5); usage record logged")
    fl_round = _fl_round(console, root, log, researcher, owners, grants, feats, labels)
    fl_round()
    small = {**params, "groupBy": "label"}
    result.expect(
        "a job whose groups are smaller than k", False, lambda: _refused(job, "ana", small)
    )
    owners["ben"].revoke(grants["ben"], reason="consent withdrawn")
    result.expect("a job under ben's revoked grant", False, lambda: job("ben"))
    result.expect("an FL round with ben after ben revoked", False, fl_round)
    result.expect("a job under ana's grant after ben revoked", True, lambda: job("ana"))
    result.expect(
        "fl audit: every participant's grant covered its round", True, lambda: _audit(log)
    )

    who = {o.store.digests()[0]: name for name, o in owners.items()}
    usage = Table("log", "owner", "requester", "action", "algorithm", "ε", "signed by")
    names = {o.identity.did: n for n, o in owners.items()} | {researcher.did: "researcher"}
    size = log.size()
    for index, rec, signer in usage_from_entries(log.entries(0, size)):
        usage.add_row(
            str(index),
            who.get(rec.dataset, "?"),
            names.get(rec.requester, rec.requester[:16] + "…"),
            rec.action,
            rec.algorithm[:19],
            f"{rec.epsilon:.2f}",
            names.get(signer, signer[:16] + "…"),
        )
    console.print(usage)

    values = knn_shapley(
        np.vstack([feats["ana"], feats["ben"]]),
        np.concatenate([labels["ana"], labels["ben"]]),
        x_te,
        y_te,
        k=5,
    )
    shares = owner_shares(values, ["ana"] * 300 + ["ben"] * 300)
    value = Table("owner", "KNN-Shapley share of value")
    for name, share in shares.items():
        value.add_row(name, f"{100 * share:.1f}%  " + "█" * round(30 * share))
    console.print(value)
    for owner in owners.values():
        owner.close()
    log.close()


def _fl_round(
    console: Console,
    root: Path,
    log: Any,
    researcher: Any,
    owners: dict[str, Any],
    grants: dict[str, Any],
    feats: dict[str, Any],
    labels: dict[str, Any],
) -> Any:
    """A federated session the researcher coordinates; ana and ben train on their own data."""
    from edgetrust.collab.dp import DPConfig
    from edgetrust.collab.session import Coordinator, SessionSpec
    from edgetrust.data.consent import TrainConsent, run_round
    from edgetrust.data.recheck import ConsentedWorker, DeviceConsent

    chains = {owners[n].identity.did: [grants[n]] for n in owners}
    spec = SessionSpec(
        rounds=2, dp=DPConfig(clip=1.0, noise_multiplier=4.0), hidden=(16,), local_epochs=1
    )
    coordinator = Coordinator(
        spec=spec,
        identity=researcher,
        log=log,
        home=root / "data-fl",
        consent=TrainConsent(log, chains),
    )
    # Each device checks its own grant against the log too, not only the coordinator's gate.
    workers = {
        owners[n].identity.did: ConsentedWorker(
            consent=DeviceConsent(owners[n].identity.did, [grants[n]], log_key=log.verifier_key),
            log=log,
            identity=owners[n].identity,
            x=feats[n],
            y=labels[n],
        )
        for n in owners
    }

    def one() -> None:
        summary = run_round(coordinator, workers)
        console.print(
            f"FL round {summary.round} (secure aggregation, DP z = 4): ana and ben re-check "
            "their train grants against the log and train at home, "
            f"ε {summary.round_epsilon:.2f} each; the round record cites both grants, one "
            "usage record per device"
        )

    return one


def _audit(log: Any) -> None:
    from edgetrust.data.consent import audit_consent

    audit_consent(log)


def _refused(job: Any, name: str, params: dict[str, Any]) -> None:
    """Run a job that should be refused; a refusal of its parameters is a failed check too."""
    from edgetrust.data.stats import GroupTooSmallError
    from edgetrust.errors import VerificationError

    try:
        job(name, "mean", params)
    except GroupTooSmallError as exc:
        raise VerificationError(exc.message, step="k") from exc
