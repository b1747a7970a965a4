"""Commands for the transparency log, the log node and the witness: `log`, `node`, `witness`."""

from __future__ import annotations

import base64
import binascii
import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from edgetrust.cli._app import HomeOpt, JsonOpt, app, emit, err, out, set_json_mode
from edgetrust.errors import Error, InvalidInputError, VerificationError

log_app = typer.Typer(
    help=(
        "The transparency log: every receipt and model card as an entry of an append-only "
        "Merkle tree (RFC 9162) with signed checkpoints (C2SP).\n\n"
        "Without --log, commands use the embedded log in $EDGETRUST_HOME. With --log URL "
        "they read a remote node and verify everything against --key, the log's verifier key "
        "(get it once, out of band, with 'edgetrust log key')."
    ),
    no_args_is_help=True,
)
node_app = typer.Typer(
    help="Run the log node: HTTP API over the embedded log.", no_args_is_help=True
)
witness_app = typer.Typer(
    help="Run a witness that cosigns consistent checkpoints (C2SP tlog-witness).",
    no_args_is_help=True,
)
app.add_typer(log_app, name="log")
app.add_typer(node_app, name="node")
app.add_typer(witness_app, name="witness")

LogUrlOpt = Annotated[
    str | None,
    typer.Option("--log", help="URL of a remote log node (default: the embedded log)."),
]
StoreOpt = Annotated[
    str | None,
    typer.Option(
        "--store",
        envvar="EDGETRUST_LOG_STORE",
        help="The log store: a postgresql:// URL (several nodes can share it) or a SQLite "
        "file path (default: log/log.db in --home).",
    ),
]
KeyOpt = Annotated[
    str | None,
    typer.Option(
        "--key",
        envvar="EDGETRUST_LOG_KEY",
        help="The log's verifier key (note vkey: name+id+base64). Required with --log.",
    ),
]


def _write(note: bytes) -> None:
    sys.stdout.write(note.decode("utf-8", "replace"))


def _b64(hashes: list[bytes] | tuple[bytes, ...]) -> list[str]:
    return [base64.b64encode(h).decode("ascii") for h in hashes]


def _client(url: str, key: str | None, state: Path | None = None) -> Any:
    from edgetrust.log.client import LogClient

    if not key:
        raise InvalidInputError(
            "--key is required with --log: a remote log is only as trustworthy as the key "
            "you check it against ('edgetrust log key' on the log's host prints it)"
        )
    return LogClient(url, key, state_path=state)


def _open_log(home: str | None, store: str | None = None) -> Any:
    from edgetrust.log.service import Log

    # EDGETRUST_LOG_STORE (what --store reads) applies to every embedded-log command, so a
    # PostgreSQL log's host runs `log key`, `log checkpoint`... on the shared log.
    return Log.open(home, store=store or os.environ.get("EDGETRUST_LOG_STORE") or None)


def _checkpoint_dict(note: bytes, vkey: str) -> dict[str, Any]:
    from edgetrust.log.checkpoint import verify_checkpoint

    cp = verify_checkpoint(note, vkey)
    return {
        "origin": cp.origin,
        "size": cp.size,
        "root": base64.b64encode(cp.root).decode("ascii"),
        "note": note.decode(),
    }


def _describe_entry(data: bytes) -> dict[str, Any]:
    """What a person wants to see of an entry: its type, signer and subjects (unverified)."""
    from edgetrust.statement import open_signed_statement

    info: dict[str, Any] = {"bytes": len(data)}
    try:
        signed = open_signed_statement(data)
    except Error as exc:  # display only: the entry is shown either way
        info["statement"] = f"not a known signed statement: {exc}"
        return info
    info["predicate_type"] = signed.statement.predicate_type
    info["signer"] = signed.signer
    info["subjects"] = [f"{s.name} sha256:{s.sha256}" for s in signed.statement.subjects]
    return info


# --- log ---------------------------------------------------------------------------------------


@log_app.command("key")
def log_key(
    log: LogUrlOpt = None,
    home: HomeOpt = None,
    store: StoreOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Print the log's verifier key, one line in note vkey format.

    Give this line to anyone who should check the log: clients, witnesses, monitors.
    With --log it asks a remote node, which you must confirm out of band (it is only
    what the node says).
    """
    set_json_mode(json_out)
    if log is not None:
        import httpx

        from edgetrust.log.client import LogUnavailableError

        try:
            resp = httpx.get(log.rstrip("/") + "/v1/log", timeout=10)
            vkey = resp.json()["vkey"]
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            raise LogUnavailableError(f"cannot read the key of {log}: {exc}") from exc
        if not isinstance(vkey, str):
            raise LogUnavailableError(f"{log} answered no key")
    else:
        the_log = _open_log(home, store)
        try:
            vkey = the_log.verifier_key
        finally:
            the_log.close()
    emit(json_out, {"vkey": vkey, "source": log or "embedded"}, lambda: print(vkey))


@log_app.command("checkpoint")
def log_checkpoint(
    log: LogUrlOpt = None,
    key: KeyOpt = None,
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Print the latest signed checkpoint (origin, size, root hash, signatures), verified."""
    set_json_mode(json_out)
    if log is not None:
        with _client(log, key) as client:
            client.update()
            note, vkey = client.trusted_note, client.vkey
    else:
        the_log = _open_log(home)
        try:
            note, vkey = the_log.checkpoint(), the_log.verifier_key
        finally:
            the_log.close()
    data = _checkpoint_dict(note, vkey)
    emit(json_out, data, lambda: _write(note))


@log_app.command("get")
def log_get(
    index: Annotated[int, typer.Argument(help="Entry index (0-based).", min=0)],
    log: LogUrlOpt = None,
    key: KeyOpt = None,
    home: HomeOpt = None,
    raw: Annotated[bool, typer.Option("--raw", help="Print only the entry's bytes.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Fetch one entry with its inclusion proof, verified against the signed checkpoint.

    --json prints a proof document that 'edgetrust log verify' checks offline.
    """
    set_json_mode(json_out)
    doc = _entry_document(index, log, key, home)
    data = base64.b64decode(doc["entry"])
    if raw and not json_out:
        sys.stdout.buffer.write(data + b"\n")
        return
    info = _describe_entry(data)

    def human() -> None:
        out.print(
            f"entry [bold]{index}[/] of {doc['size']} ({info['bytes']} bytes), inclusion verified"
        )
        for k in ("predicate_type", "signer", "statement"):
            if k in info:
                out.print(f"  {k}: {info[k]}", highlight=False)
        for s in info.get("subjects", []):
            out.print(f"  subject: {s}", highlight=False)

    emit(json_out, {**doc, "summary": info}, human)


def _entry_document(
    index: int, log: str | None, key: str | None, home: str | None
) -> dict[str, Any]:
    from edgetrust.log.checkpoint import verify_checkpoint
    from edgetrust.log.merkle import leaf_hash, verify_inclusion

    if log is not None:
        with _client(log, key) as client:
            got = client.get_entry(index)
            data, proof, note, vkey = got.data, list(got.proof), got.note, client.vkey
    else:
        the_log = _open_log(home)
        try:
            note, vkey = the_log.checkpoint(), the_log.verifier_key
            size = verify_checkpoint(note, vkey).size
            if index >= size:
                from edgetrust.errors import NotFoundError

                raise NotFoundError(f"entry {index} is beyond the log's size {size}")
            data = the_log.entry(index)
            proof = the_log.inclusion_proof(index, size)
        finally:
            the_log.close()
    cp = verify_checkpoint(note, vkey)
    verify_inclusion(leaf_hash(data), index, cp.size, proof, cp.root)
    return {
        "index": index,
        "size": cp.size,
        "entry": base64.b64encode(data).decode("ascii"),
        "inclusion_proof": _b64(proof),
        "checkpoint": note.decode(),
        "vkey": vkey,
    }


@log_app.command("prove")
def log_prove(
    index: Annotated[
        int | None, typer.Argument(help="Entry index to prove inclusion of.", min=0)
    ] = None,
    consistency: Annotated[
        int | None,
        typer.Option("--consistency", min=0, help="Prove consistency from this older size."),
    ] = None,
    log: LogUrlOpt = None,
    key: KeyOpt = None,
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Print an inclusion proof for INDEX, or a consistency proof with --consistency OLD.

    Proofs are against the latest checkpoint, and are verified before they are printed.
    """
    set_json_mode(json_out)
    if (index is None) == (consistency is None):
        raise InvalidInputError("give an entry INDEX or --consistency OLD_SIZE (one of them)")
    if index is not None:
        doc = _entry_document(index, log, key, home)
        doc.pop("entry")
    else:
        assert consistency is not None
        doc = _consistency_document(consistency, log, key, home)

    def human() -> None:
        if index is not None:
            out.print(f"inclusion of entry {index} in tree size {doc['size']} (verified):")
        else:
            out.print(f"consistency {doc['size1']} -> {doc['size2']} (verified):")
        for h in doc["inclusion_proof" if index is not None else "proof"]:
            out.print(f"  {h}", highlight=False)

    emit(json_out, doc, human)


def _consistency_document(
    old: int, log: str | None, key: str | None, home: str | None
) -> dict[str, Any]:
    from edgetrust.log.checkpoint import verify_checkpoint

    old_note: bytes | None = None
    if log is not None:
        with _client(log, key) as client:
            cp = client.update()
            if old > cp.size:
                raise InvalidInputError(f"--consistency {old} is beyond the log's size {cp.size}")
            proof = client.consistency_proof(old, cp.size)
            note, vkey = client.trusted_note, client.vkey
    else:
        the_log = _open_log(home)
        try:
            note, vkey = the_log.checkpoint(), the_log.verifier_key
            cp = verify_checkpoint(note, vkey)
            if old > cp.size:
                raise InvalidInputError(f"--consistency {old} is beyond the log's size {cp.size}")
            proof = the_log.consistency_proof(old, cp.size) if 0 < old < cp.size else []
            sizes = the_log.checkpoint_sizes()
            old_note = the_log.checkpoint_at(old) if old in sizes else None
        finally:
            the_log.close()
    doc: dict[str, Any] = {
        "size1": old,
        "size2": cp.size,
        "proof": _b64(proof),
        "checkpoint": note.decode(),
        "vkey": vkey,
    }
    if old_note is not None:
        # The log's own earlier checkpoint at `old`: with it the document proves, offline,
        # that one signed checkpoint extends the other.
        doc["checkpoint1"] = old_note.decode()
    return doc


@log_app.command("verify")
def log_verify(
    proof_file: Annotated[
        Path, typer.Argument(help="A proof document from 'log get --json' or 'log prove --json'.")
    ],
    key: KeyOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Verify a proof document offline: checkpoint signature (by --key), then the proof.

    Exit 0 when it verifies, 1 when it does not, 2 when the document is malformed.
    """
    set_json_mode(json_out)
    from edgetrust.encoding import parse_json
    from edgetrust.log.checkpoint import verify_checkpoint
    from edgetrust.log.merkle import leaf_hash, verify_consistency, verify_inclusion

    if not key:
        raise InvalidInputError("--key is required: the log's verifier key to check against")
    try:
        raw = proof_file.read_bytes()
    except OSError as exc:
        raise InvalidInputError(f"cannot read {proof_file}: {exc.strerror}") from exc
    doc = parse_json(raw, what="proof document", max_bytes=2**24)
    if not isinstance(doc, dict) or not isinstance(doc.get("checkpoint"), str):
        raise InvalidInputError("proof document needs a 'checkpoint' note")
    cp = verify_checkpoint(doc["checkpoint"].encode(), key)
    if "index" in doc:
        index = _int_field(doc, "index")
        proof = _hashes(doc.get("inclusion_proof"))
        if not isinstance(doc.get("entry"), str):
            raise InvalidInputError("an inclusion proof document needs the 'entry' (base64)")
        entry = _b64decode(doc["entry"])
        verify_inclusion(leaf_hash(entry), index, cp.size, proof, cp.root)
        result = {"verified": True, "kind": "inclusion", "index": index, "size": cp.size}
        text = f"verified: entry {index} is in {cp.origin} at size {cp.size}"
    elif "size1" in doc:
        size1 = _int_field(doc, "size1")
        if isinstance(doc.get("checkpoint1"), str):
            cp1 = verify_checkpoint(doc["checkpoint1"].encode(), key)
            if cp1.size != size1 or cp1.origin != cp.origin:
                raise InvalidInputError("checkpoint1 does not match size1 and the origin")
            root1 = cp1.root
        else:
            root1 = _b64decode(doc.get("root1"))
        proof = _hashes(doc.get("proof"))
        verify_consistency(size1, cp.size, proof, root1, cp.root)
        result = {"verified": True, "kind": "consistency", "size1": size1, "size2": cp.size}
        text = f"verified: size {size1} is a prefix of {cp.origin} at size {cp.size}"
    else:
        raise InvalidInputError("proof document has neither 'index' nor 'size1'")
    emit(json_out, result, lambda: out.print(f"[green]{text}[/]"))


def _int_field(doc: dict[str, Any], name: str) -> int:
    value = doc.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise InvalidInputError(f"proof document '{name}' must be a non-negative integer")
    return value


def _b64decode(value: object) -> bytes:
    if not isinstance(value, str):
        raise InvalidInputError("expected a base64 string in the proof document")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidInputError("proof document has invalid base64") from exc


def _hashes(value: object) -> list[bytes]:
    if not isinstance(value, list) or len(value) > 64:
        raise InvalidInputError("proof must be a list of at most 64 base64 hashes")
    return [_b64decode(v) for v in value]


@log_app.command("submit")
def log_submit(
    envelope_file: Annotated[Path, typer.Argument(help="A DSSE envelope (JSON) to log.")],
    log: LogUrlOpt = None,
    key: KeyOpt = None,
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Append a signed envelope (a receipt or model card) to the log; print its proof."""
    set_json_mode(json_out)
    try:
        raw = envelope_file.read_bytes()
    except OSError as exc:
        raise InvalidInputError(f"cannot read {envelope_file}: {exc.strerror}") from exc
    if log is not None:
        with _client(log, key) as client:
            sub = client.submit(raw)
            doc = {
                "index": sub.index,
                "size": sub.checkpoint.size,
                "inclusion_proof": _b64(sub.proof),
                "checkpoint": sub.note.decode(),
            }
    else:
        from edgetrust.node.entries import prepare_entry

        prepared = prepare_entry(raw, max_entry=0xFFFF)
        the_log = _open_log(home)
        try:
            index = the_log.append(prepared.data)
            note = the_log.checkpoint()
            size = int(note.split(b"\n")[1])
            doc = {
                "index": index,
                "size": size,
                "inclusion_proof": _b64(the_log.inclusion_proof(index, size)),
                "checkpoint": note.decode(),
            }
        finally:
            the_log.close()
    doc["entry"] = base64.b64encode(_canonical(raw)).decode("ascii")
    emit(json_out, doc, lambda: out.print(f"logged at index [bold]{doc['index']}[/]"))


def _canonical(raw: bytes) -> bytes:
    from edgetrust.dsse import parse_envelope

    return parse_envelope(raw).to_json()


@log_app.command("monitor")
def log_monitor(
    url: Annotated[str, typer.Argument(help="URL of the log node to follow.")],
    key: KeyOpt = None,
    state: Annotated[
        Path | None,
        typer.Option(help="File that remembers the last verified checkpoint across runs."),
    ] = None,
    interval: Annotated[float, typer.Option(min=0.0, help="Seconds between polls.")] = 10.0,
    once: Annotated[bool, typer.Option("--once", help="Poll once and exit.")] = False,
    rounds: Annotated[int | None, typer.Option(min=1, help="Stop after this many polls.")] = None,
    entries: Annotated[
        bool,
        typer.Option(
            "--entries",
            help="Also download every new entry and prove each bundle into the signed root.",
        ),
    ] = False,
    json_out: JsonOpt = False,
) -> None:
    """Follow a remote log, verifying that each new checkpoint is consistent with the last.

    A fork (two signed views of history that do not fit together) exits with status 1 and
    prints both checkpoints as evidence. With --state, the check spans runs. With --entries
    the monitor also audits the new entries themselves (what a monitor of a CT log does).
    """
    set_json_mode(json_out)
    from edgetrust.log.client import ForkError, monitor

    client = _client(url, key, state)
    audited = client.trusted.size if client.trusted is not None else 0
    try:
        for cp in monitor(client, interval=interval, rounds=1 if once else rounds):
            record: dict[str, Any] = {
                "origin": cp.origin,
                "size": cp.size,
                "root": base64.b64encode(cp.root).decode("ascii"),
            }
            if entries and cp.size > audited:
                record["entries_verified"] = _audit(client, audited, cp.size)
                audited = cp.size
            emit(
                json_out,
                record,
                lambda r=record: out.print(  # type: ignore[misc]
                    f"checkpoint {r['origin']} size {r['size']} root {r['root']}: consistent"
                    + (
                        f", {r['entries_verified']} new entries verified"
                        if "entries_verified" in r
                        else ""
                    ),
                    highlight=False,
                ),
            )
            sys.stdout.flush()
    except ForkError as exc:
        if json_out:
            sys.stdout.write(json.dumps({"fork": exc.message, **exc.evidence()}) + "\n")
        err.print("[bold red]FORK DETECTED[/]: the log signed two incompatible views of history")
        err.print("trusted checkpoint:\n" + exc.evidence()["trusted"], highlight=False)
        err.print("presented checkpoint:\n" + exc.evidence()["presented"], highlight=False)
        raise VerificationError(exc.message, step=exc.step) from exc
    finally:
        client.close()


def _audit(client: Any, start: int, stop: int) -> int:
    """Fetch and verify entries start..stop-1, with a progress bar on stderr."""
    from rich.progress import Progress

    count = 0
    with Progress(console=err, transient=True) as progress:
        task = progress.add_task("verifying entries", total=stop - start)
        for _ in client.entries(start, stop):
            count += 1
            progress.advance(task)
    return count


# --- node --------------------------------------------------------------------------------------


def _auto_anchor(
    settings: Any, every: int, rpc: str | None, contract: str | None, account: str, home: str | None
) -> tuple[Any, Any]:
    """Open the node's log and an `AutoAnchor` on the chain, for `node serve --anchor-every`."""
    from edgetrust.chain.autoanchor import AutoAnchor
    from edgetrust.cli._chain import _anchor_contract, _session
    from edgetrust.identity import Keystore
    from edgetrust.log.service import LOG_KEY_NAME, Log

    log = Log.open(home, origin=settings.origin, max_delay=settings.max_delay, store=settings.store)
    chain, acct = _session(rpc, home, account, None)
    auto = AutoAnchor(
        _anchor_contract(chain, acct, home, contract),
        acct,
        log,
        Keystore(home).load(LOG_KEY_NAME),
        every,
    )
    err.print(f"anchoring every {every} entries on chain {chain.chain_id} as {acct.address}")

    def on_append() -> None:
        tx = auto.maybe_anchor()
        if tx is not None:
            err.print(f"anchored size {auto.last_size} ({tx.gas_used:,} gas)")

    return log, on_append


@node_app.command("serve")
def node_serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="TCP port.")] = 8080,
    home: HomeOpt = None,
    store: StoreOpt = None,
    origin: Annotated[str | None, typer.Option(help="Checkpoint origin line of a new log.")] = None,
    max_body: Annotated[int, typer.Option(help="Largest request body in bytes (larger: 413).")] = 8
    * 2**20,
    rate: Annotated[
        float, typer.Option(help="Entries/s each signing identity may submit (0: no limit).")
    ] = 100.0,
    burst: Annotated[
        int | None,
        typer.Option(help="Entries an identity may submit at once (default: 10 x rate)."),
    ] = None,
    max_delay: Annotated[
        float,
        typer.Option(help="Longest wait (s) for a sequencing batch to fill (0: group commit)."),
    ] = 0.0,
    verify_workers: Annotated[
        int, typer.Option(help="Processes verifying batch signatures in parallel.")
    ] = 0,
    publish: Annotated[
        Path | None,
        typer.Option(
            "--publish",
            help="Also keep DIR a static copy of the log (C2SP tlog-tiles files: checkpoint, "
            "tile/...), updated as the log grows, for any web server or CDN to serve.",
        ),
    ] = None,
    publish_interval: Annotated[
        float,
        typer.Option(help="With --publish: update DIR at most every this many seconds."),
    ] = 1.0,
    anchor_every: Annotated[
        int | None,
        typer.Option(
            "--anchor-every",
            min=1,
            help="Anchor the log's checkpoint on an EVM chain every N new entries (without "
            "--rpc: an in-process chain that lives as long as the node).",
        ),
    ] = None,
    rpc: Annotated[
        str | None, typer.Option(help="With --anchor-every: the chain's JSON-RPC URL.")
    ] = None,
    contract: Annotated[
        str | None,
        typer.Option(help="With --anchor-every: the LogAnchor address (default: recorded)."),
    ] = None,
    account: Annotated[
        str, typer.Option(help="With --anchor-every: the EVM account that operates the log.")
    ] = "default",
    traces: Annotated[
        bool,
        typer.Option(
            "--traces/--no-traces",
            help="Answer dispute queries about the fixed-point traces this home keeps "
            "(GET /v1/traces/ROOT, POST /v1/traces/ROOT/query), so a challenger can run "
            "'edgetrust challenge --device URL'. This exposes each kept trace - every "
            "intermediate value and the quantized inputs - to anyone who knows its root "
            "(which is in the receipt): serve it only where challengers may see the inputs.",
        ),
    ] = False,
    trace_window: Annotated[
        float,
        typer.Option(
            "--trace-window",
            min=1,
            help="With --traces: seconds after a run that its trace is answered for "
            "(default: 7 days, the device's dispute window).",
        ),
    ] = 7 * 24 * 3600.0,
    data: Annotated[
        bool,
        typer.Option(
            "--data/--no-data",
            help="Run compute-to-data jobs on this home's datasets (POST /v1/jobs, "
            "GET /v1/usage, GET /v1/datasets), as 'edgetrust data serve' does.",
        ),
    ] = False,
) -> None:
    """Serve the embedded log over HTTP (tlog-tiles read API, JSON write API, OpenAPI).

    Endpoints: /checkpoint, /tile/..., POST /v1/entries, POST /v1/entries:batch,
    GET /v1/entries/{index}, GET /v1/proofs/consistency, /openapi.json, /healthz; with
    --traces also GET /v1/traces/{root} and POST /v1/traces/{root}/query (disputes).
    """
    import uvicorn

    from edgetrust.node.app import create_app
    from edgetrust.node.settings import NodeSettings

    if anchor_every is None and (rpc or contract):
        raise InvalidInputError("--rpc and --contract go with --anchor-every")

    settings = NodeSettings(
        home=Path(home) if home else None,
        store=store,
        origin=origin,
        max_body=max_body,
        rate=rate,
        burst=burst,
        max_delay=max_delay,
        verify_workers=verify_workers,
        publish=publish,
        publish_interval=publish_interval,
        traces=traces,
        trace_window=trace_window,
        data=data,
    )
    log = None
    on_append = None
    if anchor_every is not None:
        log, on_append = _auto_anchor(settings, anchor_every, rpc, contract, account, home)
    elif store is not None or publish is not None:
        # Opened here, not at startup, so a bad URL or an unreachable database is one line.
        from edgetrust.log.service import Log

        log = Log.open(home, origin=origin, max_delay=max_delay, store=store)
    if publish is not None:
        # Likewise a directory that is not writable or holds another log: refused up front.
        from edgetrust.log.publish import publish_tiles

        assert log is not None  # opened just above
        try:
            publish_tiles(log, publish)
        except BaseException:
            log.close()
            raise
        err.print(f"publishing tiles into {publish}")
    err.print(f"edgetrust node on http://{host}:{port} (Ctrl-C to stop)")
    if traces:
        err.print("answering dispute queries about this home's traces (/v1/traces)")
    uvicorn.run(
        create_app(log, settings=settings, on_append=on_append),
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=5,
    )
    if log is not None:
        log.close()


# --- witness -----------------------------------------------------------------------------------


WitnessNameOpt = Annotated[
    str, typer.Option("--name", help="The witness's name in its cosignatures.")
]


@witness_app.command("serve")
def witness_serve(
    log_key: Annotated[
        list[str],
        typer.Option("--log-key", help="Verifier key of a log to witness (repeatable)."),
    ],
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="TCP port.")] = 8081,
    name: WitnessNameOpt = "witness.edgetrust.local",
    home: HomeOpt = None,
) -> None:
    """Serve POST /add-checkpoint: verify consistency with the last cosigned checkpoint, cosign.

    State (the latest cosigned checkpoint of each log, and evidence of refused ones) is kept
    in SQLite under --home; the witness key is 'witness' in its keystore.
    """
    import uvicorn

    from edgetrust.node.settings import WitnessSettings
    from edgetrust.node.witness import create_witness_app

    settings = WitnessSettings(
        home=Path(home) if home else None, name=name, log_keys=tuple(log_key)
    )
    for vkey in log_key:
        from edgetrust.log.checkpoint import NoteVerifier

        NoteVerifier.from_vkey(vkey)  # refuse a malformed key before listening
    err.print(f"edgetrust witness {name} on http://{host}:{port} (Ctrl-C to stop)")
    uvicorn.run(
        create_witness_app(settings=settings),
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
    )


@witness_app.command("key")
def witness_key(
    name: WitnessNameOpt = "witness.edgetrust.local",
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Print the witness's cosigner verifier key (tlog-cosignature vkey, type 0x04)."""
    set_json_mode(json_out)
    from edgetrust.identity import Keystore
    from edgetrust.log.checkpoint import NoteSigner

    identity = Keystore(home).load_or_create("witness")
    vkey = NoteSigner(name, identity).cosignature_vkey
    emit(json_out, {"vkey": vkey}, lambda: print(vkey))


@witness_app.command("cosign")
def witness_cosign(
    log: Annotated[str, typer.Option("--log", help="URL of the log node.")],
    witness: Annotated[str, typer.Argument(help="URL of the witness.")],
    key: KeyOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Ask a witness to cosign the log's latest checkpoint; print the cosigned checkpoint."""
    set_json_mode(json_out)
    with _client(log, key) as client:
        note = client.witness(witness)
    emit(json_out, {"checkpoint": note.decode()}, lambda: _write(note))
