"""onnxruntime (float) execution with strict input validation.

Inputs are checked against the model card before anything runs: unknown or missing names,
wrong dtype, wrong rank or fixed dimension, NaN/Inf, or an oversized tensor each raise
`InvalidInputError` naming the input, what was expected and what was given.

onnxruntime is fast but *not* bit-exact across CPUs (its kernels pick AVX2/AVX-512/NEON paths
at run time and sum in different orders), so re-execution with it can only compare within a
tolerance. Exact re-execution is what `edgetrust.runtime.fixed` is for.
"""

from __future__ import annotations

import json
import os
import threading
import zipfile
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from edgetrust.errors import InvalidInputError, NotFoundError, ResourceLimitError
from edgetrust.files import checked_size
from edgetrust.models import ModelCard, TensorSpec

__all__ = [
    "DEFAULT_MAX_INPUT_BYTES",
    "OnnxExecutor",
    "Tensors",
    "load_inputs",
    "validate_inputs",
]

Tensors = dict[str, npt.NDArray[Any]]

DEFAULT_MAX_INPUT_BYTES = 256 * 2**20
"""Default limit on the total size of one inference's inputs (256 MiB)."""

_SESSION_CACHE_SIZE = 8


def _shape_ok(spec: TensorSpec, shape: tuple[int, ...]) -> bool:
    if spec.shape is None:
        return True
    if len(spec.shape) != len(shape):
        return False
    return all(
        not isinstance(want, int) or want == got
        for want, got in zip(spec.shape, shape, strict=True)
    )


def _fmt_shape(shape: tuple[Any, ...] | None) -> str:
    if shape is None:
        return "any"
    return "(" + ", ".join("?" if d is None else str(d) for d in shape) + ")"


def _native(arr: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """The array in this machine's byte order.

    onnxruntime reads raw buffers as native order, while the input commitment hashes the
    values (little-endian canonical bytes): a big-endian array would be committed as one
    input and computed as another.
    """
    return arr if arr.dtype.isnative else arr.astype(arr.dtype.newbyteorder("="))


def validate_inputs(
    card: ModelCard,
    inputs: Mapping[str, npt.ArrayLike],
    *,
    allow_nonfinite: bool = False,
    max_bytes: int = DEFAULT_MAX_INPUT_BYTES,
) -> Tensors:
    """Check `inputs` against the card's declared real inputs; return them as arrays.

    Dynamic dimensions (named or unnamed) accept any size; fixed ones must match.

    Raises:
        InvalidInputError: a name the model lacks, a missing input, wrong dtype or shape,
            NaN/Inf (unless `allow_nonfinite`).
        ResourceLimitError: the inputs together exceed `max_bytes`.
    """
    wanted = {s.name: s for s in card.inputs}
    unknown = sorted(set(inputs) - set(wanted))
    if unknown:
        raise InvalidInputError(
            f"model {card.name} has no input {unknown[0]!r} "
            f"(its inputs: {', '.join(sorted(wanted))})"
        )
    missing = sorted(set(wanted) - set(inputs))
    if missing:
        raise InvalidInputError(f"input {missing[0]!r} is missing")
    total = 0
    out: Tensors = {}
    for name, spec in wanted.items():
        arr = _native(np.asarray(inputs[name]))
        total += arr.nbytes
        if total > max_bytes:
            raise ResourceLimitError(
                f"inputs exceed the {max_bytes}-byte limit at {name!r}", limit=max_bytes
            )
        if arr.dtype.name != spec.dtype:
            raise InvalidInputError(
                f"input {name!r}: expected dtype {spec.dtype}, got {arr.dtype.name}"
            )
        if not _shape_ok(spec, arr.shape):
            raise InvalidInputError(
                f"input {name!r}: expected shape {_fmt_shape(spec.shape)}, "
                f"got {_fmt_shape(arr.shape)}"
            )
        if not allow_nonfinite and arr.dtype.kind == "f" and not np.isfinite(arr).all():
            raise InvalidInputError(
                f"input {name!r} contains NaN or Inf (pass --allow-nonfinite to accept it)"
            )
        out[name] = arr
    return out


def _coerce(card: ModelCard, name: str, value: Any) -> npt.NDArray[Any]:
    """Turn JSON data into an array of the input's declared dtype, refusing lossy casts."""
    try:
        spec = card.input_spec(name)
    except NotFoundError as exc:
        raise InvalidInputError(str(exc)) from exc
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError) as exc:
        raise InvalidInputError(f"input {name!r} is not a rectangular array") from exc
    if arr.dtype == object or arr.dtype.kind in "USV":
        raise InvalidInputError(f"input {name!r} must be numbers in a rectangular array")
    try:
        target = np.dtype(spec.dtype)
    except TypeError as exc:
        raise InvalidInputError(f"input {name!r} has an unsupported dtype {spec.dtype}") from exc
    if target.kind in "iu" and arr.dtype.kind == "f":
        raise InvalidInputError(f"input {name!r} expects integers ({spec.dtype}), got fractions")
    with np.errstate(over="ignore", invalid="ignore"):
        cast = arr.astype(target)
    if target.kind in "iu" and not np.array_equal(cast, arr):
        raise InvalidInputError(f"input {name!r}: values do not fit in {spec.dtype}")
    return cast


def load_inputs(
    path: str | os.PathLike[str], card: ModelCard, *, max_bytes: int = DEFAULT_MAX_INPUT_BYTES
) -> Tensors:
    """Read model inputs from `.npy` (single-input models), `.npz` or `.json`.

    JSON is either ``{"<input name>": nested list, ...}`` or, for a single-input model, a bare
    nested list. Files larger than `max_bytes` are refused before they are read.
    """
    p = Path(path)
    checked_size(p, "input file", max_bytes=max_bytes)
    suffix = p.suffix.lower()
    try:
        if suffix == ".npy":
            if len(card.inputs) != 1:
                raise InvalidInputError(
                    f"a .npy file holds one array but model {card.name} has "
                    f"{len(card.inputs)} inputs: use .npz or .json"
                )
            return {card.inputs[0].name: np.load(p, allow_pickle=False)}
        if suffix == ".npz":
            with np.load(p, allow_pickle=False) as npz:
                return {k: npz[k] for k in npz.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise InvalidInputError(f"input file {p} is not a valid {suffix} file: {exc}") from exc
    if suffix == ".json":
        try:
            obj = json.loads(p.read_bytes())
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise InvalidInputError(f"input file {p} is not valid JSON: {exc}") from exc
        if isinstance(obj, list):
            if len(card.inputs) != 1:
                raise InvalidInputError(
                    f"model {card.name} has {len(card.inputs)} inputs: give a JSON object "
                    "mapping each input name to its array"
                )
            obj = {card.inputs[0].name: obj}
        if not isinstance(obj, dict):
            raise InvalidInputError(f"input file {p} must hold a JSON object or array")
        return {str(k): _coerce(card, str(k), v) for k, v in obj.items()}
    raise InvalidInputError(
        f"input file {p}: unsupported type {suffix or '(none)'}; use .npy, .npz or .json"
    )


class OnnxExecutor:
    """Runs a model with onnxruntime on the CPU; sessions are cached per model digest.

    Thread count and graph optimisation level are fixed settings recorded in receipts, so a
    verifier can reproduce the configuration (it still cannot expect bit-exact results on
    another CPU).
    """

    name = "onnxruntime"
    exact = False
    """onnxruntime results can differ in the last bits between CPUs."""

    def __init__(self, *, intra_op_threads: int = 1) -> None:
        if intra_op_threads < 1:
            raise ValueError("`intra_op_threads` must be at least 1")
        self.intra_op_threads = intra_op_threads
        self._sessions: OrderedDict[str, ort.InferenceSession] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def version(self) -> str:
        """The onnxruntime version."""
        return str(ort.__version__)

    @property
    def settings(self) -> dict[str, Any]:
        """Settings that affect results, as recorded in receipts."""
        return {
            "provider": "CPUExecutionProvider",
            "intra_op_num_threads": self.intra_op_threads,
            "graph_optimization_level": "ORT_ENABLE_ALL",
        }

    def descriptor(self) -> dict[str, Any]:
        """The receipt's `executor` field."""
        return {"name": self.name, "version": self.version, "settings": self.settings}

    def session(self, card: ModelCard, model_bytes: bytes) -> ort.InferenceSession:
        """A cached session for the model (an LRU of a few models)."""
        with self._lock:
            sess = self._sessions.get(card.digest)
            if sess is not None:
                self._sessions.move_to_end(card.digest)
                return sess
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.intra_op_threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        try:
            sess = ort.InferenceSession(model_bytes, opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
            raise InvalidInputError(f"onnxruntime cannot load model {card.name}: {exc}") from exc
        with self._lock:
            self._sessions[card.digest] = sess
            while len(self._sessions) > _SESSION_CACHE_SIZE:
                self._sessions.popitem(last=False)
        return sess

    def run(
        self, card: ModelCard, model_bytes: bytes, inputs: Mapping[str, npt.NDArray[Any]]
    ) -> Tensors:
        """Run validated inputs; returns every graph output by name."""
        sess = self.session(card, model_bytes)
        try:
            results = sess.run(None, {k: _native(np.asarray(v)) for k, v in inputs.items()})
        except Exception as exc:  # shape errors inside the graph surface here
            raise InvalidInputError(f"onnxruntime failed on these inputs: {exc}") from exc
        names = [o.name for o in sess.get_outputs()]
        return {n: np.asarray(r) for n, r in zip(names, results, strict=True)}
