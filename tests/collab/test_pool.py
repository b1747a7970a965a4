"""Secure aggregation with the simulated clients in worker processes (`collab.pool`)."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from edgetrust.collab.audit import audit_log
from edgetrust.collab.local import RoundTimings, run_secagg_round, simulate
from edgetrust.collab.secagg import RoundAbortedError, Stage
from edgetrust.collab.session import SessionSpec
from edgetrust.errors import InvalidInputError
from tests.collab.conftest import Round
from tests.collab.test_session import ListLog


@pytest.fixture(autouse=True)
def _no_workers_left() -> object:
    yield
    assert multiprocessing.active_children() == []


@pytest.mark.parametrize("processes", [2, 3])
def test_pool_gives_the_exact_sum_with_dropouts_at_every_stage(
    make_round: Callable[..., Round], processes: int
) -> None:
    r = make_round(11, 6, length=500)
    stages = [Stage.ADVERTISE, Stage.SHARE, Stage.MASK, Stage.CONSISTENCY, Stage.UNMASK]
    drops = dict(zip(r.dids[:5], stages, strict=True))
    timings = RoundTimings()
    res = run_secagg_round(
        r.server, r.clients, r.inputs, drop_at=drops, processes=processes, timings=timings
    )
    # dropped after sending the masked input (consistency, unmask): still in the sum
    assert set(res.survivors) == set(r.dids) - set(r.dids[:3])
    np.testing.assert_array_equal(res.total, r.expected(res.survivors))
    # every client that advertised did work, measured in its worker; the server too
    assert set(timings.clients) == set(r.dids) - {r.dids[0]}
    assert all(t > 0 for t in timings.clients.values())
    assert 0 < timings.server < timings.wall
    assert timings.slowest_client == max(timings.clients.values())


def test_pool_with_secagg_plus_neighbourhoods(make_round: Callable[..., Round]) -> None:
    r = make_round(12, 4, length=300, neighbours=6, min_survivors=6)
    drops = {r.dids[0]: Stage.MASK, r.dids[5]: Stage.UNMASK, r.dids[9]: Stage.SHARE}
    res = run_secagg_round(r.server, r.clients, r.inputs, drop_at=drops, processes=2)
    np.testing.assert_array_equal(res.total, r.expected(res.survivors))
    assert len(res.survivors) == 10


def test_sequential_round_fills_timings_too(make_round: Callable[..., Round]) -> None:
    r = make_round(5, 3)
    timings = RoundTimings()
    run_secagg_round(r.server, r.clients, r.inputs, timings=timings)
    assert set(timings.clients) == set(r.dids)
    assert timings.server > 0 and timings.wall >= timings.server


def test_pool_abort_below_threshold(make_round: Callable[..., Round]) -> None:
    r = make_round(7, 4)
    drops = {d: Stage.MASK for d in r.dids[:4]}
    with pytest.raises(RoundAbortedError) as info:
        run_secagg_round(r.server, r.clients, r.inputs, drop_at=drops, processes=2)
    assert info.value.need == 4 and info.value.have == 3


def test_a_client_error_in_a_worker_keeps_its_type_and_message(
    make_round: Callable[..., Round],
) -> None:
    """A client refusing its input in a worker is reported as it is in one process."""
    messages = []
    for processes in (1, 2):
        r = make_round(5, 3)
        inputs = dict(r.inputs)
        inputs[r.dids[2]] = np.zeros(3, np.uint32)  # wrong length
        with pytest.raises(InvalidInputError) as info:
            run_secagg_round(r.server, r.clients, inputs, processes=processes)
        messages.append(str(info.value))
    assert messages[0] == messages[1]


def test_pool_needs_two_processes(make_round: Callable[..., Round]) -> None:
    from edgetrust.collab.pool import ClientPool

    r = make_round(3, 2)
    with pytest.raises(InvalidInputError, match="`processes`"):
        ClientPool(r.clients, r.inputs, 1)


def test_simulate_with_workers_passes_the_audit(tmp_path: Path) -> None:
    """Sessions draw fresh identities, so runs differ; each must still audit exactly."""
    spec = SessionSpec(rounds=2, local_epochs=1)
    log = ListLog()
    result = simulate(spec, num_clients=6, dropout=0.34, home=tmp_path, log=log, processes=2)
    report = audit_log(log, home=tmp_path, require_artifacts=True)
    assert len(report.rounds) == 2 and all(r.model_recomputed for r in report.rounds)
    assert len(result.timings) == 2
    assert all(t.server > 0 and len(t.clients) >= 4 for t in result.timings)
    with pytest.raises(InvalidInputError, match="`processes`"):
        simulate(spec, num_clients=6, home=tmp_path / "bad", processes=0)
    assert not (tmp_path / "bad").exists()
