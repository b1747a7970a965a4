"""The main job, end to end on the embedded default: `edgetrust demo` / `make demo`.

Everything happens in a temporary home with no network: train the digits MLP, publish it,
let three devices run it and issue receipts into one transparency log, have a witness cosign
the log, and let an independent verifier check receipts at each level, including tampered
ones that must fail; then exact re-execution and a fraud proof, a zero-knowledge receipt,
federated rounds with secure aggregation, and settlement on an in-process EVM chain.
"""

from __future__ import annotations

import functools
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from edgetrust.capture.demo import capture_step
from edgetrust.data.demo import data_step
from edgetrust.device import Device, LocalLogWriter
from edgetrust.dsse import Envelope
from edgetrust.errors import VerificationError
from edgetrust.identity import Identity
from edgetrust.log import checkpoint as cp
from edgetrust.log.service import Log
from edgetrust.models import ModelRegistry
from edgetrust.receipts import Bundle, read_receipt
from edgetrust.verify.verifier import Verifier
from edgetrust.zoo import digits_mlp_onnx, load_digits_split

__all__ = ["DemoResult", "export_demo_files", "run_demo"]


@dataclass
class DemoResult:
    """What the demo did, for the summary and for tests."""

    rows: list[tuple[str, str, str]] = field(default_factory=list)
    """(check, expected, outcome) for every verification the demo ran."""
    failures: list[str] = field(default_factory=list)
    """Checks whose outcome was not the expected one (empty on success)."""
    receipts: int = 0
    log_size: int = 0

    console: Console | None = None

    def expect(self, check: str, should_pass: bool, fn: Callable[[], object]) -> str:
        """Run `fn`; record whether it passed or was rejected, and whether that was expected."""
        try:
            fn()
            outcome, ok = "verified", should_pass
        except VerificationError as exc:
            outcome, ok = f"rejected at step {exc.step}", not should_pass
        self.rows.append((check, "verifies" if should_pass else "rejected", outcome))
        if not ok:
            self.failures.append(check)
        if self.console is not None:
            mark = "[green]✓[/]" if ok else "[bold red]✗ UNEXPECTED[/]"
            self.console.print(f"{mark} {check}: {outcome}")
        return outcome


def run_demo(console: Console | None = None, *, home: Path | None = None) -> DemoResult:
    """Run the whole demo; returns what happened. Uses a temporary home unless one is given."""
    console = console or Console()
    if home is not None:
        return _run(console, Path(home))
    with tempfile.TemporaryDirectory(prefix="edgetrust-demo-") as tmp:
        return _run(console, Path(tmp))


def export_demo_files(directory: Path) -> list[Path]:
    """Write the demo model and sample inputs, to try the CLI by hand."""
    directory.mkdir(parents=True, exist_ok=True)
    model_bytes, _ = digits_mlp_onnx(seed=0)
    _, x_test, _, _ = load_digits_split(seed=0)
    paths = [directory / "digits.onnx", directory / "one.npy", directory / "batch.npy"]
    paths[0].write_bytes(model_bytes)
    np.save(paths[1], x_test[:1])
    np.save(paths[2], x_test[:256])
    return paths


def _step(console: Console, title: str) -> None:
    console.rule(f"[bold]{title}")


def _fixed_step(
    console: Console,
    result: DemoResult,
    root: Path,
    devices: dict[str, Device],
    model_bytes: bytes,
    x_test: np.ndarray,
    log: Log,
) -> tuple[Any, Any, dict[str, Any]]:
    """Receipts from the bit-exact executor; carol lies about one hidden number and loses."""
    from edgetrust.runtime.fixed import Fault, FixedRuntime
    from edgetrust.verify.dispute import challenge_receipt

    writer = LocalLogWriter(log)
    x = {"input": x_test[7:8]}
    bob, carol = devices["bob"], devices["carol"]
    honest = bob.infer("digits-mlp", x, executor="fixed", log=writer)
    fault = Fault("gemm0", 5, 40)
    liar = FixedRuntime(home=carol.home, fault=fault)
    lying = carol.infer("digits-mlp", x, executor=liar, log=writer)
    console.print(
        f"bob (honest) and carol (lying: +{fault.delta} at {fault.node}[{fault.element}]) both "
        "sign fixed-point receipts with a trace root"
    )
    verifier = Verifier(log_keys=[log.verifier_key])
    for name, device, res in (("bob", bob, honest), ("carol", carol, lying)):
        opening = device.reveal(res.bundle)
        result.expect(
            f"{name}'s fixed-point receipt, re-executed bit for bit",
            name == "bob",
            functools.partial(
                verifier.verify,
                res.bundle,
                model=model_bytes,
                inputs=x,
                opening=opening,
                reexecute=True,
            ),
        )
    referee = Identity.generate("referee")
    opening = carol.reveal(lying.bundle)
    found = challenge_receipt(
        lying.bundle,
        model=model_bytes,
        inputs=x,
        opening=opening,
        device_home=carol.home,
        referee=referee,
        log=log,
    )
    verdict = found.verdict
    ok = found.status == "convicted"
    result.rows.append(("fraud proof against carol", "convicted", found.status))
    if not ok:
        result.failures.append("fraud proof against carol")
    if verdict is not None:
        console.print(
            f"{'[green]✓[/]' if ok else '[bold red]✗[/]'} challenge: {found.status}; disputed "
            f"node {verdict.node}, element {verdict.element}, {verdict.rounds} rounds, the "
            f"referee recomputed one element ({verdict.referee_macs} multiply-adds); verdict "
            f"logged at index {found.log_index}"
        )
    return (bob, honest.bundle), (carol, lying.bundle), x


def _zk_step(
    console: Console,
    result: DemoResult,
    device: Device,
    log: Log,
    x_test: np.ndarray,
) -> None:
    """Alice proves one inference in zero knowledge; the verifier checks the proof (step 8)."""
    from edgetrust.verify.zk import UnsafeLocalSrs, zk_setup

    started = time.perf_counter()
    card, model_bytes = device.model("digits-mlp")
    # An SRS generated here is insecure (whoever made it can forge proofs) but needs no
    # download; a real deployment passes PpotSrs(path) with the Perpetual Powers of Tau file.
    artifacts = zk_setup(
        model_bytes, srs=UnsafeLocalSrs(), home=device.home, calibration=x_test[:32]
    )
    console.print(
        f"circuit set up once: 2^{artifacts.key.logrows} rows, "
        f"{time.perf_counter() - started:.1f} s (cached for every later proof)"
    )
    started = time.perf_counter()
    issued = device.infer_zk(card.digest, {"input": x_test[40:41]}, log=LocalLogWriter(log))
    bundle = issued.bundle
    zk = dict(bundle.zk or {})
    console.print(
        f"alice proves her inference in {time.perf_counter() - started:.1f} s: "
        f"predicts {int(issued.outputs['probabilities'].argmax())}, proof "
        f"{len(zk.get('proof', '')) * 3 // 4:,} bytes; the input stays on her device"
    )
    verifier = Verifier(log_keys=[log.verifier_key], zk_home=device.home, allow_unsafe_srs=True)
    result.expect(
        "ZK receipt: signature, log, proof against the model's verifying key",
        True,
        lambda: verifier.verify(bundle),
    )
    # The lie: swap the winning class's score with the lowest one (instance 0 is the input hash).
    instances = list(zk["instances"])
    scores = issued.outputs["probabilities"].ravel()
    top, low = 1 + int(scores.argmax()), 1 + int(scores.argmin())
    instances[top], instances[low] = instances[low], instances[top]
    lied = Bundle(bundle.envelope, log=bundle.log, zk={**zk, "instances": instances})
    result.expect(
        "ZK receipt whose proven outputs were swapped", False, lambda: verifier.verify(lied)
    )
    careful = Verifier(log_keys=[log.verifier_key], zk_home=device.home)
    result.expect(
        "ZK receipt, verifier that refuses a locally made SRS",
        False,
        lambda: careful.verify(bundle),
    )


def _fl_step(console: Console, result: DemoResult, root: Path) -> None:
    """Twenty devices train under sample-level DP at ε = 4, the coordinator sees sums; audit."""
    from edgetrust.collab import DPConfig, SessionSpec, audit_log, simulate
    from edgetrust.collab.local import calibrate_noise
    from edgetrust.errors import Error

    home = root / "federation"
    # Distributed DP-SGD (docs/fl.md): each device clips every example's gradient and adds
    # its share of the noise; secure aggregation reveals only the noisy sum. z is the least
    # noise that keeps 30 rounds within ε = 4 (δ = 1e-5) for every example of every device.
    dp = DPConfig(clip=0.3, noise_multiplier=1.0, level="sample", distributed=True)
    spec = SessionSpec(rounds=30, dp=dp, lr=1.0, batch_size=16, server_lr=0.05)
    spec = calibrate_noise(spec, num_clients=20, epsilon=4.0)
    session = simulate(spec, num_clients=20, dropout=0.25, home=home)
    for r in session.rounds:
        if r.round % 10 and r.round != 1:
            continue
        acc = f"{r.accuracy:.1%}" if r.accuracy is not None else "-"
        eps = f"{r.epsilon:.2f}" if r.epsilon is not None else "∞"
        console.print(
            f"round {r.round}: {r.survivors} of {r.survivors + r.dropped} devices' masked updates "
            f"summed (the coordinator never sees one alone), accuracy {acc}, "
            f"sample-level ε {eps} (z = {spec.dp.noise_multiplier:g})"
        )
    with Log.open(home) as fl_log:

        def audit() -> None:
            try:
                audit_log(fl_log, home=home, require_artifacts=True)
            except Error as exc:
                raise VerificationError(exc.message, step="fl audit") from exc

        result.expect(
            "federated round log: lineage, commitments, ε, models recomputed", True, audit
        )


def _receipt_slash_step(
    console: Console,
    result: DemoResult,
    root: Path,
    log: Log,
    model: bytes,
    fixed: tuple[Any, Any, dict[str, Any]],
) -> None:
    """Step 10, continued: carol's lying receipt from step 7 loses her bond on chain."""
    from edgetrust.chain.receipt_demo import run_receipt_disputes
    from edgetrust.identity import Keystore
    from edgetrust.log.service import LOG_KEY_NAME

    honest, lying, x = fixed
    console.print("from receipt to slash: carol's receipt of step 7, disputed on chain")
    got = run_receipt_disputes(
        log=log,
        log_identity=Keystore(root / "log").load(LOG_KEY_NAME),
        model=model,
        inputs=x,
        honest=honest,
        lying=lying,
    )
    for what, gas, outcome in got.rows:
        g = f"{gas:>9,}" if gas is not None else "        -"
        console.print(f"  {what:45s} {g}  {outcome}")
    slashed = got.carol is not None and got.carol.convicted and got.carol_bond_after == 0
    result.rows.append(
        ("carol's receipt disputed on chain", "bond slashed", "bond slashed" if slashed else "kept")
    )
    if not slashed:
        result.failures.append("carol's receipt disputed on chain")
    cleared = got.false_challenge is not None and not got.false_challenge.convicted
    result.rows.append(
        (
            "false challenge of bob's receipt",
            "challenger pays",
            "challenger pays" if cleared and got.challenger_lost > 0 else "not charged",
        )
    )
    if not cleared:
        result.failures.append("false challenge of bob's receipt")


def _chain_step(console: Console, result: DemoResult, root: Path, log: Log, bundle: Bundle) -> None:
    """Anchor this demo's log checkpoint on a chain, prove a receipt on chain, play the story."""
    from eth_account import Account

    from edgetrust.chain import AnchorParams, LogAnchor, connect
    from edgetrust.chain.story import run_story
    from edgetrust.identity import Keystore
    from edgetrust.log import merkle
    from edgetrust.log.service import LOG_KEY_NAME

    chain = connect()
    operator = Account.create()
    chain.fund(operator.address, 10**20)
    anchor, _ = LogAnchor.deploy(chain, operator, AnchorParams(response_window=3600))
    latest = log.latest()
    origin = latest.origin
    anchor.register_log(
        operator,
        origin=origin,
        bond=10**18,
        log_identity=Keystore(root / "log").load(LOG_KEY_NAME),
        note_key=log.verifier_key,
    )
    tx = anchor.anchor(operator, origin=origin, size=latest.size, root=latest.root)
    console.print(
        f"anchored {origin} at size {latest.size} on chain {chain.chain_id} ({tx.gas_used:,} gas)"
    )
    proof = bundle.log
    if proof is not None:
        size, root_on_chain = anchor.latest(origin)
        inclusion = log.inclusion_proof(proof.index, size)

        def on_chain() -> None:
            anchor.verify_inclusion(
                index=proof.index,
                size=size,
                root=root_on_chain,
                proof=inclusion,
                leaf_hash=merkle.leaf_hash(bundle.leaf_data()),
            )

        result.expect("alice's receipt proven against the anchored root, on chain", True, on_chain)
    story = run_story(chain, log=log)
    for step in story.steps:
        gas = f"{step.gas:>9,}" if step.gas is not None else "        -"
        console.print(f"  {step.what:45s} {gas}  {step.outcome}")
    convicted = any(s.outcome.startswith("CONVICTED") for s in story.steps)
    result.rows.append(
        (
            "lying device, refereed on chain",
            "convicted",
            "convicted" if convicted else "not convicted",
        )
    )
    if not convicted:
        result.failures.append("lying device, refereed on chain")


def _run(console: Console, root: Path) -> DemoResult:
    result = DemoResult(console=console)
    started = time.perf_counter()

    _step(console, "1. A model: train the digits MLP and publish it")
    model_bytes, accuracy = digits_mlp_onnx(seed=0)
    publisher = Identity.generate("publisher")
    registry = ModelRegistry(root / "publisher")
    card, card_envelope = registry.add_bytes(model_bytes, publisher=publisher, name="digits-mlp")
    console.print(
        f"trained on sklearn's digits: test accuracy {accuracy:.1%}; "
        f"ONNX {card.size:,} bytes, digest {card.digest[:23]}…"
    )

    _step(console, "2. A transparency log, and a witness")
    log = Log.open(root / "log", origin="demo.edgetrust.local/log")
    witness = cp.NoteSigner("witness.demo", Identity.generate("witness"))
    card_index = log.append(card_envelope.to_json())
    console.print(f"log key: {log.verifier_key}")
    console.print(f"model card logged at index {card_index}")

    _step(console, "3. Three devices run the model and issue receipts")
    _, x_test, _, y_test = load_digits_split(seed=0)
    writer = LocalLogWriter(log)
    bundles: list[tuple[str, Bundle, np.ndarray]] = []
    devices = {}
    for i, name in enumerate(["alice", "bob", "carol"]):
        device = Device(root / name)
        device.registry.add_bytes(model_bytes, publisher=publisher, name="digits-mlp")
        devices[name] = device
        x = x_test[i : i + 1]
        res = device.infer("digits-mlp", {"input": x}, log=writer)
        bundles.append((name, res.bundle, x))
        pred = int(res.outputs["probabilities"].argmax())
        console.print(
            f"{name:5s} {device.identity.did[:28]}…  predicts {pred} (true {y_test[i]}), "
            f"receipt logged at index {res.bundle.log.index if res.bundle.log else '-'}"
        )
    batch_x = x_test[:256]
    batch = devices["alice"].infer_batch("digits-mlp", {"input": batch_x}, log=writer)
    result.receipts = 3 + len(batch.receipts.items)
    agree = float((batch.outputs["probabilities"].argmax(axis=1) == y_test[:256]).mean())
    console.print(
        f"alice signs a batch of {len(batch.receipts.items)} receipts once "
        f"(Merkle root in one log entry); accuracy on the batch {agree:.1%}"
    )

    _step(console, "4. The witness cosigns the log's checkpoint")
    note = log.checkpoint()
    cosigned = cp.cosign_checkpoint(note, witness, int(time.time()))
    checkpoint = cp.verify_checkpoint(cosigned, log.verifier_key)
    cp.verify_cosignatures(cosigned, [witness.cosignature_vkey], 1)
    result.log_size = checkpoint.size
    console.print(
        f"checkpoint: size {checkpoint.size}, root {checkpoint.root.hex()[:16]}…, "
        "signed by the log and cosigned by the witness"
    )

    _step(console, "5. An independent verifier checks the receipts")
    verifier = Verifier(log_keys=[log.verifier_key])
    strict = Verifier(
        log_keys=[log.verifier_key], witness_keys=[witness.cosignature_vkey], min_witnesses=1
    )
    name, bundle, x = bundles[0]
    opening = devices[name].reveal(bundle)
    result.expect("signature + format + log inclusion", True, lambda: verifier.verify(bundle))
    result.expect(
        "opened input + model + re-execution (onnxruntime, tolerance)",
        True,
        lambda: verifier.verify(
            bundle, model=model_bytes, inputs={"input": x}, opening=opening, reexecute=True
        ),
    )
    item = batch.bundle(17)
    result.expect(
        "batch item 17: audit path to the signed root, log", True, lambda: verifier.verify(item)
    )
    fresh = Bundle(bundle.envelope, log=writer.submit(bundle.envelope.to_json()))
    witnessed = Bundle(
        fresh.envelope,
        log=fresh.log
        and type(fresh.log)(
            fresh.log.origin,
            fresh.log.index,
            fresh.log.tree_size,
            fresh.log.inclusion_proof,
            cp.cosign_checkpoint(fresh.log.checkpoint, witness, int(time.time())),
        ),
    )
    result.expect(
        "log inclusion with ≥ 1 witness cosignature", True, lambda: strict.verify(witnessed)
    )
    result.expect(
        "same receipt without the witness's cosignature", False, lambda: strict.verify(fresh)
    )

    _step(console, "6. Lies are caught")
    payload = bundle.envelope.payload
    tampered = Bundle(
        Envelope(
            payload.replace(b'"name":"digits-mlp"', b'"name":"digits-mlq"'),
            bundle.envelope.payload_type,
            bundle.envelope.signatures,
        ),
        log=bundle.log,
    )
    result.expect(
        "receipt with one byte of its statement changed", False, lambda: verifier.verify(tampered)
    )
    other_model, _ = digits_mlp_onnx(seed=1)
    result.expect(
        "receipt checked against a different model",
        False,
        lambda: verifier.verify(bundle, model=other_model),
    )
    result.expect(
        "input that is not the committed one",
        False,
        lambda: verifier.verify(bundle, inputs={"input": x_test[5:6]}, opening=opening),
    )
    _, bob_bundle, _ = bundles[1]
    result.expect(
        "alice's receipt presented with bob's log proof",
        False,
        lambda: verifier.verify(Bundle(bundle.envelope, log=bob_bundle.log)),
    )
    other_log = Log.open(root / "otherlog", origin="demo.edgetrust.local/log")
    result.expect(
        "a proof from a log the verifier does not trust",
        False,
        lambda: verifier.verify(
            Bundle(bundle.envelope, log=LocalLogWriter(other_log).submit(bundle.envelope.to_json()))
        ),
    )
    other_log.close()
    result.expect(
        "a receipt signed by a key that is not the issuer's",
        False,
        lambda: read_receipt(
            Bundle(
                Envelope(payload, bundle.envelope.payload_type, bundles[1][1].envelope.signatures)
            )
        ),
    )

    _step(console, "7. Exact re-execution, and a lying device convicted by a fraud proof")
    fixed = _fixed_step(console, result, root, devices, model_bytes, x_test, log)

    _step(console, "8. Zero knowledge: a receipt that proves the inference, input kept private")
    _zk_step(console, result, devices["alice"], log, x_test)

    _step(console, "9. Private collaboration: federated rounds with secure aggregation and DP")
    _fl_step(console, result, root)

    _step(console, "10. Settlement on an EVM chain (in-process): anchor the log, convict on chain")
    _chain_step(console, result, root, log, bundles[0][1])
    _receipt_slash_step(console, result, root, log, model_bytes, fixed)

    _step(console, "11. Data stays home: consent grants, jobs on the data, revocation, value")
    data_step(console, result, root)

    _step(console, "12. Human-origin data: an EEG stream signed at the sensor, logged, checked")
    capture_step(console, result, root, log)

    _step(
        console, "13. Human review: reviewers with passkeys judge a receipt; the verdict is logged"
    )
    from edgetrust.human.demo import human_step

    human_step(
        console,
        result,
        log,
        read_receipt(bundles[0][1]).output_digest,
        disputed=read_receipt(bundles[1][1]).output_digest,
    )

    result.log_size = log.size()
    for device in devices.values():
        device.close()
    log.close()

    _step(console, "Summary")
    table = Table("check", "expected", "outcome")
    for check, expected, outcome in result.rows:
        style = "green" if check not in result.failures else "bold red"
        table.add_row(check, expected, f"[{style}]{outcome}[/]")
    console.print(table)
    console.print(
        f"{result.receipts} receipts issued by 3 devices, log size {result.log_size}, "
        f"{len(result.rows)} checks, {len(result.failures)} unexpected; "
        f"{time.perf_counter() - started:.1f} s"
    )
    return result
