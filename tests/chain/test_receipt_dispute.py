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
