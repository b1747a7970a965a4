"""`edgetrust chain dispute` and friends: one full flow against anvil; bad input as one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgetrust.chain._devchain import ANVIL_DEV_KEYS
from edgetrust.cli import run
from edgetrust.device import Device, LocalLogWriter
from edgetrust.identity import Identity
from edgetrust.runtime.fixed import Fault, FixedRuntime
from edgetrust.zoo import digits_mlp_onnx, load_digits_split


def _one_line_error(capsys: pytest.CaptureFixture[str], *needles: str) -> None:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err


def test_dispute_needs_a_persistent_chain(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    args = ["--cosignature", "c", "--model", "m", "-i", "i", "--opening", "o"]
    assert run(["chain", "dispute", "r.json", *args, "--device-home", str(tmp_path)]) == 2
    _one_line_error(capsys, "--rpc")


def _lying_receipt(tmp: Path) -> dict[str, Path]:
    model, _ = digits_mlp_onnx(seed=0)
    _, x_test, _, _ = load_digits_split(seed=0)
    x = x_test[7:8]
    dev_home = tmp / "carol"
    device = Device(dev_home)
    device.registry.add_bytes(model, publisher=Identity.generate("pub"), name="digits-mlp")
    liar = FixedRuntime(home=device.home, fault=Fault("gemm0", 5, 40))
    res = device.infer(
        "digits-mlp", {"input": x}, executor=liar, log=LocalLogWriter(device.local_log())
    )
    files = {
        "home": dev_home,
        "model": tmp / "digits.onnx",
        "input": tmp / "x.npy",
        "bundle": tmp / "receipt.json",
        "opening": tmp / "opening.json",
        "cosig": tmp / "cosig.json",
    }
    files["model"].write_bytes(model)
    np.save(files["input"], x)
    files["bundle"].write_bytes(res.bundle.to_json())
    files["opening"].write_bytes(device.reveal(res.bundle).to_json())
    device.close()
    return files


@pytest.mark.slow
def test_full_dispute_flow_against_anvil(
    capsys: pytest.CaptureFixture[str], anvil_url: str, tmp_path: Path
) -> None:
    f = _lying_receipt(tmp_path)
    dev = ["--home", str(f["home"])]
    ch_home = tmp_path / "challenger"
    rpc = ["--rpc", anvil_url]
    for name, key in (("op", 0), ("dev", 1)):
        key_file = tmp_path / f"{name}.hex"
        key_file.write_text(ANVIL_DEV_KEYS[key])
        assert run(["chain", "account", "import", "--name", name, "--key-file", str(key_file),
                    *dev]) == 0  # fmt: skip
    assert run(["chain", "account", "new", "--name", "ch", "--home", str(ch_home), "--json"]) == 0
    capsys.readouterr()
    from edgetrust.chain import connect
    from edgetrust.chain.accounts import EvmKeystore

    connect(anvil_url).fund(EvmKeystore(ch_home).address("ch"), 10 * 10**18)
    op = [*rpc, "--account", "op", *dev]
    assert run(["chain", "deploy", *op, "--json"]) == 0
    anchor = json.loads(capsys.readouterr().out)["LogAnchor"]
    assert run(["chain", "anchor", *op]) == 0
    assert run(["chain", "deploy-referee", *op, "--window", "600"]) == 0
    devargs = [*rpc, "--account", "dev", *dev]
    assert run(["chain", "register-device", *devargs]) == 0
    cos = ["--model", str(f["model"]), "-o", str(f["cosig"])]
    assert run(["chain", "cosign", str(f["bundle"]), *cos, *devargs]) == 0
    capsys.readouterr()
    dispute = [
        "chain", "dispute", str(f["bundle"]), "--cosignature", str(f["cosig"]),
        "--model", str(f["model"]), "-i", str(f["input"]), "--opening", str(f["opening"]),
        "--device-home", str(f["home"]), "--device-account", "dev", "--anchor", anchor,
        *rpc, "--account", "ch", "--home", str(ch_home),
    ]  # fmt: skip
    assert run([*dispute, "--json"]) == 1
    got = json.loads(capsys.readouterr().out)
    assert got["convicted"] and got["reason"] == "recomputed"
    assert got["challengerGas"] <= 1_500_000
    # The same receipt again (carol's bond is gone): the contract's named revert, one line.
    assert run(dispute) == 2
    _one_line_error(capsys, "NotBonded", "slashed")
    # A tampered co-signature file: refused before any transaction.
    f["cosig"].write_text("{}")
    assert run(dispute) == 2
    _one_line_error(capsys, "co-signature")
