"""The SecAgg+ abort bound: stated in each round config, refused before logging when too high."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from edgetrust.cli import run
from edgetrust.collab.abort import abort_bound, check_neighbours, default_threshold
from edgetrust.collab.local import simulate
from edgetrust.collab.rounds import ROUND_CONFIG_PREDICATE_TYPE, RoundConfig
from edgetrust.collab.session import Coordinator, SessionSpec
from edgetrust.dsse import parse_envelope
from edgetrust.errors import InvalidInputError
from edgetrust.identity import Identity
from edgetrust.log import Log
from edgetrust.statement import parse_statement
from tests.collab.test_session import ListLog


def _configs(entries: list[bytes]) -> list[RoundConfig]:
    out = []
    for e in entries:
        st = parse_statement(parse_envelope(e).payload)
        if st.predicate_type == ROUND_CONFIG_PREDICATE_TYPE:
            out.append(RoundConfig.from_predicate(st.predicate))
    return out


@pytest.fixture(scope="module")
def neighbourhood_session(tmp_path_factory: pytest.TempPathFactory) -> ListLog:
    home = tmp_path_factory.mktemp("abort")
    log = ListLog()
    spec = SessionSpec(rounds=1, neighbours=32, local_epochs=1)
    simulate(spec, num_clients=40, dropout=0.1, home=home, log=log)
    return log


def test_round_config_states_the_abort_bound(neighbourhood_session: ListLog) -> None:
    (config,) = _configs(neighbourhood_session.entries)
    assert config.neighbours == 32 and config.expected_dropout == 0.1
    assert config.abort_bound == abort_bound(40, 32, config.threshold, 0.1)
    assert config.abort_bound is not None and 0 < config.abort_bound <= 1e-6
    secagg = config.to_predicate()["secagg"]
    assert secagg["expectedDropout"] == 0.1 and secagg["abortBound"] == config.abort_bound


def test_a_misstated_or_too_high_bound_does_not_parse(neighbourhood_session: ListLog) -> None:
    (config,) = _configs(neighbourhood_session.entries)
    predicate = config.to_predicate()
    predicate["secagg"]["abortBound"] = 1e-12
    with pytest.raises(InvalidInputError, match=r"abortBound .* is not the bound"):
        RoundConfig.from_predicate(predicate)
    del predicate["secagg"]["abortBound"]
    with pytest.raises(InvalidInputError, match="go together"):
        RoundConfig.from_predicate(predicate)
    # a self-consistent bound is still refused when a SecAgg+ degree is too small for it
    k = 8
    risky = abort_bound(40, k, default_threshold(k), 0.1)
    assert risky > 1e-6
    with pytest.raises(InvalidInputError, match=r"`neighbours` 8 is too few .* use at least 32"):
        dataclasses.replace(config, neighbours=k, threshold=default_threshold(k), abort_bound=risky)


def test_configs_without_the_bound_still_parse(neighbourhood_session: ListLog) -> None:
    """Round configs logged before the bound was recorded have neither field."""
    (config,) = _configs(neighbourhood_session.entries)
    predicate = config.to_predicate()
    del predicate["secagg"]["abortBound"], predicate["secagg"]["expectedDropout"]
    old = RoundConfig.from_predicate(predicate)
    assert old.expected_dropout is None and old.abort_bound is None
    assert "abortBound" not in old.to_predicate()["secagg"]


def test_coordinator_refuses_before_logging(tmp_path: Path) -> None:
    """A deployment states the dropout it expects; too small a degree logs nothing."""
    log = Log.open(tmp_path)
    spec = SessionSpec(rounds=1, neighbours=8, expected_dropout=0.1)
    coordinator = Coordinator(
        spec=spec, identity=Identity.from_seed(b"c" * 32), log=log, home=tmp_path
    )
    clients = [Identity.from_seed(bytes([i]) * 32).did for i in range(40)]
    with pytest.raises(InvalidInputError, match="`neighbours` 8 is too few"):
        coordinator.plan_round(clients)
    assert log.size() == 1  # the initial model card only
    with pytest.raises(InvalidInputError, match="`expected_dropout`"):
        SessionSpec(expected_dropout=1.0)


def test_complete_graph_is_never_refused_by_the_bound() -> None:
    bound = check_neighbours(20, None, 11, 0.3)
    assert bound == abort_bound(20, 19, 11, 0.3) and bound > 1e-6


def test_cli_neighbours_auto_and_bad_values(
    capsys: pytest.CaptureFixture[str], edgetrust_home: Path
) -> None:
    assert run(["fl", "simulate", "--clients", "20", "--neighbours", "lots"]) == 2
    err = capsys.readouterr().err
    assert "neither a number nor 'auto'" in err and "Traceback" not in err
    assert not (edgetrust_home / "log").exists()
    base = ["fl", "simulate", "--clients", "40", "--rounds", "1", "--local-epochs", "1"]
    assert run([*base, "--dropout", "0.1", "--neighbours", "auto", "--json"]) == 0
    capsys.readouterr()
    log = Log.open(edgetrust_home)
    (config,) = _configs([log.entry(i) for i in range(log.size())])
    assert config.neighbours == 32 and config.expected_dropout == 0.1
