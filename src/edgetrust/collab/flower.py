"""The Flower driver: edgetrust's own protocol over Flower 1.42's Message API, across machines.

A Flower `ServerApp` runs the `Coordinator` and the secure aggregation server; each SuperNode's
`ClientApp` runs a `ClientWorker` and a `SecAggClient`. Every stage of the protocol is one
round trip of Flower ``query`` messages whose `ConfigRecord` carries edgetrust's wire bytes
(`collab.messages`), so Flower only transports: it never sees a key, a share or an unmasked
update, and nothing of Flower's own (legacy) SecAgg+ workflow is used. A node that does not
answer a stage in time has dropped out at that stage, and the protocol carries on without it.

Flower runs each message in a fresh ClientApp process, so a client keeps its protocol state
in the SuperNode's per-run `context.state` between stages (see `SecAggClient.export_state`).

Deployment: ``edgetrust fl serve`` starts a SuperLink, ``edgetrust fl join`` a SuperNode, and
``edgetrust fl serve --run`` submits the app; `write_app` writes the app directory `flwr run`
needs (a pyproject.toml naming the components below; no network, no dependency install).
Telemetry is turned off (``FLWR_TELEMETRY_ENABLED=0``); Flower's simulation engine (Ray) is
not used.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")

from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from edgetrust.collab.dp import DPConfig
from edgetrust.collab.messages import (
    AdvertiseKeys,
    ConsistencyRequest,
    ConsistencySignature,
    ForwardedShares,
    KeyDirectory,
    MaskedInput,
    ShareKeys,
    UnmaskRequest,
    UnmaskResponse,
)
from edgetrust.collab.secagg import SecAggClient, SecAggConfig, SecAggServer
from edgetrust.collab.session import ClientWorker, Coordinator, RoundSummary, SessionSpec
from edgetrust.errors import Error, InvalidInputError
from edgetrust.home import resolve_home

__all__ = ["APP_CONFIG_DEFAULTS", "client_app", "run_server", "server_app", "write_app"]

APP_CONFIG_DEFAULTS: dict[str, Any] = {
    "home": "",
    "rounds": 2,
    "min-nodes": 3,
    "noise": 0.0,
    "clip": 1.0,
    "epsilon-max": 0.0,
    "non-iid": 0.5,
    "seed": 0,
    "local-epochs": 2,
    "threshold": 0,
    "stage-timeout": 60.0,
    "wait-nodes": 60.0,
    "dataset": "digits",
}
"""Run config keys of the app (override with ``flwr run --run-config``); 0 means unset."""

_RECORD = "edgetrust"
_STATE = "edgetrust-state"


def _record(**fields: Any) -> RecordDict:
    return RecordDict({_RECORD: ConfigRecord(fields)})


def _payload(message: Message) -> Mapping[str, Any]:
    return message.content[_RECORD]


def write_app(directory: str | os.PathLike[str], **config: Any) -> Path:
    """Write the Flower app directory (pyproject.toml) that `flwr run` submits."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    values = {**APP_CONFIG_DEFAULTS, **{k.replace("_", "-"): v for k, v in config.items()}}
    unknown = set(values) - set(APP_CONFIG_DEFAULTS)
    if unknown:
        raise InvalidInputError(f"unknown Flower app config keys: {sorted(unknown)}")
    lines = []
    for key, value in values.items():
        lines.append(f"{key} = {json.dumps(value)}")
    (d / "pyproject.toml").write_text(
        "\n".join(
            [
                "[build-system]",
                'requires = ["hatchling"]',
                'build-backend = "hatchling.build"',
                "",
                "[project]",
                'name = "edgetrust-fl"',
                'version = "1.0.0"',
                'description = "edgetrust federated learning with secure aggregation and DP"',
                'license = "Apache-2.0"',
                "dependencies = []",
                "",
                "[tool.hatch.build.targets.wheel]",
                'packages = ["."]',
                "",
                "[tool.flwr.app]",
                'publisher = "edgetrust"',
                "",
                "[tool.flwr.app.components]",
                'serverapp = "edgetrust.collab.flower:server_app"',
                'clientapp = "edgetrust.collab.flower:client_app"',
                "",
                "[tool.flwr.app.config]",
                *lines,
                "",
            ]
        )
    )
    (d / "edgetrust_fl_app.py").write_text(
        '"""The components live in edgetrust.collab.flower; this file makes the app a package."""\n'
    )
    return d


# --- server --------------------------------------------------------------------------------


def _exchange(
    grid: Grid, outgoing: Mapping[int, RecordDict], timeout: float
) -> dict[int, Mapping[str, Any]]:
    """Send one message per node, return the good replies by node (the rest dropped)."""
    messages = [
        Message(content, node, "query", group_id="edgetrust") for node, content in outgoing.items()
    ]
    replies = grid.send_and_receive(messages, timeout=timeout)
    out: dict[int, Mapping[str, Any]] = {}
    for reply in replies:
        if reply.has_error():
            continue
        out[reply.metadata.src_node_id] = _payload(reply)
    return out


def _spec(cfg: Mapping[str, Any]) -> SessionSpec:
    eps = float(cfg["epsilon-max"])
    return SessionSpec(
        rounds=int(cfg["rounds"]),
        secagg=True,
        threshold=int(cfg["threshold"]) or None,
        dp=DPConfig(
            clip=float(cfg["clip"]),
            noise_multiplier=float(cfg["noise"]),
            epsilon_max=eps if eps > 0 else None,
        ),
        local_epochs=int(cfg["local-epochs"]),
        seed=int(cfg["seed"]),
        dataset=str(cfg["dataset"]),
        model_name=f"{cfg['dataset']}-fl",
    )


def run_server(grid: Grid, run_config: Mapping[str, Any]) -> list[RoundSummary]:
    """The ServerApp's body: discover nodes, then run the configured rounds."""
    from edgetrust.collab.datasets import load_dataset
    from edgetrust.identity import Keystore
    from edgetrust.log import Log

    cfg = {**APP_CONFIG_DEFAULTS, **run_config}
    home = cfg["home"] or None
    spec = _spec(cfg)
    timeout = float(cfg["stage-timeout"])
    deadline = time.monotonic() + float(cfg["wait-nodes"])
    while len(list(grid.get_node_ids())) < int(cfg["min-nodes"]):
        if time.monotonic() > deadline:
            raise Error(f"fewer than {cfg['min-nodes']} SuperNodes connected")
        time.sleep(0.5)
    nodes = sorted(grid.get_node_ids())
    hello = _exchange(grid, {n: _record(stage="hello") for n in nodes}, timeout)
    did_of = {n: str(p["did"]) for n, p in hello.items()}
    node_of = {d: n for n, d in did_of.items()}
    test = load_dataset(spec.dataset, seed=spec.seed)
    x_te, y_te = test.x_test, test.y_test
    summaries = []
    with Log.open(home) as log:
        coordinator = Coordinator(
            spec=spec,
            identity=Keystore(home).load_or_create("fl-coordinator"),
            log=log,
            home=home,
            eval_data=(x_te, y_te),
        )
        for _ in range(spec.rounds):
            started = time.perf_counter()
            plan = coordinator.plan_round(sorted(node_of))
            if plan.secagg is None:  # the Flower driver always runs secure aggregation
                raise InvalidInputError("the Flower driver needs secure aggregation on")
            server = SecAggServer(config=plan.secagg)
            live = dict(node_of)

            env = plan.envelope.to_json()
            got = _stage(
                grid,
                live,
                did_of,
                timeout,
                "advertise",
                {d: b"" for d in live},
                config=env,
                model=plan.model_bytes,
            )
            for d, raw in got.items():
                _admit(server.receive_advertise, AdvertiseKeys, raw, d, live)
            live = {d: n for d, n in live.items() if d in got}
            directory = server.close_advertise().to_bytes()
            got = _stage(grid, live, did_of, timeout, "share", {d: directory for d in live})
            for d, raw in got.items():
                _admit(server.receive_shares, ShareKeys, raw, d, live)
            live = {d: n for d, n in live.items() if d in got}
            inbox = server.close_shares()
            got = _stage(
                grid,
                live,
                did_of,
                timeout,
                "mask",
                {d: inbox[d].to_bytes() for d in live if d in inbox},
            )
            for d, raw in got.items():
                _admit(server.receive_masked_input, MaskedInput, raw, d, live)
            live = {d: n for d, n in live.items() if d in got}
            request = server.close_masked_input()
            if isinstance(request, ConsistencyRequest):
                got = _stage(
                    grid,
                    live,
                    did_of,
                    timeout,
                    "consistency",
                    {d: request.to_bytes() for d in live},
                )
                for d, raw in got.items():
                    _admit(server.receive_consistency, ConsistencySignature, raw, d, live)
                live = {d: n for d, n in live.items() if d in got}
                unmask = server.close_consistency()
            else:
                unmask = request
            got = _stage(
                grid, live, did_of, timeout, "unmask", {d: unmask.to_bytes() for d in live}
            )
            for d, raw in got.items():
                _admit(server.receive_unmask, UnmaskResponse, raw, d, live)
            result = server.finish()
            summary = coordinator.complete_round(
                plan, inputs=result.commitments, total=result.total, started=started
            )
            summaries.append(summary)
    report = {"session": coordinator.session, "rounds": [s.__dict__ for s in summaries]}
    target = resolve_home(home) / "fl" / f"flower-{coordinator.session}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(report, indent=2, default=str))
    return summaries


def _stage(
    grid: Grid,
    live: Mapping[str, int],
    did_of: Mapping[int, str],
    timeout: float,
    name: str,
    payloads: Mapping[str, bytes],
    **extra: Any,
) -> dict[str, bytes]:
    """One protocol stage: a message to each live client, their replies by DID."""
    sent = {live[d]: _record(stage=name, msg=p, **extra) for d, p in payloads.items()}
    got = _exchange(grid, sent, timeout)
    return {did_of[n]: bytes(r["msg"]) for n, r in got.items() if n in did_of}


def _admit(receive: Any, kind: Any, raw: bytes, did: str, live: dict[str, int]) -> None:
    """Parse and hand a reply to the server; a bad one drops that client from the round."""
    try:
        msg = kind.from_bytes(raw)
        if msg.sender != did:
            raise InvalidInputError("reply sender is not the node's participant")
        receive(msg)
    except Error:
        live.pop(did, None)


server_app = ServerApp()


@server_app.main()
def _server_main(grid: Grid, context: Context) -> None:
    run_server(grid, dict(context.run_config))


# --- client --------------------------------------------------------------------------------


def _client_home(context: Context) -> str | None:
    home = context.node_config.get("edgetrust-home")
    return str(home) if home else os.environ.get("EDGETRUST_HOME")


def _handle(message: Message, context: Context) -> Message:
    from edgetrust.identity import Keystore

    payload = _payload(message)
    stage = str(payload["stage"])
    identity = Keystore(_client_home(context)).load_or_create("fl-client")
    if stage == "hello":
        return Message(_record(did=identity.did), reply_to=message)
    state = context.state.get(_STATE)
    if stage == "advertise":
        reply, new_state = _advertise(payload, context, identity)
    else:
        if not isinstance(state, ConfigRecord):
            raise InvalidInputError(f"stage {stage} before advertise")
        reply, new_state = _later_stage(stage, payload, state, identity)
    context.state[_STATE] = ConfigRecord(new_state)
    return Message(_record(msg=reply), reply_to=message)


def _partition(context: Context) -> tuple[Any, Any]:
    from edgetrust.collab.datasets import load_dataset
    from edgetrust.collab.training import dirichlet_partition

    cfg = {**APP_CONFIG_DEFAULTS, **context.run_config}
    part = int(context.node_config.get("partition-id", 0))
    parts = int(context.node_config.get("num-partitions", 1))
    data = load_dataset(str(cfg["dataset"]), seed=int(cfg["seed"]))
    x_tr, y_tr = data.x_train, data.y_train
    idx = dirichlet_partition(
        y_tr, num_clients=parts, alpha=float(cfg["non-iid"]), seed=int(cfg["seed"])
    )[part]
    return x_tr[idx], y_tr[idx]


def _secagg_config(envelope: bytes, worker: ClientWorker, model: bytes) -> SecAggConfig:
    from edgetrust.collab.training import mlp_weights_from_onnx

    config, round_id = worker.open_config(envelope)
    weights, biases = mlp_weights_from_onnx(model)
    length = sum(w.size + b.size for w, b in zip(weights, biases, strict=True))
    return SecAggConfig(
        round_id=round_id,
        participants=config.participants,
        threshold=config.threshold,
        vector_length=length,
        modulus_bits=config.modulus_bits,
        neighbours=config.neighbours,
        min_survivors=config.min_survivors,
    )


def _advertise(
    payload: Mapping[str, Any], context: Context, identity: Any
) -> tuple[bytes, dict[str, Any]]:
    # Trust the coordinator pinned in the node config, else the first one seen in this run.
    previous = context.state.get(_STATE)
    pinned = context.node_config.get("coordinator") or (
        previous["coordinator"] if isinstance(previous, ConfigRecord) else None
    )
    pinned = str(pinned) if pinned else None
    x, y = _partition(context)
    worker = ClientWorker(identity=identity, x=x, y=y, coordinator=pinned)
    envelope, model = bytes(payload["config"]), bytes(payload["model"])
    config, _ = worker.open_config(envelope)
    vector = worker.compute_update(
        config, model, seed=int(context.node_config.get("partition-id", 0)) * 7919 + config.round
    )
    sa_config = _secagg_config(envelope, worker, model)
    client = SecAggClient(config=sa_config, identity=identity)
    reply = client.advertise_keys().to_bytes()
    return reply, {
        "coordinator": worker.coordinator or "",
        "config": envelope,
        "model": model,
        "vector": vector.astype("<u4").tobytes(),
        "secagg": client.export_state(),
    }


def _later_stage(
    stage: str, payload: Mapping[str, Any], state: ConfigRecord, identity: Any
) -> tuple[bytes, dict[str, Any]]:
    import numpy as np

    envelope, model = bytes(state["config"]), bytes(state["model"])  # type: ignore[arg-type]
    worker = ClientWorker(identity=identity, x=[], y=[], coordinator=str(state["coordinator"]))
    sa_config = _secagg_config(envelope, worker, model)
    client = SecAggClient.from_state(bytes(state["secagg"]), config=sa_config, identity=identity)  # type: ignore[arg-type]
    raw = bytes(payload["msg"])
    reply: bytes
    if stage == "share":
        reply = client.share_keys(KeyDirectory.from_bytes(raw)).to_bytes()
    elif stage == "mask":
        vector = np.frombuffer(bytes(state["vector"]), dtype="<u4").astype(np.uint32)  # type: ignore[arg-type]
        reply = client.masked_input(ForwardedShares.from_bytes(raw), vector).to_bytes()
    elif stage == "consistency":
        reply = client.consistency(ConsistencyRequest.from_bytes(raw)).to_bytes()
    elif stage == "unmask":
        reply = client.unmask(UnmaskRequest.from_bytes(raw)).to_bytes()
    else:
        raise InvalidInputError(f"unknown stage {stage!r}")
    return reply, {**dict(state), "secagg": client.export_state()}


client_app = ClientApp()


@client_app.query()
def _client_query(message: Message, context: Context) -> Message:
    return _handle(message, context)
