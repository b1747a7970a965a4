"""ZK setup: caching, visibility, digests, the resource guard and the SRS table."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import ezkl
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgetrust.encoding import digest_bytes
from edgetrust.errors import InvalidInputError, NotFoundError
from edgetrust.models import ModelCard
from edgetrust.verify.zk import (
    PPOT_SRS_SHA256,
    PpotSrs,
    UnsafeLocalSrs,
    ZkArtifacts,
    ZkResourceLimitError,
    check_ppot_srs,
    default_memory_budget,
    estimate_from_onnx,
    estimate_from_settings,
    export_verifier_files,
    load_verifier_key,
    load_zk_artifacts,
    verify_zk_proof,
    zk_setup,
)
from edgetrust.verify.zk import srs as srs_mod
from edgetrust.verify.zk.srs import digest_file

from .conftest import Digits

# Every EZKL function that does real work (or would touch the network, for get_srs).
EZKL_WORK = (
    "gen_settings",
    "calibrate_settings",
    "compile_circuit",
    "gen_srs",
    "get_srs",
    "setup",
    "gen_witness",
    "prove",
    "verify",
)


def forbid_ezkl(monkeypatch: pytest.MonkeyPatch, names: tuple[str, ...] = EZKL_WORK) -> list[str]:
    """Make the named EZKL functions fail loudly; returns the list of attempted calls."""
    calls: list[str] = []
    for name in names:

        def boom(*args: Any, _name: str = name, **kwargs: Any) -> Any:
            calls.append(_name)
            raise AssertionError(f"ezkl.{_name} must not be called here")

        monkeypatch.setattr(ezkl, name, boom)
    return calls


@pytest.mark.slow
def test_setup_binds_digests_and_visibility(zk_artifacts: ZkArtifacts, digits: Digits) -> None:
    art, key = zk_artifacts, zk_artifacts.key
    assert art.model_digest == digest_bytes(digits.model)
    assert art.directory.name == art.model_digest.removeprefix("sha256:")
    assert key.settings_digest == digest_bytes(key.settings_path.read_bytes())
    assert key.vk_digest == digest_bytes(key.vk_path.read_bytes())
    assert art.compiled_digest == digest_bytes(art.compiled_path.read_bytes())
    assert key.srs_kind == "unsafe_test_srs"
    run_args = json.loads(key.settings_path.read_text())["run_args"]
    assert run_args["input_visibility"] == {"Hashed": {"hash_is_public": True, "outlets": []}}
    assert run_args["param_visibility"] == "Fixed"
    assert run_args["output_visibility"] == "Public"
    entry = art.card_entry()
    assert entry["vkDigest"] == key.vk_digest
    assert entry["settingsDigest"] == key.settings_digest
    assert entry["compiledDigest"] == art.compiled_digest
    assert entry["srs"] == {"kind": "unsafe_test_srs", "digest": key.srs_digest, "logrows": 15}
    # EZKL quantizes; on the digits test set the circuit agrees with onnxruntime's top-1.
    assert art.accuracy.calibration == "given" and art.accuracy.samples == 32
    assert art.accuracy.top1_agreement is not None and art.accuracy.top1_agreement >= 0.95
    assert 0 < art.accuracy.max_abs_error < 0.05
    card = ModelCard.from_onnx_bytes(digits.model).with_extra("zk", entry)
    assert ModelCard.from_predicate(card.to_predicate()).extra["zk"]["vkDigest"] == key.vk_digest


@pytest.mark.slow
def test_second_setup_does_no_work(
    zk_artifacts: ZkArtifacts, digits: Digits, zk_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = {p: p.stat().st_mtime_ns for p in zk_artifacts.directory.rglob("*") if p.is_file()}
    calls = forbid_ezkl(monkeypatch)
    again = zk_setup(
        digits.model, srs=UnsafeLocalSrs(), home=zk_home, calibration=digits.calibration
    )
    assert calls == []
    assert again == zk_artifacts
    after = {p: p.stat().st_mtime_ns for p in zk_artifacts.directory.rglob("*") if p.is_file()}
    assert after == before


@pytest.mark.slow
def test_load_artifacts_and_missing_setup(zk_artifacts: ZkArtifacts, zk_home: Path) -> None:
    assert load_zk_artifacts(zk_artifacts.model_digest, home=zk_home) == zk_artifacts
    with pytest.raises(NotFoundError, match="zk setup"):
        load_zk_artifacts("sha256:" + "0" * 64, home=zk_home)
    with pytest.raises(NotFoundError, match="verifying key"):
        load_zk_artifacts(zk_artifacts.model_digest, home=zk_home, vk_digest="sha256:" + "1" * 64)


@pytest.mark.slow
def test_modified_cache_is_refused(zk_artifacts: ZkArtifacts, tmp_path: Path) -> None:
    # A copy of the cache without the (large) proving key, which loading does not read.
    home = tmp_path / "copy"
    src_dir = zk_artifacts.directory
    dst_dir = home / "zk" / src_dir.name
    shutil.copytree(src_dir, dst_dir, ignore=shutil.ignore_patterns("pk.key"))
    shutil.copytree(src_dir.parent / "srs", home / "zk" / "srs")
    assert load_zk_artifacts(zk_artifacts.model_digest, home=home).key.vk_digest == (
        zk_artifacts.key.vk_digest
    )
    settings = dst_dir / "settings.json"
    settings.write_text(settings.read_text().replace('"logrows":15', '"logrows":16'))
    with pytest.raises(InvalidInputError, match="was modified"):
        load_zk_artifacts(zk_artifacts.model_digest, home=home)


@pytest.mark.slow
def test_export_verifier_files(zk_artifacts: ZkArtifacts, tmp_path: Path) -> None:
    key = export_verifier_files(zk_artifacts, tmp_path / "verifier")
    assert key.vk_digest == zk_artifacts.key.vk_digest
    assert key.srs_kind == "unsafe_test_srs"
    assert set(key.evm_verifier_inputs()) == {"vk_path", "settings_path", "srs_path"}
    assert load_verifier_key(tmp_path / "verifier") == key
    (tmp_path / "verifier" / "vk.key").write_bytes(b"not a key")
    with pytest.raises(InvalidInputError, match="vkDigest does not match"):
        load_verifier_key(tmp_path / "verifier")


def big_model(n: int) -> bytes:
    """One n×n MatMul: n² fixed parameters, cheap to build with onnx.helper."""
    w = np.zeros((n, n), dtype=np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"], "mm")],
        "big",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, n])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n])],
        [numpy_helper.from_array(w, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def test_too_large_model_refused_before_any_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = big_model(2048)  # 4.2M parameters: ≥ 2^21 rows, ~72 GiB by the estimate
    calls = forbid_ezkl(monkeypatch)
    with pytest.raises(ZkResourceLimitError) as info:
        zk_setup(model, srs=UnsafeLocalSrs(), home=tmp_path)
    err = info.value
    assert calls == []
    assert err.budget == default_memory_budget() == err.limit
    assert err.estimate.basis == "onnx lower bound"
    assert err.estimate.logrows >= 21
    assert err.estimate.peak_bytes > err.budget
    assert f"2^{err.estimate.logrows} rows" in err.message
    assert "exceeds the memory budget" in err.message
    assert not (tmp_path / "zk").exists()


def test_budget_checked_on_settings_before_compile_and_keys(
    digits: Digits, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The graph's lower bound (2^11 rows) fits in 256 MiB; the calibrated circuit does not.
    assert estimate_from_onnx(onnx.load_from_string(digits.model)).peak_bytes < 256 * 2**20
    calls = forbid_ezkl(monkeypatch, ("compile_circuit", "gen_srs", "get_srs", "setup"))
    with pytest.raises(ZkResourceLimitError) as info:
        zk_setup(
            digits.model,
            srs=UnsafeLocalSrs(),
            home=tmp_path,
            calibration=digits.calibration,
            memory_budget=256 * 2**20,
        )
    assert calls == []
    assert info.value.estimate.basis == "settings"
    assert info.value.estimate.logrows == 15
    model_dir = tmp_path / "zk" / digest_bytes(digits.model).removeprefix("sha256:")
    assert (model_dir / "settings.json").exists()
    assert not (model_dir / "model.compiled").exists()
    assert not (tmp_path / "zk" / "srs").exists()


def test_estimate_from_settings_scales_with_rows_and_columns() -> None:
    base = {"run_args": {"logrows": 15, "num_inner_cols": 2, "lookup_range": [-7566, 0]}}
    e15 = estimate_from_settings(base)
    e16 = estimate_from_settings({"run_args": {**base["run_args"], "logrows": 16}})
    wide = estimate_from_settings({"run_args": {**base["run_args"], "lookup_range": [-1, 70000]}})
    assert e16.peak_bytes == 2 * e15.peak_bytes
    assert wide.peak_bytes == 3 * e15.peak_bytes  # the table spans 3 columns of 2^15
    # Measured on this model: proving peaks ~1.07 GB, key 466 MB; the estimate is above both.
    assert e15.peak_bytes >= 1.07e9 and e15.proving_key_bytes >= 466e6
    for bad in (
        {},
        {"run_args": {}},
        {"run_args": {"logrows": "x"}},
        {"run_args": {"logrows": 99}},
    ):
        with pytest.raises(InvalidInputError):
            estimate_from_settings(bad)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"srs": "kzg15.srs"},
        {"srs": UnsafeLocalSrs(), "memory_budget": 0},
        {"srs": UnsafeLocalSrs(), "scales": []},
        {"srs": UnsafeLocalSrs(), "accuracy_samples": 0},
    ],
)
def test_setup_parameters_validated(digits: Digits, kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="`"):
        zk_setup(digits.model, **kwargs)


def test_setup_rejects_malformed_models(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError):
        zk_setup(b"not onnx", srs=UnsafeLocalSrs(), home=tmp_path)
    with pytest.raises(InvalidInputError):
        zk_setup(big_model(4)[:-7], srs=UnsafeLocalSrs(), home=tmp_path)


def test_ppot_table_is_the_one_in_installed_ezkl() -> None:
    """Cross-check: every digest is embedded in the ezkl binary (its PUBLIC_SRS_SHA256_HASHES)."""
    so = next(Path(ezkl.__file__).parent.glob("ezkl*.so")).read_bytes()
    assert sorted(PPOT_SRS_SHA256) == list(range(1, 27))
    for logrows, digest in PPOT_SRS_SHA256.items():
        assert digest.encode() in so, logrows


def test_check_ppot_srs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "kzg15.srs"
    fake.write_bytes(b"\x00" * 1024)
    with pytest.raises(InvalidInputError, match="not the published Perpetual Powers of Tau"):
        check_ppot_srs(fake, 15)
    with pytest.raises(InvalidInputError, match="no published"):
        check_ppot_srs(fake, 27)
    with pytest.raises(NotFoundError):
        check_ppot_srs(tmp_path / "missing.srs", 15)
    hexd = digest_file(fake).removeprefix("sha256:")
    monkeypatch.setattr(srs_mod, "PPOT_SRS_SHA256", {**PPOT_SRS_SHA256, 17: hexd})
    monkeypatch.setattr(srs_mod, "_PPOT_BY_DIGEST", {hexd: 17})
    with pytest.raises(InvalidInputError, match="for logrows 17, but this circuit needs"):
        check_ppot_srs(fake, 15)
    assert check_ppot_srs(fake, 17) == digest_file(fake)


@pytest.mark.slow
def test_ppot_srs_is_trusted_without_allow_unsafe(
    zk_artifacts: ZkArtifacts,
    zk_proof: Any,
    digits: Digits,
    zk_home: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The trust plumbing: an SRS whose digest is in the PPoT table verifies without the flag.

    No real PPoT file is available offline, so the table is extended with the local SRS's
    digest; the keys made with that SRS are then found again (same SRS digest, no setup).
    """
    hexd = zk_artifacts.key.srs_digest.removeprefix("sha256:")
    monkeypatch.setattr(srs_mod, "PPOT_SRS_SHA256", {**PPOT_SRS_SHA256, 15: hexd})
    monkeypatch.setattr(srs_mod, "_PPOT_BY_DIGEST", {hexd: 15})
    calls = forbid_ezkl(monkeypatch, ("gen_settings", "calibrate_settings", "setup", "gen_srs"))
    art = zk_setup(
        digits.model,
        srs=PpotSrs(zk_artifacts.key.srs_path),
        home=zk_home,
        calibration=digits.calibration,
    )
    assert calls == []
    assert art.key.srs_kind == "ppot"
    assert art.key.vk_digest == zk_artifacts.key.vk_digest
    verify_zk_proof(zk_proof, key=art)  # no allow_unsafe_srs needed
