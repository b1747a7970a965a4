"""The demo's human-review step: soft-passkey reviewers judge a receipt; the aggregate is logged."""

from __future__ import annotations

import json
from typing import Any, cast

from rich.console import Console

__all__ = ["human_step"]


def human_step(
    console: Console, result: Any, log: Any, subject: str, disputed: str | None = None
) -> None:
    """Three reviewers (software authenticators) judge the receipt `subject` over the node's API.

    Registration, verdicts (WebAuthn assertion + DID signature), one vouch, the Dawid–Skene
    aggregate signed and logged, then replayed from the log by a verifier; a tampered copy of the
    aggregate is rejected. With `disputed` (another receipt's output digest), the reviewers
    judge it wrong, and `HumanAttested` accepts the first receipt and refuses that one. Last, a
    synthetic crowd with a third of its reviewers answering at random shows Dawid–Skene beating
    majority vote. `result` is the demo's `DemoResult`, `log` its transparency log.
    """
    from fastapi.testclient import TestClient

    from edgetrust.dsse import sign_envelope
    from edgetrust.encoding import canonical_json
    from edgetrust.human.client import HumanClient
    from edgetrust.human.published import log_prefix, verify_aggregate
    from edgetrust.identity import Identity
    from edgetrust.node.app import create_app
    from edgetrust.node.settings import NodeSettings
    from edgetrust.statement import IN_TOTO_PAYLOAD_TYPE, open_signed_statement

    with TestClient(create_app(log, settings=NodeSettings(rate=0))) as http:
        people = [
            HumanClient("http://testserver", Identity.generate(n), http=cast("Any", http))
            for n in ("dana", "eli", "femi")
        ]
        for p in people:
            p.register()
        people[1].vouch(people[0].identity.did)
        vouched = people[2].vouch(people[0].identity.did)["vouchers"]
        task = people[0].add_task(subject.removeprefix("sha256:"), "Is this prediction right?",
                                  ["correct", "wrong"])["digest"]  # fmt: skip
        for p, answer in zip(people, ["correct", "correct", "wrong"], strict=True):
            p.review(task, answer, 0.9)
        published = people[0].publish_aggregate(task)
        if disputed is not None:
            other = people[1].add_task(
                disputed.removeprefix("sha256:"), "Is this prediction right?", ["correct", "wrong"]
            )["digest"]
            for p in people:
                p.review(other, "wrong", 0.9)
    console.print(
        f"3 reviewers registered soft passkeys (dana vouched for by {vouched}); task {task[:12]}… "
        f"judged {published['answer']!r} with posterior {published['posterior']:.3f} from "
        f"{len(published['inputs'])} verdicts; aggregate signed and logged at {published['index']}"
    )
    entry = log.entry(published["index"])
    result.expect(
        "human: the logged aggregate re-runs from the log",
        True,
        lambda: verify_aggregate(open_signed_statement(entry), log_prefix(log, log.size())),
    )
    if disputed is not None:
        _policy_checks(result, log, subject, disputed)
    _crowd(console)
    statement = json.loads(_payload(entry))
    statement["predicate"]["result"] = "wrong"
    forged = sign_envelope(canonical_json(statement), IN_TOTO_PAYLOAD_TYPE, Identity.generate())
    result.expect(
        "human: an aggregate whose result was changed",
        False,
        lambda: verify_aggregate(
            open_signed_statement(forged.to_json()), log_prefix(log, log.size())
        ),
    )


def _policy_checks(result: Any, log: Any, subject: str, disputed: str) -> None:
    """`HumanAttested(2 reviewers, posterior 0.5)` from the log: one receipt passes, one fails."""
    from types import SimpleNamespace

    from edgetrust.human.policy import DEFAULT_ORIGIN, DEFAULT_RP_ID, HumanAttested, HumanRecord

    record = HumanRecord.from_entries(
        log.entries(0, log.size()), rp_id=DEFAULT_RP_ID, origin=DEFAULT_ORIGIN
    )
    policy = HumanAttested(record, min_reviewers=2, min_posterior=0.5)
    for digest, should_pass, what in (
        (subject, True, "human: HumanAttested(2, 0.5) on the receipt the reviewers confirmed"),
        (disputed, False, "human: HumanAttested(2, 0.5) on a receipt the reviewers disputed"),
    ):
        receipt: Any = SimpleNamespace(output_digest=digest)
        result.expect(what, should_pass, lambda r=receipt: policy.verify(r))


def _crowd(console: Console) -> None:
    """Majority vote vs Dawid–Skene on a synthetic crowd: 600 tasks, 30 reviewers, 1/3 random."""
    import numpy as np

    from edgetrust.human.aggregate import dawid_skene, majority_vote

    rng = np.random.default_rng(7)
    tasks, reviewers, classes = 600, 30, 3
    truth = rng.integers(0, classes, tasks)
    skill = np.where(
        np.arange(reviewers) < reviewers // 3, 1 / classes, rng.uniform(0.5, 0.95, reviewers)
    )
    labels = np.full((tasks, reviewers), -1, dtype=np.int64)
    for j in range(reviewers):
        seen = rng.random(tasks) < 0.15
        right = rng.random(tasks) < skill[j]
        guess = rng.integers(0, classes, tasks)
        labels[seen, j] = np.where(right, truth, guess)[seen]
    mv = float(np.mean(majority_vote(labels, classes).answers == truth))
    ds = float(np.mean(dawid_skene(labels, classes).answers == truth))
    console.print(
        f"synthetic crowd (600 tasks, 30 reviewers, a third answering at random, each task seen "
        f"by ~4.5): majority vote {mv:.1%} correct, Dawid–Skene {ds:.1%}"
    )


def _payload(entry: bytes) -> bytes:
    import base64

    return base64.b64decode(json.loads(entry)["payload"])
