"""Federated learning beyond 20 clients: 1,000 clients in SecAgg+ neighbourhoods, and a second
data set (breast cancer), each beside centralized training of the same MLP in the same run."""

from __future__ import annotations

import os
import tempfile
import time

from bench._util import table
from edgetrust.collab.abort import abort_bound, default_threshold, min_neighbours
from edgetrust.collab.datasets import dataset_shape, load_dataset
from edgetrust.collab.local import simulate
from edgetrust.collab.session import SessionSpec
from edgetrust.collab.training import MLP, accuracy, train_centralized

COHORT, COHORT_DROPOUT, COHORT_ROUNDS = 1_000, 0.1, 5


def _central(name: str) -> float:
    features, classes = dataset_shape(name)
    data = load_dataset(name, seed=0)
    model = MLP((features, 32, classes))
    params = train_centralized(model, data.x_train, data.y_train, epochs=40)
    return accuracy(model, params, data.x_test, data.y_test)


def _session(name: str, clients: int, rounds: int, dropout: float, **kw: object) -> list[str]:
    k = kw.get("neighbours")
    spec = SessionSpec(rounds=rounds, dataset=name, model_name=f"{name}-fl", **kw)  # type: ignore[arg-type]
    workers = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as home:
        start = time.perf_counter()
        res = simulate(
            spec,
            num_clients=clients,
            dropout=dropout,
            non_iid_alpha=1.0 if clients > 100 else 0.5,
            home=home,
            processes=workers,
        )
        wall = time.perf_counter() - start
    central = _central(name)
    acc = res.rounds[-1].accuracy or 0.0
    server = max(t.server for t in res.timings)
    slowest = max(t.slowest_client for t in res.timings)
    graph = "complete" if k is None else f"SecAgg+ k={k}"
    risk = None if k is None else abort_bound(clients, int(k), default_threshold(int(k)), dropout)
    return [
        name,
        f"{clients:,}",
        f"{dropout:.0%}",
        graph,
        "—" if risk is None else f"{risk:.1e}",
        str(rounds),
        f"{100 * acc:.1f}%",
        f"{100 * central:.1f}%",
        f"{100 * acc / central:.1f}%",
        f"{wall / rounds:.1f}",
        f"{server:.2f}",
        f"{1e3 * slowest:.0f}",
    ]


def run() -> str:
    load_before = os.getloadavg()[0]
    k = min_neighbours(COHORT, COHORT_DROPOUT)
    rows = [
        _session("breast-cancer", 20, 10, 0.3, local_epochs=2),
        _session(
            "digits-shifted", COHORT, COHORT_ROUNDS, COHORT_DROPOUT, neighbours=k, local_epochs=2
        ),
    ]
    text = table(
        [
            "data set",
            "clients",
            "dropout",
            "graph",
            "P(abort) bound",
            "rounds",
            "test accuracy",
            "centralized",
            "of centralized",
            "s / round (simulated)",
            "server s / round",
            "slowest client ms / round",
        ],
        rows,
    )
    return "\n\n".join(
        [
            "## Federated learning: 1,000 clients and a second data set",
            "Secure aggregation on, clients in worker processes (one per core). The 1,000-client "
            "cohort holds the shifted digits (each training image and its four one-pixel shifts, "
            "6,735 images, a few per client, Dirichlet α = 1), in SecAgg+ neighbourhoods whose "
            f"degree is the least with an abort bound ≤ 1e-6 at {COHORT_DROPOUT:.0%} dropout "
            "(`--neighbours auto`); the breast-cancer cohort is 20 clients, α = 0.5, 30% dropout, "
            "complete graph. Centralized: the same MLP trained on all the training data, 40 "
            "epochs. The simulated round time is every client's work on this machine's cores; "
            "a deployment pays the server's time and one client's.",
            text,
            f"Load average (1 min) at start: {load_before:.1f} on {os.cpu_count()} cores.",
        ]
    )


if __name__ == "__main__":
    print(run())
