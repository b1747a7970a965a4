"""Core commands: init, model, infer, reveal, verify, demo."""

from __future__ import annotations

import typer

from edgetrust.cli._app import HomeOpt, JsonOpt, app, emit, out
from edgetrust.identity import Keystore


@app.command()
def init(
    name: str = typer.Option("default", help="Name of the identity to create."),
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Create this device's signing identity (an Ed25519 key named by a did:key)."""
    ks = Keystore(home)
    created = not ks.exists(name)
    ident = ks.load_or_create(name)
    emit(
        json_out,
        {"name": name, "did": ident.did, "created": created, "keys": str(ks.root)},
        lambda: out.print(
            f"{'created' if created else 'existing'} identity [bold]{name}[/]: {ident.did}"
        ),
    )
