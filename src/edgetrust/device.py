"""The device side: run a model, sign the receipt, keep the opening, log the receipt.

`Device` is what the CLI's `infer` and `reveal` call; a program embedding edgetrust uses it
the same way. Salts of input commitments never leave the device unless `reveal` is asked
for; they are kept under `$EDGETRUST_HOME/openings/` with mode 0600.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from edgetrust.encoding import digest_bytes, digest_hex
from edgetrust.errors import InvalidInputError, NotFoundError
from edgetrust.home import resolve_home
from edgetrust.identity import Identity, Keystore
from edgetrust.log import checkpoint as cp
from edgetrust.log.client import LogClient
from edgetrust.log.service import Log
from edgetrust.models import ModelCard, ModelRegistry
from edgetrust.receipts import (
    BatchReceipts,
    Bundle,
    LogProof,
    Opening,
    batch_salt,
    issue_batch,
    issue_receipt,
    new_opening,
    read_receipt,
)
from edgetrust.runtime.executors import Executor, make_executor
from edgetrust.runtime.onnx import DEFAULT_MAX_INPUT_BYTES, Tensors, validate_inputs

__all__ = [
    "BatchResult",
    "Device",
    "InferenceResult",
    "LocalLogWriter",
    "LogWriter",
    "OpeningStore",
    "RemoteLogWriter",
]


class LogWriter(Protocol):
    """Appends an entry to a transparency log and returns the proof of it."""

    def submit(self, entry: bytes) -> LogProof:
        """Append `entry`; return its index, inclusion proof and the signed checkpoint."""
        ...


class LocalLogWriter:
    """Writes to the embedded log (SQLite under `$EDGETRUST_HOME/log`)."""

    def __init__(self, log: Log) -> None:
        self.log = log

    def submit(self, entry: bytes) -> LogProof:
        """Append and prove against a fresh checkpoint."""
        index = self.log.append(entry)
        note = self.log.checkpoint()
        checkpoint = cp.verify_checkpoint(note, self.log.verifier_key)
        proof = self.log.inclusion_proof(index, checkpoint.size)
        return LogProof(checkpoint.origin, index, checkpoint.size, tuple(proof), note)


_HASHER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="edgetrust-commit")
"""One worker: hashes inputs while the model runs on the calling thread."""


def _batch_key(statement: bytes) -> str:
    return "batch-" + digest_hex(digest_bytes(statement)) + ".secret"


class RemoteLogWriter:
    """Submits to an edgetrust node over HTTP, verifying its answer with the log's key.

    The node's checkpoint must be signed by `vkey` and consistent with the last checkpoint
    this writer trusted, and the inclusion proof must verify, before a proof is handed out.
    """

    def __init__(
        self, url: str, vkey: str, *, state_path: str | os.PathLike[str] | None = None
    ) -> None:
        self.client = LogClient(url, vkey, state_path=state_path)

    def submit(self, entry: bytes) -> LogProof:
        """Append remotely; return the verified proof."""
        sub = self.client.submit(entry)
        return LogProof(sub.checkpoint.origin, sub.index, sub.checkpoint.size, sub.proof, sub.note)

    def close(self) -> None:
        """Close the HTTP client."""
        self.client.close()


class OpeningStore:
    """Salts (single receipts) and batch secrets, by commitment / batch root, mode 0600."""

    def __init__(self, home: str | os.PathLike[str] | None = None) -> None:
        self.root = resolve_home(home) / "openings"

    def _write(self, name: str, data: bytes) -> None:
        path = self.root / name
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        except FileNotFoundError:  # first salt of this home, or the directory was removed
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)

    def _read(self, name: str) -> bytes:
        try:
            return (self.root / name).read_bytes()
        except FileNotFoundError as exc:
            raise NotFoundError(
                "this device holds no opening for that receipt (it was issued elsewhere, "
                "or its salt was deleted)"
            ) from exc

    def keep(self, opening: Opening) -> None:
        """Remember a single receipt's salt."""
        self._write(digest_hex(opening.commitment) + ".salt", opening.salt)

    def forget(self, opening: Opening) -> None:
        """Drop a salt kept for a receipt that was never issued."""
        (self.root / (digest_hex(opening.commitment) + ".salt")).unlink(missing_ok=True)

    def commit(self, inputs: Mapping[str, Any]) -> Opening:
        """A fresh salted commitment to `inputs`, its salt already kept."""
        opening = new_opening(inputs)
        self.keep(opening)
        return opening

    def keep_batch(self, batch: BatchReceipts) -> None:
        """Remember a batch's secret (item salts derive from it)."""
        # Keyed by the digest of the signed statement, which names the batch root.
        self._write(_batch_key(batch.envelope.payload), batch.secret)

    def opening_for(self, bundle: Bundle) -> Opening:
        """The opening of a bundle's input commitment."""
        receipt = read_receipt(bundle)
        if bundle.item is None:
            salt = self._read(digest_hex(receipt.input_commitment) + ".salt")
            return Opening(receipt.input_commitment, salt)
        secret = self._read(_batch_key(bundle.envelope.payload))
        return Opening(receipt.input_commitment, batch_salt(secret, bundle.item.index))


@dataclass(frozen=True)
class InferenceResult:
    """One inference: its outputs, the bundle to hand out, and the model card."""

    outputs: Tensors
    bundle: Bundle
    card: ModelCard


@dataclass(frozen=True)
class BatchResult:
    """A batch of inferences signed once."""

    outputs: Tensors
    receipts: BatchReceipts
    log: LogProof | None
    card: ModelCard

    def bundle(self, index: int) -> Bundle:
        """The bundle of item `index`, with the batch's log proof."""
        item = self.receipts.items[index]
        return Bundle(self.receipts.envelope, item=item, log=self.log)


class Device:
    """A device identity with its models, openings and log."""

    def __init__(
        self,
        home: str | os.PathLike[str] | None = None,
        *,
        identity: str = "default",
        passphrase: str | None = None,
        max_input_bytes: int = DEFAULT_MAX_INPUT_BYTES,
    ) -> None:
        self.home: Path = resolve_home(home)
        keystore = Keystore(self.home)
        if passphrase is not None or keystore.exists(identity):
            self.identity: Identity = keystore.load(identity, passphrase=passphrase)
        else:
            self.identity = keystore.create(identity)
        self.registry = ModelRegistry(self.home)
        self.openings = OpeningStore(self.home)
        self.max_input_bytes = max_input_bytes
        self._log: Log | None = None
        self._models: dict[str, tuple[ModelCard, bytes]] = {}
        self._executors: dict[str, Executor] = {}

    def local_log(self) -> Log:
        """The embedded log under this home (opened on first use)."""
        if self._log is None:
            self._log = Log.open(self.home)
        return self._log

    def close(self) -> None:
        """Close the embedded log if it was opened."""
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> Device:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _writer(self, log: LogWriter | bool) -> LogWriter | None:
        if log is True:
            return LocalLogWriter(self.local_log())
        if log is False:
            return None
        return log

    def executor(self, executor: Executor | str) -> Executor:
        """An executor by name, kept for the device's lifetime so its sessions are reused."""
        if not isinstance(executor, str):
            return executor
        if executor not in self._executors:
            # Executors that keep state (plans, traces: the fixed one) keep it in this home.
            self._executors[executor] = make_executor(executor, home=self.home)
        return self._executors[executor]

    def model(self, ref: str) -> tuple[ModelCard, bytes]:
        """Resolve a model reference (path, name, digest), caching registered models.

        Registered models are content-addressed and so immutable: resolving one again in this
        device's lifetime would only re-read and re-hash the same bytes. Files named by path
        are read each time, since they can change on disk.
        """
        card, data, store = self._resolve_model(ref)
        return (store() if store is not None else card), data

    def _resolve_model(self, ref: str) -> tuple[ModelCard, bytes, Callable[[], ModelCard] | None]:
        """`model` without side effects.

        The card, the bytes, and for a file the function that keeps its content-addressed copy
        (call it once the model has run).
        """
        cached = self._models.get(ref)
        if cached is not None:
            return cached[0], cached[1], None
        card, data = self.registry.resolve(ref)
        if Path(ref).is_file():
            # Keep a content-addressed copy of what this device ran, so that its receipts can
            # be re-verified, revealed and challenged later even if the file moves or changes.
            def store() -> ModelCard:
                kept, _ = self.registry.add_bytes(
                    data, publisher=self.identity, name=card.name, version=card.version
                )
                return kept

            return card, data, store
        self._models[ref] = (card, data)
        return card, data, None

    def infer(
        self,
        model: str,
        inputs: Mapping[str, Any],
        *,
        executor: Executor | str = "onnxruntime",
        output_private: bool = False,
        allow_nonfinite: bool = False,
        log: LogWriter | bool = True,
        extra: Mapping[str, Any] | None = None,
    ) -> InferenceResult:
        """Run `model` (path, name or digest) on `inputs`, sign a receipt, log it.

        The input commitment is computed in a second thread while the model runs (hashlib
        and onnxruntime both release the GIL), so on a multi-core device committing to a large
        input adds almost nothing to the inference time. Nothing is written to the home until
        the model has run: a model the executor refuses leaves the home as it was. Then the
        model file's copy and the salt are kept, before the receipt is issued and logged.
        """
        card, model_bytes, store = self._resolve_model(model)
        checked = validate_inputs(
            card, inputs, allow_nonfinite=allow_nonfinite, max_bytes=self.max_input_bytes
        )
        ex = self.executor(executor)
        # The commitment is hashed while the model runs.
        pending = _HASHER.submit(new_opening, checked)
        try:
            outputs = ex.run(card, model_bytes, checked)
            if store is not None:
                card = store()
            opening = pending.result()
            self.openings.keep(opening)
            envelope, _ = issue_receipt(
                opening=opening,
                issuer=self.identity,
                card=card,
                inputs=checked,
                outputs=outputs,
                executor=ex.descriptor(),
                output_private=output_private,
                trace_root=getattr(ex, "last_trace_root", None),
                extra=extra,
            )
        except BaseException:
            pending.add_done_callback(self._drop_salt)  # runs now if the hashing is done
            raise
        writer = self._writer(log)
        proof = writer.submit(envelope.to_json()) if writer is not None else None
        return InferenceResult(outputs, Bundle(envelope, log=proof), card)

    def _drop_salt(self, done: Future[Opening]) -> None:
        if not done.cancelled() and done.exception() is None:
            self.openings.forget(done.result())

    def infer_batch(
        self,
        model: str,
        inputs: Mapping[str, Any],
        *,
        executor: Executor | str = "onnxruntime",
        output_private: bool = False,
        allow_nonfinite: bool = False,
        log: LogWriter | bool = True,
    ) -> BatchResult:
        """Run a batch (axis 0) and sign all its receipts once over a Merkle root."""
        card, model_bytes = self.model(model)
        checked = validate_inputs(
            card, inputs, allow_nonfinite=allow_nonfinite, max_bytes=self.max_input_bytes
        )
        ex = self.executor(executor)
        outputs = ex.run(card, model_bytes, checked)
        batch = issue_batch(
            issuer=self.identity,
            card=card,
            inputs=checked,
            outputs=outputs,
            executor=ex.descriptor(),
            output_private=output_private,
        )
        self.openings.keep_batch(batch)
        writer = self._writer(log)
        proof = writer.submit(batch.envelope.to_json()) if writer is not None else None
        return BatchResult(outputs, batch, proof, card)

    def infer_zk(
        self,
        model: str,
        inputs: Mapping[str, Any],
        *,
        log: LogWriter | bool = True,
        progress: Callable[[str, int, int], None] | None = None,
    ) -> InferenceResult:
        """Run `model` in its EZKL circuit and issue a receipt carrying a zero-knowledge proof.

        The model must have been set up first (`edgetrust zk setup`, `zk_setup`); the input
        stays private: the proof shows the output is the model's on an input with this
        commitment, and the receipt's salted commitment opens only with `reveal`. `progress`
        is called with each proving stage (name, done, total).
        """
        from edgetrust.verify.zk import card_with_zk, issue_zk_receipt, load_zk_artifacts
        from edgetrust.verify.zk._common import no_progress

        card, _ = self.model(model)
        named = card.extra.get("zk")
        # Prove with the verifying key the signed card names, so verifiers holding the card
        # accept the proof; a card without one gets this home's (preferred) setup recorded.
        vk = named.get("vkDigest") if isinstance(named, Mapping) else None
        artifacts = load_zk_artifacts(
            card.digest, home=self.home, vk_digest=vk if isinstance(vk, str) else None
        )
        if named is None:
            card = card_with_zk(card, artifacts)
            self.registry.update_card(card, publisher=self.identity)
        checked = validate_inputs(card, inputs, max_bytes=self.max_input_bytes)
        issued = issue_zk_receipt(
            issuer=self.identity,
            card=card,
            artifacts=artifacts,
            inputs=checked,
            progress=progress or no_progress,
        )
        # The salt is on disk before the receipt is logged, as in `infer`.
        self.openings.keep(issued.opening)
        writer = self._writer(log)
        proof = writer.submit(issued.bundle.envelope.to_json()) if writer is not None else None
        bundle = Bundle(issued.bundle.envelope, log=proof, zk=issued.bundle.zk)
        return InferenceResult(issued.outputs, bundle, card)

    def reveal(self, bundle: Bundle) -> Opening:
        """The opening of a receipt this device issued."""
        if read_receipt(bundle).issuer != self.identity.did:
            raise InvalidInputError("this receipt was issued by another identity")
        return self.openings.opening_for(bundle)
