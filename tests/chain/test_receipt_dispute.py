"""The receipt-to-slash path with real devices, a real log and real fixed-point receipts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from edgetrust.chain import connect
from edgetrust.chain.receipt_demo import run_receipt_disputes
from edgetrust.chain.receipt_dispute import Cosignature
from edgetrust.device import Device, LocalLogWriter
from edgetrust.errors import InvalidInputError
from edgetrust.identity import Identity, Keystore
from edgetrust.log.service import LOG_KEY_NAME, Log
from edgetrust.runtime.fixed import Fault, FixedRuntime
from edgetrust.zoo import digits_mlp_onnx, load_digits_split


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("receipts")
    model, _ = digits_mlp_onnx(seed=0)
    _, x_test, _, _ = load_digits_split(seed=0)
    publisher = Identity.generate("publisher")
    log = Log.open(root / "log", origin="test.edgetrust.local/log")
    writer = LocalLogWriter(log)
    x = {"input": x_test[7:8]}
    devices = {}
    for name in ("bob", "carol"):
        d = Device(root / name)
        d.registry.add_bytes(model, publisher=publisher, name="digits-mlp")
        devices[name] = d
    honest = devices["bob"].infer("digits-mlp", x, executor="fixed", log=writer)
    liar = FixedRuntime(home=devices["carol"].home, fault=Fault("gemm0", 5, 40))
    lying = devices["carol"].infer("digits-mlp", x, executor=liar, log=writer)
    yield root, log, model, x, (devices["bob"], honest.bundle), (devices["carol"], lying.bundle)
    for d in devices.values():
        d.close()
    log.close()


def test_carol_loses_her_bond_and_a_false_challenge_costs(world: Any) -> None:
    root, log, model, x, honest, lying = world
    got = run_receipt_disputes(
        log=log,
        log_identity=Keystore(Path(root) / "log").load(LOG_KEY_NAME),
        model=model,
        inputs=x,
        honest=honest,
        lying=lying,
        chain=connect(None),
    )
    assert got.carol is not None and got.carol.convicted
    assert got.carol.reason == "recomputed"
    assert got.carol_bond_after == 0
    assert got.carol.challenger_gas <= 1_500_000
    assert got.carol.gas["final"] <= 300_000
    assert got.false_challenge is not None and not got.false_challenge.convicted
    assert got.challenger_lost >= 10**17


def test_cosignature_parse_rejects_malformed() -> None:
    for bad in (
        b"",
        b"[]",
        b'{"type": "x"}',
        b'{"type": "https://edgetrust.dev/chain-cosignature/v1"}',
    ):
        with pytest.raises(InvalidInputError):
            Cosignature.parse(bad)


def test_dispute_prechecks_fail_before_any_transaction(world: Any) -> None:
    from dataclasses import replace

    from eth_account import Account

    from edgetrust.chain.anchor import AnchorParams, LogAnchor
    from edgetrust.chain.receipt_dispute import cosign_bundle, dispute_receipt
    from edgetrust.chain.referee import Referee
    from edgetrust.errors import NotFoundError, VerificationError

    root, log, model, x, honest, lying = world
    chain = connect(None)
    op, dev, ch = (Account.create() for _ in range(3))
    for a in (op, dev, ch):
        chain.fund(a.address, 10**20)
    anchor, _ = LogAnchor.deploy(chain, op, AnchorParams())
    referee, _ = Referee.deploy(chain, op, anchor.address)
    carol, bundle = lying
    referee.register_device(dev, carol.identity, bond=10**18)
    cosig = cosign_bundle(referee, dev, bundle, model)
    latest = log.latest()
    anchor.register_log(
        op,
        origin=latest.origin,
        bond=10**18,
        log_identity=Keystore(Path(root) / "log").load(LOG_KEY_NAME),
        note_key=log.verifier_key,
    )
    kw = {"model": model, "inputs": x, "opening": carol.reveal(bundle), "log": log}
    with pytest.raises(NotFoundError, match="anchor a checkpoint first"):
        dispute_receipt(referee, anchor, ch, bundle, cosig, **kw)
    anchor.anchor(op, origin=latest.origin, size=latest.size, root=latest.root)
    with pytest.raises(InvalidInputError, match="another receipt"):
        dispute_receipt(referee, anchor, ch, honest[1], cosig, **kw)
    with pytest.raises(VerificationError, match="co-signed claim"):
        bad = replace(cosig, claim=replace(cosig.claim, trace_size=1))
        dispute_receipt(referee, anchor, ch, bundle, bad, **kw)
    with pytest.raises(NotFoundError, match="not registered"):
        dispute_receipt(referee, anchor, ch, bundle, replace(cosig, account=ch.address), **kw)
    bob, bob_bundle = honest
    referee.register_device(ch, bob.identity, bond=10**18)
    bob_cosig = cosign_bundle(referee, ch, bob_bundle, model)
    with pytest.raises(InvalidInputError, match="nothing to dispute"):
        dispute_receipt(
            referee, anchor, dev, bob_bundle, bob_cosig, **{**kw, "opening": bob.reveal(bob_bundle)}
        )
    with pytest.raises(InvalidInputError, match="not the receipt's model"):
        dispute_receipt(referee, anchor, ch, bundle, cosig, **{**kw, "model": model + b"x"})
