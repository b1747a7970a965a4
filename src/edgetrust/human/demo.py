"""The demo's human-review step: soft-passkey reviewers judge a receipt; the aggregate is logged."""

from __future__ import annotations

import json
from typing import Any, cast

from rich.console import Console

__all__ = ["human_step"]


def human_step(console: Console, result: Any, log: Any, subject: str) -> None:
    """Three reviewers (software authenticators) judge the receipt `subject` over the node's API.

    Registration, verdicts (WebAuthn assertion + DID signature), one vouch, the Dawid–Skene
    aggregate signed and logged, then replayed from the log by a verifier; a tampered copy of the
    aggregate is rejected. `result` is the demo's `DemoResult`, `log` its transparency log.
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


def _payload(entry: bytes) -> bytes:
    import base64

    return base64.b64decode(json.loads(entry)["payload"])
