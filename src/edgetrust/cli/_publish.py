"""`edgetrust log publish`: the log as static tlog-tiles files any web server can serve."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgetrust.cli._app import HomeOpt, JsonOpt, emit, err, out, set_json_mode
from edgetrust.cli._log import StoreOpt, log_app


@log_app.command("publish")
def log_publish(
    directory: Annotated[
        Path, typer.Argument(help="Directory to write checkpoint and tile/ into (created).")
    ],
    home: HomeOpt = None,
    store: StoreOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Write the log's checkpoint, hash tiles and entry bundles as static files (C2SP tlog-tiles).

    Incremental: only tiles that are new or grew since the directory's checkpoint are written,
    and the checkpoint last, so readers never see a checkpoint without its tiles. Serve the
    directory with any static web server or CDN; clients read it as they read a node:

        edgetrust log publish /srv/log
        python -m http.server -d /srv/log 8000
        edgetrust log get 0 --log http://localhost:8000 --key "$(edgetrust log key)"

    With a PostgreSQL store: edgetrust log publish /srv/log --store postgresql://host/log
    """
    from edgetrust.log.publish import publish_tiles
    from edgetrust.log.service import Log

    set_json_mode(json_out)
    with err.status("publishing tiles"), Log.open(home, store=store) as log:
        result = publish_tiles(log, directory)
    data = {
        "directory": str(directory),
        "size": result.size,
        "previous_size": result.previous_size,
        "tiles": result.tiles,
        "bundles": result.bundles,
        "bytes": result.bytes_written,
    }
    emit(
        json_out,
        data,
        lambda: out.print(
            f"published size {result.size} (was {result.previous_size}): {result.tiles} "
            f"tiles, {result.bundles} entry bundles, {result.bytes_written:,} bytes",
            highlight=False,
        ),
    )
