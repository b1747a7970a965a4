"""A device answering dispute queries over HTTP (`node serve --traces`), and challengers
playing against it (`RemoteDevice`, `challenge --device URL`) on a real uvicorn node."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgetrust.cli import run
from edgetrust.device import Device
from edgetrust.encoding import parse_digest
from edgetrust.node.app import create_app
from edgetrust.node.settings import NodeSettings
from edgetrust.receipts import parse_bundle, parse_opening, read_receipt
from edgetrust.runtime.fixed import Fault, FixedExecutor, FixedRuntime, TraceStore
from edgetrust.verify.dispute import (
    Claim,
    DisputeGame,
    HonestChallenger,
    Query,
    challenge_receipt,
    parse_answer,
    play,
)
from edgetrust.verify.remote import RemoteDevice
from edgetrust.zoo import digits_mlp_onnx, load_digits_split

from .conftest import Server, free_port, start_server

LIE = Fault("gemm1", 4, -6)


@dataclass
class Issued:
    """A receipt a device issued, with what a challenger needs to challenge it."""

    bundle: Path
    opening: Path
    root: bytes


@dataclass
class DeviceSide:
    """A device's home holding traces, the files a challenger has, and the device's node."""

    home: Path
    model: Path
    x: Path
    honest: Issued
    lying: Issued
    spare: list[Issued]
    """Lying receipts the tests may damage or expire (one each)."""
    node: Server


def _issue(device: Device, files: dict[str, Path], name: str, fault: Fault | None) -> Issued:
    model, x = files["model"], files["x"]
    rt = FixedRuntime(home=device.home, fault=fault)
    result = device.infer(str(model), {"input": np.load(x)}, executor=rt)
    out = model.parent
    bundle, opening = out / f"{name}.json", out / f"{name}.opening.json"
    bundle.write_bytes(result.bundle.to_json())
    opening.write_bytes(device.reveal(result.bundle).to_json())
    assert rt.last_trace_root is not None
    return Issued(bundle, opening, parse_digest(rt.last_trace_root))


@pytest.fixture(scope="module")
def side(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DeviceSide]:
    d = tmp_path_factory.mktemp("device")
    home = d / "home"
    files = {"model": d / "digits.onnx", "x": d / "x.npy"}
    files["model"].write_bytes(digits_mlp_onnx()[0])
    np.save(files["x"], load_digits_split()[1][3:4])
    with Device(home) as device:
        honest = _issue(device, files, "honest", None)
        lying = _issue(device, files, "lying", LIE)
        spare = [_issue(device, files, f"spare{i}", Fault("gemm0", i, 3)) for i in range(3)]
    node = start_server(["node", "serve", "--rate", "0", "--traces"], home)
    try:
        yield DeviceSide(home, files["model"], files["x"], honest, lying, spare, node)
    finally:
        node.stop()


def _challenge(side: DeviceSide, issued: Issued, device: Any) -> Any:
    return challenge_receipt(
        parse_bundle(issued.bundle.read_bytes()),
        model=side.model.read_bytes(),
        inputs={"input": np.load(side.x)},
        opening=parse_opening(issued.opening.read_bytes()),
        device=device,
        timeout=10,
    )


def _query_url(side: DeviceSide, root: bytes | str) -> str:
    r = root.hex() if isinstance(root, bytes) else root
    return f"{side.node.url}/v1/traces/{r}/query"


# -- the game over HTTP -----------------------------------------------------------------------


def test_lying_device_is_convicted_over_http(side: DeviceSide) -> None:
    with RemoteDevice(side.node.url, side.lying.root) as remote:
        result = _challenge(side, side.lying, remote)
    assert result.status == "convicted", result.reason
    v = result.verdict
    assert (v.node, v.node_index, v.element) == ("gemm1", 2, 4)
    assert v.rounds <= v.round_bound
    # The same game in process: the transport changes nothing in the verdict.
    local = challenge_receipt(
        parse_bundle(side.lying.bundle.read_bytes()),
        model=side.model.read_bytes(),
        inputs={"input": np.load(side.x)},
        opening=parse_opening(side.lying.opening.read_bytes()),
        device_home=side.home,
    )
    assert local.verdict is not None
    assert (local.verdict.rounds, local.verdict.bytes_exchanged, local.verdict.reason) == (
        v.rounds,
        v.bytes_exchanged,
        v.reason,
    )


def test_honest_device_is_cleared_over_http(side: DeviceSide) -> None:
    """A challenger with a wrong trace disputes an honest device's receipt: it loses."""
    receipt = read_receipt(parse_bundle(side.honest.bundle.read_bytes()))
    settings_ = receipt.executor["settings"]
    from edgetrust.runtime.fixed import QuantPlan

    plan = QuantPlan.from_json(json.dumps(settings_["plan"]))
    ex = FixedExecutor(side.model.read_bytes(), precision=plan.precision, plan=plan)
    claim = Claim(
        side.honest.root,
        parse_digest(settings_["weights_root"]),
        settings_["weights_size"],
    )
    x = {"input": np.load(side.x)}
    _, wrong = ex.run_traced(x, fault=Fault("relu0", 7, 2))
    game = DisputeGame(ex, claim, inputs=x, timeout=10)
    with RemoteDevice(side.node.url, side.honest.root) as remote:
        verdict = play(game, remote, HonestChallenger(wrong))
        assert remote.failure is None
    assert verdict.loser == "challenger", verdict.reason
    assert verdict.node == "relu0" and verdict.element == 7


def test_honest_receipt_agrees_without_a_query(side: DeviceSide) -> None:
    down = f"http://127.0.0.1:{free_port()}"
    with RemoteDevice(down, side.honest.root) as remote:
        assert _challenge(side, side.honest, remote).status == "agrees"


def test_device_that_is_down_loses(side: DeviceSide) -> None:
    down = f"http://127.0.0.1:{free_port()}"
    with RemoteDevice(down, side.lying.root, timeout=2) as remote:
        result = _challenge(side, side.lying, remote)
        assert remote.failure is not None and down in remote.failure
    assert result.status == "convicted" and result.verdict.loser == "device"
    assert "refused" in result.reason and result.verdict.rounds == 1


def test_device_without_the_trace_loses(side: DeviceSide) -> None:
    """A node that does not keep the receipt's trace answers 404: the device loses."""
    wrong = RemoteDevice(side.node.url, bytes(32))
    try:
        assert wrong(Query("split", None, 0, 4)) is None
        assert wrong.failure is not None and "HTTP 404" in wrong.failure
    finally:
        wrong.close()


class _Garbage(BaseHTTPRequestHandler):
    """A 'device' that answers every query with 200 and a body that is not an answer."""

    body = b'{"type": "split", "left": "zz"}'

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", "0")))
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: Any) -> None:
        pass


def test_device_answering_garbage_loses(side: DeviceSide) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Garbage)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        with RemoteDevice(url, side.lying.root) as remote:
            result = _challenge(side, side.lying, remote)
            assert remote.failure is not None and "not hex" in remote.failure
        assert result.status == "convicted" and result.verdict.rounds == 1
        # An answer over the client's size limit is no answer either.
        with RemoteDevice(side.node.url, side.lying.root, max_bytes=16) as tiny:
            assert tiny(Query("split", None, 0, 4)) is None
            assert tiny.failure is not None and "over 16 bytes" in tiny.failure
    finally:
        server.shutdown()
        server.server_close()


# -- the endpoint's answers to bad requests ---------------------------------------------------


def _raw(side: DeviceSide, data: bytes) -> None:
    """Send raw bytes to the node and hang up (a client that dies mid-request)."""
    host, port = side.node.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(data)


def test_bad_requests_get_4xx_and_the_node_keeps_serving(side: DeviceSide) -> None:
    root = side.lying.root.hex()
    good = Query("split", None, 0, 4).to_dict()
    cases: list[tuple[str, Any, int]] = [
        ("g" * 64, good, 400),  # not hex
        (root.upper(), good, 400),  # upper case
        (root[:62], good, 400),  # short
        ("00" * 32, good, 404),  # unknown
        (root, {"kind": "nope"}, 400),
        (root, {"kind": "split", "lo": -1, "hi": 2}, 400),
        (root, {"kind": "split", "lo": 0, "hi": 10**6}, 400),  # out of range
        (root, {"kind": "chunk", "entry": 999, "lo": 0, "hi": 1}, 400),
        (root, {"kind": "chunk", "entry": 1, "lo": 99, "hi": 100}, 400),
        (root, {"kind": "open", "entry": 3, "element": 10**9}, 400),
        (root, {"kind": "header", "entry": 3, "element": 1}, 400),
        (root, {"kind": "split", "lo": True, "hi": 2}, 400),
        (root, [1, 2], 400),
    ]
    with httpx.Client(timeout=10) as http:
        for r, body, status in cases:
            resp = http.post(_query_url(side, r), json=body)
            assert resp.status_code == status, (r, body, resp.text)
            assert set(resp.json()) == {"error", "message"}
        for data, status in [
            (b"{not json", 400),
            (b'{"kind": "spl', 400),  # truncated
            (b"", 400),
            (b'{"kind": "split", "pad": "' + b"x" * 5000 + b'"}', 413),
        ]:
            resp = http.post(
                _query_url(side, root), content=data, headers={"content-type": "application/json"}
            )
            assert resp.status_code == status, (data[:40], resp.text)

        def chunked() -> Iterator[bytes]:
            for _ in range(10):
                yield b" " * 1000

        resp = http.post(_query_url(side, root), content=chunked())
        assert resp.status_code == 413
        # A client that announces a body and hangs up halfway.
        _raw(
            side,
            f"POST /v1/traces/{root}/query HTTP/1.1\r\nhost: x\r\n"
            'content-type: application/json\r\ncontent-length: 100\r\n\r\n{"kind"'.encode(),
        )
        assert http.get(f"{side.node.url}/v1/traces/{'00' * 32}").status_code == 404
        assert http.get(f"{side.node.url}/v1/traces/xyz").status_code == 400
        held = http.get(f"{side.node.url}/v1/traces/{root}")
        assert held.status_code == 200 and held.json()["trace_root"] == root
        assert held.json()["kept_until"] > time.time()
        # Still serving, and answering correctly.
        assert http.get(f"{side.node.url}/healthz").status_code == 200
        resp = http.post(_query_url(side, root), json=good)
        assert resp.status_code == 200
        assert parse_answer(resp.content).to_dict()["type"] == "split"


def test_damaged_and_expired_traces(side: DeviceSide) -> None:
    damaged, expired, _ = side.spare
    store = TraceStore(side.home)
    store.path(damaged.root).write_bytes(b"not an npz file")
    old = time.time() - 8 * 24 * 3600
    os.utime(store.path(expired.root), (old, old))
    good = Query("split", None, 0, 4).to_dict()
    with httpx.Client(timeout=10) as http:
        for method in ("GET", "POST"):
            url = f"{side.node.url}/v1/traces/{damaged.root.hex()}"
            resp = http.request(method, url + ("/query" if method == "POST" else ""), json=good)
            assert resp.status_code == 409, resp.text
            assert resp.json()["error"] == "TraceUnavailableError"
            assert "damaged" in resp.json()["message"]
        assert http.post(_query_url(side, expired.root), json=good).status_code == 404
        assert http.get(f"{side.node.url}/v1/traces/{expired.root.hex()}").status_code == 404
    # The device whose trace is damaged loses the game it is challenged to.
    with RemoteDevice(side.node.url, damaged.root) as remote:
        result = _challenge(side, damaged, remote)
        assert remote.failure is not None and "HTTP 409" in remote.failure
    assert result.status == "convicted" and "refused" in result.reason


def test_traces_are_not_served_by_default(live_node: Server) -> None:
    resp = httpx.post(f"{live_node.url}/v1/traces/{'00' * 32}/query", json={"kind": "split"})
    assert resp.status_code == 404 and resp.json()["error"] == "NotFoundError"
    assert "/v1/traces/{root}/query" not in httpx.get(f"{live_node.url}/openapi.json").text


# -- no request gives a 5xx (in-process app, many requests) -----------------------------------


@pytest.fixture(scope="module")
def trace_app(side: DeviceSide, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    cfg = NodeSettings(home=side.home, rate=0, traces=True, trace_rate=0)
    with TestClient(create_app(settings=cfg), raise_server_exceptions=False) as client:
        yield client


_ints = st.one_of(st.none(), st.integers(-(2**70), 2**70), st.booleans(), st.text(max_size=3))
_queries = st.fixed_dictionaries(
    {},
    optional={
        "kind": st.sampled_from(["split", "chunk", "open", "header", "x"]),
        "entry": st.one_of(_ints, st.integers(0, 6)),
        "lo": st.one_of(_ints, st.integers(0, 8)),
        "hi": st.one_of(_ints, st.integers(0, 8)),
        "element": st.one_of(_ints, st.integers(0, 80)),
    },
)


@given(query=_queries)
@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
def test_random_queries_never_give_a_server_error(
    trace_app: TestClient, side: DeviceSide, query: dict[str, Any]
) -> None:
    resp = trace_app.post(f"/v1/traces/{side.lying.root.hex()}/query", json=query)
    assert resp.status_code in (200, 400), (query, resp.text)
    if resp.status_code == 200:
        parse_answer(resp.content)
    else:
        assert set(resp.json()) == {"error", "message"}


@given(data=st.binary(max_size=300), root=st.text("0123456789abcdefABCDEF-_.%", max_size=70))
@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
def test_random_bytes_never_give_a_server_error(
    trace_app: TestClient, data: bytes, root: str
) -> None:
    resp = trace_app.post(f"/v1/traces/{root}/query", content=data)
    assert resp.status_code in (400, 404, 405, 413), (root, data, resp.text)


def test_trace_queries_are_rate_limited_per_client(side: DeviceSide) -> None:
    cfg = NodeSettings(home=side.home, rate=0, traces=True, trace_rate=1)  # burst: 10
    url = f"/v1/traces/{side.honest.root.hex()}/query"
    query = Query("split", None, 0, 4).to_dict()
    with TestClient(create_app(settings=cfg), raise_server_exceptions=False) as client:
        assert client.post(url, json=query).status_code == 200  # a rebuild: all 10 tokens
        resp = client.post(url, json=query)
        assert resp.status_code == 429 and resp.headers["retry-after"] == "1"
        assert "trace queries/s" in resp.json()["message"]


# -- the CLI --------------------------------------------------------------------------------------


def _cli(side: DeviceSide, issued: Issued, *extra: str) -> list[str]:
    return [
        "challenge",
        str(issued.bundle),
        "--model",
        str(side.model),
        "--input",
        str(side.x),
        "--opening",
        str(issued.opening),
        *extra,
    ]


def test_cli_challenge_device_url(side: DeviceSide, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(_cli(side, side.lying, "--device", side.node.url, "--json")) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["status"] == "convicted" and out["loser"] == "device"
    assert (out["node"], out["element"]) == ("gemm1", 4)
    assert out["device"] == side.node.url and out["deviceFailure"] is None
    assert out["verdictLogIndex"] is not None
    assert run(_cli(side, side.lying, "--device", side.node.url, "--no-log")) == 1
    text = capsys.readouterr().out
    assert "convicted" in text and "gemm1" in text and "element 4" in text
    assert run(_cli(side, side.honest, "--device", side.node.url, "--json")) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "agrees"


def test_cli_challenge_device_down_or_misused(
    side: DeviceSide, capsys: pytest.CaptureFixture[str]
) -> None:
    down = f"http://127.0.0.1:{free_port()}"
    assert run(_cli(side, side.lying, "--device", down, "--no-log")) == 1
    text = capsys.readouterr().out
    assert "convicted" in text and "refused" in text and "no answer" in text
    assert "element None" not in text  # a device that never answered was not pinned down
    for argv in (
        _cli(side, side.lying, "--device", "ftp://x"),
        _cli(side, side.lying, "--device", "http://[::1"),  # the challenger's typo: no game
        _cli(side, side.lying, "--device", "http://"),
        _cli(side, side.lying, "--device", side.node.url, "--device-home", str(side.home)),
    ):
        assert run(argv) == 2, argv
    err = capsys.readouterr().err
    assert "Traceback" not in err and "--device-home" in err


def test_cli_help_teaches() -> None:
    from typer.testing import CliRunner

    from edgetrust.cli._app import app

    def help_text(*argv: str) -> str:
        out = CliRunner().invoke(app, [*argv, "--help"]).output
        return " ".join(out.replace("│", " ").split())  # undo Rich's wrapping

    text = help_text("challenge")
    assert "--device" in text and "node serve --traces" in text
    text = help_text("node", "serve")
    assert "--traces" in text and "--trace-window" in text and "quantized inputs" in text
