"""The in-process driver: N simulated clients and the coordinator in one Python process.

It moves the protocol's messages between the state machines of `collab.secagg` (optionally
through their wire encoding), simulating clients that drop out at any stage, and runs whole
federated sessions (`simulate`) for the CLI, the demo, the tests and the benchmarks.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from edgetrust.collab.abort import check_neighbours
from edgetrust.collab.datasets import load_dataset
from edgetrust.collab.dp import PrivacyAccountant, PrivacyBudgetExceededError, noise_for_epsilon
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
from edgetrust.collab.pool import ClientPool, run_client_stage
from edgetrust.collab.secagg import SecAggClient, SecAggResult, SecAggServer, Stage
from edgetrust.collab.session import ClientWorker, Coordinator, RoundPlan, RoundSummary, SessionSpec
from edgetrust.collab.training import dirichlet_partition
from edgetrust.errors import InvalidInputError, VerificationError
from edgetrust.identity import Identity

__all__ = [
    "RoundTimings",
    "SessionResult",
    "calibrate_noise",
    "check_session",
    "run_secagg_round",
    "simulate",
]

M = TypeVar(
    "M",
    AdvertiseKeys,
    KeyDirectory,
    ShareKeys,
    ForwardedShares,
    MaskedInput,
    ConsistencyRequest,
    ConsistencySignature,
    UnmaskRequest,
    UnmaskResponse,
)


def _carry(msg: M, wire: bool) -> M:
    """Send a message over the 'network': through its byte encoding when `wire` is set."""
    return type(msg).from_bytes(msg.to_bytes()) if wire else msg


@dataclass
class RoundTimings:
    """Where a simulated secure aggregation round spent its time.

    `server` is the server's own work (checking and routing messages, unmasking); each entry
    of `clients` is one client's work over the round, which is what a device pays. `wall` is
    the round's elapsed time in the simulator, with the clients sharing its cores.
    """

    server: float = 0.0
    clients: dict[str, float] = field(default_factory=dict)
    wall: float = 0.0

    @property
    def slowest_client(self) -> float:
        """The largest single client's time, in seconds (0 without clients)."""
        return max(self.clients.values(), default=0.0)


def run_secagg_round(
    server: SecAggServer,
    clients: Mapping[str, SecAggClient],
    inputs: Mapping[str, npt.NDArray[np.uint32]],
    *,
    drop_at: Mapping[str, Stage] | None = None,
    wire: bool = False,
    processes: int = 1,
    timings: RoundTimings | None = None,
) -> SecAggResult:
    """Run one secure aggregation round among `clients`; return the server's result.

    A client listed in `drop_at` goes silent from that stage on (it sends neither that stage's
    message nor any later one), as a device that lost its connection would. With `processes`
    above 1 the clients run in that many forked worker processes (`collab.pool`), their
    messages always in their wire encoding; the result is the same. `timings`, if given, is
    filled with the server's time and each client's.

    Raises:
        RoundAbortedError: too few clients remained at some stage.
    """
    drops = dict(drop_at or {})
    clock = timings if timings is not None else RoundTimings()
    began = time.perf_counter()

    def alive(did: str, stage: Stage) -> bool:
        return did not in drops or drops[did] > stage

    def served(fn: Callable[..., Any], *args: Any) -> Any:
        start = time.perf_counter()
        try:
            return fn(*args)
        finally:
            clock.server += time.perf_counter() - start

    pool = ClientPool(clients, inputs, processes) if processes > 1 else None

    def stage(kind: Stage, dids: list[str], requests: Any = None) -> dict[str, Any]:
        if pool is not None:
            replies, secs = pool.stage(kind, dids, requests)
            for d, t in secs.items():
                clock.clients[d] = clock.clients.get(d, 0.0) + t
            return replies
        out = {}
        for d in dids:
            req = requests.get(d) if isinstance(requests, Mapping) else requests
            start = time.perf_counter()
            msg = run_client_stage(
                clients[d], kind, None if req is None else _carry(req, wire), inputs.get(d)
            )
            clock.clients[d] = clock.clients.get(d, 0.0) + time.perf_counter() - start
            out[d] = _carry(msg, wire)
        return out

    try:
        live = [d for d in sorted(clients) if alive(d, Stage.ADVERTISE)]
        for msg in stage(Stage.ADVERTISE, live).values():
            served(server.receive_advertise, msg)
        directory = served(server.close_advertise)
        live = [d for d in live if alive(d, Stage.SHARE)]
        for msg in stage(Stage.SHARE, live, directory).values():
            served(server.receive_shares, msg)
        inboxes = served(server.close_shares)
        live = [d for d in live if d in inboxes and alive(d, Stage.MASK)]
        for msg in stage(Stage.MASK, live, inboxes).values():
            served(server.receive_masked_input, msg)
        request = served(server.close_masked_input)
        live = [d for d in live if alive(d, Stage.CONSISTENCY)]
        if isinstance(request, ConsistencyRequest):
            for msg in stage(Stage.CONSISTENCY, live, request).values():
                served(server.receive_consistency, msg)
            unmask = served(server.close_consistency)
        else:
            unmask = request
        live = [d for d in live if alive(d, Stage.UNMASK)]
        for msg in stage(Stage.UNMASK, live, unmask).values():
            served(server.receive_unmask, msg)
        result: SecAggResult = served(server.finish)
        return result
    finally:
        if pool is not None:
            pool.close()
        clock.wall += time.perf_counter() - began


@dataclass(frozen=True)
class SessionResult:
    """The outcome of a simulated session."""

    session: str
    rounds: tuple[RoundSummary, ...]
    stopped_early: str | None
    """Why the session ended before its last round (the privacy budget), or None."""
    centralized_accuracy: float | None = None
    timings: tuple[RoundTimings, ...] = ()
    """Per secure aggregation round: the server's time and each client's (see RoundTimings)."""


def _plain_round(
    plan: RoundPlan,
    workers: Mapping[str, ClientWorker],
    vectors: Mapping[str, npt.NDArray[np.uint32]],
    drops: Mapping[str, Stage],
) -> list[MaskedInput]:
    """Without secure aggregation: survivors send signed, unmasked quantized updates."""
    out = []
    for did in sorted(vectors):
        if did in drops and drops[did] <= Stage.MASK:
            continue
        msg = MaskedInput(plan.round_id, did, vectors[did]).sign(workers[did].identity)
        msg.verify()
        out.append(msg)
    return out


def _with_example_rate(spec: SessionSpec, sizes: list[int]) -> SessionSpec:
    """Fix sample-level DP's Poisson rate q = batch_size / mean client size, if unset."""
    if not spec.sample_level or spec.dp.example_rate is not None:
        return spec
    mean = sum(sizes) / len(sizes)
    if spec.batch_size > mean:
        raise InvalidInputError(
            f"`batch_size` {spec.batch_size} is larger than a client's data for sample-level "
            f"DP: clients hold {mean:.0f} examples on average (the smallest {min(sizes)}), "
            f"so lower `batch_size` to at most {int(mean)}"
        )
    dp = dataclasses.replace(spec.dp, example_rate=spec.batch_size / mean)
    return dataclasses.replace(spec, dp=dp)


def _client_sizes(spec: SessionSpec, num_clients: int, non_iid_alpha: float) -> list[int]:
    y_tr = load_dataset(spec.dataset, seed=spec.seed).y_train
    parts = dirichlet_partition(y_tr, num_clients=num_clients, alpha=non_iid_alpha, seed=spec.seed)
    return [len(p) for p in parts]


def calibrate_noise(
    spec: SessionSpec, *, num_clients: int, non_iid_alpha: float = 0.5, epsilon: float
) -> SessionSpec:
    """`spec` with the least noise multiplier whose ε after all its rounds is within `epsilon`.

    `epsilon_max` becomes `epsilon`; sample-level, the rate is the one `simulate` will use.
    """
    dp = dataclasses.replace(spec.dp, noise_multiplier=1.0, epsilon_max=epsilon)
    probe = _with_example_rate(
        dataclasses.replace(spec, dp=dp), _client_sizes(spec, num_clients, non_iid_alpha)
    )
    z = noise_for_epsilon(
        epsilon,
        rounds=spec.rounds,
        sampling_rate=probe.dp.accounting_rate,
        delta=dp.delta,
        steps_per_round=probe.dp_steps_per_round,
    )
    return dataclasses.replace(probe, dp=dataclasses.replace(probe.dp, noise_multiplier=z))


def _check_budget(spec: SessionSpec, stop_at_budget: bool) -> None:
    """Refuse a noise multiplier too small for `epsilon_max`, naming the z that would do."""
    dp = spec.dp
    if not dp.enabled or dp.epsilon_max is None:
        return
    steps = spec.dp_steps_per_round
    accountant = PrivacyAccountant(dp, steps_per_round=steps)
    fits = accountant.max_rounds(spec.rounds)
    if fits >= spec.rounds or (fits > 0 and stop_at_budget):
        return
    want = 1 if fits == 0 else spec.rounds
    need = noise_for_epsilon(
        dp.epsilon_max,
        rounds=want,
        sampling_rate=dp.accounting_rate,
        delta=dp.delta,
        steps_per_round=steps,
    )
    eps = accountant.epsilon(want)
    what = "even one round" if fits == 0 else f"{spec.rounds} rounds ({fits} fit)"
    raise PrivacyBudgetExceededError(
        f"`noise_multiplier` {dp.noise_multiplier} is too small for epsilon_max="
        f"{dp.epsilon_max} (δ={dp.delta}, {dp.guarantee}): {what} would reach ε {eps:.2f}; "
        f"it needs at least {need:g}. Nothing was run",
        limit=dp.epsilon_max,
        epsilon=eps,
    )


def check_session(
    spec: SessionSpec,
    *,
    num_clients: int,
    dropout: float = 0.0,
    non_iid_alpha: float = 0.5,
    stop_at_budget: bool = False,
    processes: int = 1,
) -> SessionSpec:
    """Every refusal of `simulate`, before anything runs; returns the spec it will run.

    (Sample-level DP gets its `example_rate` filled in.) Raises as `simulate` does.
    """
    if not 2 <= num_clients <= 10_000:
        raise InvalidInputError("`num_clients` must be in 2..10000")
    if not 0 <= dropout < 1:
        raise InvalidInputError("`dropout` must be in [0, 1)")
    if not 1 <= processes <= 64:
        raise InvalidInputError("`processes` must be in 1..64")
    spec = _with_example_rate(spec, _client_sizes(spec, num_clients, non_iid_alpha))
    _check_budget(spec, stop_at_budget)
    threshold = spec.threshold_for(num_clients)
    drops_per_round = int(dropout * num_clients)
    if num_clients - drops_per_round < threshold:
        raise InvalidInputError(
            f"with dropout {dropout}, {num_clients - drops_per_round} clients remain, below "
            f"the threshold {threshold}: lower `dropout` or `threshold`"
        )
    if spec.secagg and spec.expected_dropout is None:
        # The round configs state the abort risk at the dropout being simulated.
        spec = dataclasses.replace(spec, expected_dropout=dropout)
    if spec.secagg and spec.expected_dropout is not None:
        check_neighbours(num_clients, spec.neighbours, threshold, spec.expected_dropout)
    return spec


def simulate(
    spec: SessionSpec,
    *,
    num_clients: int = 20,
    dropout: float = 0.0,
    non_iid_alpha: float = 0.5,
    home: str | os.PathLike[str] | None = None,
    log: Any = None,
    stop_at_budget: bool = False,
    on_round: Callable[[RoundSummary], None] | None = None,
    wire: bool = False,
    processes: int = 1,
) -> SessionResult:
    """Federated training of an MLP on `spec.dataset` among `num_clients` simulated clients.

    Each round ⌊dropout·n⌋ clients, chosen at random, drop at a random protocol stage. The
    round config, the model cards and the round records go to `log` (default: the embedded
    log in `home`).

    Sample-level DP without an `example_rate` gets q = batch_size / (mean examples per
    client), so a client of average size draws `batch_size` examples a step in expectation.

    With `processes` above 1, each secure aggregation round runs the clients in that many
    worker processes (same result; `SessionResult.timings` has the server's and each client's
    time either way).

    Every refusal below happens before anything is logged, and names the parameter.

    Raises:
        PrivacyBudgetExceededError: the noise multiplier is too small for `epsilon_max`: not
            even one round fits, or the session's rounds would exceed it and
            `stop_at_budget` is off. With `stop_at_budget`, the session stops before the
            first round over the budget.
        InvalidInputError: a sample-level DP batch larger than the clients' data, SecAgg+
            `neighbours` too few for an abort risk ≤ 1e-6 at this dropout, too few clients
            left for the threshold, or any other invalid setting.
    """
    from edgetrust.identity import Keystore
    from edgetrust.log import Log

    spec = check_session(
        spec,
        num_clients=num_clients,
        dropout=dropout,
        non_iid_alpha=non_iid_alpha,
        stop_at_budget=stop_at_budget,
        processes=processes,
    )
    data = load_dataset(spec.dataset, seed=spec.seed)
    x_tr, x_te, y_tr, y_te = data.x_train, data.x_test, data.y_train, data.y_test
    parts = dirichlet_partition(y_tr, num_clients=num_clients, alpha=non_iid_alpha, seed=spec.seed)
    dp = spec.dp
    accountant = PrivacyAccountant(dp, steps_per_round=spec.dp_steps_per_round)
    fits = accountant.max_rounds(spec.rounds) if dp.enabled else spec.rounds
    drops_per_round = int(dropout * num_clients)
    own_log = log is None
    log = Log.open(home) if own_log else log
    try:
        coordinator_id = Keystore(home).load_or_create("fl-coordinator")
        coordinator = Coordinator(
            spec=spec, identity=coordinator_id, log=log, home=home, eval_data=(x_te, y_te)
        )
        workers = {}
        for i, idx in enumerate(parts):
            ident = Identity.from_seed(
                hashlib.sha256(f"edgetrust-fl-sim/{coordinator.session}/{i}".encode()).digest()
            )
            workers[ident.did] = ClientWorker(
                identity=ident, x=x_tr[idx], y=y_tr[idx], coordinator=coordinator_id.did
            )
        rng = np.random.default_rng(spec.seed)
        summaries: list[RoundSummary] = []
        timings: list[RoundTimings] = []
        stopped = None
        for r in range(spec.rounds):
            if r >= fits:
                stopped = (
                    f"round {r + 1} refused: ε would reach {accountant.epsilon(r + 1):.2f}, "
                    f"over epsilon_max={dp.epsilon_max}"
                )
                break
            started = time.perf_counter()
            plan = coordinator.plan_round(sorted(workers))
            vectors = {}
            for k, (did, w) in enumerate(sorted(workers.items())):
                config, round_id = w.open_config(plan.envelope.to_json())
                if round_id != plan.round_id:
                    raise VerificationError("round id mismatch", step="config")
                vectors[did] = w.compute_update(
                    config, plan.model_bytes, seed=spec.seed * 100_003 + r * 1009 + k
                )
            dropped = rng.choice(sorted(workers), size=drops_per_round, replace=False)
            drops = {str(d): Stage(int(rng.integers(0, 5))) for d in dropped}
            if plan.secagg is not None:
                server = SecAggServer(config=plan.secagg)
                clients = {
                    d: SecAggClient(config=plan.secagg, identity=w.identity)
                    for d, w in workers.items()
                }
                timing = RoundTimings()
                result = run_secagg_round(
                    server,
                    clients,
                    vectors,
                    drop_at=drops,
                    wire=wire,
                    processes=processes,
                    timings=timing,
                )
                timings.append(timing)
                summary = coordinator.complete_round(
                    plan, inputs=result.commitments, total=result.total, started=started
                )
            else:
                inputs = _plain_round(plan, workers, vectors, drops)
                summary = coordinator.complete_round(plan, inputs=inputs, started=started)
            summaries.append(summary)
            if on_round is not None:
                on_round(summary)
        return SessionResult(coordinator.session, tuple(summaries), stopped, timings=tuple(timings))
    finally:
        if own_log:
            log.close()
