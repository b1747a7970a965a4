"""Per-model ZK setup with EZKL, done once and cached under ``$EDGETRUST_HOME/zk/<model hex>/``.

Setup turns an ONNX model into a Halo2 circuit and keys:

1. check the model and estimate its cost from the graph (refuse early, see `resources`);
2. ``gen_settings`` with input **hashed** (Poseidon; the input stays private, only its hash
   is public), parameters **fixed** in the circuit (so the verifying key identifies the
   model), output **public**; then ``calibrate_settings`` on a calibration set;
3. estimate the cost again from the calibrated settings and refuse above the budget;
4. ``compile_circuit``;
5. the SRS (see `srs`: a checked Perpetual Powers of Tau file, or an unsafe local one);
6. ``setup``: the verifying key (VK) and the proving key;
7. accuracy: the circuit's fixed-point outputs against onnxruntime float on the calibration
   set (EZKL quantizes; the deviation is stored and goes into the model card).

Layout (each file written under a temporary name and renamed, under a per-model lock)::

    zk/srs/kzg<logrows>-{ppot,unsafe}.srs     shared by every model of that size
    zk/<model hex>/model.onnx, settings.json, calibration.json, model.compiled, accuracy.json
    zk/<model hex>/keys-<srs hex[:16]>/vk.key, pk.key, manifest.json

A second setup of the same model with the same SRS finds everything and calls no EZKL
function. Loading re-hashes settings, compiled circuit, VK and SRS and compares them with the
manifest, so a modified cache is refused rather than used. The proving key is not re-hashed
(hundreds of MB, per proof): a wrong proving key can only make proofs that fail to verify.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edgetrust.encoding import digest_hex, parse_digest
from edgetrust.errors import InvalidInputError, NotFoundError, UnsupportedError
from edgetrust.home import resolve_home
from edgetrust.models import ModelCard, parse_onnx
from edgetrust.verify.zk._common import (
    ProgressFn,
    felt_to_int,
    first_line,
    import_ezkl,
    locked,
    no_progress,
    private_tmpdir,
    read_json_file,
    temp_path,
    write_json_atomic,
)
from edgetrust.verify.zk.resources import (
    ResourceEstimate,
    check_budget,
    default_memory_budget,
    estimate_from_onnx,
    estimate_from_settings,
)
from edgetrust.verify.zk.srs import (
    MAX_LOGROWS,
    PpotSrs,
    SrsChoice,
    SrsKind,
    UnsafeLocalSrs,
    digest_file,
    install_srs,
    srs_kind,
)

__all__ = [
    "VISIBILITY",
    "ZkAccuracy",
    "ZkArtifacts",
    "ZkVerifierKey",
    "export_verifier_files",
    "load_verifier_key",
    "load_zk_artifacts",
    "zk_setup",
]

VISIBILITY = {"input": "hashed/public", "param": "fixed", "output": "public"}
"""EZKL visibility of the three kinds of values: input private with its Poseidon hash public."""

DEFAULT_SCALES = (7,)
"""Fixed-point scales (2^-7) tried by calibration; bigger scales are more precise but make the
circuit's lookup tables, and so logrows and memory, grow: on the digits MLP scale 11 needs
logrows 17 (4× the memory and time of logrows 15) for an error already below 1%."""

_SYNTHETIC_SAMPLES = 32
_MANIFEST = "manifest.json"
_VERIFIER_MANIFEST = "verifier.json"


def ezkl_version() -> str:
    """The installed EZKL version (recorded with artifacts and proofs)."""
    return str(import_ezkl().__version__)


@dataclass(frozen=True)
class ZkAccuracy:
    """How far the circuit's fixed-point outputs are from onnxruntime float."""

    samples: int
    """Calibration inputs compared."""
    max_abs_error: float
    mean_abs_error: float
    top1_agreement: float | None
    """Fraction of samples whose top-1 class agrees; None for a model that is not a classifier."""
    calibration: str
    """``given`` (the caller's calibration set) or ``synthetic`` (uniform [0, 1) inputs)."""

    def to_dict(self) -> dict[str, Any]:
        """JSON form (accuracy.json, the model card)."""
        return {
            "samples": self.samples,
            "maxAbsError": self.max_abs_error,
            "meanAbsError": self.mean_abs_error,
            "top1Agreement": self.top1_agreement,
            "calibration": self.calibration,
        }

    @classmethod
    def from_dict(cls, obj: Any) -> ZkAccuracy:
        """Parse the JSON form."""
        try:
            top1 = obj["top1Agreement"]
            return cls(
                int(obj["samples"]),
                float(obj["maxAbsError"]),
                float(obj["meanAbsError"]),
                None if top1 is None else float(top1),
                str(obj["calibration"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidInputError(f"malformed accuracy record: {exc}") from exc


@dataclass(frozen=True)
class ZkVerifierKey:
    """What verifying a proof needs: settings, verifying key and SRS, with their digests.

    The digests are computed from the files when the key is loaded; `srs_kind` follows from
    the SRS digest alone (the published PPoT table), never from what a proof claims.
    """

    model_digest: str
    settings_path: Path
    vk_path: Path
    srs_path: Path
    settings_digest: str
    vk_digest: str
    srs_digest: str
    srs_kind: SrsKind
    logrows: int
    input_scale: int
    output_scale: int
    output_shape: tuple[int, ...]
    """Shape of the public output (batch dimension 1)."""

    def evm_verifier_inputs(self) -> dict[str, Path]:
        """Paths for ``ezkl.create_evm_verifier(vk_path, settings_path, sol, abi, srs_path)``.

        Note: ezkl 23 writes the Solidity file and then fetches solc from
        binaries.soliditylang.org to produce the ABI; offline, compile the .sol yourself.
        """
        return {
            "vk_path": self.vk_path,
            "settings_path": self.settings_path,
            "srs_path": self.srs_path,
        }


@dataclass(frozen=True)
class ZkArtifacts:
    """Everything one model's proofs need, cached on disk; made by `zk_setup`."""

    key: ZkVerifierKey
    """The verifying half (settings, VK, SRS)."""
    directory: Path
    """``$EDGETRUST_HOME/zk/<model hex>``."""
    model_path: Path
    compiled_path: Path
    pk_path: Path
    compiled_digest: str
    input_name: str
    output_name: str
    input_shape: tuple[int, ...]
    classifier: bool
    """Whether the top-1 class of the output is checked against onnxruntime when proving."""
    accuracy: ZkAccuracy
    estimate: ResourceEstimate
    ezkl_version: str

    @property
    def model_digest(self) -> str:
        """The model's ``sha256:<hex>``."""
        return self.key.model_digest

    def card_entry(self) -> dict[str, Any]:
        """The ``zk`` attachment for the model card: which VK belongs to this model.

        A verifier that trusts the (signed, logged) card trusts exactly this VK digest.
        """
        k = self.key
        return {
            "system": "ezkl/halo2-kzg-bn254",
            "ezklVersion": self.ezkl_version,
            "visibility": dict(VISIBILITY),
            "settingsDigest": k.settings_digest,
            "compiledDigest": self.compiled_digest,
            "vkDigest": k.vk_digest,
            "srs": {"kind": k.srs_kind, "digest": k.srs_digest, "logrows": k.logrows},
            "accuracy": self.accuracy.to_dict(),
            "estimate": self.estimate.to_dict(),
        }


def _symbolic_dims(card: ModelCard) -> list[tuple[str, int]]:
    """EZKL needs every dynamic dimension pinned: each named one is set to 1 (batch of one)."""
    names: list[str] = []
    for spec in (*card.inputs, *card.outputs):
        for dim in spec.shape or ():
            if dim is None:
                raise UnsupportedError(
                    f"tensor {spec.name!r} has an unnamed dynamic dimension; EZKL needs a name"
                )
            if isinstance(dim, str) and dim not in names:
                names.append(dim)
    return [(n, 1) for n in names]


def _concrete_shape(shape: Sequence[Any] | None, what: str) -> tuple[int, ...]:
    if shape is None:
        raise UnsupportedError(f"{what} has no declared shape; EZKL needs one")
    return tuple(1 if isinstance(d, str) else int(d) for d in shape)


def _check_model(card: ModelCard) -> None:
    if len(card.inputs) != 1 or len(card.outputs) != 1:
        raise UnsupportedError(
            f"ZK receipts support models with one input and one output; {card.name} has "
            f"{len(card.inputs)} and {len(card.outputs)}"
        )
    for spec in (*card.inputs, *card.outputs):
        if spec.dtype not in ("float32", "float64", "float16"):
            raise UnsupportedError(f"tensor {spec.name!r} is {spec.dtype}; ZK needs floats")


def _input_json(rows: npt.NDArray[Any]) -> dict[str, Any]:
    """EZKL's data file: the inputs flattened; several samples are concatenated."""
    return {"input_data": [np.asarray(rows, dtype=np.float64).reshape(-1).tolist()]}


def _calibration_set(
    calibration: npt.ArrayLike | None, input_shape: tuple[int, ...]
) -> tuple[npt.NDArray[np.float32], str]:
    per_sample = int(np.prod(input_shape[1:], dtype=np.int64))
    if calibration is None:
        rng = np.random.default_rng(0)
        data = rng.random((_SYNTHETIC_SAMPLES, per_sample), dtype=np.float32)
        return data, "synthetic"
    arr = np.asarray(calibration, dtype=np.float32)
    if arr.size == 0 or arr.size % per_sample:
        raise InvalidInputError(
            f"`calibration` must hold whole samples of {per_sample} values, got {arr.size}"
        )
    if not np.all(np.isfinite(arr)):
        raise InvalidInputError("`calibration` holds NaN or infinite values")
    return arr.reshape(-1, per_sample), "given"


def _settings_info(settings: Any) -> tuple[int, int, int, tuple[int, ...]]:
    """(logrows, input scale, output scale, output shape) from settings.json."""
    try:
        run_args = settings["run_args"]
        logrows = int(run_args["logrows"])
        in_scale = int(run_args["input_scale"])
        out_scales = settings["model_output_scales"]
        shapes = settings["model_instance_shapes"]
        if len(out_scales) != 1 or len(shapes) != 1:
            raise UnsupportedError("ZK receipts support one public output tensor")
        out_scale = int(out_scales[0])
        shape = tuple(int(d) for d in shapes[0])
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidInputError(f"malformed EZKL settings: {exc}") from exc
    if not 0 <= out_scale <= 60 or not 0 <= in_scale <= 60 or not 1 <= logrows <= MAX_LOGROWS:
        raise InvalidInputError("EZKL settings hold out-of-range scales or logrows")
    return logrows, in_scale, out_scale, shape


def _outputs_from_witness(witness: Any, scale: int) -> npt.NDArray[np.float64]:
    try:
        felts = witness["outputs"][0]
        return np.array([felt_to_int(f) for f in felts], dtype=np.float64) / float(1 << scale)
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise UnsupportedError(f"EZKL witness has an unexpected layout: {exc}") from exc


def _make_settings(
    ezkl: Any,
    model_path: Path,
    directory: Path,
    card: ModelCard,
    data: npt.NDArray[np.float32],
    scales: Sequence[int],
) -> None:
    run_args = ezkl.PyRunArgs()
    run_args.input_visibility = VISIBILITY["input"]
    run_args.param_visibility = VISIBILITY["param"]
    run_args.output_visibility = VISIBILITY["output"]
    run_args.variables = _symbolic_dims(card)
    cal_path = directory / "calibration.json"
    write_json_atomic(cal_path, _input_json(data))
    with temp_path(directory, ".json") as tmp:
        try:
            ezkl.gen_settings(str(model_path), str(tmp), run_args)
        except RuntimeError as exc:
            raise UnsupportedError(f"EZKL cannot build this model: {first_line(exc)}") from exc
        # No max_logrows: calibration only writes settings (cheap); the budget is checked on
        # its result, so that a too-large circuit is refused with the numbers.
        try:
            ezkl.calibrate_settings(
                str(cal_path), str(model_path), str(tmp), "resources", 2.0, list(scales), [1], None
            )
        except RuntimeError as exc:
            raise UnsupportedError(f"EZKL calibration failed: {first_line(exc)}") from exc
        tmp.replace(directory / "settings.json")


def _measure_accuracy(
    ezkl: Any,
    art_dir: Path,
    compiled: Path,
    model_bytes: bytes,
    card: ModelCard,
    data: npt.NDArray[np.float32],
    out_scale: int,
    classifier: bool,
    source: str,
    samples: int,
) -> ZkAccuracy:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(model_bytes, opts, providers=["CPUExecutionProvider"])
    in_shape = _concrete_shape(card.inputs[0].shape, "the input")
    errors: list[float] = []
    agree = 0
    n = min(samples, len(data))
    with private_tmpdir(art_dir.parent / "tmp") as work:
        for i in range(n):
            x = data[i].reshape(in_shape).astype(np.float32)
            ref = np.asarray(sess.run(None, {card.inputs[0].name: x})[0], dtype=np.float64)
            write_json_atomic(work / "in.json", _input_json(x))
            try:
                wit = ezkl.gen_witness(str(work / "in.json"), str(compiled), str(work / "w.json"))
            except RuntimeError as exc:
                raise UnsupportedError(f"EZKL witness failed: {first_line(exc)}") from exc
            if i == 0:
                hashes = (wit.get("processed_inputs") or {}).get("poseidon_hash") or []
                if len(hashes) != 1:
                    raise UnsupportedError(
                        f"EZKL hashed this input into {len(hashes)} field elements; "
                        "edgetrust's proof format carries exactly one input hash"
                    )
            got = _outputs_from_witness(wit, out_scale)
            if got.size != ref.size:
                raise UnsupportedError("EZKL's public output differs in size from the model's")
            errors.append(float(np.max(np.abs(got - ref.reshape(-1)))))
            agree += int(np.argmax(got) == np.argmax(ref))
    return ZkAccuracy(
        samples=n,
        max_abs_error=max(errors),
        mean_abs_error=float(np.mean(errors)),
        top1_agreement=agree / n if classifier else None,
        calibration=source,
    )


def _key_from_manifest(directory: Path, keys_dir: Path, manifest: Any) -> ZkVerifierKey:
    try:
        model_digest = manifest["modelDigest"]
        parse_digest(model_digest)
        want = {k: manifest[k] for k in ("settingsDigest", "vkDigest", "srsDigest")}
        srs_path = (keys_dir / manifest["srsPath"]).resolve()
    except (KeyError, TypeError) as exc:
        raise InvalidInputError(f"malformed ZK manifest in {keys_dir}: {exc}") from exc
    settings_path = directory / "settings.json"
    vk_path = keys_dir / "vk.key"
    got = {
        "settingsDigest": digest_file(settings_path),
        "vkDigest": digest_file(vk_path),
        "srsDigest": digest_file(srs_path),
    }
    for name, digest in want.items():
        if got[name] != digest:
            raise InvalidInputError(
                f"ZK cache {keys_dir} was modified ({name} differs from its manifest); "
                "delete the directory and run the setup again"
            )
    logrows, in_scale, out_scale, shape = _settings_info(
        read_json_file(settings_path, "EZKL settings")
    )
    return ZkVerifierKey(
        model_digest=model_digest,
        settings_path=settings_path,
        vk_path=vk_path,
        srs_path=srs_path,
        settings_digest=got["settingsDigest"],
        vk_digest=got["vkDigest"],
        srs_digest=got["srsDigest"],
        srs_kind=srs_kind(got["srsDigest"], logrows),
        logrows=logrows,
        input_scale=in_scale,
        output_scale=out_scale,
        output_shape=shape,
    )


def _load_keys_dir(directory: Path, keys_dir: Path) -> ZkArtifacts:
    manifest = read_json_file(keys_dir / _MANIFEST, "ZK manifest")
    key = _key_from_manifest(directory, keys_dir, manifest)
    compiled = directory / "model.compiled"
    compiled_digest = digest_file(compiled)
    if compiled_digest != manifest.get("compiledDigest"):
        raise InvalidInputError(
            f"ZK cache {directory}: the compiled circuit differs from its manifest; "
            "delete the directory and run the setup again"
        )
    if manifest.get("ezklVersion") != ezkl_version():
        raise UnsupportedError(
            f"ZK artifacts in {keys_dir} were made by ezkl {manifest.get('ezklVersion')}, "
            f"this is ezkl {ezkl_version()}; run the setup again with force=True"
        )
    try:
        return ZkArtifacts(
            key=key,
            directory=directory,
            model_path=directory / "model.onnx",
            compiled_path=compiled,
            pk_path=keys_dir / "pk.key",
            compiled_digest=compiled_digest,
            input_name=str(manifest["inputName"]),
            output_name=str(manifest["outputName"]),
            input_shape=tuple(int(d) for d in manifest["inputShape"]),
            classifier=bool(manifest["classifier"]),
            accuracy=ZkAccuracy.from_dict(manifest["accuracy"]),
            estimate=estimate_from_settings(read_json_file(key.settings_path, "EZKL settings")),
            ezkl_version=str(manifest["ezklVersion"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidInputError(f"malformed ZK manifest in {keys_dir}: {exc}") from exc


def _model_dir(home: Path, model_digest: str) -> Path:
    return home / "zk" / digest_hex(model_digest)


def load_zk_artifacts(
    model_digest: str, *, home: str | Path | None = None, vk_digest: str | None = None
) -> ZkArtifacts:
    """The cached artifacts of a model (after `zk_setup`), checked against their manifest.

    With several setups of one model (e.g. an unsafe SRS, then a PPoT one), `vk_digest`
    picks one; without it, a PPoT setup is preferred.

    Raises:
        NotFoundError: no setup was done for this model (or none with this VK).
    """
    directory = _model_dir(resolve_home(home), model_digest)
    found = []
    for keys_dir in sorted(directory.glob("keys-*")) if directory.is_dir() else []:
        if (keys_dir / _MANIFEST).exists():
            found.append(_load_keys_dir(directory, keys_dir))
    if vk_digest is not None:
        found = [a for a in found if a.key.vk_digest == vk_digest]
    if not found:
        what = f" with verifying key {vk_digest}" if vk_digest else ""
        raise NotFoundError(
            f"no ZK setup for model {model_digest}{what} (run 'edgetrust zk setup MODEL' first)"
        )
    found.sort(key=lambda a: a.key.srs_kind != "ppot")
    return found[0]


def zk_setup(
    model: bytes,
    *,
    srs: SrsChoice,
    home: str | Path | None = None,
    calibration: npt.ArrayLike | None = None,
    memory_budget: int | None = None,
    scales: Sequence[int] = DEFAULT_SCALES,
    accuracy_samples: int = 32,
    classifier: bool | None = None,
    force: bool = False,
    progress: ProgressFn = no_progress,
) -> ZkArtifacts:
    """Set up (once) everything needed to prove inferences of `model` in zero knowledge.

    Args:
        model: the ONNX file bytes; the cache is keyed by their sha256.
        srs: where the SRS comes from: `PpotSrs(path)` (checked against the published
            Perpetual Powers of Tau digests) or `UnsafeLocalSrs()` (insecure, for tests).
        home: the edgetrust home (default ``$EDGETRUST_HOME``).
        calibration: input samples for EZKL's calibration and the accuracy report, shape
            (n, *input shape without batch); default 32 synthetic uniform [0, 1) samples.
        memory_budget: refuse models whose setup or proving is estimated to need more bytes
            (default: half of this machine's memory).
        scales: fixed-point scales calibration may pick from.
        accuracy_samples: calibration samples compared with onnxruntime.
        classifier: check top-1 agreement when proving; default: the output is (1, C>1).
        force: discard the cached artifacts of this model and redo everything.
        progress: called with each stage (EZKL holds the GIL, so stages are the granularity).

    Raises:
        ZkResourceLimitError: the model needs more memory than `memory_budget`.
        InvalidInputError: the model or SRS file is not what it should be.
        UnsupportedError: EZKL cannot build this model.
    """
    if not isinstance(srs, PpotSrs | UnsafeLocalSrs):
        raise ValueError("`srs` must be PpotSrs(path) or UnsafeLocalSrs()")
    budget = default_memory_budget() if memory_budget is None else memory_budget
    if budget <= 0:
        raise ValueError("`memory_budget` must be a positive number of bytes")
    if not scales or not all(isinstance(s, int) and 0 <= s <= 30 for s in scales):
        raise ValueError("`scales` must be a non-empty list of integers in [0, 30]")
    if accuracy_samples < 1:
        raise ValueError("`accuracy_samples` must be at least 1")

    total = 7
    progress("checking the model", 0, total)
    card = ModelCard.from_onnx_bytes(model)
    _check_model(card)
    check_budget(estimate_from_onnx(parse_onnx(model)), budget)
    root = resolve_home(home)
    ezkl = import_ezkl(root / "zk")
    directory = _model_dir(root, card.digest)
    with locked(root / "zk" / f".{digest_hex(card.digest)}.lock"):
        if force and directory.exists():
            shutil.rmtree(directory)
        directory.mkdir(parents=True, exist_ok=True)
        model_path = directory / "model.onnx"
        if not model_path.exists() or digest_file(model_path) != card.digest:
            with temp_path(directory, ".onnx") as tmp:
                tmp.write_bytes(model)
                tmp.replace(model_path)
        input_shape = _concrete_shape(card.inputs[0].shape, "the input")
        data, source = _calibration_set(calibration, input_shape)

        progress("settings and calibration", 1, total)
        settings_path = directory / "settings.json"
        if not settings_path.exists():
            _make_settings(ezkl, model_path, directory, card, data, scales)
        settings = read_json_file(settings_path, "EZKL settings")
        logrows, _, out_scale, out_shape = _settings_info(settings)
        estimate = estimate_from_settings(settings)
        check_budget(estimate, budget)
        is_classifier = (
            classifier
            if classifier is not None
            else (len(out_shape) == 2 and out_shape[0] == 1 and out_shape[1] > 1)
        )

        progress("compiling the circuit", 2, total)
        compiled = directory / "model.compiled"
        if not compiled.exists():
            with temp_path(directory, ".compiled") as tmp:
                try:
                    ezkl.compile_circuit(str(model_path), str(tmp), str(settings_path))
                except RuntimeError as exc:
                    raise UnsupportedError(
                        f"EZKL cannot compile this model: {first_line(exc)}"
                    ) from exc
                tmp.replace(compiled)

        progress(f"SRS for 2^{logrows} rows", 3, total)
        srs_path, srs_digest, _ = install_srs(srs, logrows, root / "zk" / "srs")

        progress("generating keys", 4, total)
        keys_dir = directory / f"keys-{digest_hex(srs_digest)[:16]}"
        keys_dir.mkdir(exist_ok=True)
        vk, pk = keys_dir / "vk.key", keys_dir / "pk.key"
        if not (vk.exists() and pk.exists()):
            with temp_path(keys_dir, ".vk") as tvk, temp_path(keys_dir, ".pk") as tpk:
                try:
                    ezkl.setup(str(compiled), str(tvk), str(tpk), str(srs_path), None, False)
                except RuntimeError as exc:
                    raise UnsupportedError(f"EZKL setup failed: {first_line(exc)}") from exc
                tpk.replace(pk)
                tvk.replace(vk)

        progress("measuring accuracy against onnxruntime", 5, total)
        acc_path = directory / "accuracy.json"
        if acc_path.exists():
            accuracy = ZkAccuracy.from_dict(read_json_file(acc_path, "accuracy record"))
        else:
            accuracy = _measure_accuracy(
                ezkl, directory, compiled, model, card, data, out_scale, is_classifier, source,
                accuracy_samples,
            )  # fmt: skip
            write_json_atomic(acc_path, accuracy.to_dict())

        manifest = {
            "modelDigest": card.digest,
            "settingsDigest": digest_file(settings_path),
            "compiledDigest": digest_file(compiled),
            "vkDigest": digest_file(vk),
            "srsDigest": srs_digest,
            "srsPath": str(Path("..", "..", "srs", srs_path.name)),
            "ezklVersion": ezkl_version(),
            "inputName": card.inputs[0].name,
            "outputName": card.outputs[0].name,
            "inputShape": list(input_shape),
            "classifier": is_classifier,
            "accuracy": accuracy.to_dict(),
            "logrows": logrows,
        }
        if not (keys_dir / _MANIFEST).exists():
            write_json_atomic(keys_dir / _MANIFEST, manifest)
        artifacts = _load_keys_dir(directory, keys_dir)
    progress("done", total, total)
    return artifacts


def export_verifier_files(artifacts: ZkArtifacts | ZkVerifierKey, dest: Path) -> ZkVerifierKey:
    """Copy what a verifier needs (settings, VK, SRS) to `dest`, for another machine or chain.

    The directory gets ``settings.json``, ``vk.key``, ``kzg.srs`` and ``verifier.json`` (model
    and file digests); `load_verifier_key(dest)` reads it back. For an on-chain verifier, pass
    the returned key's `evm_verifier_inputs()` to ``ezkl.create_evm_verifier``.
    """
    key = artifacts.key if isinstance(artifacts, ZkArtifacts) else artifacts
    dest.mkdir(parents=True, exist_ok=True)
    for src, name in (
        (key.settings_path, "settings.json"),
        (key.vk_path, "vk.key"),
        (key.srs_path, "kzg.srs"),
    ):
        with temp_path(dest, ".part") as tmp:
            shutil.copyfile(src, tmp)
            tmp.replace(dest / name)
    write_json_atomic(
        dest / _VERIFIER_MANIFEST,
        {
            "modelDigest": key.model_digest,
            "settingsDigest": key.settings_digest,
            "vkDigest": key.vk_digest,
            "srsDigest": key.srs_digest,
        },
    )
    return load_verifier_key(dest)


def load_verifier_key(directory: Path) -> ZkVerifierKey:
    """Load a verifier directory written by `export_verifier_files`, re-hashing every file."""
    manifest = read_json_file(directory / _VERIFIER_MANIFEST, "verifier manifest")
    if not isinstance(manifest, dict):
        raise InvalidInputError("verifier manifest must be a JSON object")
    settings = directory / "settings.json"
    vk, srs_path = directory / "vk.key", directory / "kzg.srs"
    got = {
        "settingsDigest": digest_file(settings),
        "vkDigest": digest_file(vk),
        "srsDigest": digest_file(srs_path),
    }
    for name, digest in got.items():
        if manifest.get(name) != digest:
            raise InvalidInputError(f"verifier directory {directory}: {name} does not match")
    model_digest = manifest.get("modelDigest")
    parse_digest(model_digest)
    logrows, in_scale, out_scale, shape = _settings_info(read_json_file(settings, "settings"))
    return ZkVerifierKey(
        model_digest=str(model_digest),
        settings_path=settings,
        vk_path=vk,
        srs_path=srs_path,
        settings_digest=got["settingsDigest"],
        vk_digest=got["vkDigest"],
        srs_digest=got["srsDigest"],
        srs_kind=srs_kind(got["srsDigest"], logrows),
        logrows=logrows,
        input_scale=in_scale,
        output_scale=out_scale,
        output_shape=shape,
    )
