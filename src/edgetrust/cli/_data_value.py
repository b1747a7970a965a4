"""`edgetrust data value|simulate`: what data was worth (KNN-Shapley), FL under consent.

Registered on the `data` group of `_data` (the owner's and requester's commands live there);
these two analyse rather than serve, and are apart to keep each module small.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated

import typer

from edgetrust.cli._app import HomeOpt, JsonOpt, emit, err, out, set_json_mode
from edgetrust.cli._data import data_app
from edgetrust.errors import InvalidInputError


@data_app.command("value")
def value(
    train: Annotated[Path, typer.Argument(help=".npz with x (features) and y (labels).")],
    test: Annotated[Path, typer.Argument(help=".npz with x and y to value against.")],
    owners: Annotated[
        str | None,
        typer.Option(help="Key of an integer array in TRAIN naming each record's owner."),
    ] = None,
    k: Annotated[int, typer.Option(min=1, help="Neighbours K.")] = 5,
    png: Annotated[Path | None, typer.Option(help="Write a bar chart of owner shares.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Exact KNN-Shapley value of each training record; each owner's share as a table.

    Example: `edgetrust data value train.npz test.npz --owners owner --png shares.png`
    """
    from edgetrust.data.dataset import load_table
    from edgetrust.data.value import knn_shapley, owner_shares

    set_json_mode(json_out)
    tr, _, _ = load_table(train)
    te, _, _ = load_table(test)
    for name, t in (("train", tr), ("test", te)):
        if "x" not in t or "y" not in t:
            raise InvalidInputError(f"{name} file needs arrays x and y")
    xs = tr["x"].reshape(len(tr["x"]), -1)
    v = knn_shapley(xs, tr["y"], te["x"].reshape(len(te["x"]), -1), te["y"], k=k)
    who = [str(o) for o in tr[owners]] if owners else ["all"] * len(v)
    if owners and owners not in tr:
        raise InvalidInputError(f"train file has no array {owners!r}")
    shares = owner_shares(v, who)
    if png is not None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 3.5), dpi=120)
        ax.bar(list(shares), [100 * s for s in shares.values()], color="tab:green")
        ax.set_ylabel("share of value (%)")
        ax.set_title(f"KNN-Shapley (K={k}) share per owner")
        fig.tight_layout()
        fig.savefig(png)
        plt.close(fig)

    def human() -> None:
        from rich.table import Table

        t = Table("owner", "share", "")
        for o, s in shares.items():
            t.add_row(o, f"{100 * s:.1f}%", "█" * round(40 * s))
        out.print(t)

    emit(json_out, {"shares": shares, "values": [float(x) for x in v]}, human)


@data_app.command("simulate")
def simulate(
    clients: Annotated[int, typer.Option(help="Simulated devices, each with its own data.")] = 4,
    rounds: Annotated[int, typer.Option(help="Federated rounds to attempt.")] = 3,
    revoke_after: Annotated[
        int | None, typer.Option(help="After this round the first device revokes its grant.")
    ] = None,
    gate: Annotated[
        bool,
        typer.Option(
            "--gate/--no-gate", help="The coordinator checks consent too (devices always do)."
        ),
    ] = True,
    max_uses: Annotated[int | None, typer.Option(help="Each grant's most uses.")] = None,
    noise: Annotated[float, typer.Option("--noise-multiplier", help="DP noise z.")] = 1.0,
    eps_total: Annotated[float | None, typer.Option(help="Each grant's total ε.")] = None,
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Federated learning under consent: devices grant `train`, both sides check, one revokes.

    Example: `edgetrust data simulate --clients 4 --rounds 3 --revoke-after 1` (the second
    round is refused naming the device, the third runs without it);
    `--no-gate` shows the devices' own check refusing when the coordinator checks nothing.
    """
    from rich.table import Table

    from edgetrust.data.flsim import session_rows, simulate_consented

    set_json_mode(json_out)
    with (
        err.status("federated rounds under consent…") if not json_out else contextlib.nullcontext()
    ):
        result = simulate_consented(
            home=home,
            clients=clients,
            rounds=rounds,
            revoke_after=revoke_after,
            gate=gate,
            max_uses=max_uses,
            noise_multiplier=noise,
            eps_total=eps_total,
        )
    rows = session_rows(result)
    data = {"session": result.session, "rounds": rows, "audited": result.audited}

    def human() -> None:
        t = Table("round", "devices", "outcome", title=f"session {result.session[:12]}")
        for r in rows:
            outcome = (
                f"logged at {r['recordIndex']}"
                if r["refused"] is None
                else f"refused by the {r['by']} ({r['step']}): {r['refused'][:24]}…"
            )
            t.add_row(str(r["round"]), str(r["participants"]), outcome)
        out.print(t)
        if gate:
            out.print(f"consent audit: {result.audited} round(s) pass")

    emit(json_out, data, human)
