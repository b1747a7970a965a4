"""`edgetrust fl`: federated learning with secure aggregation, DP and an audited round log."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Annotated, Any

import typer

from edgetrust.cli._app import HomeOpt, JsonOpt, app, emit, err, out, set_json_mode

fl = typer.Typer(
    help=(
        "Federated learning between devices: each trains locally, the coordinator sees only "
        "the sum of their clipped, noised, masked updates (secure aggregation + differential "
        "privacy), and every round is recorded in the transparency log.\n\n"
        "Try 'edgetrust fl simulate --clients 20 --rounds 10 --secagg --dropout 0.3', then "
        "'edgetrust fl audit'."
    ),
    no_args_is_help=True,
)
app.add_typer(fl, name="fl")


def _plot(rounds: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [r["round"] for r in rounds]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    ax.plot(xs, [100 * (r["accuracy"] or 0) for r in rounds], "o-", color="tab:blue")
    ax.set_xlabel("round")
    ax.set_ylabel("test accuracy (%)", color="tab:blue")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    eps = [r["epsilon"] for r in rounds]
    if any(e is not None for e in eps):
        ax2 = ax.twinx()
        ax2.plot(xs, [e or 0 for e in eps], "s--", color="tab:red")
        ax2.set_ylabel("cumulative ε", color="tab:red")
        ax2.set_ylim(bottom=0)
    ax.set_title(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def _neighbours_option(value: str | None, clients: int, dropout: float) -> int | None:
    """--neighbours: None (complete graph), a degree, or 'auto' (the least within 1e-6)."""
    from edgetrust.collab.abort import min_neighbours

    if value is None:
        return None
    if value.strip().lower() == "auto":
        if not 0 <= dropout < 1 or clients < 2:
            return None  # check_session names the bad setting
        return min_neighbours(clients, dropout)  # None: only the complete graph is enough
    try:
        degree = int(value)
    except ValueError:
        raise typer.BadParameter(
            f"{value!r} is neither a number nor 'auto'", param_hint="--neighbours"
        ) from None
    if degree < 1:
        raise typer.BadParameter("must be at least 1", param_hint="--neighbours")
    return degree


@fl.command()
def simulate(
    clients: Annotated[int, typer.Option(help="Number of simulated devices.")] = 20,
    rounds: Annotated[int, typer.Option(help="Federated rounds to run.")] = 10,
    secagg: Annotated[
        bool,
        typer.Option(
            "--secagg/--no-secagg", help="Secure aggregation: the server sees only the sum."
        ),
    ] = True,
    dropout: Annotated[
        float, typer.Option(help="Fraction of clients that drop out each round, at a random stage.")
    ] = 0.0,
    dp_noise: Annotated[
        float, typer.Option("--dp-noise", help="DP noise multiplier z (0: no DP).")
    ] = 0.0,
    dp_level: Annotated[
        str,
        typer.Option(
            "--dp-level",
            help="DP guarantee: user (DP-FedAvg, one device's data) or sample (DP-SGD on "
            "each device, one example).",
        ),
    ] = "user",
    dp_distributed: Annotated[
        bool,
        typer.Option(
            "--dp-distributed",
            help="With --dp-level sample: each device adds only its share of the noise and "
            "takes one DP-SGD step a round; needs --secagg (docs/fl.md).",
        ),
    ] = False,
    adaptive_clip: Annotated[
        float | None,
        typer.Option(
            "--adaptive-clip",
            help="User-level DP: move --clip each round towards this quantile of the update "
            "norms (e.g. 0.5; Andrew et al. 2021). The clipped count costs privacy, paid for "
            "in the accountant's ε.",
        ),
    ] = None,
    count_noise: Annotated[
        float | None,
        typer.Option(
            help="With --adaptive-clip: σ of the noise on the clipped count; must exceed z/2 "
            "(default: clients / 20 as the paper suggests, but at least z, which costs 15% "
            "more update noise)."
        ),
    ] = None,
    dp_epsilon: Annotated[
        float | None,
        typer.Option(
            "--dp-epsilon",
            help="Target ε: sets --dp-noise to the least z whose ε after all rounds is within "
            "it, and --epsilon-max to it.",
        ),
    ] = None,
    clip: Annotated[
        float,
        typer.Option(
            help="L2 clip C of each client update (sample level: of each example's gradient)."
        ),
    ] = 1.0,
    epsilon_max: Annotated[
        float | None, typer.Option("--epsilon-max", help="Privacy budget: no round may exceed it.")
    ] = None,
    delta: Annotated[float, typer.Option(help="δ of the (ε, δ) guarantee.")] = 1e-5,
    non_iid: Annotated[
        float, typer.Option("--non-iid", help="Dirichlet α of the data split (small: non-IID).")
    ] = 0.5,
    aggregator: Annotated[
        str, typer.Option(help="Without --secagg: mean, median, trimmed-mean or krum.")
    ] = "mean",
    byzantine: Annotated[int, typer.Option(help="f for trimmed-mean and krum.")] = 0,
    threshold: Annotated[
        int | None, typer.Option(help="Shamir threshold (default ⌊n/2⌋+1).")
    ] = None,
    neighbours: Annotated[
        str | None,
        typer.Option(
            help="SecAgg+ neighbours per client: a number, or 'auto' for the fewest whose "
            "abort risk at --dropout is within 1e-6 (default: all, the complete graph)."
        ),
    ] = None,
    local_epochs: Annotated[int, typer.Option(help="Local epochs per round.")] = 5,
    lr: Annotated[float, typer.Option(help="Local SGD learning rate.")] = 0.3,
    batch_size: Annotated[int, typer.Option(help="Local minibatch size.")] = 16,
    lr_schedule: Annotated[
        str, typer.Option(help="Local learning-rate schedule: constant or cosine.")
    ] = "constant",
    prox_mu: Annotated[
        float, typer.Option(help="FedProx μ for non-IID data (0: plain local SGD).")
    ] = 0.0,
    server_optimizer: Annotated[
        str, typer.Option(help="Server optimizer on the summed update: fedavg, fedadam, fedyogi.")
    ] = "fedyogi",
    server_lr: Annotated[
        float | None,
        typer.Option(help="Server learning rate η (default 1.0 for fedavg, 0.1 adaptive)."),
    ] = None,
    server_momentum: Annotated[
        float, typer.Option(help="Server momentum μ (fedavg only; FedAvgM).")
    ] = 0.0,
    seed: Annotated[int, typer.Option(help="Seed for data split, init and dropouts.")] = 0,
    dataset: Annotated[
        str,
        typer.Option(
            help="What the clients hold: digits, digits-shifted (5× the images, for cohorts "
            "up to 1,000) or breast-cancer. All ship with scikit-learn."
        ),
    ] = "digits",
    processes: Annotated[
        int | None,
        typer.Option(
            help="Worker processes running the simulated clients' secure aggregation work "
            "(default: one per core, at most 4; 1: all in this process). The result is the same."
        ),
    ] = None,
    strict_budget: Annotated[
        bool,
        typer.Option(help="Refuse the whole run up front if its rounds would exceed the budget."),
    ] = False,
    plot: Annotated[
        Path | None, typer.Option(help="Write a PNG of accuracy and ε by round.")
    ] = None,
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Run private federated training of an MLP among simulated devices (digits by default).

    Each round the coordinator logs the round config, clients train on their own non-IID
    data, clip, add their share of DP noise, quantize and mask their update; the coordinator
    unmasks only the sum of the survivors, publishes the new model card and logs the round
    record with the privacy spent. A round that would exceed --epsilon-max does not start.
    """
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from edgetrust.collab.adaptive import AdaptiveClip
    from edgetrust.collab.dp import DPConfig
    from edgetrust.collab.local import calibrate_noise, check_session
    from edgetrust.collab.local import simulate as run_simulation
    from edgetrust.collab.optim import ServerOptimizer
    from edgetrust.collab.session import RoundSummary, SessionSpec

    set_json_mode(json_out)
    optimizer = ServerOptimizer(name=server_optimizer, momentum=server_momentum)
    degree = _neighbours_option(neighbours, clients, dropout)
    spec = SessionSpec(
        rounds=rounds,
        secagg=secagg,
        aggregator=aggregator,
        byzantine=byzantine,
        threshold=threshold,
        neighbours=degree,
        dp=DPConfig(
            clip=clip,
            noise_multiplier=dp_noise,
            delta=delta,
            epsilon_max=epsilon_max,
            level=dp_level,
            distributed=dp_distributed,
        ),
        local_epochs=local_epochs,
        lr=lr,
        batch_size=batch_size,
        lr_schedule=lr_schedule,
        prox_mu=prox_mu,
        server_optimizer=optimizer,
        server_lr=server_lr,
        seed=seed,
        dataset=dataset,
        model_name=f"{dataset}-fl",
    )
    if dp_epsilon is not None:
        spec = calibrate_noise(spec, num_clients=clients, non_iid_alpha=non_iid, epsilon=dp_epsilon)
        dp_noise = spec.dp.noise_multiplier
    if adaptive_clip is not None:  # after calibration: the default count noise follows z
        rule = AdaptiveClip(
            count_noise=count_noise if count_noise is not None else max(clients / 20, dp_noise),
            target_quantile=adaptive_clip,
        )
        spec = dataclasses.replace(spec, dp=dataclasses.replace(spec.dp, adaptive=rule))
    # Refuse bad settings before the progress display starts: one line on stderr.
    workers = processes if processes is not None else max(1, min(4, os.cpu_count() or 1))
    spec = check_session(
        spec,
        num_clients=clients,
        dropout=dropout,
        non_iid_alpha=non_iid,
        stop_at_budget=not strict_budget,
        processes=workers,
    )
    progress = Progress(
        TextColumn("[bold]round {task.completed}/{task.total}"),
        BarColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=err,
        disable=json_out,
        transient=False,
    )

    with progress:
        task = progress.add_task("training", total=rounds)

        def on_round(s: RoundSummary) -> None:
            eps = "∞" if s.epsilon is None else f"{s.epsilon:.2f}"
            progress.update(
                task,
                advance=1,
                description=f"acc {100 * (s.accuracy or 0):.1f}%  ε {eps}  survivors {s.survivors}",
            )

        result = run_simulation(
            spec,
            num_clients=clients,
            dropout=dropout,
            non_iid_alpha=non_iid,
            home=home,
            stop_at_budget=not strict_budget,
            on_round=on_round,
            processes=workers,
        )
    timings = list(result.timings) + [None] * (len(result.rounds) - len(result.timings))
    rows = [
        {
            "round": s.round,
            "accuracy": s.accuracy,
            "survivors": s.survivors,
            "dropped": s.dropped,
            "epsilon": s.epsilon,
            "roundEpsilon": s.round_epsilon,
            "model": s.model,
            "recordIndex": s.record_index,
            "seconds": round(s.seconds, 3),
            "serverSeconds": None if t is None else round(t.server, 3),
            "slowestClientSeconds": None if t is None else round(t.slowest_client, 3),
        }
        for s, t in zip(result.rounds, timings, strict=True)
    ]
    if plot is not None and rows:
        _plot(rows, plot, f"{clients} clients, secagg={'on' if secagg else 'off'}, z={dp_noise}")
    data = {
        "session": result.session,
        "rounds": rows,
        "stoppedEarly": result.stopped_early,
        "guarantee": spec.dp.guarantee if spec.dp.enabled else None,
        "noiseMultiplier": spec.dp.noise_multiplier,
        "plot": str(plot) if plot else None,
    }

    def human() -> None:
        table = Table(title=f"federated session {result.session[:12]}")
        cols = ["round", "accuracy", "survivors", "dropped", "ε (cumulative)", "s"]
        if secagg:
            cols += ["server s", "1 client s"]
        for col in cols:
            table.add_column(col, justify="right")
        for r in rows:
            cells = [
                str(r["round"]),
                f"{100 * (r['accuracy'] or 0):.1f}%",
                str(r["survivors"]),
                str(r["dropped"]),
                "∞" if r["epsilon"] is None else f"{r['epsilon']:.3f}",
                f"{r['seconds']:.2f}",
            ]
            if secagg:
                cells += [
                    "–" if r["serverSeconds"] is None else f"{r['serverSeconds']:.2f}",
                    "–"
                    if r["slowestClientSeconds"] is None
                    else f"{r['slowestClientSeconds']:.3f}",
                ]
            table.add_row(*cells)
        out.print(table)
        if spec.dp.enabled:
            out.print(
                f"{spec.dp.guarantee} DP, z = {spec.dp.noise_multiplier:g}, δ = {spec.dp.delta:g}"
                + (" (distributed DP-SGD)" if spec.dp.distributed else "")
            )
        else:
            out.print("no differential privacy (ε ∞): add --dp-epsilon for a guarantee")
        if secagg and rows:
            out.print(
                "server s: the coordinator's own secure aggregation work; 1 client s: the "
                "slowest single client's, what a device pays"
            )
        if result.stopped_early:
            out.print(f"[yellow]stopped:[/] {result.stopped_early}")
        if plot:
            out.print(f"plot written to {plot}")
        out.print("audit it with: edgetrust fl audit")

    emit(json_out, data, human)


@fl.command()
def audit(
    session: Annotated[str | None, typer.Option(help="Only this session (hex id).")] = None,
    require_artifacts: Annotated[
        bool, typer.Option(help="Fail if a model cannot be recomputed from its aggregate.")
    ] = False,
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Replay the federated round records in the log and check the chain.

    Checks, per round: signatures; the record points at its logged config and the previous
    round; the round starts from the previous output model; survivors' commitments are
    signed; ε recomputed with dp-accounting matches and is within epsilon_max; the new model
    card is logged; and the new model equals the input model plus the aggregate (when the
    aggregate and models are in this home). Exit code 1 if any check fails.
    """
    from rich.table import Table

    from edgetrust.collab.audit import audit_log
    from edgetrust.data.consent import audit_consent
    from edgetrust.log import Log

    set_json_mode(json_out)
    with Log.open(home) as log:
        report = audit_log(log, home=home, session=session, require_artifacts=require_artifacts)
        consent = audit_consent(log, session=session)
    consented = {(c.session, c.round): c for c in consent.rounds}
    rows = [
        {
            "session": r.session,
            "round": r.round,
            "inputModel": r.input_model,
            "outputModel": r.output_model,
            "survivors": r.survivors,
            "dropped": r.dropped,
            "epsilon": r.epsilon,
            "guarantee": r.guarantee,
            "accuracy": r.accuracy,
            "modelRecomputed": r.model_recomputed,
            "consent": None
            if (r.session, r.round) not in consented
            else {
                "grants": {d: list(c) for d, c in consented[(r.session, r.round)].grants.items()},
                "uses": consented[(r.session, r.round)].uses,
            },
        }
        for r in report.rounds
    ]
    data = {
        "ok": True,
        "logSize": report.log_size,
        "sessions": list(report.sessions),
        "rounds": rows,
        "abandoned": [{"session": s, "round": r, "configIndex": i} for s, r, i in report.abandoned],
    }

    def human() -> None:
        if not rows:
            out.print(f"no federated rounds in the log ({report.log_size} entries)")
            return
        table = Table(title=f"audited {len(rows)} rounds in {len(report.sessions)} session(s)")
        for col in (
            "session",
            "round",
            "input → output model",
            "survivors",
            "ε",
            "model = input + aggregate",
            "consent",
        ):
            table.add_column(col)
        for r in report.rounds:
            table.add_row(
                r.session[:8],
                str(r.round),
                f"{r.input_model[7:15]} → {r.output_model[7:15]}",
                f"{r.survivors}/{r.survivors + r.dropped}",
                "∞"
                if r.epsilon is None
                else f"{r.epsilon:.3f} {(r.guarantee or '').split('-')[0]}",
                "[green]recomputed ✓[/]" if r.model_recomputed else "not checked (no artifacts)",
                f"[green]{len(consented[(r.session, r.round)].grants)} grants ✓[/]"
                if (r.session, r.round) in consented
                else "-",
            )
        out.print(table)
        out.print("[green]✓[/] chain, lineage, commitments and privacy budget verified")
        for sess, number, index in report.abandoned:
            out.print(
                f"– round {number} of session {sess[:8]}: config logged at {index}, no record "
                "(a device refused it or secure aggregation aborted; the next round took its "
                "number)"
            )
        if consented:
            out.print(
                f"[green]✓[/] {len(consented)} round(s) under consent: every participant held a "
                "valid, unrevoked train grant whose uses and ε covered the round"
            )

    emit(json_out, data, human)
