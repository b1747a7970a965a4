"""Proving one inference in zero knowledge with EZKL, and verifying such a proof.

A proof says: the circuit whose verifying key is VK (which fixes the model's parameters)
maps *some* input whose Poseidon hash is H to the public output Y. Its public instances are
``[H, y_0, …, y_{n-1}]``: the input hash first, then the output as fixed-point field elements
(``y_i = round(Y_i · 2^scale)``). The input itself never leaves the prover.

`verify_zk_proof` checks, in order (each failure names its step):

  2. key — the proof is for this model, settings, VK and SRS (digests). Step 1 ("zk 1
     receipt") belongs to `verify_zk_receipt`, which binds a proof to a signed receipt.
  3. srs — the SRS is the published Perpetual Powers of Tau one for this size; a locally
     generated one is refused unless ``allow_unsafe_srs`` (then a warning is logged).
  4. public inputs — the instances have the layout the settings imply, and match the
     claimed input hash (when one is expected) and output.
  5. proof — the Halo2 SNARK verifies (``ezkl.verify``) against VK, settings and SRS.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args

import numpy as np
import numpy.typing as npt

from edgetrust.encoding import canonical_json, digest_bytes, parse_digest, parse_json
from edgetrust.errors import InvalidInputError, UnsupportedError, VerificationError
from edgetrust.verify.zk._common import (
    ProgressFn,
    check_felt,
    felt_to_hex_be,
    felt_to_int,
    first_line,
    import_ezkl,
    no_progress,
    private_tmpdir,
    temp_path,
)
from edgetrust.verify.zk.resources import check_budget, default_memory_budget
from edgetrust.verify.zk.setup import ZkArtifacts, ZkVerifierKey, _input_json, ezkl_version
from edgetrust.verify.zk.srs import SrsKind

__all__ = [
    "PROOF_MEDIA_TYPE",
    "STEP_KEY",
    "STEP_PROOF",
    "STEP_PUBLIC",
    "STEP_RECEIPT",
    "STEP_SRS",
    "QuantizationMismatchError",
    "ZkProof",
    "parse_zk_proof",
    "verify_zk_proof",
    "zk_input_hash",
    "zk_prove",
]

logger = logging.getLogger(__name__)

PROOF_MEDIA_TYPE = "https://edgetrust.dev/zk-proof/v1"
MAX_PROOF_BYTES = 1 * 2**20
"""Halo2 proofs of the models edgetrust can set up are a few KB; anything near 1 MiB is junk."""
MAX_INSTANCES = 1 << 16

STEP_RECEIPT = "zk 1 receipt"
STEP_KEY = "zk 2 key"
STEP_SRS = "zk 3 srs"
STEP_PUBLIC = "zk 4 public inputs"
STEP_PROOF = "zk 5 proof"


class QuantizationMismatchError(VerificationError):
    """The circuit's fixed-point output picks another class than onnxruntime's float output.

    Refused at proving time: the proof would be valid, but for an answer the model as
    published (float) does not give.
    """

    def __init__(self, message: str, *, float_top1: int, zk_top1: int) -> None:
        super().__init__(message, step="zk accuracy")
        self.float_top1 = float_top1
        """The class onnxruntime picks."""
        self.zk_top1 = zk_top1
        """The class the circuit's public output picks."""


@dataclass(frozen=True)
class ZkProof:
    """An EZKL proof of one inference, with what it is bound to."""

    proof: bytes = field(repr=False)
    """The Halo2 proof bytes."""
    instances: tuple[str, ...]
    """Public instances (EZKL field elements): the input's Poseidon hash, then the outputs."""
    model_digest: str
    settings_digest: str
    vk_digest: str
    srs_digest: str
    srs_kind: SrsKind
    """``unsafe_test_srs`` marks a proof made with a locally generated SRS."""
    logrows: int
    output_scale: int
    output_shape: tuple[int, ...]
    ezkl_version: str

    @property
    def digest(self) -> str:
        """``sha256:<hex>`` of the proof bytes (what a receipt signs)."""
        return digest_bytes(self.proof)

    @property
    def input_hash(self) -> str:
        """The Poseidon hash of the (quantized) input, as ``0x`` and 64 hex digits."""
        return felt_to_hex_be(self.instances[0])

    @property
    def outputs(self) -> npt.NDArray[np.float64]:
        """The public output, dequantized: ``felt / 2^output_scale``, in `output_shape`."""
        values = [felt_to_int(f) for f in self.instances[1:]]
        arr = np.array(values, dtype=np.float64) / float(1 << self.output_scale)
        return arr.reshape(self.output_shape)

    def to_dict(self) -> dict[str, Any]:
        """JSON form (the ``zk`` member of a bundle)."""
        return {
            "mediaType": PROOF_MEDIA_TYPE,
            "system": "ezkl/halo2-kzg-bn254",
            "ezklVersion": self.ezkl_version,
            "modelDigest": self.model_digest,
            "settingsDigest": self.settings_digest,
            "vkDigest": self.vk_digest,
            "srs": {"kind": self.srs_kind, "digest": self.srs_digest, "logrows": self.logrows},
            "outputScale": self.output_scale,
            "outputShape": list(self.output_shape),
            "instances": list(self.instances),
            "proof": base64.b64encode(self.proof).decode("ascii"),
        }

    def to_json(self) -> bytes:
        """Canonical JSON bytes."""
        return canonical_json(self.to_dict())

    def ezkl_json(self) -> dict[str, Any]:
        """The proof file ``ezkl.verify`` reads (only the fields it uses)."""
        return {"protocol": None, "instances": [list(self.instances)], "proof": list(self.proof)}


def _field(obj: Mapping[str, Any], key: str, kind: type) -> Any:
    value = obj.get(key)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise InvalidInputError(f"zk proof field {key!r} must be a {kind.__name__}")
    return value


def parse_zk_proof(data: Mapping[str, Any] | bytes | str) -> ZkProof:
    """Parse an untrusted proof (JSON form of `ZkProof.to_dict`), checking every field.

    Raises:
        InvalidInputError: malformed, oversized, or of an unknown media type.
    """
    obj = (
        parse_json(data, what="zk proof", max_bytes=4 * MAX_PROOF_BYTES)
        if isinstance(data, bytes | str)
        else data
    )
    if not isinstance(obj, Mapping) or obj.get("mediaType") != PROOF_MEDIA_TYPE:
        raise InvalidInputError(f"not a zk proof (mediaType must be {PROOF_MEDIA_TYPE})")
    for key in ("modelDigest", "settingsDigest", "vkDigest"):
        parse_digest(obj.get(key))
    srs = obj.get("srs")
    if not isinstance(srs, Mapping):
        raise InvalidInputError("zk proof field 'srs' must be an object")
    parse_digest(srs.get("digest"))
    if srs.get("kind") not in get_args(SrsKind):
        raise InvalidInputError("zk proof srs.kind must be 'ppot' or 'unsafe_test_srs'")
    logrows = _field(srs, "logrows", int)
    scale = _field(obj, "outputScale", int)
    shape = _field(obj, "outputShape", list)
    if not 1 <= logrows <= 40 or not 0 <= scale <= 60:
        raise InvalidInputError("zk proof logrows or outputScale out of range")
    if not all(isinstance(d, int) and not isinstance(d, bool) and 0 < d for d in shape):
        raise InvalidInputError("zk proof outputShape must be a list of positive integers")
    instances = _field(obj, "instances", list)
    if not 2 <= len(instances) <= MAX_INSTANCES:
        raise InvalidInputError(f"zk proof needs 2 to {MAX_INSTANCES} instances")
    felts = tuple(check_felt(f, "zk proof instance") for f in instances)
    if int(np.prod(shape, dtype=np.int64)) != len(felts) - 1:
        raise InvalidInputError("zk proof outputShape does not match its instance count")
    raw = _field(obj, "proof", str)
    if len(raw) > 2 * MAX_PROOF_BYTES:
        raise InvalidInputError("zk proof is over the size limit")
    try:
        proof = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidInputError("zk proof bytes are not valid base64") from exc
    if not 0 < len(proof) <= MAX_PROOF_BYTES:
        raise InvalidInputError("zk proof bytes are empty or over the size limit")
    return ZkProof(
        proof=proof,
        instances=felts,
        model_digest=obj["modelDigest"],
        settings_digest=obj["settingsDigest"],
        vk_digest=obj["vkDigest"],
        srs_digest=srs["digest"],
        srs_kind=srs["kind"],
        logrows=logrows,
        output_scale=scale,
        output_shape=tuple(shape),
        ezkl_version=str(obj.get("ezklVersion", "")),
    )


def _check_input(artifacts: ZkArtifacts, value: Any) -> npt.NDArray[np.float32]:
    try:
        arr = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"input must be a float array: {exc}") from exc
    want = artifacts.input_shape
    if arr.size != int(np.prod(want, dtype=np.int64)):
        raise InvalidInputError(f"input has {arr.size} values; the model takes shape {want}")
    if arr.shape not in (want, want[1:]):
        raise InvalidInputError(f"input has shape {arr.shape}; the model takes shape {want}")
    if not np.all(np.isfinite(arr)):
        raise InvalidInputError("input holds NaN or infinite values")
    return arr.reshape(want)


def zk_input_hash(artifacts: ZkArtifacts | ZkVerifierKey, value: Any) -> str:
    """The Poseidon hash a proof would carry for input `value`, computed outside the circuit.

    Lets whoever holds the input check a proof's public input hash: the input is quantized
    (``round(x · 2^input_scale)``) and hashed with EZKL's Poseidon, exactly as in the circuit.
    """
    ezkl = import_ezkl()
    key = artifacts.key if isinstance(artifacts, ZkArtifacts) else artifacts
    arr = np.asarray(value, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(arr)):
        raise InvalidInputError("input holds NaN or infinite values")
    felts = [ezkl.float_to_felt(float(x), key.input_scale, ezkl.PyInputType.F32) for x in arr]
    (digest,) = ezkl.poseidon_hash(felts)
    return felt_to_hex_be(check_felt(digest, "Poseidon hash"))


def zk_prove(
    artifacts: ZkArtifacts,
    value: Any,
    *,
    memory_budget: int | None = None,
    progress: ProgressFn = no_progress,
) -> ZkProof:
    """Prove that the model maps a private input to its public output.

    Steps: run onnxruntime (float) for reference; compute EZKL's witness; for a classifier,
    refuse when the circuit's top-1 class differs from onnxruntime's; prove. The input is
    written to a 0700 scratch directory for EZKL and deleted afterwards.

    Raises:
        InvalidInputError: `value` is not an input of the model's shape, or not finite.
        QuantizationMismatchError: the fixed-point output picks another class.
        ZkResourceLimitError: proving this circuit would exceed `memory_budget`.
    """
    import onnxruntime as ort

    ezkl = import_ezkl(artifacts.directory.parent)
    x = _check_input(artifacts, value)
    budget = default_memory_budget() if memory_budget is None else memory_budget
    check_budget(artifacts.estimate, budget)
    key = artifacts.key
    total = 4

    progress("onnxruntime reference", 0, total)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(
        artifacts.model_path.read_bytes(), opts, providers=["CPUExecutionProvider"]
    )
    ref = np.asarray(sess.run(None, {artifacts.input_name: x})[0], dtype=np.float64)

    with private_tmpdir(artifacts.directory.parent / "tmp") as work:
        progress("witness", 1, total)
        (work / "input.json").write_text(json.dumps(_input_json(x)))
        try:
            witness = ezkl.gen_witness(
                str(work / "input.json"), str(artifacts.compiled_path), str(work / "w.json")
            )
        except RuntimeError as exc:
            raise InvalidInputError(f"EZKL cannot run this input: {first_line(exc)}") from exc
        felts = [check_felt(f, "witness output") for f in witness["outputs"][0]]
        zk_out = np.array([felt_to_int(f) for f in felts], dtype=np.float64)
        if artifacts.classifier:
            f_top, z_top = int(np.argmax(ref)), int(np.argmax(zk_out))
            if f_top != z_top:
                raise QuantizationMismatchError(
                    f"refusing a ZK receipt: the circuit's fixed-point output picks class "
                    f"{z_top}, onnxruntime picks {f_top} (quantization changed the answer)",
                    float_top1=f_top,
                    zk_top1=z_top,
                )

        progress("proving", 2, total)
        with temp_path(work, ".proof.json") as proof_path:
            try:
                result = ezkl.prove(
                    str(work / "w.json"),
                    str(artifacts.compiled_path),
                    str(artifacts.pk_path),
                    str(proof_path),
                    str(key.srs_path),
                )
            except RuntimeError as exc:
                raise UnsupportedError(f"EZKL proving failed: {first_line(exc)}") from exc

    progress("checking", 3, total)
    try:
        instances = tuple(check_felt(f, "proof instance") for f in result["instances"][0])
        proof_bytes = _proof_bytes(result["proof"])
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise UnsupportedError(f"EZKL returned a proof of unexpected layout: {exc}") from exc
    expected_hash = witness["processed_inputs"]["poseidon_hash"][0]
    if instances[0] != expected_hash or list(instances[1:]) != felts:
        # The prover must commit to exactly the witness it computed; anything else is a bug.
        raise UnsupportedError("EZKL's proof instances differ from its witness")
    proof = ZkProof(
        proof=proof_bytes,
        instances=instances,
        model_digest=key.model_digest,
        settings_digest=key.settings_digest,
        vk_digest=key.vk_digest,
        srs_digest=key.srs_digest,
        srs_kind=key.srs_kind,
        logrows=key.logrows,
        output_scale=key.output_scale,
        output_shape=key.output_shape,
        ezkl_version=ezkl_version(),
    )
    progress("done", total, total)
    return proof


def _proof_bytes(raw: Any) -> bytes:
    """EZKL returns the proof as a ``0x`` hex string (its proof file holds a byte list)."""
    if isinstance(raw, str):
        return bytes.fromhex(raw.removeprefix("0x"))
    return bytes(raw)


def _unsafe_accept_test_srs(key: ZkVerifierKey) -> None:
    """The insecure path: accept a proof made with a locally generated SRS, loudly."""
    logger.warning(
        "UNSAFE: accepting a ZK proof for model %s made with a locally generated SRS "
        "(%s); whoever generated it can forge proofs",
        key.model_digest,
        key.srs_digest,
    )


def verify_zk_proof(
    proof: ZkProof,
    *,
    key: ZkVerifierKey | ZkArtifacts,
    allow_unsafe_srs: bool = False,
    expected_input_hash: str | None = None,
    expected_outputs: npt.ArrayLike | None = None,
) -> None:
    """Verify `proof` against a verifying key; return None or raise naming the failed step.

    Args:
        proof: the proof (from `zk_prove` or `parse_zk_proof`).
        key: the verifying key (settings, VK, SRS), e.g. from `load_zk_artifacts`.
        allow_unsafe_srs: accept a locally generated SRS (logs a warning). Insecure.
        expected_input_hash: the Poseidon hash (``0x…``) the proof must carry, if known.
        expected_outputs: the output the proof must prove, if known (exact comparison).

    Raises:
        VerificationError: with step ``zk 2 key`` … ``zk 5 proof``.
    """
    if isinstance(key, ZkArtifacts):
        key = key.key
    # Step 2: the proof is for this model, these settings, this VK and SRS.
    for what, claimed, have in (
        ("model", proof.model_digest, key.model_digest),
        ("settings", proof.settings_digest, key.settings_digest),
        ("verifying key", proof.vk_digest, key.vk_digest),
        ("SRS", proof.srs_digest, key.srs_digest),
    ):
        if claimed != have:
            raise VerificationError(
                f"the proof is for {what} {claimed[:23]}…, the key has {have[:23]}…",
                step=STEP_KEY,
            )

    # Step 3: the SRS.
    if key.srs_kind != "ppot":
        if not allow_unsafe_srs:
            raise VerificationError(
                "the proof uses a locally generated SRS (unsafe_test_srs): whoever made it can "
                "forge proofs; refused (allow it only for tests and demos)",
                step=STEP_SRS,
            )
        _unsafe_accept_test_srs(key)

    # Step 4: public inputs.
    want = 1 + int(np.prod(key.output_shape, dtype=np.int64))
    if len(proof.instances) != want:
        raise VerificationError(
            f"the proof has {len(proof.instances)} public instances, the settings imply {want}",
            step=STEP_PUBLIC,
        )
    if proof.output_scale != key.output_scale or tuple(proof.output_shape) != key.output_shape:
        raise VerificationError(
            "the proof's output scale or shape differs from the settings'", step=STEP_PUBLIC
        )
    if expected_input_hash is not None and proof.input_hash != expected_input_hash:
        raise VerificationError(
            f"the proof's input hash {proof.input_hash[:18]}… is not the expected "
            f"{expected_input_hash[:18]}…",
            step=STEP_PUBLIC,
        )
    if expected_outputs is not None:
        exp = np.asarray(expected_outputs, dtype=np.float64)
        if exp.size != proof.outputs.size or not np.array_equal(
            exp.reshape(-1), proof.outputs.reshape(-1)
        ):
            raise VerificationError(
                "the proof's public output differs from the claimed output", step=STEP_PUBLIC
            )

    # Step 5: the SNARK.
    _verify_snark(proof, key)


def _verify_snark(proof: ZkProof, key: ZkVerifierKey) -> None:
    ezkl = import_ezkl()
    fd, name = tempfile.mkstemp(prefix="edgetrust-proof-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(proof.ezkl_json(), f)
        ok = ezkl.verify(name, str(key.settings_path), str(key.vk_path), str(key.srs_path), False)
    except RuntimeError as exc:
        raise VerificationError(
            f"the SNARK does not verify: {first_line(exc)}", step=STEP_PROOF
        ) from exc
    except BaseException as exc:  # a malformed proof can make EZKL's Rust code panic
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            raise
        raise VerificationError(
            f"the SNARK does not verify: {first_line(exc)}", step=STEP_PROOF
        ) from exc
    finally:
        Path(name).unlink(missing_ok=True)
    if ok is not True:
        raise VerificationError("the SNARK does not verify", step=STEP_PROOF)
