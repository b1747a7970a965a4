from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgetrust.cli import run


def test_simulate_json_then_audit(
    edgetrust_home: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    png = tmp_path / "fl.png"
    code = run(
        [
            "fl",
            "simulate",
            "--clients",
            "5",
            "--rounds",
            "2",
            "--dropout",
            "0.2",
            "--dp-noise",
            "1.0",
            "--epsilon-max",
            "10",
            "--local-epochs",
            "1",
            "--plot",
            str(png),
            "--json",
        ]
    )
    assert code == 0
    data = json.loads(capsys.readouterr().out)
    assert [r["round"] for r in data["rounds"]] == [1, 2]
    assert data["rounds"][-1]["epsilon"] == pytest.approx(6.573, abs=0.01)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert run(["fl", "audit", "--json", "--require-artifacts"]) == 0
    audit = json.loads(capsys.readouterr().out)
    assert audit["ok"] and len(audit["rounds"]) == 2
    assert all(r["modelRecomputed"] for r in audit["rounds"])
    # a corrupted aggregate is caught: exit 1
    agg = next((edgetrust_home / "fl" / "aggregates").glob("*.ett"))
    agg.write_bytes(agg.read_bytes()[:-1] + b"\x00")
    assert run(["fl", "audit"]) == 1
    assert "does not match its digest" in capsys.readouterr().err


def test_simulate_human_output(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        run(
            [
                "fl",
                "simulate",
                "--clients",
                "4",
                "--rounds",
                "1",
                "--local-epochs",
                "1",
                "--no-secagg",
                "--aggregator",
                "median",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "federated session" in out and "no differential privacy (ε ∞)" in out


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--dropout", "1.5"], "dropout"),
        (["--clients", "1"], "num_clients"),
        (["--aggregator", "median"], "secagg"),
        (["--dp-noise", "-1"], "noise_multiplier"),
        (
            ["--dp-noise", "1", "--epsilon-max", "8", "--rounds", "10", "--strict-budget"],
            "Nothing was run",
        ),
        (["--threshold", "2"], "threshold"),
    ],
)
def test_bad_input_exits_2(
    args: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["fl", "simulate", "--clients", "4", "--rounds", "1", *args]) == 2
    assert needle in capsys.readouterr().err


def test_audit_empty_log(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["fl", "audit"]) == 0
    assert "no federated rounds" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--server-optimizer", "adamw"], "`server_optimizer`"),
        (["--server-momentum", "1.5"], "`server_momentum`"),
        (["--server-optimizer", "fedadam", "--server-momentum", "0.5"], "`server_momentum`"),
        (["--server-lr", "0"], "`server_lr`"),
        (["--dp-level", "group", "--dp-noise", "1"], "`level`"),
        (["--dp-level", "sample", "--dp-noise", "1", "--batch-size", "500"], "`batch_size` 500"),
        (["--dp-noise", "0.3", "--epsilon-max", "1"], "`noise_multiplier` 0.3 is too small"),
        (["--neighbours", "4", "--dropout", "0.3"], "`neighbours` 4 is too few"),
        (["--processes", "0"], "`processes` must be in 1..64"),
        (["--dataset", "mnist"], "unknown data set 'mnist'"),
    ],
)
def test_bad_settings_refused_before_anything_is_logged(
    args: list[str], needle: str, capsys: pytest.CaptureFixture[str], edgetrust_home: Path
) -> None:
    assert run(["fl", "simulate", "--clients", "20", "--rounds", "2", *args]) == 2
    err = capsys.readouterr().err
    assert needle in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (edgetrust_home / "log").exists()


def test_sample_level_dp_epsilon_then_audit(
    capsys: pytest.CaptureFixture[str], edgetrust_home: Path
) -> None:
    args = ["--dp-level", "sample", "--dp-epsilon", "6", "--clip", "0.3", "--lr", "1"]
    assert (
        run(
            [
                "fl",
                "simulate",
                "--clients",
                "5",
                "--rounds",
                "2",
                "--local-epochs",
                "1",
                "--json",
                *args,
            ]
        )
        == 0
    )
    data = json.loads(capsys.readouterr().out)
    assert len(data["rounds"]) == 2 and data["stoppedEarly"] is None
    assert 0 < data["rounds"][-1]["epsilon"] <= 6.0
    assert run(["fl", "audit", "--require-artifacts", "--json"]) == 0
