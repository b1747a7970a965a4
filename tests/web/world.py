"""A node home holding one of every kind of entry the pages show, made by the real libraries.

A model card, float receipts (one bundle kept as a file), a fixed-point receipt whose device
lied and the dispute verdict convicting it, a federated session of two rounds with DP, and a
data owner's dataset card, usage records and a revocation; plus entries whose free text is
markup (a model, a dataset, a verdict reason), to check that every page renders it inert.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgetrust.dsse import sign_envelope
from edgetrust.identity import Identity
from edgetrust.log.service import Log
from edgetrust.statement import IN_TOTO_PAYLOAD_TYPE, Subject, encode_statement

XSS = '<img src=x onerror="document.title=1">'
"""Markup put in every free-text field the pages show; it must come out as text."""


@dataclass
class World:
    home: Path
    bundle: Path
    """An honest receipt bundle file (logged, with its inclusion proof)."""
    receipt_index: int
    model_digest: str
    device_did: str
    owner_did: str
    session: str
    verdict_index: int


def _npz(path: Path, **arrays: np.ndarray) -> Path:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    path.write_bytes(buf.getvalue())
    return path


def build_world(root: Path) -> World:
    """Fill the embedded log at ``root/node`` (its home) with real entries of every kind."""
    from edgetrust.collab import DPConfig, SessionSpec, simulate
    from edgetrust.data.grant import issue_grant
    from edgetrust.data.jobs import DataOwner, make_job
    from edgetrust.device import Device, LocalLogWriter
    from edgetrust.models import ModelRegistry
    from edgetrust.runtime.fixed import Fault, FixedRuntime
    from edgetrust.verify.dispute import challenge_receipt
    from edgetrust.zoo import digits_mlp_onnx, load_digits_split

    home = root / "node"
    log = Log.open(home, max_delay=0.002)
    try:
        model_bytes, _ = digits_mlp_onnx(seed=0)
        publisher = Identity.generate("publisher")
        registry = ModelRegistry(home)
        card, card_env = registry.add_bytes(model_bytes, publisher=publisher, name="digits-mlp")
        log.append(card_env.to_json())
        _, x_test, _, _ = load_digits_split(seed=0)
        writer = LocalLogWriter(log)
        alice = Device(root / "alice")
        alice.registry.add_bytes(model_bytes, publisher=publisher, name="digits-mlp")
        res = alice.infer("digits-mlp", {"input": x_test[:1]}, log=writer)
        assert res.bundle.log is not None
        bundle = root / "receipt.json"
        bundle.write_bytes(res.bundle.to_json())
        alice.infer("digits-mlp", {"input": x_test[1:2]}, log=writer)

        # A lying fixed-point device, challenged: the verdict is logged.
        carol = Device(root / "carol")
        carol.registry.add_bytes(model_bytes, publisher=publisher, name="digits-mlp")
        x = {"input": x_test[7:8]}
        liar = FixedRuntime(home=carol.home, fault=Fault("gemm0", 5, 40))
        lying = carol.infer("digits-mlp", x, executor=liar, log=writer)
        found = challenge_receipt(
            lying.bundle,
            model=model_bytes,
            inputs=x,
            opening=carol.reveal(lying.bundle),
            device_home=carol.home,
            referee=Identity.generate("referee"),
            log=log,
        )
        assert found.log_index is not None

        # A verdict-shaped statement whose free text is markup (a referee can write anything).
        referee = Identity.generate("mallory")
        pred = {
            "loser": "challenger",
            "reason": XSS,
            "claim": {"trace_root": "00" * 32},
            "node": XSS,
            "rounds": 1,
            "bytes_exchanged": 1,
            "referee_reads": 1,
        }
        st = encode_statement(
            [Subject("trace", "00" * 32)], "https://edgetrust.dev/dispute-verdict/v1", pred
        )
        log.append(sign_envelope(st, IN_TOTO_PAYLOAD_TYPE, referee).to_json())

        # A model card whose name is markup.
        from tests.node.conftest import card_envelope

        log.append(card_envelope(publisher, 1, name=XSS))

        # Two federated rounds with DP, into this log.
        spec = SessionSpec(
            rounds=2, dp=DPConfig(clip=1.0, noise_multiplier=1.0, epsilon_max=12.0), local_epochs=1
        )
        session = simulate(spec, num_clients=4, dropout=0.25, home=home, log=log)

        # A data owner logging into this node's log: a dataset, jobs, a revocation.
        x_tr, _, y_tr, _ = load_digits_split()
        owner = DataOwner(root / "ana", identity="ana", log=log)
        researcher = Identity.generate("researcher")
        src = _npz(root / "ana.npz", x=x_tr[:200], label=y_tr[:200])
        dcard, _ = owner.add_dataset(src, licence="CC-BY-4.0", name=XSS)
        grant = issue_grant(
            owner.identity,
            audience=researcher.did,
            dataset=dcard.digest,
            actions=["stats"],
            expires=int(time.time()) + 3600,
            max_uses=4,
            eps_per_use=1.0,
            eps_total=3.0,
            min_group=20,
        )
        params = {"columns": ["label"], "epsilon": 0.5, "bounds": {"label": [0, 9]}}
        for _ in range(2):
            owner.run_job(
                make_job(researcher, [grant], action="stats", algorithm="mean", params=params)
            )
        owner.revoke(grant, reason=XSS)
        owner_did = owner.identity.did
        owner.close()
        for d in (alice, carol):
            d.close()
        return World(
            home,
            bundle,
            res.bundle.log.index,
            card.digest,
            alice.identity.did,
            owner_did,
            session.session,
            found.log_index,
        )
    finally:
        log.close()
