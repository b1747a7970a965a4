"""Core commands: init, model add|list|show, infer, reveal, verify."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.progress import Progress
from rich.table import Table

from edgetrust.cli._app import HomeOpt, JsonOpt, app, emit, err, out, set_json_mode
from edgetrust.device import Device, RemoteLogWriter
from edgetrust.encoding import digest_bytes
from edgetrust.errors import Error, InvalidInputError, KeystoreError, NotFoundError
from edgetrust.files import read_limited
from edgetrust.home import resolve_home
from edgetrust.identity import Identity, Keystore
from edgetrust.log.service import Log
from edgetrust.models import ModelCard, ModelRegistry
from edgetrust.receipts import Bundle, parse_bundles, parse_opening, read_receipt, write_batch_file
from edgetrust.runtime.executors import Executor
from edgetrust.runtime.onnx import DEFAULT_MAX_INPUT_BYTES, load_inputs
from edgetrust.verify.policy import AllOf, IssuerIn, Policy
from edgetrust.verify.verifier import Verified, Verifier

model_app = typer.Typer(
    help="Register and inspect ONNX models (content-addressed by sha256).", no_args_is_help=True
)
app.add_typer(model_app, name="model")

ModelArg = Annotated[str, typer.Argument(help="A model file, a registered name, or a digest.")]
IdentityOpt = Annotated[str, typer.Option("--identity", help="Keystore identity to sign with.")]

MAX_FILE_BYTES = 64 * 2**20


def read_file(path: Path, what: str, *, max_bytes: int = MAX_FILE_BYTES) -> bytes:
    """Read a user-named file with a size limit and a one-line error."""
    return read_limited(path, what, max_bytes=max_bytes)


def write_file(path: Path, data: bytes, what: str) -> None:
    """Write a user-named file, with a one-line error when it cannot be written."""
    try:
        path.write_bytes(data)
    except OSError as exc:
        raise InvalidInputError(f"cannot write {what} {path}: {exc.strerror}") from exc


def check_writable(path: Path, what: str) -> None:
    """Refuse an output path that cannot be written, before any work (or logging) is done."""
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir() or not parent.is_dir() or not os.access(parent, os.W_OK):
        raise InvalidInputError(f"cannot write {what} to {path}")


@app.command()
def init(
    name: str = typer.Option("default", help="Name of the identity to create."),
    passphrase: Annotated[
        bool,
        typer.Option(
            "--passphrase",
            help="Encrypt the key with a passphrase (asked for twice; later commands read "
            "it from $EDGETRUST_PASSPHRASE or ask).",
        ),
    ] = False,
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Create this device's signing identity (an Ed25519 key named by a did:key).

    The private key is written to $EDGETRUST_HOME/keys/NAME.pem with mode 0600; a key file
    that other users can read is refused later, not used.
    """
    set_json_mode(json_out)
    ks = Keystore(home)
    created = not ks.exists(name)
    if created and passphrase:
        secret = typer.prompt("passphrase", hide_input=True, confirmation_prompt=True)
        ident = ks.create(name, passphrase=secret)
    else:
        ident = ks.load(name, passphrase=_passphrase(ks, name)) if not created else ks.create(name)
    emit(
        json_out,
        {"name": name, "did": ident.did, "created": created, "keys": str(ks.root)},
        lambda: out.print(
            f"{'created' if created else 'existing'} identity [bold]{name}[/]: {ident.did}"
        ),
    )


def _passphrase(ks: Keystore, name: str) -> str | None:
    """The passphrase for an encrypted key: $EDGETRUST_PASSPHRASE, else asked on a terminal."""
    if not ks.exists(name) or b"ENCRYPTED" not in (ks.root / f"{name}.pem").read_bytes()[:64]:
        return None
    secret = os.environ.get("EDGETRUST_PASSPHRASE")
    if secret is None:
        if not sys.stdin.isatty():
            raise KeystoreError(
                f"key {name!r} is encrypted: set EDGETRUST_PASSPHRASE or run in a terminal"
            )
        secret = typer.prompt(f"passphrase for key {name!r}", hide_input=True)
    return secret


def _signer(home: str | None, name: str) -> Identity:
    ks = Keystore(home)
    if not ks.exists(name):
        return ks.create(name)
    return ks.load(name, passphrase=_passphrase(ks, name))


def _shape(shape: tuple[Any, ...] | None) -> str:
    return "any" if shape is None else "×".join("?" if d is None else str(d) for d in shape)


@model_app.command("add")
def model_add(
    file: Annotated[Path, typer.Argument(help="The ONNX file to register.")],
    name: Annotated[str | None, typer.Option(help="Name (default: the file name).")] = None,
    version: Annotated[str, typer.Option(help="Version label.")] = "1",
    log: Annotated[
        bool, typer.Option("--log/--no-log", help="Append the signed card to the log.")
    ] = False,
    identity: IdentityOpt = "default",
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Store an ONNX model under $EDGETRUST_HOME/models by digest and sign its card.

    The file is checked with onnx.checker first; anything else is refused.
    """
    set_json_mode(json_out)
    publisher = _signer(home, identity)
    registry = ModelRegistry(home)
    card, envelope = registry.add_file(file, publisher=publisher, name=name, version=version)
    index = None
    if log:
        with Log.open(home) as lg:
            index = lg.append(envelope.to_json())
    data = {**card.to_predicate(), "publisher": publisher.did, "logIndex": index}

    def human() -> None:
        out.print(f"registered [bold]{card.name}[/] v{card.version}  {card.digest}")
        for spec in card.inputs:
            out.print(f"  input  {spec.name}: {spec.dtype} {_shape(spec.shape)}")
        for spec in card.outputs:
            out.print(f"  output {spec.name}: {spec.dtype} {_shape(spec.shape)}")
        if index is not None:
            out.print(f"  card logged at index {index}")

    emit(json_out, data, human)


@model_app.command("list")
def model_list(home: HomeOpt = None, json_out: JsonOpt = False) -> None:
    """List registered models."""
    set_json_mode(json_out)
    cards = ModelRegistry(home).cards()

    def human() -> None:
        if not cards:
            out.print("no models registered (add one with 'edgetrust model add FILE')")
            return
        table = Table("name", "version", "digest", "size", "inputs")
        for c in cards:
            table.add_row(
                c.name,
                c.version,
                c.digest[:19] + "…",
                f"{c.size:,}",
                ", ".join(f"{s.name}:{_shape(s.shape)}" for s in c.inputs),
            )
        out.print(table)

    emit(json_out, [c.to_predicate() for c in cards], human)


@model_app.command("show")
def model_show(model: ModelArg, home: HomeOpt = None, json_out: JsonOpt = False) -> None:
    """Show a model's card."""
    set_json_mode(json_out)
    card, _ = ModelRegistry(home).resolve(model)
    emit(json_out, card.to_predicate(), lambda: out.print_json(data=card.to_predicate()))


def _summarize(outputs: dict[str, np.ndarray[Any, Any]]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for name, arr in outputs.items():
        entry: dict[str, Any] = {"shape": list(arr.shape), "dtype": arr.dtype.name}
        if arr.ndim == 2 and arr.dtype.kind == "f" and arr.shape[1] > 1:
            entry["argmax"] = arr.argmax(axis=1).tolist()[:16]
        if arr.size <= 16:
            entry["values"] = arr.tolist()
        summary[name] = entry
    return summary


def _executor(
    device: Device, name: str, precision: str | None, fault: str | None
) -> Executor | str:
    """The executor `infer` runs: by name, or a fixed-point one built from the options."""
    if precision is None and fault is None:
        return name
    if name not in ("fixed", "onnxruntime") or (name == "onnxruntime" and precision):
        raise InvalidInputError("--precision and --simulate-fault go with --executor fixed")
    from edgetrust.runtime.fixed import Fault, FixedRuntime

    if precision not in (None, "int8", "int16"):
        raise InvalidInputError(f"--precision must be int8 or int16, not {precision!r}")
    return FixedRuntime(
        precision=precision,  # type: ignore[arg-type]
        home=device.home,
        fault=Fault.parse(fault) if fault is not None else None,
    )


def _log_writer(log: str, log_key: str | None, home: str | None) -> RemoteLogWriter | None:
    """None for the local log or no log; a verified remote writer for a URL."""
    if log in ("local", "none"):
        if log_key is not None:
            raise InvalidInputError("--log-key goes with --log URL")
        return None
    if not log.startswith(("http://", "https://")):
        raise InvalidInputError(f"--log must be 'local', 'none' or an http(s) URL, not {log!r}")
    if log_key is None:
        raise InvalidInputError(
            "--log URL needs --log-key (the node's key: 'edgetrust log key' on the node)"
        )
    return RemoteLogWriter(log, log_key, state_path=resolve_home(home) / "remote-log.json")


@app.command()
def infer(
    model: ModelArg,
    input: Annotated[
        Path | None, typer.Option("--input", "-i", help="Input file: .npy, .npz or .json.")
    ] = None,
    text: Annotated[
        list[str] | None,
        typer.Option(
            "--text", help="Text input for an imported language model (repeat for a batch)."
        ),
    ] = None,
    out_file: Annotated[
        Path | None, typer.Option("--out", "-o", help="Where to write the receipt bundle.")
    ] = None,
    batch: Annotated[
        bool,
        typer.Option("--batch", help="Treat axis 0 as a batch: sign all rows once (Merkle root)."),
    ] = False,
    executor: Annotated[
        str,
        typer.Option(
            help="onnxruntime (float, fast, re-checkable within a tolerance) or fixed "
            "(integer, bit-exact on every machine, challengeable)."
        ),
    ] = "onnxruntime",
    precision: Annotated[
        str | None, typer.Option(help="With --executor fixed: int8 or int16.")
    ] = None,
    zk: Annotated[
        bool,
        typer.Option(
            "--zk",
            help="Prove the inference in zero knowledge (EZKL): the receipt carries a proof that "
            "the output is the model's on the committed input. Needs 'edgetrust zk setup MODEL'.",
        ),
    ] = False,
    simulate_fault: Annotated[
        str | None,
        typer.Option(
            "--simulate-fault",
            help="FOR DEMOS AND TESTS ONLY: make this device lie consistently, committing to a "
            "corrupted trace. node=NODE,element=I,delta=D (NODE: name or index). Implies "
            "--executor fixed.",
        ),
    ] = None,
    output_private: Annotated[
        bool, typer.Option("--output-private", help="Leave output values out of the receipt.")
    ] = False,
    allow_nonfinite: Annotated[
        bool, typer.Option("--allow-nonfinite", help="Accept NaN/Inf in inputs.")
    ] = False,
    max_input_mb: Annotated[
        int, typer.Option("--max-input-mb", min=1, help="Refuse inputs larger than this.")
    ] = DEFAULT_MAX_INPUT_BYTES // 2**20,
    log: Annotated[
        str,
        typer.Option(
            "--log",
            help="Where to log the receipt: 'local' (the embedded log), a node URL, or 'none'.",
        ),
    ] = "local",
    log_key: Annotated[
        str | None,
        typer.Option("--log-key", help="With --log URL: the node's log key (note vkey)."),
    ] = None,
    identity: IdentityOpt = "default",
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Run MODEL on an input and write a signed receipt (and its log proof) as a bundle.

    The input is committed to with a random salt that stays on this device: the receipt
    proves what was computed without revealing the input. 'edgetrust reveal' exports the
    opening when you choose to show it.
    """
    set_json_mode(json_out)
    if out_file is not None:
        check_writable(out_file, "the bundle")
    writer = _log_writer(log, log_key, home)
    with Device(
        home,
        identity=identity,
        passphrase=_passphrase(Keystore(home), identity),
        max_input_bytes=max_input_mb * 2**20,
    ) as device:
        card, _ = device.model(model)
        if (input is None) == (text is None):
            raise InvalidInputError("give exactly one of --input FILE or --text TEXT")
        if input is not None:
            inputs = load_inputs(input, card, max_bytes=device.max_input_bytes)
        else:
            from edgetrust.runtime.bert import text_inputs

            inputs = text_inputs(text or [], model_digest=card.digest, home=device.home)
            batch = batch or len(text or []) > 1
        runner = _executor(device, executor, precision, simulate_fault)
        if zk and (batch or output_private or runner != "onnxruntime"):
            raise InvalidInputError(
                "--zk proves one inference in its circuit: it does not go with --batch, "
                "--output-private, --executor, --precision or --simulate-fault"
            )
        receipts_dir = resolve_home(home) / "receipts"
        receipts_dir.mkdir(exist_ok=True)
        log_to = writer if writer is not None else log == "local"
        if batch:
            result = device.infer_batch(
                card.digest,
                inputs,
                executor=runner,
                output_private=output_private,
                allow_nonfinite=allow_nonfinite,
                log=log_to,
            )
            target = (
                out_file
                or receipts_dir / f"batch-{result.receipts.items[0].output_digest[7:19]}.json"
            )
            write_file(target, write_batch_file(result.receipts, result.log), "bundle")
            outputs, count = result.outputs, len(result.receipts.items)
            log_index = result.log.index if result.log else None
        else:
            if zk:
                from edgetrust.cli._zk import stage_progress

                with stage_progress("zk prove", not json_out) as progress:
                    single = device.infer_zk(
                        card.digest,
                        inputs,
                        log=log_to,
                        progress=progress,
                    )
            else:
                single = device.infer(
                    card.digest,
                    inputs,
                    executor=runner,
                    output_private=output_private,
                    allow_nonfinite=allow_nonfinite,
                    log=log_to,
                )
            name = digest_bytes(single.bundle.envelope.to_json())[7:23]
            target = out_file or receipts_dir / f"{name}.json"
            write_file(target, single.bundle.to_json(), "bundle")
            outputs, count = single.outputs, 1
            log_index = single.bundle.log.index if single.bundle.log else None
    data: dict[str, Any] = {
        "bundle": str(target),
        "model": card.digest,
        "receipts": count,
        "logIndex": log_index,
        "issuer": device.identity.did,
        "outputs": _summarize(outputs),
    }

    def human() -> None:
        name = "fixed" if simulate_fault or precision else executor
        if zk:
            name = "ezkl: a zero-knowledge proof of this inference, input kept private"
        out.print(f"ran [bold]{card.name}[/] ({card.digest[:19]}…) with {name}")
        if simulate_fault:
            out.print(f"[bold yellow]simulated fault ({simulate_fault}): this receipt lies[/]")
        for name, s in data["outputs"].items():
            line = f"  {name}: {s['dtype']} {s['shape']}"
            if "argmax" in s:
                line += f"  argmax {s['argmax']}"
            out.print(line)
        logged = f", logged at index {log_index}" if log_index is not None else ", not logged"
        out.print(
            f"{count} receipt{'s' if count > 1 else ''} signed by "
            f"{device.identity.did[:24]}…{logged}"
        )
        out.print(f"bundle: {target}")

    emit(json_out, data, human)


def _load_bundles(path: Path) -> list[Bundle]:
    return parse_bundles(read_file(path, "receipt", max_bytes=256 * 2**20))


@app.command()
def reveal(
    receipt: Annotated[Path, typer.Argument(help="A bundle issued by this device.")],
    out_file: Annotated[Path, typer.Option("--out", "-o", help="Where to write the opening.")],
    item: Annotated[int, typer.Option(help="For a batch file: which item.")] = 0,
    identity: IdentityOpt = "default",
    max_input_mb: Annotated[int, typer.Option(hidden=True)] = DEFAULT_MAX_INPUT_BYTES // 2**20,
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Export the opening (the salt) of a receipt's input commitment.

    Give the opening and the input to someone, and 'edgetrust verify --input --opening'
    lets them check that this input is the one the receipt committed to.
    """
    set_json_mode(json_out)
    bundles = _load_bundles(receipt)
    if not 0 <= item < len(bundles):
        raise InvalidInputError(f"--item must be between 0 and {len(bundles) - 1}")
    with Device(
        home,
        identity=identity,
        passphrase=_passphrase(Keystore(home), identity),
        max_input_bytes=max_input_mb * 2**20,
    ) as device:
        opening = device.reveal(bundles[item])
    write_file(out_file, opening.to_json(), "opening")
    emit(
        json_out,
        {"opening": str(out_file), "commitment": opening.commitment},
        lambda: out.print(f"opening of {opening.commitment[:23]}… written to {out_file}"),
    )


def _signed_by(bundle: Bundle, vkey: str) -> bool:
    """Whether the bundle's checkpoint carries a valid signature by `vkey`."""
    from edgetrust.log.checkpoint import verify_checkpoint

    try:
        verify_checkpoint(bundle.log.checkpoint if bundle.log else b"", vkey)
    except Error:
        return False
    return True


def _batch_row(inputs: dict[str, Any], index: int) -> dict[str, Any]:
    """The inputs of batch item `index`: the file holds that one row, or the whole batch."""
    rows = {len(v) if np.ndim(v) else 0 for v in inputs.values()}
    if rows == {1}:
        return inputs  # only this item's row was shared: the others' inputs stay private
    if len(rows) != 1 or index >= min(rows):
        raise InvalidInputError(
            f"the input file has neither one row nor row {index} of the batch on axis 0"
        )
    return {k: v[index : index + 1] for k, v in inputs.items()}


def _verify_report(v: Verified) -> dict[str, Any]:
    r = v.receipt
    return {
        "ok": True,
        "issuer": r.issuer,
        "model": r.model_digest,
        "executor": dict(r.executor),
        "issuedAt": r.issued_at,
        "outputDigest": r.output_digest,
        "checked": list(v.checked),
        "skipped": list(v.skipped),
    }


def _policy(issuer: list[str] | None, human: str | None, home: str | None) -> Policy | None:
    """The receipt policy from --issuer and --human (both must accept)."""
    from edgetrust.human.policy import human_policy_from_log

    policies: list[Policy] = [IssuerIn(issuer)] if issuer else []
    if human is not None:
        policies.append(human_policy_from_log(human, home))
    if not policies:
        return None
    return policies[0] if len(policies) == 1 else AllOf(policies)


@app.command()
def verify(
    receipt: Annotated[Path, typer.Argument(help="A receipt bundle (or a batch file).")],
    model: Annotated[
        Path | None, typer.Option("--model", help="The ONNX file the receipt should name.")
    ] = None,
    input: Annotated[
        Path | None, typer.Option("--input", "-i", help="The input, to open the commitment.")
    ] = None,
    opening: Annotated[
        Path | None, typer.Option("--opening", help="The opening from 'edgetrust reveal'.")
    ] = None,
    reexecute: Annotated[
        bool, typer.Option("--reexecute", help="Recompute the output and compare.")
    ] = False,
    log_key: Annotated[
        list[str] | None,
        typer.Option(
            "--log-key", help="Trusted log verifier key (note vkey); default: the local log's."
        ),
    ] = None,
    witness: Annotated[
        list[str] | None, typer.Option("--witness", help="Witness verifier key (repeatable).")
    ] = None,
    min_witnesses: Annotated[
        int, typer.Option(min=0, help="Cosignatures required from --witness keys.")
    ] = 0,
    issuer: Annotated[
        list[str] | None, typer.Option("--issuer", help="Accept only these issuer DIDs.")
    ] = None,
    human_bar: Annotated[
        str | None,
        typer.Option(
            "--human",
            help="K,P[,V]: require K reviewers judging the output correct with posterior >= P, "
            "from the local log (e.g. --human 3,0.9); with V, only reviewers vouched for by V "
            "distinct registered reviewers count towards K (e.g. --human 3,0.9,2).",
        ),
    ] = None,
    item: Annotated[
        int | None,
        typer.Option(help="For a batch file: verify only this item (needed with --input)."),
    ] = None,
    require_log: Annotated[
        bool,
        typer.Option(
            "--require-log",
            help="Fail unless the receipt is proven in a trusted log (implied by --log-key).",
        ),
    ] = False,
    allow_unsafe_srs: Annotated[
        bool,
        typer.Option(
            "--allow-unsafe-srs",
            help="UNSAFE: accept ZK proofs made with a locally generated SRS (whoever made it "
            "can forge proofs). For tests and demos only.",
        ),
    ] = False,
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Verify a receipt: signature, format, model, opening, re-execution, log, policy, ZK proof.

    Exit code 0 when it verifies, 1 when a check fails (the line says which step), 2 on bad
    input. Each step says what it trusts; see the README.
    """
    set_json_mode(json_out)
    bundles = _load_bundles(receipt)
    if item is not None:
        if not 0 <= item < len(bundles):
            raise InvalidInputError(f"--item must be between 0 and {len(bundles) - 1}")
        bundles = [bundles[item]]
    elif len(bundles) > 1 and (input is not None or opening is not None):
        raise InvalidInputError("a batch file with --input/--opening needs --item N")
    keys = list(log_key or [])
    local_db = resolve_home(home) / "log" / "log.db"
    if not keys and local_db.exists():
        with Log.open(home) as lg:
            # Trust the local log by default only for bundles it signed: a bundle from
            # another log (embedded logs share a default origin) is then reported as not
            # checked, not as failed.
            if all(_signed_by(b, lg.verifier_key) for b in bundles if b.log is not None):
                keys = [lg.verifier_key]
    try:
        verifier = Verifier(
            log_keys=keys,
            require_log=require_log or bool(log_key),
            witness_keys=witness or [],
            min_witnesses=min_witnesses,
            registry=ModelRegistry(home),
            policy=_policy(issuer, human_bar, home),
            zk_home=resolve_home(home),
            allow_unsafe_srs=allow_unsafe_srs,
        )
    except ValueError as exc:
        raise InvalidInputError(str(exc)) from exc
    model_bytes = read_file(model, "model", max_bytes=2**31) if model else None
    op = parse_opening(read_file(opening, "opening")) if opening else None
    inputs = None
    if input is not None:
        card = ModelCard.from_onnx_bytes(model_bytes) if model_bytes else None
        if card is None:
            digest = read_receipt(bundles[0]).model_digest
            try:
                card, _ = ModelRegistry(home).card(digest)
            except NotFoundError as exc:
                raise InvalidInputError(
                    f"model {digest[:23]}… is not registered here: give --model FILE "
                    "so the input file can be read"
                ) from exc
        inputs = load_inputs(input, card)
    results = []
    with Progress(transient=True, disable=json_out or len(bundles) < 64) as progress:
        task = progress.add_task("verifying", total=len(bundles))
        for bundle in bundles:
            row_inputs = inputs
            if inputs is not None and bundle.item is not None:
                row_inputs = _batch_row(inputs, bundle.item.index)
            results.append(
                verifier.verify(
                    bundle, model=model_bytes, inputs=row_inputs, opening=op, reexecute=reexecute
                )
            )
            progress.advance(task)
    report = _verify_report(results[0]) | {"receipts": len(results)}

    def human() -> None:
        out.print(
            f"[bold green]verified[/] {len(results)} receipt{'s' if len(results) > 1 else ''} "
            f"from {report['issuer']}"
        )
        for step in report["checked"]:
            out.print(f"  [green]✓[/] {step}")
        for step in report["skipped"]:
            out.print(f"  [dim]- {step}[/]")

    emit(json_out, report, human)


@app.command()
def demo(
    export: Annotated[
        Path | None,
        typer.Option(
            "--export",
            help="Instead of running the demo, write its model (digits.onnx) and sample inputs "
            "(one.npy, batch.npy) into this directory, to try the commands by hand.",
        ),
    ] = None,
    serve: Annotated[
        bool,
        typer.Option("--serve", help="Then keep serving the demo log's web pages until Ctrl-C."),
    ] = False,
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port for --serve.")] = 8765,
    json_out: JsonOpt = False,
) -> None:
    """Run the main job end to end: a model, devices, receipts, a log, a witness, a verifier.

    Everything happens in a temporary home, offline; nothing is left behind. Exit code 1 if
    any check does not come out as expected. With --serve, the demo's log is then served
    (pages and API) on 127.0.0.1 until Ctrl-C, and its home removed after.
    """
    import io

    from rich.console import Console

    from edgetrust.demo import export_demo_files, run_demo
    from edgetrust.errors import VerificationError

    set_json_mode(json_out)
    if export is not None:
        written = export_demo_files(export)
        emit(
            json_out,
            {"files": [str(p) for p in written]},
            lambda: out.print("wrote " + ", ".join(str(p) for p in written)),
        )
        return
    console = Console(file=io.StringIO()) if json_out else out
    url = f"http://127.0.0.1:{port}/"
    if serve:
        import tempfile

        with tempfile.TemporaryDirectory(prefix="edgetrust-demo-") as tmp:
            result = run_demo(console, home=Path(tmp))
            _serve_demo(Path(tmp) / "log", port, url, result.failures)
        if result.failures:
            raise VerificationError(f"demo checks came out wrong: {', '.join(result.failures)}")
        return
    result = run_demo(console)
    if not json_out:
        out.print(f"web pages of this log: run 'edgetrust demo --serve', then open {url}")
    emit(
        json_out,
        {
            "ok": not result.failures,
            "checks": [{"check": c, "expected": e, "outcome": o} for c, e, o in result.rows],
            "failures": result.failures,
            "receipts": result.receipts,
            "logSize": result.log_size,
        },
        lambda: None,
    )
    if result.failures:
        raise VerificationError(f"demo checks came out wrong: {', '.join(result.failures)}")


def _serve_demo(home: Path, port: int, url: str, failures: list[str]) -> None:
    """Serve the demo log at `home` on 127.0.0.1 until Ctrl-C (``edgetrust demo --serve``)."""
    import uvicorn

    from edgetrust.node.app import create_app
    from edgetrust.node.settings import NodeSettings
    from edgetrust.node.web.demo_logs import fold_demo_logs

    if failures:
        err.print(f"demo checks came out wrong: {', '.join(failures)}; serving anyway")
    home = fold_demo_logs(home)  # one log with its FL and data logs too, for every page
    err.print(f"the demo's log: {url} (Ctrl-C to stop)")
    uvicorn.run(
        create_app(settings=NodeSettings(home=home, rate=0)),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=5,
    )
