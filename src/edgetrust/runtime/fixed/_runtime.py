"""The fixed executor as a receipt executor: plans and traces kept in the edgetrust home.

`FixedRuntime` implements the `edgetrust.runtime.executors.Executor` protocol under the name
``fixed``. Its receipt settings carry the whole quantization plan (a few KiB: one scale per
tensor), so any verifier rebuilds the identical executor from the model file and the receipt
alone and compares outputs byte for byte. After each run it exposes `last_trace_root`, which
the device puts in the receipt, and keeps the trace for disputes (`TraceStore`).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edgetrust.encoding import digest_hex
from edgetrust.errors import InvalidInputError, NotFoundError, UnsupportedError
from edgetrust.home import resolve_home
from edgetrust.runtime.fixed._executor import EXECUTOR_NAME, EXECUTOR_VERSION, FixedExecutor
from edgetrust.runtime.fixed._fault import Fault
from edgetrust.runtime.fixed._plan import QMAX, Precision, QuantPlan
from edgetrust.runtime.trace import LAYOUT_V1, LAYOUT_V2, TraceLayout, layout_named

DEFAULT_TRACE_WINDOW = 7 * 24 * 3600.0
"""Traces are kept this many seconds by default (the dispute window)."""
DEFAULT_MAX_TRACES = 64


def _private_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


class PlanStore:
    """Quantization plans by (model digest, precision) under ``<home>/plans/``."""

    def __init__(self, home: str | os.PathLike[str] | None = None) -> None:
        self.root = resolve_home(home) / "plans"

    def path(self, model_digest: str, precision: str) -> Path:
        """Where a plan lives."""
        return self.root / f"{digest_hex(model_digest)}-{precision}.json"

    def get(self, model_digest: str, precision: str) -> QuantPlan | None:
        """The stored plan, or None."""
        p = self.path(model_digest, precision)
        if not p.is_file():
            return None
        plan = QuantPlan.from_json(p.read_bytes())
        if plan.model_digest != model_digest or plan.precision != precision:
            raise InvalidInputError(f"plan file {p} is for another model or precision")
        return plan

    def put(self, plan: QuantPlan, *, preferred: bool = False) -> Path:
        """Store a plan (replacing an older one for the same model and precision).

        `preferred` makes its precision the model's default (e.g. int16 for MiniLM, which
        loses too much at int8).
        """
        p = self.path(plan.model_digest, plan.precision)
        _private_write(p, plan.to_json())
        if preferred:
            _private_write(
                self.root / f"{digest_hex(plan.model_digest)}.preferred", plan.precision.encode()
            )
        return p

    def find(self, model_digest: str, plan_digest: str) -> QuantPlan | None:
        """The stored plan of a model with this digest, at either precision, or None.

        A stored trace names its plan by digest only; the plan is found again here (a model
        re-planned since then no longer has it, and its old traces cannot be regenerated).
        """
        for precision in QMAX:
            plan = self.get(model_digest, precision)
            if plan is not None and plan.digest == plan_digest:
                return plan
        return None

    def preferred(self, model_digest: str) -> Precision:
        """The model's preferred precision (int8 unless a plan was stored as preferred)."""
        p = self.root / f"{digest_hex(model_digest)}.preferred"
        value = p.read_text().strip() if p.is_file() else "int8"
        return "int16" if value == "int16" else "int8"


class TraceStore:
    """Traces of past runs by trace root, kept for a window so disputes can be answered.

    A trace is kept as what regenerates it bit for bit: the run's inputs (and, for a device
    simulating a lie, its `Fault`). The executor is deterministic, so `get` recomputes exactly
    the committed trace - and checks its root - while a MiniLM trace (~35 MB of integers)
    costs a few hundred bytes of token ids on disk. Files older than `window` seconds, or
    beyond the newest `max_traces`, are deleted when a new trace is added.
    """

    def __init__(
        self,
        home: str | os.PathLike[str] | None = None,
        *,
        window: float = DEFAULT_TRACE_WINDOW,
        max_traces: int = DEFAULT_MAX_TRACES,
    ) -> None:
        if window <= 0 or max_traces < 1:
            raise InvalidInputError("`window` must be positive and `max_traces` at least 1")
        self.root = resolve_home(home) / "traces"
        self.window = window
        self.max_traces = max_traces

    def path(self, root: bytes) -> Path:
        """The file of a trace."""
        return self.root / f"{root.hex()}.npz"

    def put(
        self,
        root: bytes,
        inputs: Mapping[str, npt.ArrayLike],
        *,
        model_digest: str,
        plan_digest: str,
        fault: Fault | None = None,
    ) -> Path:
        """Keep what regenerates the trace with this root; prune old ones."""
        import io

        meta: dict[str, Any] = {
            "model": model_digest,
            "plan": plan_digest,
            "inputs": sorted(inputs),
        }
        if fault is not None:
            meta["fault"] = {"node": fault.node, "element": fault.element, "delta": fault.delta}
        buf = io.BytesIO()
        arrays = {f"i{i}": np.asarray(inputs[name]) for i, name in enumerate(meta["inputs"])}
        raw = json.dumps(meta).encode()
        np.savez(buf, meta=np.frombuffer(raw, np.uint8), **arrays)  # type: ignore[arg-type]
        p = self.path(root)
        _private_write(p, buf.getvalue())
        self.prune()
        return p

    def prune(self, *, now: float | None = None) -> None:
        """Delete traces outside the window or beyond the count."""
        if not self.root.is_dir():
            return
        t = time.time() if now is None else now
        files = sorted(self.root.glob("*.npz"), key=lambda f: f.stat().st_mtime, reverse=True)
        for i, f in enumerate(files):
            if i >= self.max_traces or t - f.stat().st_mtime > self.window:
                f.unlink(missing_ok=True)

    def _load(
        self, root: bytes, *, with_inputs: bool, now: float | None = None
    ) -> tuple[dict[str, Any], dict[str, npt.NDArray[Any]], float]:
        """The stored meta, inputs (if asked) and mtime of a trace still inside the window."""
        p = self.path(root)
        missing = NotFoundError(
            f"no stored trace {root.hex()[:16]}… (it was never kept here or its dispute "
            "window has passed)"
        )
        try:
            mtime = p.stat().st_mtime
        except OSError as exc:
            raise missing from exc
        if (time.time() if now is None else now) - mtime > self.window:
            raise missing
        try:
            with np.load(p, allow_pickle=False) as data:
                meta = json.loads(bytes(data["meta"]).decode())
                names = meta["inputs"]
                inputs = (
                    {n: np.asarray(data[f"i{i}"]) for i, n in enumerate(names)}
                    if with_inputs
                    else {}
                )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise InvalidInputError(f"stored trace {p.name} is damaged: {exc}") from exc
        if not isinstance(meta, dict) or not all(
            isinstance(meta.get(k), str) for k in ("model", "plan")
        ):
            raise InvalidInputError(f"stored trace {p.name} is damaged: no model or plan")
        return meta, inputs, mtime

    def describe(self, root: bytes, *, now: float | None = None) -> tuple[str, str, float]:
        """``(model digest, plan digest, kept until)`` of a stored trace, without running it.

        Raises:
            NotFoundError: no such trace, or its window has passed.
            InvalidInputError: the file is damaged.
        """
        meta, _, mtime = self._load(root, with_inputs=False, now=now)
        return meta["model"], meta["plan"], mtime + self.window

    def get(self, root: bytes, executor: FixedExecutor) -> Any:
        """The trace with this root, regenerated and checked against the root.

        Raises:
            NotFoundError: no such trace, or its window has passed.
            InvalidInputError: the file is damaged, or was made with another model or plan.
        """
        meta, inputs, _ = self._load(root, with_inputs=True)
        if meta.get("model") != executor.model_digest or meta.get("plan") != executor.plan.digest:
            raise InvalidInputError("stored trace was made with another model or plan")
        f = meta.get("fault")
        fault = Fault(f["node"], int(f["element"]), int(f["delta"])) if f else None
        _, trace = executor.run_traced(inputs, fault=fault)
        if trace.root != root:
            raise InvalidInputError("stored trace does not regenerate its root (file damaged)")
        return trace


class FixedRuntime:
    """The ``fixed`` executor for receipts (protocol `edgetrust.runtime.executors.Executor`).

    Args:
        precision: "int8" or "int16"; None picks, per model, the precision its stored plan
            prefers (`PlanStore.put(preferred=True)`), else int8.
        plan: use exactly this plan (a verifier re-executing a receipt); otherwise the plan
            comes from the home's `PlanStore`, or is calibrated (synthetic samples) and stored.
        home: the edgetrust home (plans and traces).
        keep_traces: store each run's trace for disputes (`TraceStore`).
        fault: make this device lie (demos and tests only; see `Fault`).
    """

    name = EXECUTOR_NAME
    exact = True

    def __init__(
        self,
        *,
        precision: Precision | None = None,
        plan: QuantPlan | None = None,
        home: str | os.PathLike[str] | None = None,
        keep_traces: bool = True,
        trace_window: float = DEFAULT_TRACE_WINDOW,
        fault: Fault | None = None,
        trace_layout: TraceLayout | None = None,
    ) -> None:
        if precision is not None and precision not in QMAX:
            raise InvalidInputError(f"precision must be int8 or int16, got {precision!r}")
        if plan is not None and precision is not None and plan.precision != precision:
            raise InvalidInputError("plan precision differs from the executor's")
        self.precision: Precision | None = plan.precision if plan is not None else precision
        self.fixed_plan = plan
        self.home = home
        self.plans = PlanStore(home)
        self.traces = TraceStore(home, window=trace_window) if keep_traces else None
        self.fault = fault
        self.trace_layout = LAYOUT_V2 if trace_layout is None else trace_layout
        self._executors: dict[str, FixedExecutor] = {}
        self._last: FixedExecutor | None = None
        self.last_trace_root: str | None = None
        """``sha256:<hex>``-style root of the last run's trace (RFC 9162 Merkle root)."""
        self.last_trace: Any = None

    @property
    def version(self) -> str:
        """Version of the integer definitions and trace layout ("1" for a v1 receipt)."""
        return EXECUTOR_VERSION if self.trace_layout is LAYOUT_V2 else "1"

    @staticmethod
    def from_settings(
        settings: Mapping[str, Any], *, home: str | os.PathLike[str] | None = None
    ) -> FixedRuntime:
        """Build the runtime for a device (`home` given) or from a receipt (no `home`).

        A receipt's settings are untrusted: they choose the plan, never a path. A verifier's
        runtime therefore needs the receipt's plan and keeps no traces; only a device, which
        passes its own `home`, may plan, store plans and keep traces there.
        """
        precision = settings.get("precision")
        if precision is not None and precision not in QMAX:
            raise InvalidInputError(f"executor precision {precision!r} is unknown")
        # A receipt without a "trace" setting predates layout v2 (executor version 1); a device
        # (its own home, no receipt) commits in the current layout unless told otherwise.
        name = settings.get("trace")
        layout = LAYOUT_V2 if name is None and home is not None else layout_named(name)
        plan_obj = settings.get("plan")
        if plan_obj is None:
            if home is None:
                raise UnsupportedError("a fixed receipt without its plan cannot be re-executed")
            return FixedRuntime(precision=precision, home=home, trace_layout=layout)
        if not isinstance(plan_obj, dict):
            raise InvalidInputError("executor settings plan must be an object")
        plan = QuantPlan.from_json(json.dumps(plan_obj))
        return FixedRuntime(
            precision=precision,
            plan=plan,
            home=home,
            keep_traces=home is not None,
            trace_layout=layout,
        )

    def executor_for(self, model_digest: str, model_bytes: bytes) -> FixedExecutor:
        """The fixed executor of a model (planned once, cached)."""
        ex = self._executors.get(model_digest)
        if ex is not None:
            return ex
        if self.fixed_plan is not None:
            if self.fixed_plan.model_digest != model_digest:
                raise InvalidInputError("the receipt's plan is for another model")
            ex = FixedExecutor(
                model_bytes,
                precision=self.fixed_plan.precision,
                plan=self.fixed_plan,
                trace_layout=self.trace_layout,
            )
        else:
            precision = self.precision or self.plans.preferred(model_digest)
            plan = self.plans.get(model_digest, precision)
            if plan is not None:
                ex = FixedExecutor(
                    model_bytes, precision=precision, plan=plan, trace_layout=self.trace_layout
                )
            else:
                ex = FixedExecutor(model_bytes, precision=precision, trace_layout=self.trace_layout)
                self.plans.put(ex.plan)
        self._executors[model_digest] = ex
        return ex

    def run(
        self, card: Any, model_bytes: bytes, inputs: Mapping[str, Any]
    ) -> dict[str, npt.NDArray[Any]]:
        """Run traced; remember the trace root (and keep the trace)."""
        ex = self.executor_for(card.digest, model_bytes)
        outputs, trace = ex.run_traced(inputs, fault=self.fault)
        self._last = ex
        self.last_trace = trace
        self.last_trace_root = trace.root_digest
        if self.traces is not None:
            self.traces.put(
                trace.root,
                inputs,
                model_digest=ex.model_digest,
                plan_digest=ex.plan.digest,
                fault=self.fault,
            )
        return outputs

    def descriptor(self) -> dict[str, Any]:
        """``{"name", "version", "settings"}``: precision, the full plan, the weights root."""
        settings: dict[str, Any] = {}
        if self.precision is not None:
            settings["precision"] = self.precision
        if self._last is not None:
            settings["precision"] = self._last.precision
            w = self._last.weight_commitments()
            settings["plan"] = self._last.plan.to_dict()
            settings["weights_root"] = w.root_digest
            settings["weights_size"] = w.size
        if self.trace_layout is not LAYOUT_V1:
            settings["trace"] = self.trace_layout.type
        return {"name": self.name, "version": self.version, "settings": settings}


def _factory(
    settings: Mapping[str, Any], home: str | os.PathLike[str] | None = None
) -> FixedRuntime:
    return FixedRuntime.from_settings(settings, home=home)


def register() -> None:
    """Register ``fixed`` with `edgetrust.runtime.executors` (idempotent)."""
    from edgetrust.runtime.executors import register_executor

    register_executor(EXECUTOR_NAME, _factory)
