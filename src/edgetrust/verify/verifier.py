"""The `Verifier`: checks a receipt bundle, step by numbered step, at the level asked for.

What each step trusts:
  1. signature — the issuer's did:key signed exactly these bytes (trust: the device's key).
  2. statement — the payload is a known receipt version; a batch item's audit path leads to
     the signed batch root.
  3. model — the receipt names the model you hold (trust: nothing; the digest is the model).
  4. opening — the input you hold is the one committed to (trust: nothing).
  5. re-execution — recomputing gives the receipt's output: byte-exact for exact executors
     (the fixed-point one); within a tolerance for onnxruntime, whose float kernels differ
     between CPUs in the last bits, so an exact comparison would reject honest devices.
  6. log — the receipt is included in a checkpoint signed by a log you trust, cosigned by
     enough witnesses (trust: the log and witnesses do not collude to fork).
  7. policy — the receipt is acceptable to you (issuer, model, executor, age).
  8. zk — the receipt's zero-knowledge proof verifies against the model's verifying key: the
     output is the model's on *some* input with the proof's (Poseidon) input hash, and nothing
     more about the input is revealed (trust: the proof system and its SRS). When the input is
     opened (step 4), its Poseidon hash must be the proof's too.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgetrust.errors import Error, NotFoundError, VerificationError
from edgetrust.log import checkpoint as cp
from edgetrust.log import merkle
from edgetrust.models import ModelCard, ModelRegistry
from edgetrust.receipts import Bundle, LogProof, Opening, Receipt, read_receipt, tensors_digest
from edgetrust.runtime.executors import make_executor
from edgetrust.statement import VerifiedCache
from edgetrust.verify.policy import Policy

__all__ = ["STEPS", "StepOutcome", "StepReport", "Tolerance", "Verified", "Verifier"]

_ZK_EXECUTOR = "ezkl"  # edgetrust.verify.zk.ZK_EXECUTOR, named here without importing EZKL


STEPS = (
    "1 signature",
    "2 statement",
    "3 model",
    "4 opening",
    "5 re-execution",
    "6 log",
    "7 policy",
    "8 zk",
)
"""The numbered steps of `Verifier.verify`, in order (the module docstring says what each does)."""


@dataclass(frozen=True)
class StepOutcome:
    """What happened at one step: ``"pass"``, ``"fail"``, ``"skip"`` or ``"not run"``."""

    step: str
    """The step, numbered as in `STEPS` (e.g. ``"6 log"``)."""
    status: str
    reason: str
    """Why it was skipped or failed (empty for a pass)."""


@dataclass(frozen=True)
class StepReport:
    """Every step of one verification (`Verifier.report`)."""

    receipt: Receipt | None
    """The receipt, when every step run passed."""
    steps: tuple[StepOutcome, ...]
    """One outcome per entry of `STEPS`, in order."""
    error: Error | None
    """The error that stopped verification, if one did."""

    @property
    def ok(self) -> bool:
        """Whether no step failed."""
        return self.error is None


def _step_number(step: str | None) -> int | None:
    head = (step or "").split(" ", 1)[0]
    return int(head) if head.isdigit() and 1 <= int(head) <= len(STEPS) else None


def _outcomes(
    checked: list[str], skipped: list[str], failed: int | None, exc: Error | None
) -> tuple[StepOutcome, ...]:
    passed = {_step_number(s) for s in checked}
    reasons = {_step_number(s): s.split(": ", 1)[-1] for s in skipped}
    out = []
    for number, name in enumerate(STEPS, 1):
        if number in passed:
            out.append(StepOutcome(name, "pass", ""))
        elif number in reasons:
            out.append(StepOutcome(name, "skip", reasons[number]))
        elif number == failed and exc is not None:
            out.append(StepOutcome(name, "fail", exc.message))
        else:
            out.append(StepOutcome(name, "not run", "an earlier step failed"))
    return tuple(out)


@dataclass(frozen=True)
class Tolerance:
    """How far a float re-execution may differ from the recomputation.

    ``|claimed - recomputed| <= atol + rtol * |recomputed|``: the verifier's own result is the
    reference. Integer and boolean outputs are always compared exactly.
    """

    rtol: float = 1e-4
    atol: float = 1e-5


@dataclass(frozen=True)
class Verified:
    """A receipt that passed verification, and which steps were actually checked."""

    receipt: Receipt
    checked: tuple[str, ...]
    skipped: tuple[str, ...] = field(default=())
    """Steps not performed, each with the reason (e.g. "4 opening: no input given")."""


class Verifier:
    """Verifies receipt bundles. Settings are keyword-only and checked at construction."""

    def __init__(
        self,
        *,
        policy: Policy | None = None,
        log_keys: Iterable[str] = (),
        require_log: bool = False,
        witness_keys: Iterable[str] = (),
        min_witnesses: int = 0,
        registry: ModelRegistry | None = None,
        tolerance: Tolerance = Tolerance(),
        tolerances: Mapping[str, Tolerance] | None = None,
        zk_home: str | Path | None = None,
        allow_unsafe_srs: bool = False,
    ) -> None:
        self.policy = policy
        self.log_verifiers = tuple(log_keys)
        self.witness_keys = tuple(witness_keys)
        if min_witnesses < 0:
            raise ValueError("`min_witnesses` must be non-negative")
        if min_witnesses > len(self.witness_keys):
            raise ValueError(
                f"`min_witnesses` is {min_witnesses} but only {len(self.witness_keys)} "
                "witness keys are given"
            )
        if (require_log or min_witnesses) and not self.log_verifiers:
            raise ValueError("`log_keys` must name a trusted log when a log proof is required")
        for key in (*self.log_verifiers, *self.witness_keys):
            cp.NoteVerifier.from_vkey(key)  # fail now on a malformed key, not mid-verify
        self.require_log = require_log or min_witnesses > 0
        self.min_witnesses = min_witnesses
        self.registry = registry
        self.tolerance = tolerance
        self.tolerances = dict(tolerances or {})
        self._cache = VerifiedCache()
        self.zk_home = zk_home
        # Each proof accepted this way is logged as UNSAFE by the zk package.
        self.allow_unsafe_srs = allow_unsafe_srs

    def verify(
        self,
        bundle: Bundle,
        *,
        model: bytes | None = None,
        inputs: Mapping[str, Any] | None = None,
        opening: Opening | None = None,
        reexecute: bool = False,
    ) -> Verified:
        """Verify `bundle`; raise `VerificationError` naming the failed step.

        Args:
            bundle: the receipt bundle.
            model: the ONNX bytes the receipt should name (else a registered model is used).
            inputs: the input tensors, to open the commitment (needs `opening`).
            opening: the opening of the input commitment (from `edgetrust reveal`).
            reexecute: recompute the output and compare (needs model, inputs and opening).
        """
        checked: list[str] = []
        skipped: list[str] = []
        receipt = self._run(bundle, model, inputs, opening, reexecute, checked, skipped)
        return Verified(receipt, tuple(checked), tuple(skipped))

    def report(
        self,
        bundle: Bundle,
        *,
        model: bytes | None = None,
        inputs: Mapping[str, Any] | None = None,
        opening: Opening | None = None,
        reexecute: bool = False,
    ) -> StepReport:
        """Run `verify` and say what happened at every numbered step, failure included.

        The same checks as `verify`, in the same order, stopping at the first failure: the
        steps before it are as `verify` ran them (passed or skipped with its reason), the
        failed step carries the error, and the steps after it are "not run". For pages and
        reports that show each step; code that acts on the result should call `verify`.
        """
        checked: list[str] = []
        skipped: list[str] = []
        try:
            receipt = self._run(bundle, model, inputs, opening, reexecute, checked, skipped)
        except Error as exc:
            done = {_step_number(s) for s in (*checked, *skipped)}
            failed = _step_number(exc.step) if isinstance(exc, VerificationError) else None
            if failed is None or failed in done:
                failed = min(set(range(1, len(STEPS) + 1)) - done)
            return StepReport(None, _outcomes(checked, skipped, failed, exc), exc)
        return StepReport(receipt, _outcomes(checked, skipped, None, None), None)

    def _run(
        self,
        bundle: Bundle,
        model: bytes | None,
        inputs: Mapping[str, Any] | None,
        opening: Opening | None,
        reexecute: bool,
        checked: list[str],
        skipped: list[str],
    ) -> Receipt:
        """The steps of `verify`, recording each one in `checked` or `skipped` as it ends."""
        # Steps 1-2: signature, statement (and batch audit path).
        receipt = read_receipt(bundle, cache=self._cache)
        checked += ["1 signature", "2 statement"]

        # Step 3: the model.
        card, model_bytes = self._model(receipt, model)
        if card is None:
            skipped.append("3 model: no model given and none registered for this digest")
        else:
            checked.append("3 model")

        # Step 4: the input opening.
        if inputs is None and opening is None:
            skipped.append("4 opening: no input given")
        elif inputs is None or opening is None:
            raise VerificationError(
                "an input and its opening must be given together", step="4 opening"
            )
        else:
            if opening.commitment != receipt.input_commitment:
                raise VerificationError(
                    "the opening is for another commitment than this receipt's", step="4 opening"
                )
            try:
                opening.verify(inputs)
            except VerificationError as exc:
                raise VerificationError(exc.message, step="4 opening") from exc
            checked.append("4 opening")

        # Step 5: re-execution.
        if not reexecute:
            skipped.append("5 re-execution: not asked for")
        else:
            if card is None or model_bytes is None:
                raise VerificationError("re-execution needs the model", step="5 re-execution")
            if inputs is None:
                raise VerificationError(
                    "re-execution needs the opened input", step="5 re-execution"
                )
            self._reexecute(receipt, card, model_bytes, inputs)
            checked.append("5 re-execution")

        # Step 6: the transparency log.
        if bundle.log is None:
            if self.require_log:
                raise VerificationError("the bundle has no log proof", step="6 log")
            skipped.append("6 log: the bundle was not logged")
        elif not self.log_verifiers:
            skipped.append("6 log: no trusted log key given")
        else:
            self._verify_log(bundle, bundle.log)
            checked.append("6 log")

        # Step 7: policy.
        if self.policy is None:
            skipped.append("7 policy: none set")
        else:
            self.policy.verify(receipt)
            checked.append("7 policy")
        # Step 8: a zero-knowledge proof.
        if "zk" not in receipt.predicate:
            if bundle.zk is not None:
                raise VerificationError(
                    "the bundle carries a zk proof that its receipt does not sign", step="8 zk"
                )
            skipped.append("8 zk: the receipt carries no proof")
        else:
            # Inputs reach here only opened (step 4), so the proof's input is checked too.
            self._verify_zk(receipt, card, inputs)
            checked.append("8 zk")
        return receipt

    def _model(
        self, receipt: Receipt, model: bytes | None
    ) -> tuple[ModelCard | None, bytes | None]:
        if model is not None:
            try:
                card = ModelCard.from_onnx_bytes(model)
            except Error as exc:
                raise VerificationError(f"the given model: {exc.message}", step="3 model") from exc
            if card.digest != receipt.model_digest:
                raise VerificationError(
                    f"receipt is for model {receipt.model_digest}, not the given {card.digest}",
                    step="3 model",
                )
            return card, model
        if self.registry is None:
            return None, None
        try:
            card, _ = self.registry.card(receipt.model_digest)
            return card, self.registry.model_bytes(receipt.model_digest)
        except NotFoundError:
            return None, None

    def _reexecute(
        self, receipt: Receipt, card: ModelCard, model_bytes: bytes, inputs: Mapping[str, Any]
    ) -> None:
        step = "5 re-execution"
        try:
            name = str(receipt.executor["name"])
            # A ZK receipt re-executes through this verifier's own circuit setup (the one step
            # 8 uses); other executors need no home.
            executor = make_executor(
                name,
                receipt.executor.get("settings"),
                home=Path(self.zk_home) if name == _ZK_EXECUTOR and self.zk_home else None,
            )
            got = executor.run(card, model_bytes, inputs)
        except Error as exc:
            raise VerificationError(f"cannot re-execute: {exc.message}", step=step) from exc
        if executor.exact:
            if tensors_digest(got) != receipt.output_digest:
                raise VerificationError(
                    "recomputed output differs from the receipt's (exact executor)", step=step
                )
            # A lie inside the trace can be masked downstream (a Relu zeroes it): an exact
            # executor must reproduce every committed intermediate, not just the output.
            if receipt.trace_root is not None and receipt.trace_root != getattr(
                executor, "last_trace_root", None
            ):
                raise VerificationError(
                    "recomputed trace root differs from the receipt's: an intermediate value "
                    "was not what the device committed to ('edgetrust challenge' pins it down)",
                    step=step,
                )
            return
        if receipt.outputs is None:
            raise VerificationError(
                "the output is private and this executor is not exact: re-execution can only "
                "compare digests, which float executors do not reproduce",
                step=step,
            )
        tol = self.tolerances.get(card.digest, self.tolerance)
        if set(got) != set(receipt.outputs):
            raise VerificationError(
                "recomputed outputs have other names than the receipt's", step=step
            )
        for name, claimed in receipt.outputs.items():
            mine = got[name]
            if mine.shape != claimed.shape or mine.dtype != claimed.dtype:
                raise VerificationError(
                    f"output {name!r} is {claimed.dtype}{list(claimed.shape)} in the receipt, "
                    f"{mine.dtype}{list(mine.shape)} recomputed",
                    step=step,
                )
            if mine.dtype.kind in "biu":  # ids, classes, tokens: no tolerance for integers
                ok = bool(np.array_equal(mine, claimed))
            else:  # the recomputation is the reference the tolerance scales with
                ok = bool(np.allclose(claimed, mine, rtol=tol.rtol, atol=tol.atol))
            if not ok:
                worst = float(np.max(np.abs(mine.astype(np.float64) - claimed.astype(np.float64))))
                raise VerificationError(
                    f"output {name!r} differs from the recomputation by up to {worst:.3g} "
                    f"(tolerance rtol={tol.rtol}, atol={tol.atol} for floats, exact for integers)",
                    step=step,
                )

    def _verify_zk(
        self, receipt: Receipt, card: ModelCard | None, inputs: Mapping[str, Any] | None
    ) -> None:
        from edgetrust.verify.zk import find_zk_artifacts, verify_zk_receipt, zk_input_hash

        # The key comes from this verifier's own setup of the model (compiled from the model
        # here), found by the receipt's VK digest. A card that names a VK must name this one;
        # a card without ZK digests (registered before any setup) binds nothing more.
        named = card if card is not None and "zk" in card.extra else None
        try:
            art = find_zk_artifacts(receipt, home=self.zk_home)
            proof = verify_zk_receipt(
                receipt, key=art.key, card=named, allow_unsafe_srs=self.allow_unsafe_srs
            )
            # The salted commitment (step 4) and the proof's Poseidon hash are two commitments;
            # with the input in hand, check that both name the same input - and that the
            # opened input is exactly the circuit's, so no extra tensor hides a second one.
            if inputs is not None:
                if set(inputs) != {art.input_name}:
                    raise VerificationError(
                        f"the opened input must be exactly the circuit's input "
                        f"{art.input_name!r}, got {sorted(inputs)}",
                        step="zk input",
                    )
                if zk_input_hash(art, inputs[art.input_name]) != proof.input_hash:
                    raise VerificationError(
                        "the opened input is not the input the proof was made on "
                        "(Poseidon hashes differ)",
                        step="zk input",
                    )
        except VerificationError as exc:
            raise VerificationError(exc.message, step=f"8 {exc.step or 'zk'}") from exc
        except Error as exc:
            raise VerificationError(f"cannot check the proof: {exc.message}", step="8 zk") from exc

    def _verify_log(self, bundle: Bundle, proof: LogProof) -> None:
        step = "6 log"
        checkpoint = None
        errors = []
        for key in self.log_verifiers:
            try:
                checkpoint = cp.verify_checkpoint(proof.checkpoint, key)
                break
            except Error as exc:
                errors.append(exc.message)
        if checkpoint is None:
            raise VerificationError(
                "checkpoint is not signed by a trusted log: " + "; ".join(errors), step=step
            )
        if checkpoint.origin != proof.origin or checkpoint.size != proof.tree_size:
            raise VerificationError("log proof does not match its checkpoint", step=step)
        try:
            merkle.verify_inclusion(
                merkle.leaf_hash(bundle.leaf_data()),
                proof.index,
                proof.tree_size,
                proof.inclusion_proof,
                checkpoint.root,
            )
        except VerificationError as exc:
            raise VerificationError(f"not included in the log: {exc.message}", step=step) from exc
        if self.min_witnesses:
            try:
                cp.verify_cosignatures(proof.checkpoint, self.witness_keys, self.min_witnesses)
            except Error as exc:
                raise VerificationError(f"witnesses: {exc.message}", step=step) from exc
