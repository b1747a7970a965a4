"""The executors a receipt can name, and how a verifier gets one back from a receipt.

A receipt records its executor as ``{"name", "version", "settings"}``. To re-execute, a
verifier looks the name up here and builds an executor with the recorded settings. An
executor that is `exact` promises bit-identical outputs on every machine (the fixed-point
one); for the others a verifier can only compare within a tolerance.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

from edgetrust.errors import InvalidInputError, UnsupportedError
from edgetrust.models import ModelCard
from edgetrust.runtime.onnx import OnnxExecutor, Tensors

__all__ = ["Executor", "ExecutorFactory", "executor_names", "make_executor", "register_executor"]


class Executor(Protocol):
    """Runs a model on validated inputs."""

    name: str

    @property
    def exact(self) -> bool:
        """Whether outputs are bit-identical on every machine."""
        ...

    def descriptor(self) -> dict[str, Any]:
        """``{"name", "version", "settings"}`` as recorded in receipts."""
        ...

    def run(self, card: ModelCard, model_bytes: bytes, inputs: Mapping[str, Any]) -> Tensors:
        """Outputs by name."""
        ...


ExecutorFactory = Callable[[Mapping[str, Any], Path | None], Executor]
"""Builds an executor from recorded settings and, on a device only, that device's home."""

_FACTORIES: dict[str, ExecutorFactory] = {}


def register_executor(name: str, factory: ExecutorFactory) -> None:
    """Make executor `name` available to `make_executor`."""
    _FACTORIES[name] = factory


def executor_names() -> tuple[str, ...]:
    """Registered executor names, sorted."""
    return tuple(sorted(_FACTORIES))


def make_executor(
    name: str, settings: Mapping[str, Any] | None = None, *, home: Path | None = None
) -> Executor:
    """Build executor `name` with `settings` (from a receipt, or defaults).

    Settings from a receipt are untrusted: they may choose how to compute, never where to
    write or how many resources to take. `home` is the device's own state directory and is
    given only by the device (`Device.executor`), never taken from a receipt.
    """
    factory = _FACTORIES.get(name)
    if factory is None:
        raise UnsupportedError(f"unknown executor {name!r} (known: {', '.join(executor_names())})")
    if settings is not None and not isinstance(settings, Mapping):
        raise InvalidInputError("executor settings must be an object")
    return factory(settings or {}, home)


def _onnx_factory(settings: Mapping[str, Any], home: Path | None) -> Executor:
    # The thread count only changes speed, and a receipt must not make a verifier spawn
    # thousands of threads: clamp it to this machine.
    threads = settings.get("intra_op_num_threads", 1)
    if not isinstance(threads, int) or isinstance(threads, bool):
        threads = 1
    return OnnxExecutor(intra_op_threads=max(1, min(threads, os.cpu_count() or 1)))


def _fixed_factory(settings: Mapping[str, Any], home: Path | None) -> Executor:
    # Imported on first use: the fixed-point executor is large and most runs never need it.
    from edgetrust.runtime.fixed import FixedRuntime

    return FixedRuntime.from_settings(settings, home=home)


def _ezkl_factory(settings: Mapping[str, Any], home: Path | None) -> Executor:
    # ZK receipts re-execute through the circuit's witness; imported only when needed.
    from edgetrust.verify.zk.executor import ZkWitnessExecutor

    return ZkWitnessExecutor(settings=settings, home=home)


register_executor(OnnxExecutor.name, _onnx_factory)
register_executor("fixed", _fixed_factory)
register_executor("ezkl", _ezkl_factory)
