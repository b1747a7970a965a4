"""`edgetrust human`: a scripted reviewer on a node's /v1/human endpoints (soft passkey)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from edgetrust.cli._app import HomeOpt, JsonOpt, app, emit, out, set_json_mode
from edgetrust.errors import InvalidInputError

human_app = typer.Typer(
    help=(
        "Review AI outputs as a human: register a passkey for your DID on a node, answer "
        "review tasks (each verdict carries a WebAuthn assertion and your DID's signature), "
        "see the Dawid–Skene aggregate and reviewers' reliability, all read from the log.\n\n"
        "The CLI uses a software authenticator kept in $EDGETRUST_HOME/human/ (mode 0600): it "
        "proves possession of that file, not presence of a person. Start with "
        "'edgetrust human register --node http://127.0.0.1:8080'."
    ),
    no_args_is_help=True,
)
app.add_typer(human_app, name="human")
task_app = typer.Typer(help="Review tasks: a subject digest, a question, the allowed answers.")
human_app.add_typer(task_app, name="task")

NodeOpt = Annotated[
    str,
    typer.Option("--node", envvar="EDGETRUST_NODE", help="URL of the edgetrust node."),
]
IdentityOpt = Annotated[str, typer.Option("--identity", help="Keystore identity (your DID).")]


def _auth_path(home: str | None, identity: str) -> Path:
    from edgetrust.home import resolve_home

    return resolve_home(home) / "human" / f"{identity}.authenticator.json"


def _client(node: str, home: str | None, identity: str, *, need_auth: bool = True) -> Any:
    from edgetrust.cli._core import _signer
    from edgetrust.human.authenticator import SoftAuthenticator
    from edgetrust.human.client import HumanClient

    me = _signer(home, identity)
    path = _auth_path(home, identity)
    auth = SoftAuthenticator.load(path) if path.exists() else None
    if need_auth and auth is None:
        raise InvalidInputError(
            f"no authenticator for identity {identity!r}: run 'edgetrust human register' first"
        )
    return HumanClient(node, me, auth)


def _save(client: Any, home: str | None, identity: str) -> None:
    if client.authenticator is not None:
        client.authenticator.save(_auth_path(home, identity))


@human_app.command("register")
def register(
    node: NodeOpt = "http://127.0.0.1:8080",
    rp_id: Annotated[
        str, typer.Option("--rp-id", envvar="EDGETRUST_RP_ID", help="The node's WebAuthn RP ID.")
    ] = "edgetrust.local",
    origin: Annotated[
        str,
        typer.Option("--origin", envvar="EDGETRUST_RP_ORIGIN", help="The node's WebAuthn origin."),
    ] = "https://edgetrust.local",
    identity: IdentityOpt = "default",
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Create a soft passkey, run the registration ceremony, and log the binding to your DID.

    Example: `edgetrust human register --node http://127.0.0.1:8080`
    """
    from edgetrust.human.authenticator import SoftAuthenticator

    set_json_mode(json_out)
    client = _client(node, home, identity, need_auth=False)
    if client.authenticator is None:
        client.authenticator = SoftAuthenticator(rp_id=rp_id, origin=origin)
    answer = client.register()
    _save(client, home, identity)
    emit(
        json_out,
        {**answer, "authenticator": str(_auth_path(home, identity))},
        lambda: out.print(
            f"reviewer {answer['did']} registered, logged at {answer['index']}"
            + (" (already logged)" if answer.get("duplicate") else "")
        ),
    )


@human_app.command("login")
def login(
    node: NodeOpt = "http://127.0.0.1:8080",
    identity: IdentityOpt = "default",
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Run the authentication ceremony: the node checks your passkey (no session is kept)."""
    set_json_mode(json_out)
    client = _client(node, home, identity)
    answer = client.login()
    _save(client, home, identity)
    emit(
        json_out, answer, lambda: out.print(f"verified {answer['did']} ({answer['credentialId']})")
    )


@task_app.command("add")
def task_add(
    subject: Annotated[str, typer.Argument(help="sha256 digest (64 hex) of what is reviewed.")],
    question: Annotated[str, typer.Option("--question", "-q", help="The question asked.")],
    answer: Annotated[
        list[str], typer.Option("--answer", "-a", help="An allowed answer (repeat, 2 or more).")
    ],
    gold: Annotated[
        str | None,
        typer.Option(
            "--gold",
            help="Make it a gold task with this known answer: only a salted commitment is "
            "logged (every task carries one, so gold tasks look like the others); "
            "the answer stays in $EDGETRUST_HOME/human/gold/ until 'task reveal'.",
        ),
    ] = None,
    node: NodeOpt = "http://127.0.0.1:8080",
    identity: IdentityOpt = "default",
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Sign and log a review task.

    Example: `edgetrust human task add SHA256 -q "Is the label right?" -a yes -a no --gold yes`
    """
    set_json_mode(json_out)
    client = _client(node, home, identity, need_auth=False)
    result = client.add_task(
        subject,
        question,
        answer,
        gold=gold,
        keep=lambda digest, secret: _save_secret(_gold_path(home, digest), secret),
    )
    secret = result.pop("goldSecret", None)
    emit(
        json_out,
        result,
        lambda: out.print(
            f"task {result['digest']} logged at {result['index']}"
            + (" (gold: answer committed, reveal it with 'task reveal')" if secret else "")
        ),
    )


def _gold_path(home: str | None, task: str) -> Path:
    from edgetrust.home import resolve_home

    if len(task) != 64 or not set(task) <= set("0123456789abcdef"):
        raise InvalidInputError("TASK must be a task digest (64 lower-case hex)")
    return resolve_home(home) / "human" / "gold" / f"{task}.json"


def _save_secret(path: Path, secret: dict[str, str]) -> None:
    import json

    from edgetrust.files import write_private

    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_private(path, json.dumps(secret).encode())


@task_app.command("reveal")
def task_reveal(
    task: Annotated[str, typer.Argument(help="The gold task's digest.")],
    node: NodeOpt = "http://127.0.0.1:8080",
    identity: IdentityOpt = "default",
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Reveal a gold task's answer (kept since 'task add --gold'); from then on it anchors
    Dawid–Skene and scores reviewers, and later verdicts on it no longer count.

    Example: `edgetrust human task reveal TASK`
    """
    import json

    set_json_mode(json_out)
    path = _gold_path(home, task.removeprefix("sha256:"))
    try:
        secret = json.loads(path.read_text())
        answer, salt = secret["answer"], secret["salt"]
    except FileNotFoundError:
        raise InvalidInputError(
            f"no gold answer kept for task {task[:16]} (was it added here with --gold?)"
        ) from None
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidInputError(f"the gold answer file {path} is damaged") from exc
    result = _client(node, home, identity, need_auth=False).reveal(task, answer, salt)
    emit(
        json_out,
        result,
        lambda: out.print(
            f"gold answer {result['answer']!r} of {result['task']} revealed, logged at "
            f"{result['index']} ({result['verdicts']} verdicts scored against it)"
        ),
    )


@human_app.command("tasks")
def tasks(
    mine: Annotated[bool, typer.Option("--mine", help="Show your answer to each task.")] = False,
    node: NodeOpt = "http://127.0.0.1:8080",
    identity: IdentityOpt = "default",
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """The tasks logged on the node, with their verdict counts."""
    set_json_mode(json_out)
    rows = _client(node, home, identity, need_auth=False).tasks(mine=mine)

    def human() -> None:
        from rich.table import Table

        t = Table("task", "question", "answers", "verdicts", *(["mine"] if mine else []))
        for r in rows:
            extra = [str(r.get("mine") or "-")] if mine else []
            t.add_row(
                r["digest"], r["question"], "/".join(r["answers"]), str(r["verdicts"]), *extra
            )
        out.print(t)

    emit(json_out, rows, human)


@human_app.command("review")
def review(
    task: Annotated[str, typer.Argument(help="The task digest.")],
    answer: Annotated[str, typer.Argument(help="One of the task's answers.")],
    confidence: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Your confidence, 0 to 1.")
    ] = 1.0,
    node: NodeOpt = "http://127.0.0.1:8080",
    identity: IdentityOpt = "default",
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Answer a task. Only your first verdict on a task counts.

    Example: `edgetrust human review TASK yes --confidence 0.9`
    """
    set_json_mode(json_out)
    client = _client(node, home, identity)
    try:
        result = client.review(task, answer, confidence)
    finally:
        _save(client, home, identity)  # the counter moved even if the node refused
    emit(
        json_out,
        result,
        lambda: out.print(
            f"verdict {result['answer']!r} on {result['task']} logged at {result['index']}"
        ),
    )


@human_app.command("aggregate")
def aggregate(
    task: Annotated[str | None, typer.Argument(help="A task digest (default: all).")] = None,
    publish: Annotated[
        bool,
        typer.Option(
            "--publish", help="Sign the aggregate (method, inputs, result) and log it (needs TASK)."
        ),
    ] = False,
    node: NodeOpt = "http://127.0.0.1:8080",
    identity: IdentityOpt = "default",
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """The Dawid–Skene judgement per task (answer, posterior, reviewers), from the log."""
    set_json_mode(json_out)
    client = _client(node, home, identity, need_auth=False)
    if publish:
        if task is None:
            raise InvalidInputError("--publish needs a TASK digest")
        row = client.publish_aggregate(task)
        emit(
            json_out,
            row,
            lambda: out.print(
                f"{row['task']}: {row['answer']!r} (posterior {row['posterior']:.3f}, "
                f"{len(row['inputs'])} verdicts), aggregate logged at {row['index']}"
            ),
        )
        return
    rows = client.aggregate(task)

    def human() -> None:
        from rich.table import Table

        t = Table("task", "answer", "posterior", "reviewers", "published")
        for r in rows:
            t.add_row(
                r["task"],
                r["answer"],
                f"{r['posterior']:.3f}",
                str(len(r["reviewers"])),
                _published_cell(r.get("published")),
            )
        out.print(t)

    emit(json_out, rows, human)


def _published_cell(pub: dict[str, Any] | None) -> str:
    """'-', 'current at N', or 'STALE at N (later: i, j)' for the task's published aggregate."""
    if not pub:
        return "-"
    if not pub["stale"]:
        return f"current at {pub['index']}"
    later = ", ".join(map(str, pub["later"][:5])) + (", …" if len(pub["later"]) > 5 else "")
    return f"stale at {pub['index']} (later: {later})"


@human_app.command("reputation")
def reputation(
    did: Annotated[str | None, typer.Argument(help="A reviewer DID (default: all).")] = None,
    node: NodeOpt = "http://127.0.0.1:8080",
    identity: IdentityOpt = "default",
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Reviewers' record from the log: reviews, agreement with the aggregate, DS reliability."""
    set_json_mode(json_out)
    rows = _client(node, home, identity, need_auth=False).reputation(did)

    def fmt(x: object) -> str:
        return "-" if x is None else f"{x:.3f}" if isinstance(x, float) else str(x)

    def human() -> None:
        from rich.table import Table

        t = Table("reviewer", "reviews", "agreement", "reliability", "vouched by")
        for r in rows:
            t.add_row(
                r["did"],
                str(r["reviews"]),
                fmt(r["agreement"]),
                fmt(r["reliability"]),
                str(r.get("vouchers", 0)),
            )
        out.print(t)

    emit(json_out, rows, human)


@human_app.command("vouch")
def vouch(
    did: Annotated[str, typer.Argument(help="The newcomer's reviewer DID.")],
    node: NodeOpt = "http://127.0.0.1:8080",
    identity: IdentityOpt = "default",
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Co-sign a newcomer as a registered reviewer; a policy can ask for k distinct vouchers.

    Your passkey approves the vouch (a WebAuthn assertion over its digest), as for verdicts.
    Example: `edgetrust human vouch did:key:z6Mk...`
    """
    set_json_mode(json_out)
    client = _client(node, home, identity)
    try:
        result = client.vouch(did)
    finally:
        _save(client, home, identity)  # the counter moved even if the node refused
    emit(
        json_out,
        result,
        lambda: out.print(
            f"vouched for {result['did']}, logged at {result['index']} "
            f"({result['vouchers']} distinct vouchers)"
        ),
    )
