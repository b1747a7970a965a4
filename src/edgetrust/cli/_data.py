"""`edgetrust data`: datasets that stay home, consent grants, compute-to-data jobs, usage, value."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from edgetrust.cli._app import HomeOpt, JsonOpt, app, emit, err, out, set_json_mode
from edgetrust.errors import InvalidInputError, NotFoundError

data_app = typer.Typer(
    help=(
        "Data stays with its owner: register a dataset (only its signed card is logged), "
        "grant others scoped, revocable consent, let them send computations to the data, and "
        "see every use in the log.\n\n"
        "Owner: 'edgetrust data add people.csv', 'edgetrust data grant people --to DID "
        "--actions stats --max-uses 5 --eps-total 2 --k 10 --out g.json', 'edgetrust data "
        "serve'. Researcher: 'edgetrust data request URL --grant g.json --stat mean --column "
        "age --bounds 0:100 --epsilon 0.5'."
    ),
    no_args_is_help=True,
)
app.add_typer(data_app, name="data")

IdentityOpt = Annotated[str, typer.Option("--identity", help="Key name in the keystore.")]


def _owner(home: str | None, identity: str) -> Any:
    from edgetrust.data.jobs import DataOwner

    return DataOwner(home, identity=identity)


def _duration(text: str) -> int:
    """'3600', '90m', '12h', '30d' -> seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    t = text.strip()
    try:
        if t and t[-1] in units:
            return int(float(t[:-1]) * units[t[-1]])
        return int(t)
    except ValueError as exc:
        raise InvalidInputError(f"not a duration: {text!r:.20} (e.g. 3600, 90m, 12h, 30d)") from exc


def _read_chain(path: Path) -> list[Any]:
    from edgetrust.data.grant import parse_chain
    from edgetrust.encoding import parse_json

    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise NotFoundError(f"cannot read grant file {path}: {exc.strerror}") from exc
    return list(parse_chain(parse_json(raw, what="grant file", max_bytes=2**20)))


def _write_chain(chain: list[Any], path: Path | None) -> str:
    text = json.dumps([e.to_dict() for e in chain], indent=1) + "\n"
    if path is not None:
        path.write_text(text)
    return text


@data_app.command("add")
def add(
    file: Annotated[
        Path,
        typer.Argument(
            help="A .npy, .npz, .csv or .jsonl file, or a directory of signed EDF/BDF captures."
        ),
    ],
    name: Annotated[str | None, typer.Option(help="Dataset name (default: file stem).")] = None,
    licence: Annotated[str, typer.Option(help="Licence terms (SPDX id or text).")] = (
        "all-rights-reserved"
    ),
    provenance: Annotated[
        list[str] | None, typer.Option(help="Digest of a source it derives from (repeat).")
    ] = None,
    identity: IdentityOpt = "default",
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Keep a dataset in your store (0600) and log its signed card.

    Example: `edgetrust data add people.csv --licence CC-BY-4.0`. A directory of captures
    (`edgetrust capture record`) is verified file by file against its signed streams, and the
    card cites each capture's root as its provenance: `edgetrust data add eeg/`.
    """
    set_json_mode(json_out)
    with _owner(home, identity) as owner:
        card, index = owner.add_dataset(
            file, name=name, licence=licence, provenance=tuple(provenance or ())
        )
    emit(
        json_out,
        {**card.to_predicate(), "logIndex": index},
        lambda: out.print(f"{card.name}: {card.digest} ({card.count} records), logged at {index}"),
    )


@data_app.command("list")
def list_(home: HomeOpt = None, json_out: JsonOpt = False) -> None:
    """Your datasets: name, digest, records, columns."""
    from edgetrust.data.store import DataStore

    cards = DataStore(home).cards()

    def human() -> None:
        from rich.table import Table

        t = Table("name", "digest", "records", "columns", "licence")
        for c in cards:
            t.add_row(
                c.name,
                c.digest[:19] + "…",
                str(c.count),
                ", ".join(x.name for x in c.columns),
                c.licence,
            )
        out.print(t)

    emit(json_out, [c.to_predicate() for c in cards], human)


@data_app.command("show")
def show(
    ref: Annotated[str, typer.Argument(help="Name, digest or digest prefix.")],
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """A dataset's card (what others may know: schema, count, owner, licence)."""
    from edgetrust.data.store import DataStore

    set_json_mode(json_out)
    card = DataStore(home).resolve(ref)
    emit(json_out, card.to_predicate(), lambda: out.print_json(json.dumps(card.to_predicate())))


def _limits(
    max_uses: int | None,
    algorithm: list[str] | None,
    eps_per_use: float | None,
    eps_total: float | None,
) -> dict[str, Any]:
    return {
        "max_uses": max_uses,
        "algorithms": algorithm or None,
        "eps_per_use": eps_per_use,
        "eps_total": eps_total,
    }


ActionsOpt = Annotated[str, typer.Option(help="Comma-separated: infer, stats, train.")]
MaxUsesOpt = Annotated[int | None, typer.Option(min=0, help="Most jobs (all delegates together).")]
AlgOpt = Annotated[
    list[str] | None,
    typer.Option("--algorithm", help="Allowed model digest or statistic (repeat)."),
]
EpsUseOpt = Annotated[float | None, typer.Option(min=0, help="Most ε one job may spend.")]
EpsTotalOpt = Annotated[float | None, typer.Option(min=0, help="Most ε all jobs may spend.")]


@data_app.command("grant")
def grant(
    dataset: Annotated[str, typer.Argument(help="Your dataset (name or digest).")],
    to: Annotated[str, typer.Option("--to", help="The grantee's did:key.")],
    actions: ActionsOpt = "stats",
    expires: Annotated[str, typer.Option(help="Valid for: seconds or 90m, 12h, 30d.")] = "30d",
    max_uses: MaxUsesOpt = None,
    algorithm: AlgOpt = None,
    eps_per_use: EpsUseOpt = None,
    eps_total: EpsTotalOpt = None,
    k: Annotated[int, typer.Option(min=1, help="Minimum group size for stats.")] = 1,
    out_file: Annotated[
        Path | None, typer.Option("--out", help="Write the grant file here.")
    ] = None,
    identity: IdentityOpt = "default",
    home: HomeOpt = None,
) -> None:
    """Sign a consent grant over your dataset (a chain of one, as JSON).

    Example: `edgetrust data grant people --to did:key:z6Mk... --actions stats --max-uses 5
    --eps-total 2 --k 10 --out alice.grant.json`
    """
    from edgetrust.data.grant import issue_grant
    from edgetrust.data.store import DataStore
    from edgetrust.identity import Keystore

    owner = Keystore(home).load(identity)
    card = DataStore(home).resolve(dataset)
    env = issue_grant(
        owner,
        audience=to,
        dataset=card.digest,
        actions=[a.strip() for a in actions.split(",") if a.strip()],
        expires=int(time.time()) + _duration(expires),
        min_group=k,
        **_limits(max_uses, algorithm, eps_per_use, eps_total),
    )
    text = _write_chain([env], out_file)
    if out_file is None:
        out.print(text, end="", markup=False, highlight=False)
    else:
        err.print(f"grant written to {out_file}")


@data_app.command("delegate")
def delegate_cmd(
    grant_file: Annotated[Path, typer.Argument(help="The grant chain you hold.")],
    to: Annotated[str, typer.Option("--to", help="The delegate's did:key.")],
    actions: Annotated[str | None, typer.Option(help="Narrower actions (comma-separated).")] = None,
    expires: Annotated[str | None, typer.Option(help="Shorter validity from now.")] = None,
    max_uses: MaxUsesOpt = None,
    algorithm: AlgOpt = None,
    eps_per_use: EpsUseOpt = None,
    eps_total: EpsTotalOpt = None,
    k: Annotated[int | None, typer.Option(min=1, help="Larger minimum group size.")] = None,
    out_file: Annotated[
        Path | None, typer.Option("--out", help="Write the longer chain here.")
    ] = None,
    identity: IdentityOpt = "default",
    home: HomeOpt = None,
) -> None:
    """Pass on a grant you hold, narrowed; anything that would widen it is refused (exit 1).

    Example: `edgetrust data delegate alice.grant.json --to did:key:z6Mk... --max-uses 2
    --out bob.grant.json`
    """
    from edgetrust.data.grant import delegate
    from edgetrust.identity import Keystore

    holder = Keystore(home).load(identity)
    chain = _read_chain(grant_file)
    kw: dict[str, Any] = {
        k2: v
        for k2, v in _limits(max_uses, algorithm, eps_per_use, eps_total).items()
        if v is not None
    }
    child = delegate(
        chain[-1],
        holder,
        audience=to,
        actions=None if actions is None else [a.strip() for a in actions.split(",")],
        expires=None if expires is None else int(time.time()) + _duration(expires),
        min_group=k,
        **kw,
    )
    text = _write_chain([*chain, child], out_file)
    if out_file is None:
        out.print(text, end="", markup=False, highlight=False)
    else:
        err.print(f"delegated chain written to {out_file}")


@data_app.command("revoke")
def revoke_cmd(
    grant_file: Annotated[Path, typer.Argument(help="A grant file; its last grant is revoked.")],
    reason: Annotated[str, typer.Option(help="Why (logged).")] = "",
    identity: IdentityOpt = "default",
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Log a revocation: the grant and all delegated from it are refused from now on."""
    from edgetrust.data.grant import grant_digest

    set_json_mode(json_out)
    chain = _read_chain(grant_file)
    with _owner(home, identity) as owner:
        index = owner.revoke(chain[-1], reason=reason)
    digest = grant_digest(chain[-1])
    emit(
        json_out,
        {"grant": digest, "logIndex": index},
        lambda: out.print(f"revoked {digest}, logged at {index}"),
    )


@data_app.command("serve")
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="TCP port.")] = 8090,
    max_age: Annotated[float, typer.Option(help="Revocation view freshness T (s).")] = 300.0,
    identity: IdentityOpt = "default",
    home: HomeOpt = None,
) -> None:
    """Serve jobs on your data (POST /v1/jobs, GET /v1/usage, GET /v1/datasets) and your log.

    Jobs run here, on your machine; only results leave, each with a logged usage record.
    """
    import uvicorn

    from edgetrust.data.http import create_data_app
    from edgetrust.data.jobs import DataOwner

    owner = DataOwner(home, identity=identity, max_age=max_age)
    dropped, logged = owner.recovered
    if dropped or logged:
        err.print(
            f"recovered: {dropped} unfinished job(s) dropped, {logged} usage record(s) logged"
        )
    err.print(f"edgetrust data owner {owner.identity.did} on http://{host}:{port}")
    try:
        uvicorn.run(
            create_data_app(owner), host=host, port=port, log_level="warning", access_log=False
        )
    finally:
        owner.close()


def _bounds(text: str) -> list[float]:
    try:
        lo, hi = (float(x) for x in text.split(":"))
    except ValueError as exc:
        raise InvalidInputError(f"bounds are LOW:HIGH, got {text!r:.20}") from exc
    return [lo, hi]


@data_app.command("request")
def request(
    url: Annotated[str, typer.Argument(help="The owner's `data serve` URL.")],
    grant_file: Annotated[Path, typer.Option("--grant", help="Your grant chain file.")],
    stat: Annotated[
        str | None, typer.Option(help="stats job: count, sum, mean, histogram.")
    ] = None,
    column: Annotated[list[str] | None, typer.Option(help="Column (repeat).")] = None,
    bounds: Annotated[str, typer.Option(help="Clipping bounds LOW:HIGH for stats.")] = "0:1",
    epsilon: Annotated[float, typer.Option(help="ε this stats job spends.")] = 1.0,
    group_by: Annotated[str | None, typer.Option(help="Integer column to group by.")] = None,
    model: Annotated[
        Path | None, typer.Option(help="infer (or, with --train, train) job: the ONNX model.")
    ] = None,
    train: Annotated[
        bool,
        typer.Option(
            "--train", help="train job: one DP training step of --model on the owner's records."
        ),
    ] = False,
    labels: Annotated[str, typer.Option(help="train job: the label column.")] = "label",
    epochs: Annotated[int, typer.Option(help="train job: local epochs.")] = 1,
    lr: Annotated[float, typer.Option(help="train job: learning rate.")] = 0.1,
    clip: Annotated[float, typer.Option(help="train job: L2 clip C of the update.")] = 1.0,
    noise: Annotated[
        float, typer.Option("--noise-multiplier", help="train job: Gaussian noise z (σ = z·C).")
    ] = 1.0,
    identity: IdentityOpt = "default",
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Send a job to an owner under your grant; print the result and its usage record.

    Examples: `edgetrust data request http://127.0.0.1:8090 --grant g.json --stat mean
    --column age --bounds 0:100 --epsilon 0.5`;
    `edgetrust data request URL --grant g.json --model m.onnx --column x`;
    `edgetrust data request URL --grant g.json --train --model mlp.onnx --column x --labels y`
    """
    import httpx

    from edgetrust.data.jobs import make_job
    from edgetrust.encoding import digest_bytes
    from edgetrust.identity import Keystore

    set_json_mode(json_out)
    me = Keystore(home).load(identity)
    chain = _read_chain(grant_file)
    cols = column or []
    if train and model is None:
        raise InvalidInputError("--train needs --model (the model to train)")
    if (stat is None) == (model is None):
        raise InvalidInputError(
            "give --stat (a stats job), --model (an infer job) or --train --model (a train job)"
        )
    mbytes = b""
    if model is not None:
        try:
            mbytes = model.read_bytes()
        except OSError as exc:
            raise NotFoundError(f"cannot read model {model}: {exc.strerror}") from exc
    if train:
        from edgetrust.data.train import TrainQuery

        train_params: dict[str, Any] = {
            "features": cols[0] if cols else "x",
            "labels": labels,
            "epochs": epochs,
            "lr": lr,
            "clip": clip,
            "noiseMultiplier": noise,
        }
        TrainQuery.parse(train_params)  # bad parameters fail here, before anything is sent
        body = make_job(
            me,
            chain,
            action="train",
            algorithm=digest_bytes(mbytes),
            params=train_params,
            model=mbytes,
        )
    elif model is not None:
        body = make_job(
            me,
            chain,
            action="infer",
            algorithm=digest_bytes(mbytes),
            params={"column": cols[0] if cols else "x"},
            model=mbytes,
        )
    else:
        params: dict[str, Any] = {
            "columns": cols,
            "epsilon": epsilon,
            "bounds": {c: _bounds(bounds) for c in cols},
        }
        if group_by:
            params["groupBy"] = group_by
        body = make_job(me, chain, action="stats", algorithm=str(stat), params=params)
    try:
        resp = httpx.post(url.rstrip("/") + "/v1/jobs", json=body, timeout=300)
    except httpx.HTTPError as exc:
        raise InvalidInputError(f"cannot reach {url}: {exc}") from exc
    answer = (
        resp.json() if resp.headers.get("content-type", "").startswith("application/json") else {}
    )
    if resp.status_code == 403:
        from edgetrust.data.grant import GrantError

        raise GrantError(f"refused: {answer.get('message', resp.text[:200])}")
    if resp.status_code != 200:
        raise InvalidInputError(
            f"the owner answered {resp.status_code}: {answer.get('message', resp.text[:200])}"
        )

    def human() -> None:
        result = answer["result"]
        if train and isinstance(result, dict) and "update" in result:
            b = result.get("bounds", {})
            out.print(
                f"update of {result['update']['length']} values on {result['records']} records, "
                f"{result['updateDigest']}, clip {b.get('clip')}, ε {b.get('epsilon')} "
                f"(δ {b.get('delta')}); --json prints the values"
            )
        else:
            out.print_json(json.dumps(result))

    emit(json_out, answer, human)


@data_app.command("usage")
def usage(
    dataset: Annotated[str | None, typer.Option(help="Only this dataset (name or digest).")] = None,
    identity: IdentityOpt = "default",
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Every use of your data, from the log: who, which grant, what, ε spent."""
    set_json_mode(json_out)
    with _owner(home, identity) as owner:
        ds = owner.store.resolve(dataset).digest if dataset else None
        found = owner.usage(dataset=ds)
    rows = [{"index": i, **rec.to_predicate()} for i, rec, _ in found]

    def human() -> None:
        from rich.table import Table

        t = Table("log", "dataset", "grant", "requester", "action", "algorithm", "ε")
        for r in rows:
            t.add_row(
                str(r["index"]),
                r["dataset"][7:19],
                r["grant"][7:19],
                r["requester"][8:20] + "…",
                r["action"],
                r["algorithm"][:19],
                f"{r['epsilon']:g}",
            )
        out.print(t)

    emit(json_out, rows, human)
