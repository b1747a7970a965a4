"""`node serve --publish DIR`: a static copy of the log that grows with it, read over http.server."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest

from edgetrust.cli import run
from edgetrust.errors import InvalidInputError
from edgetrust.identity import Identity
from edgetrust.log.checkpoint import verify_checkpoint
from edgetrust.log.client import LogClient
from edgetrust.log.publish import TilePublisher
from edgetrust.log.service import Log

from ..node.conftest import card_envelope, start_server


def _published_size(directory: Path, vkey: str) -> int:
    path = directory / "checkpoint"
    return verify_checkpoint(path.read_bytes(), vkey).size if path.exists() else -1


def _wait_for(directory: Path, vkey: str, size: int) -> None:
    deadline = time.monotonic() + 30
    while _published_size(directory, vkey) < size:
        assert time.monotonic() < deadline, f"DIR never reached size {size}"
        time.sleep(0.05)


def test_served_node_publishes_as_it_grows(
    tmp_path: Path, serve_dir: object, capsys: pytest.CaptureFixture[str]
) -> None:
    home, www = tmp_path / "home", tmp_path / "www"
    with Log.open(home) as log:
        vkey = log.verifier_key
    node = start_server(
        ["node", "serve", "--rate", "0", "--publish", str(www), "--publish-interval", "0.1"], home
    )
    publisher = Identity.from_seed(b"\x05" * 32, "publisher")
    try:
        assert _published_size(www, vkey) == 0  # the empty log, published at startup
        url = serve_dir(www)  # type: ignore[operator]
        client = LogClient(url, vkey, state_path=tmp_path / "client.json")
        state = tmp_path / "monitor.json"
        monitor = ["log", "monitor", url, "--key", vkey, "--state", str(state), "--once"]
        sent: list[bytes] = []
        for round_ in range(3):
            envelopes = [card_envelope(publisher, 1000 * round_ + i) for i in range(120)]
            r = httpx.post(node.url + "/v1/entries:batch", content=_batch(envelopes), timeout=30)
            assert r.status_code == 200, r.text
            sent += envelopes
            _wait_for(www, vkey, len(sent))
            # The client follows the static copy, each checkpoint consistent with the last.
            assert client.update().size == len(sent)
            logged = [data for _, data in client.entries(0, len(sent))]
            assert len(logged) == len(sent)
            # The monitor, with --entries, proves every new entry bundle into the root.
            assert run([*monitor, "--entries", "--json"]) == 0
            report = json.loads(capsys.readouterr().out)
            assert report["size"] == len(sent) and report["entries_verified"] == 120
        # The node's own tiles API and the static copy serve the same bytes.
        for rel in ("tile/0/001.p/104", "tile/entries/001.p/104", "tile/1/000.p/1"):
            assert (www / rel).read_bytes() == httpx.get(f"{node.url}/{rel}").content
    finally:
        node.stop()


def _batch(envelopes: list[bytes]) -> bytes:
    return json.dumps({"entries": [json.loads(e) for e in envelopes]}).encode()


def test_the_publisher_catches_up_after_a_failure(tmp_path: Path) -> None:
    with Log.open(tmp_path / "home", max_delay=0) as log:
        www = tmp_path / "www"
        pub = TilePublisher(log, www, interval=0.05)
        try:
            log.append_many([b"entry %d" % i for i in range(300)])
            pub.notify()
            _wait_for(www, log.verifier_key, 300)
            # A file in the way of a new tile: publication fails, is counted, and the
            # directory keeps its last good checkpoint.
            (www / "tile" / "entries" / "001.p").rename(www / "moved")
            (www / "tile" / "entries" / "001.p").write_text("in the way")
            log.append_many([b"entry %d" % i for i in range(300, 320)])
            pub.notify()
            deadline = time.monotonic() + 10
            while pub.failures == 0:
                assert time.monotonic() < deadline
                time.sleep(0.02)
            assert _published_size(www, log.verifier_key) == 300
            (www / "tile" / "entries" / "001.p").unlink()
            (www / "moved").rename(www / "tile" / "entries" / "001.p")
            _wait_for(www, log.verifier_key, 320)
        finally:
            pub.close()
        pub.close()  # idempotent


@pytest.mark.parametrize("interval", [0, -1, float("nan"), 10_000])
def test_bad_intervals_are_refused(tmp_path: Path, interval: float) -> None:
    code = run(
        [
            "node",
            "serve",
            "--home",
            str(tmp_path),
            "--publish",
            str(tmp_path / "www"),
            "--publish-interval",
            str(interval),
        ]
    )
    assert code == 2


def _one_line(code: int, err: str) -> None:
    assert code == 2, err
    assert err.strip() and err.strip().count("\n") == 0 and "Traceback" not in err, err


def test_unusable_publish_dirs_are_one_line_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "home"
    with Log.open(home, max_delay=0) as log:
        log.append(b"x")
    a_file = tmp_path / "file"
    a_file.write_text("x")
    for target in (a_file, a_file / "sub", Path("/proc/edgetrust-not-writable")):
        for argv in (
            ["node", "serve", "--home", str(home), "--port", "0", "--publish", str(target)],
            ["log", "publish", str(target), "--home", str(home)],
        ):
            code = run(argv)
            _one_line(code, capsys.readouterr().err)
    assert a_file.read_text() == "x"
    with Log.open(home) as log:
        assert log.size() == 1


def test_create_app_publishes_and_stops_with_the_app(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from edgetrust.node.app import create_app
    from edgetrust.node.settings import NodeSettings

    www = tmp_path / "www"
    settings = NodeSettings(home=tmp_path / "home", publish=www, publish_interval=0.05)
    with TestClient(create_app(settings=settings)) as http:
        assert http.get("/checkpoint").status_code == 200
        assert (www / "checkpoint").read_bytes() == http.get("/checkpoint").content
    # A directory the app cannot use: startup fails, the log it opened is closed again.
    bad = tmp_path / "file"
    bad.write_text("x")
    with (
        pytest.raises(InvalidInputError),
        TestClient(create_app(settings=NodeSettings(home=tmp_path / "home", publish=bad))),
    ):
        pass
    with Log.open(tmp_path / "home") as log:  # not left locked or half-open
        assert log.size() == 0
