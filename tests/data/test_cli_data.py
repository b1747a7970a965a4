"""`edgetrust data ...` end to end in process: exit codes 0 / 1 (refused) / 2 (bad input)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgetrust.cli import run
from edgetrust.identity import Keystore

from .conftest import write_people


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, Any, str]:
    code = run(list(args))
    captured = capsys.readouterr()
    try:
        data = json.loads(captured.out) if captured.out.strip() else None
    except json.JSONDecodeError:
        data = None
    return code, data, captured.err


def test_owner_flow(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = str(tmp_path / "h")
    ks = Keystore(home)
    ks.create("default")
    alice = ks.create("alice")
    bob = ks.create("bob")
    csv = write_people(tmp_path / "people.csv")
    code, card, _ = cli(capsys, "data", "add", str(csv), "--home", home, "--json")
    assert code == 0 and card["count"] == 60 and card["logIndex"] == 0
    code, listed, _ = cli(capsys, "data", "list", "--home", home, "--json")
    assert [c["digest"] for c in listed] == [card["digest"]]
    code, shown, _ = cli(capsys, "data", "show", "people", "--home", home, "--json")
    assert shown == {k: v for k, v in card.items() if k != "logIndex"}
    g = tmp_path / "alice.json"
    args = ["--home", home, "--max-uses", "3", "--eps-total", "2", "--k", "5"]
    code, _, _ = cli(capsys, "data", "grant", "people", "--to", alice.did, "--out", str(g), *args)
    assert code == 0
    d = tmp_path / "bob.json"
    code, _, _ = cli(
        capsys,
        "data",
        "delegate",
        str(g),
        "--to",
        bob.did,
        "--max-uses",
        "2",
        "--identity",
        "alice",
        "--home",
        home,
        "--out",
        str(d),
    )
    assert code == 0 and len(json.loads(d.read_text())) == 2
    # widening is refused: exit 1, no file
    wide = tmp_path / "wide.json"
    code, _, err = cli(
        capsys,
        "data",
        "delegate",
        str(g),
        "--to",
        bob.did,
        "--max-uses",
        "9",
        "--identity",
        "alice",
        "--home",
        home,
        "--out",
        str(wide),
    )
    assert code == 1 and "widens" in err and not wide.exists()
    code, rev, _ = cli(capsys, "data", "revoke", str(g), "--home", home, "--json")
    assert code == 0 and rev["logIndex"] == 1
    code, rows, _ = cli(capsys, "data", "usage", "--home", home, "--json")
    assert code == 0 and rows == []


@pytest.mark.parametrize(
    "args",
    [
        ["data", "add", "missing.csv"],
        ["data", "add", "BAD"],
        ["data", "show", "nope"],
        ["data", "grant", "nope", "--to", "did:key:zX"],
        ["data", "delegate", "BAD", "--to", "did:key:zX"],
        ["data", "revoke", "BAD"],
        ["data", "grant", "people", "--to", "did:key:zX", "--expires", "soon"],
        ["data", "value", "BAD", "BAD"],
        ["data", "request", "http://127.0.0.1:1", "--grant", "BAD", "--stat", "mean"],
    ],
)
def test_bad_input_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    home = str(tmp_path / "h")
    Keystore(home).create("default")
    write_people(tmp_path / "people.csv")
    run(["data", "add", str(tmp_path / "people.csv"), "--home", home])
    bad = tmp_path / "bad.csv"
    bad.write_text('not json {"a": \x00,,,\n')
    args = [str(bad) if a == "BAD" else a for a in args]
    code, _, err = cli(capsys, *args, "--home", home) if args[1] != "value" else cli(capsys, *args)
    assert code == 2, err
    assert "Traceback" not in err and err.count("\n") <= 2


def test_value_table_and_png(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 3))
    y = (x[:, 0] > 0).astype(np.int64)
    owners = np.repeat([0, 1, 2], 20)
    y[owners == 2] = 1 - y[owners == 2]  # owner 2's labels are all wrong
    for name, arrays in (
        ("train", {"x": x, "y": y, "owner": owners}),
        ("test", {"x": x[:30], "y": (x[:30, 0] > 0).astype(np.int64)}),
    ):
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        (tmp_path / f"{name}.npz").write_bytes(buf.getvalue())
    png = tmp_path / "shares.png"
    code, data, _ = cli(
        capsys,
        "data",
        "value",
        str(tmp_path / "train.npz"),
        str(tmp_path / "test.npz"),
        "--owners",
        "owner",
        "--png",
        str(png),
        "--json",
    )
    assert code == 0
    assert data["shares"]["2"] < 0.1 < data["shares"]["0"]
    assert png.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (["--train"], "--train needs --model"),
        (["--train", "--model", "MODEL", "--stat", "mean"], "give --stat"),
        (["--train", "--model", "MODEL", "--epochs", "0"], "epochs"),
        (["--train", "--model", "MODEL", "--noise-multiplier", "-1"], "noiseMultiplier"),
        (["--train", "--model", "MISSING"], "cannot read model"),
    ],
)
def test_request_train_bad_input_exits_2_before_sending(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], match: str
) -> None:
    from edgetrust.data.grant import issue_grant

    home = str(tmp_path / "h")
    me = Keystore(home).create("default")
    g = issue_grant(
        me, audience=me.did, dataset="sha256:" + "0" * 64, actions=["train"], expires=2**31
    )
    grant = tmp_path / "g.json"
    grant.write_text(json.dumps([g.to_dict()]))
    model = tmp_path / "m.onnx"
    model.write_bytes(b"not onnx, never sent")
    subst = {"MODEL": str(model), "MISSING": str(tmp_path / "nope.onnx")}
    args = [subst.get(a, a) for a in extra]
    # port 1: nothing listens, so reaching the network would be a different error
    code, _, err = cli(
        capsys,
        "data",
        "request",
        "http://127.0.0.1:1",
        "--grant",
        str(grant),
        *args,
        "--home",
        home,
    )
    assert code == 2, err
    assert match in err
    assert "Traceback" not in err and err.count("\n") <= 2


@pytest.mark.slow
def test_request_train_over_http(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`data request --train` against a real `data serve`: a noised update, one usage record."""
    import time

    import httpx

    from edgetrust.data.grant import issue_grant
    from edgetrust.data.jobs import DataOwner
    from edgetrust.encoding import digest_bytes
    from edgetrust.zoo import load_digits_split
    from tests.node.conftest import start_server

    from .test_train_job import _mlp

    x, _, y, _ = load_digits_split()
    home = tmp_path / "owner"
    researcher = Keystore(home).create("researcher")
    npz = tmp_path / "d.npz"
    np.savez(npz, x=x[:200], label=y[:200])
    model = _mlp()
    with DataOwner(home, identity="owner") as owner:
        card, _ = owner.add_dataset(npz)
        g = issue_grant(
            owner.identity,
            audience=researcher.did,
            dataset=card.digest,
            actions=["train"],
            algorithms=[digest_bytes(model)],
            expires=int(time.time()) + 3600,
            eps_per_use=2.0,
        )
    grant = tmp_path / "g.json"
    grant.write_text(json.dumps([g.to_dict()]))
    mfile = tmp_path / "mlp.onnx"
    mfile.write_bytes(model)
    server = start_server(["data", "serve", "--identity", "owner"], home)
    try:
        base = [
            "data",
            "request",
            server.url,
            "--grant",
            str(grant),
            "--train",
            "--model",
            str(mfile),
            "--column",
            "x",
            "--noise-multiplier",
            "3",
            "--identity",
            "researcher",
            "--home",
            str(home),
        ]
        code, answer, err = cli(capsys, *base, "--json")
        assert code == 0, err
        assert answer["result"]["update"]["length"] == 64 * 8 + 8 + 8 * 10 + 10
        assert answer["usage"] and answer["result"]["bounds"]["epsilon"] <= 2.0
        records = httpx.get(server.url + "/v1/usage").json()["records"]
        assert [r["action"] for r in records] == ["train"]
        # a noise the grant's ε cap does not admit is refused by the owner: exit 1, no record
        code, _, err = cli(capsys, *base[:-2], "--noise-multiplier", "0.3", "--home", str(home))
        assert code == 1, err
        assert "Traceback" not in err
        assert len(httpx.get(server.url + "/v1/usage").json()["records"]) == 1
    finally:
        server.stop()
