"""The ``ezkl`` executor: re-execute a ZK receipt exactly, with the circuit's own arithmetic.

A ZK receipt's output is the circuit's public output. EZKL's witness computes it in integer
(fixed-point) arithmetic over the compiled circuit, so the same circuit and input give the same
bits on every machine: this executor is `exact`, and a verifier who is shown the input (with
its opening) can re-execute a ZK receipt and compare digests, as for the fixed-point executor.
It needs this home's setup of the model, with the circuit the receipt names.

Registered with `edgetrust.runtime.executors` when `edgetrust.verify.zk` is imported.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edgetrust.errors import InvalidInputError
from edgetrust.models import ModelCard
from edgetrust.runtime.executors import register_executor
from edgetrust.runtime.onnx import Tensors
from edgetrust.verify.zk._common import (
    check_felt,
    felt_to_int,
    first_line,
    import_ezkl,
    private_tmpdir,
)
from edgetrust.verify.zk.proof import _check_input
from edgetrust.verify.zk.setup import ZkArtifacts, _input_json, ezkl_version, load_zk_artifacts

__all__ = ["ZK_EXECUTOR", "ZkWitnessExecutor", "zk_witness_outputs"]

ZK_EXECUTOR = "ezkl"
"""The receipt's ``executor.name`` for outputs computed by the EZKL circuit."""


def zk_witness_outputs(artifacts: ZkArtifacts, value: Any) -> npt.NDArray[np.float64]:
    """The circuit's public output for `value` (dequantized), without proving: EZKL's witness."""
    ezkl = import_ezkl(artifacts.directory.parent)
    x = _check_input(artifacts, value)
    with private_tmpdir(artifacts.directory.parent / "tmp") as work:
        (work / "input.json").write_text(json.dumps(_input_json(x)))
        try:
            witness = ezkl.gen_witness(
                str(work / "input.json"), str(artifacts.compiled_path), str(work / "w.json")
            )
        except RuntimeError as exc:
            raise InvalidInputError(f"EZKL cannot run this input: {first_line(exc)}") from exc
    felts = [check_felt(f, "witness output") for f in witness["outputs"][0]]
    values = np.array([felt_to_int(f) for f in felts], dtype=np.float64)
    return (values / float(1 << artifacts.key.output_scale)).reshape(artifacts.key.output_shape)


class ZkWitnessExecutor:
    """Runs a model through its EZKL circuit (witness only): exact, for re-executing receipts."""

    name = ZK_EXECUTOR
    exact = True
    """The witness is integer arithmetic: the same bits on every machine."""

    def __init__(
        self, *, settings: Mapping[str, Any] | None = None, home: str | Path | None = None
    ) -> None:
        settings = dict(settings or {})
        self.vk_digest = settings.get("vkDigest")
        self.compiled_digest = settings.get("compiledDigest")
        self.home = home
        self._last: ZkArtifacts | None = None

    def descriptor(self) -> dict[str, Any]:
        """``{"name", "version", "settings"}``, the form ZK receipts record."""
        art = self._last
        settings = {} if art is None else {
            "settingsDigest": art.key.settings_digest,
            "vkDigest": art.key.vk_digest,
            "compiledDigest": art.compiled_digest,
        }  # fmt: skip
        return {"name": self.name, "version": ezkl_version(), "settings": settings}

    def run(self, card: ModelCard, model_bytes: bytes, inputs: Mapping[str, Any]) -> Tensors:
        """The circuit's output for `inputs`, named as the model names it.

        Raises:
            NotFoundError: no ZK setup of this model (with the receipt's VK) in this home.
            InvalidInputError: the setup's compiled circuit is not the receipt's.
        """
        art = load_zk_artifacts(card.digest, home=self.home, vk_digest=self.vk_digest)
        if self.compiled_digest is not None and art.compiled_digest != self.compiled_digest:
            raise InvalidInputError(
                "this home's ZK setup compiled another circuit than the receipt names"
            )
        if art.input_name not in inputs:
            raise InvalidInputError(f"input {art.input_name!r} is missing")
        out = zk_witness_outputs(art, inputs[art.input_name])
        self._last = art
        as32 = out.astype(np.float32)
        if not np.array_equal(as32.astype(np.float64), out):
            raise InvalidInputError("the circuit's output is not exactly representable as float32")
        return {art.output_name: as32}


def _factory(settings: Mapping[str, Any], home: Path | None = None) -> ZkWitnessExecutor:
    # A verifier (home None) uses its own $EDGETRUST_HOME setup, never a path from a receipt.
    return ZkWitnessExecutor(settings=settings, home=home)


register_executor(ZK_EXECUTOR, _factory)
