"""`edgetrust capture`: record a signed sensor stream, verify a file against it, show it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from edgetrust.cli._app import HomeOpt, JsonOpt, app, emit, err, out, set_json_mode
from edgetrust.errors import InvalidInputError

capture_app = typer.Typer(
    help=(
        "Human-origin data signed at the source: a capture device (its own key) signs EEG "
        "samples chunk by chunk as they are recorded, and the stream's root is logged.\n\n"
        "'edgetrust capture record --seconds 10 --out rec.bdf' (BrainFlow's synthetic board), "
        "'edgetrust capture verify rec.bdf', 'edgetrust capture show rec.bdf'."
    ),
    no_args_is_help=True,
)
app.add_typer(capture_app, name="capture")


def _progress(json_out: bool) -> Any:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=json_out,
    )


@capture_app.command("record")
def record_cmd(
    out_file: Annotated[Path, typer.Option("--out", help="The .bdf (or .edf) file to write.")],
    seconds: Annotated[float, typer.Option(help="Seconds of samples to record.")] = 10.0,
    source: Annotated[
        str,
        typer.Option(
            help="'synthetic' (BrainFlow's synthetic board, real time), 'numpy', or 'lsl:NAME' "
            "(an unsigned LSL stream, signed here as it arrives)."
        ),
    ] = "synthetic",
    channels: Annotated[int, typer.Option(help="EEG channels.")] = 8,
    chunk_seconds: Annotated[float, typer.Option(help="Seconds per hashed chunk.")] = 1.0,
    seal_every: Annotated[int, typer.Option(help="Chunks per signed chain head.")] = 10,
    device: Annotated[str, typer.Option(help="Key name of the capture device.")] = "capture",
    wearer: Annotated[
        str | None, typer.Option(help="Key name of the wearer, who co-signs (consent).")
    ] = None,
    log: Annotated[bool, typer.Option(help="Log the stream's root in the local log.")] = True,
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Record, sign and write a capture; log its root."""
    from edgetrust.capture.record import log_capture, record, save_recording
    from edgetrust.capture.sources import SyntheticBoard, eeg_like, numpy_sensor
    from edgetrust.capture.stream import CaptureDevice
    from edgetrust.identity import Keystore

    set_json_mode(json_out)
    if not 0 < seconds <= 24 * 3600:
        raise InvalidInputError("--seconds must be in (0, 86400]")
    if out_file.suffix.lower() not in (".bdf", ".edf"):
        raise InvalidInputError("--out must be a .bdf or .edf file")
    keys = Keystore(home)
    ident = keys.load_or_create(device)
    wearer_id = keys.load(wearer) if wearer else None
    if source == "synthetic":
        board = SyntheticBoard(channels)
        sensor, frames = board.sensor, board.frames(seconds)
    elif source == "numpy":
        sensor = numpy_sensor(channels)
        data = eeg_like(seconds, channels, sensor.sampling_rate)
        frames = iter([data[i : i + 25] for i in range(0, len(data), 25)])
    elif source.startswith("lsl:"):
        from edgetrust.capture.lsl import LslSource

        lsl = LslSource(source[4:])
        sensor, frames = lsl.sensor, lsl.frames(seconds)
    else:
        raise InvalidInputError(
            f"--source must be 'synthetic', 'numpy' or 'lsl:NAME', not {source!r:.20}"
        )
    total = round(seconds * sensor.sampling_rate)
    with _progress(json_out) as progress:
        task = progress.add_task("recording", total=total)
        session = record(
            CaptureDevice(ident, sensor),
            frames,
            chunk_seconds=chunk_seconds,
            seal_every=seal_every,
            wearer=wearer_id,
            on_frames=lambda n: progress.advance(task, n),
        )
    manifest = save_recording(session, out_file)
    index = None
    if log:
        from edgetrust.log.service import Log

        the_log = Log.open(home)
        try:
            assert session.statement is not None
            index = log_capture(the_log, session.statement)
        finally:
            the_log.close()
    report = {
        "file": str(out_file),
        "manifest": str(manifest),
        "stream_id": session.header.stream_id,
        "root": "sha256:" + session.root.hex(),
        "device": ident.did,
        "wearer": session.header.wearer,
        "chunks": len(session.chunks),
        "samples": session.samples,
        "seals": len(session.seals),
        "log_index": index,
        "source": source,
    }

    def human() -> None:
        out.print(
            f"[bold green]recorded[/] {session.samples} frames × {len(sensor.channels)} channels "
            f"from {sensor.model} in {len(session.chunks)} chunks, {len(session.seals)} seals"
        )
        out.print(f"  file {out_file}  manifest {manifest}")
        out.print(f"  root {report['root']}")
        out.print(f"  logged at index {index}" if index is not None else "  not logged")

    emit(json_out, report, human)


def _logged(home: str | None, statement: Any) -> int | None:
    from edgetrust.log.service import Log

    the_log = Log.open(home)
    try:
        return the_log.index_of(statement.to_json())
    finally:
        the_log.close()


@capture_app.command("verify")
def verify_cmd(
    file: Annotated[Path, typer.Argument(help="The .bdf/.edf recording.")],
    manifest: Annotated[
        Path | None, typer.Option(help="The manifest (default: <file>.capture.json).")
    ] = None,
    require_consent: Annotated[
        bool, typer.Option(help="Refuse a stream its wearer did not co-sign.")
    ] = False,
    require_logged: Annotated[
        bool, typer.Option(help="Refuse a stream whose root is not in the local log.")
    ] = False,
    wearer_reviewer: Annotated[
        bool,
        typer.Option(help="Require consent by a reviewer registered in the local log (passkey)."),
    ] = False,
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Prove the file's samples are exactly the signed stream (exit 1 names the bad chunk)."""
    from edgetrust.capture.edf import verify_recording
    from edgetrust.errors import VerificationError

    set_json_mode(json_out)
    reviewers = None
    if wearer_reviewer:
        from edgetrust.human.policy import DEFAULT_ORIGIN, DEFAULT_RP_ID, HumanRecord
        from edgetrust.log.service import Log

        with Log.open(home) as the_log:
            entries = the_log.entries(0, the_log.size()) if the_log.size() else []
        reviewers = HumanRecord.from_entries(
            entries, rp_id=DEFAULT_RP_ID, origin=DEFAULT_ORIGIN
        ).registry
    with _progress(json_out) as progress:
        task = progress.add_task("verifying", total=None)
        verified = verify_recording(
            file,
            manifest,
            require_consent=require_consent or wearer_reviewer,
            reviewers=reviewers,
            on_chunk=lambda done, total: progress.update(task, completed=done, total=total),
        )
    index = _logged(home, verified.statement)
    if require_logged and index is None:
        raise VerificationError("the stream's root is not in the local log", step="6 log")
    report = verified.summary() | {"verified": True, "file": str(file), "log_index": index}

    def human() -> None:
        out.print(
            f"[bold green]verified[/] {file}: {verified.samples} frames in {verified.chunks} "
            f"chunks are exactly the stream signed by {verified.header.device}"
        )
        out.print(f"  root {verified.root_digest}")
        if verified.consented:
            out.print(f"  wearer {verified.header.wearer} co-signed (consent)")
        out.print(f"  logged at index {index}" if index is not None else "  root not in local log")

    emit(json_out, report, human)


@capture_app.command("show")
def show_cmd(
    file: Annotated[Path, typer.Argument(help="A recording or its .capture.json manifest.")],
    json_out: JsonOpt = False,
) -> None:
    """Show a capture's device, sensor and root (manifest signatures checked, samples not)."""
    from edgetrust.capture.edf import MANIFEST_SUFFIX, manifest_path
    from edgetrust.capture.verify import parse_manifest, verify_manifest
    from edgetrust.errors import NotFoundError

    set_json_mode(json_out)
    path = file if file.name.endswith(MANIFEST_SUFFIX) else manifest_path(file)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise NotFoundError(f"cannot read capture manifest {path}: {exc.strerror}") from exc
    verified = verify_manifest(parse_manifest(data))
    report = verified.summary() | {"manifest": str(path)}

    def human() -> None:
        from rich.table import Table

        table = Table(show_header=False, box=None)
        table.add_column(no_wrap=True)
        table.add_column(overflow="fold")
        for key, value in report.items():
            shown = ", ".join(value) if isinstance(value, list) else str(value)
            table.add_row(key, shown)
        out.print(table)

    emit(json_out, report, human)
