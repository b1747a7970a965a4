"""`edgetrust zk …`: zero-knowledge setup, proving and verification (EZKL)."""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from edgetrust.cli._app import HomeOpt, JsonOpt, app, emit, err, out, set_json_mode
from edgetrust.encoding import digest_bytes
from edgetrust.errors import InvalidInputError, NotFoundError
from edgetrust.files import read_limited
from edgetrust.home import resolve_home
from edgetrust.identity import Keystore
from edgetrust.models import ModelRegistry
from edgetrust.receipts import parse_bundle
from edgetrust.runtime.onnx import load_inputs
from edgetrust.verify.zk import (
    STEP_KEY,
    STEP_PROOF,
    STEP_PUBLIC,
    STEP_RECEIPT,
    STEP_SRS,
    PpotSrs,
    SrsChoice,
    UnsafeLocalSrs,
    ZkArtifacts,
    card_with_zk,
    export_verifier_files,
    issue_zk_receipt,
    load_zk_artifacts,
    verify_zk_bundle,
    zk_setup,
)
from edgetrust.verify.zk._common import ProgressFn

zk_app = typer.Typer(
    help=(
        "Zero-knowledge receipts (EZKL): prove that a model produced an output without "
        "revealing the input.\n\n"
        "1. 'edgetrust zk setup MODEL --srs kzgN.srs' once per model (or --unsafe-local-srs "
        "for a demo); 2. 'edgetrust zk prove MODEL -i input.npy'; 3. 'edgetrust zk verify "
        "BUNDLE'."
    ),
    no_args_is_help=True,
)
app.add_typer(zk_app, name="zk")

ModelArg = Annotated[str, typer.Argument(help="A model file, a registered name, or a digest.")]
IdentityOpt = Annotated[str, typer.Option("--identity", help="Keystore identity to sign with.")]
BudgetOpt = Annotated[
    str | None,
    typer.Option(
        "--memory-budget",
        help="Refuse work estimated above this much memory, e.g. 8GiB (default: half the RAM).",
    ),
]

_MAX_FILE = 256 * 2**20
_UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}


def parse_size(text: str) -> int:
    """'8GiB', '512M', '1.5g' or a plain byte count."""
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([kmgt]?)(?:i?b)?\s*", text.lower())
    if not m:
        raise InvalidInputError(f"--memory-budget {text!r} is not a size like 8GiB or 512MiB")
    value = int(float(m.group(1)) * _UNITS[m.group(2)])
    if value <= 0:
        raise InvalidInputError("--memory-budget must be positive")
    return value


@contextlib.contextmanager
def stage_progress(title: str, enabled: bool) -> Iterator[ProgressFn]:
    """A Rich progress bar on stderr, driven stage by stage."""
    with Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[stage]}"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=not enabled or not err.is_terminal,
    ) as bar:
        task = bar.add_task(title, total=1, stage="")

        def update(stage: str, done: int, total: int) -> None:
            bar.update(task, completed=done, total=total, stage=stage)

        yield update


def _gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def _artifacts_report(art: ZkArtifacts) -> dict[str, Any]:
    return {
        "model": art.model_digest,
        "directory": str(art.directory),
        **art.card_entry(),
        "paths": {
            "settings": str(art.key.settings_path),
            "compiled": str(art.compiled_path),
            "vk": str(art.key.vk_path),
            "pk": str(art.pk_path),
            "srs": str(art.key.srs_path),
        },
    }


def _print_artifacts(art: ZkArtifacts) -> None:
    k, acc, est = art.key, art.accuracy, art.estimate
    out.print(f"ZK setup for [bold]{art.model_digest[:23]}…[/] in {art.directory}")
    scales = f"input scale 2^-{k.input_scale}, output 2^-{k.output_scale}"
    out.print(f"  circuit   2^{k.logrows} rows, {scales}")
    out.print(f"  settings  {k.settings_digest}")
    out.print(f"  compiled  {art.compiled_digest}")
    out.print(f"  vk        {k.vk_digest}")
    out.print(f"  srs       {k.srs_kind} {k.srs_digest}")
    out.print(
        f"  memory    ~{_gib(est.peak_bytes)} peak, proving key ~{_gib(est.proving_key_bytes)}"
    )
    top1 = "" if acc.top1_agreement is None else f", top-1 agreement {acc.top1_agreement:.0%}"
    out.print(
        f"  accuracy  max |Δ| {acc.max_abs_error:.4g}, mean {acc.mean_abs_error:.4g} vs "
        f"onnxruntime on {acc.samples} {acc.calibration} samples{top1}"
    )
    if k.srs_kind != "ppot":
        err.print(
            "[yellow]warning:[/] locally generated SRS (unsafe_test_srs): proofs are for demos "
            "and tests only; verifiers reject them unless --allow-unsafe-srs"
        )


def _read(path: Path, what: str) -> bytes:
    return read_limited(path, what, max_bytes=_MAX_FILE)


def _load_calibration(path: Path) -> np.ndarray[Any, Any]:
    import io

    try:
        arr = np.load(io.BytesIO(_read(path, "calibration file")), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise InvalidInputError(f"calibration file {path} is not a .npy array: {exc}") from exc
    if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "fiu":
        raise InvalidInputError(f"calibration file {path} must hold a numeric array")
    return arr


@zk_app.command("setup")
def setup_cmd(
    model: ModelArg,
    srs: Annotated[
        Path | None,
        typer.Option(
            "--srs",
            help="Perpetual Powers of Tau SRS file for the circuit's size (kzg<logrows>.srs), "
            "checked against its published sha256.",
        ),
    ] = None,
    unsafe_local_srs: Annotated[
        bool,
        typer.Option(
            "--unsafe-local-srs",
            help="Generate the SRS here (INSECURE: proofs are marked unsafe_test_srs).",
        ),
    ] = False,
    calibration: Annotated[
        Path | None,
        typer.Option(help="A .npy of input samples for calibration (default: synthetic)."),
    ] = None,
    memory_budget: BudgetOpt = None,
    force: Annotated[bool, typer.Option(help="Redo the setup from scratch.")] = False,
    identity: IdentityOpt = "default",
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Prepare MODEL for zero-knowledge proofs, once: settings, circuit, SRS, keys.

    The input is hashed (Poseidon) and private, the parameters are fixed in the circuit, the
    output is public. Everything is cached under $EDGETRUST_HOME/zk/<model digest>/; a second
    run does nothing. A registered model's card gets the settings, circuit and verifying-key
    digests, re-signed. Nothing is downloaded: give --srs, or --unsafe-local-srs for a demo.
    """
    set_json_mode(json_out)
    if (srs is None) == (not unsafe_local_srs):
        raise InvalidInputError("give exactly one of --srs FILE or --unsafe-local-srs")
    choice: SrsChoice = PpotSrs(srs) if srs is not None else UnsafeLocalSrs()
    registry = ModelRegistry(home)
    card, model_bytes = registry.resolve(model)
    cal = _load_calibration(calibration) if calibration is not None else None
    budget = parse_size(memory_budget) if memory_budget else None
    with stage_progress("zk setup", not json_out) as progress:
        art = zk_setup(
            model_bytes,
            srs=choice,
            home=home,
            calibration=cal,
            memory_budget=budget,
            force=force,
            progress=progress,
        )
    card_signed = False
    try:
        stored, _ = registry.card(card.digest)
    except NotFoundError:
        stored = None
    if stored is not None and stored.extra.get("zk") != art.card_entry():
        publisher = Keystore(home).load_or_create(identity)
        registry.update_card(card_with_zk(stored, art), publisher=publisher)
        card_signed = True
    data = _artifacts_report(art) | {
        "cardUpdated": card_signed,
        "registered": stored is not None,
    }

    def human() -> None:
        _print_artifacts(art)
        if card_signed:
            out.print(f"  model card of {card.name} updated with the zk digests and re-signed")

    emit(json_out, data, human)


@zk_app.command("show")
def show_cmd(model: ModelArg, home: HomeOpt = None, json_out: JsonOpt = False) -> None:
    """Show the cached ZK setup of MODEL (digests, sizes, accuracy)."""
    set_json_mode(json_out)
    card, _ = ModelRegistry(home).resolve(model)
    art = load_zk_artifacts(card.digest, home=home)
    emit(json_out, _artifacts_report(art), lambda: _print_artifacts(art))


@zk_app.command("export")
def export_cmd(
    model: ModelArg,
    dest: Annotated[Path, typer.Argument(help="Directory to write settings, VK and SRS to.")],
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Write what a verifier elsewhere needs (settings.json, vk.key, kzg.srs, digests).

    The same files feed ezkl.create_evm_verifier for an on-chain verifier.
    """
    set_json_mode(json_out)
    card, _ = ModelRegistry(home).resolve(model)
    key = export_verifier_files(load_zk_artifacts(card.digest, home=home), dest)
    data = {k: str(v) for k, v in key.evm_verifier_inputs().items()} | {
        "vkDigest": key.vk_digest,
        "srsKind": key.srs_kind,
    }
    emit(json_out, data, lambda: out.print(f"verifier files for {card.name} written to {dest}"))


@zk_app.command("prove")
def prove_cmd(
    model: ModelArg,
    input: Annotated[Path, typer.Option("--input", "-i", help="Input file: .npy, .npz or .json.")],
    out_file: Annotated[
        Path | None, typer.Option("--out", "-o", help="Where to write the receipt bundle.")
    ] = None,
    memory_budget: BudgetOpt = None,
    identity: IdentityOpt = "default",
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Run MODEL in zero knowledge and write a signed receipt that carries the proof.

    The input stays private: the receipt holds its Poseidon hash (from the proof) and a
    salted sha256 commitment; the opening (salt) is written next to the bundle, mode 0600.
    Refused when the circuit's top-1 class differs from onnxruntime's. Needs 'zk setup'.
    """
    set_json_mode(json_out)
    registry = ModelRegistry(home)
    card, _ = registry.resolve(model)
    art = load_zk_artifacts(card.digest, home=home)
    inputs = load_inputs(input, card)
    issuer = Keystore(home).load_or_create(identity)
    budget = parse_size(memory_budget) if memory_budget else None
    with stage_progress("zk prove", not json_out) as progress:
        zr = issue_zk_receipt(
            issuer=issuer,
            card=card,
            artifacts=art,
            inputs=inputs,
            memory_budget=budget,
            progress=progress,
        )
    data_bytes = zr.bundle.to_json()
    if out_file is None:
        receipts = resolve_home(home) / "receipts"
        receipts.mkdir(exist_ok=True)
        out_file = receipts / f"zk-{digest_bytes(data_bytes)[7:23]}.json"
    out_file.write_bytes(data_bytes)
    opening_file = out_file.with_name(out_file.stem + ".opening.json")
    fd = os.open(opening_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(zr.opening.to_json())
    values = zr.outputs[art.output_name]
    data = {
        "bundle": str(out_file),
        "opening": str(opening_file),
        "model": card.digest,
        "issuer": issuer.did,
        "inputHash": zr.proof.input_hash,
        "proofBytes": len(zr.proof.proof),
        "srsKind": zr.proof.srs_kind,
        "outputs": {art.output_name: values.tolist()},
        "argmax": int(np.argmax(values)),
    }

    def human() -> None:
        out.print(
            f"proved [bold]{card.name}[/] in zero knowledge ({len(zr.proof.proof)}-byte proof)"
        )
        out.print(f"  input hash (Poseidon)  {zr.proof.input_hash}")
        out.print(f"  {art.output_name}: argmax {data['argmax']}")
        out.print(f"bundle: {out_file}")
        out.print(f"opening (keep private): {opening_file}")
        if zr.proof.srs_kind != "ppot":
            err.print("[yellow]warning:[/] made with a locally generated SRS (unsafe_test_srs)")

    emit(json_out, data, human)


_STEPS = (STEP_RECEIPT, STEP_KEY, STEP_SRS, STEP_PUBLIC, STEP_PROOF)


@zk_app.command("verify")
def verify_cmd(
    bundle: Annotated[Path, typer.Argument(help="A receipt bundle carrying a zk proof.")],
    allow_unsafe_srs: Annotated[
        bool,
        typer.Option(
            "--allow-unsafe-srs",
            help="Accept proofs made with a locally generated SRS (INSECURE; demos and tests).",
        ),
    ] = False,
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Verify a ZK receipt: signature, then the proof and its binding to the receipt.

    Uses the verifying key of this home's 'zk setup' of the receipt's model, and the model
    card's zk entry when the model is registered. Exit 0 when it verifies, 1 when a step
    fails (the line names it), 2 on bad input.
    """
    set_json_mode(json_out)
    parsed = parse_bundle(_read(bundle, "receipt"))
    registry = ModelRegistry(home)
    from edgetrust.receipts import read_receipt

    model_digest = read_receipt(parsed).model_digest
    try:
        card = registry.card(model_digest)[0]
    except NotFoundError:
        card = None
    receipt, proof = verify_zk_bundle(
        parsed, home=home, card=card, allow_unsafe_srs=allow_unsafe_srs
    )
    values = proof.outputs
    data = {
        "ok": True,
        "issuer": receipt.issuer,
        "model": receipt.model_digest,
        "inputHash": proof.input_hash,
        "srsKind": proof.srs_kind,
        "outputs": values.tolist(),
        "argmax": int(np.argmax(values)),
        "checked": [
            "1 signature",
            "2 statement",
            *(
                f"{s} (unsafe_test_srs allowed)"
                if s == STEP_SRS and proof.srs_kind != "ppot"
                else s
                for s in _STEPS
            ),
        ],
        "cardChecked": card is not None,
    }

    def human() -> None:
        out.print(f"[bold green]verified[/] ZK receipt from {receipt.issuer}")
        for step in data["checked"]:
            out.print(f"  [green]✓[/] {step}")
        if card is None:
            out.print("  [dim]- model card: model not registered here, VK taken from zk setup[/]")
        out.print(f"  output argmax {data['argmax']}; the input was never revealed")

    emit(json_out, data, human)
