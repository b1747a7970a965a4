"""`log publish`: static tlog-tiles that the log client verifies over `python -m http.server`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgetrust.cli import run
from edgetrust.errors import VerificationError
from edgetrust.log.client import LogClient
from edgetrust.log.service import Log


def entry(i: int) -> bytes:
    return b'{"entry":%d,"pad":"%s"}' % (i, b"x" * (i % 40))


def _publish(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict, str]:  # type: ignore[type-arg]
    code = run(["log", "publish", *args, "--json"])
    captured = capsys.readouterr()
    data = json.loads(captured.out) if captured.out.strip() else {}
    return code, data, captured.err


def test_published_tiles_verify_with_the_client(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], serve_dir: object
) -> None:
    home, out = tmp_path / "home", tmp_path / "www"
    with Log.open(home, max_delay=0) as log:
        log.append_many([entry(i) for i in range(600)])
        vkey = log.verifier_key
    code, data, _ = _publish(capsys, str(out), "--home", str(home))
    assert code == 0
    assert data["size"] == 600 and data["previous_size"] == 0
    assert data["bundles"] == 3 and data["tiles"] == 3 + 1  # level 0: 2 full + 1 partial; 1
    assert (out / "tile/entries/002.p/88").is_file()
    assert (out / "tile/1/000.p/2").is_file()
    url = serve_dir(out)  # type: ignore[operator]
    client = LogClient(url, vkey, state_path=tmp_path / "state.json")
    assert [d for _, d in client.entries(0, 600)] == [entry(i) for i in range(600)]
    assert client.get_entry(599).data == entry(599)

    # Incremental: the partial tiles grow, full ones are not rewritten; the client checks the
    # new checkpoint's consistency with the one it trusted.
    full_tile = out / "tile/0/000"
    mtime = full_tile.stat().st_mtime_ns
    with Log.open(home, max_delay=0) as log:
        log.append_many([entry(i) for i in range(600, 1000)])
    code, data, _ = _publish(capsys, str(out), "--home", str(home))
    assert code == 0 and data["previous_size"] == 600 and data["size"] == 1000
    assert data["bundles"] == 2  # bundle 2 grew to full, bundle 3 is new
    assert full_tile.stat().st_mtime_ns == mtime
    assert client.update().size == 1000
    assert [d for _, d in client.entries(590, 1000)] == [entry(i) for i in range(590, 1000)]
    # Publishing again with nothing new rewrites only the partial tiles.
    code, data, _ = _publish(capsys, str(out), "--home", str(home))
    assert code == 0 and data["previous_size"] == 1000

    # Tampering with a published file is caught by a fresh client.
    bundle = out / "tile/entries/001"
    raw = bytearray(bundle.read_bytes())
    raw[10] ^= 1
    bundle.write_bytes(bytes(raw))
    with pytest.raises(VerificationError):
        list(LogClient(url, vkey).entries(256, 300))


def test_postgres_and_sqlite_publish_the_same_tiles(
    tmp_path: Path, pg_url: str, capsys: pytest.CaptureFixture[str], serve_dir: object
) -> None:
    entries = [entry(i) for i in range(300)]
    for name, store in (("sq", None), ("pg", pg_url)):
        with Log.open(tmp_path / name, max_delay=0, store=store) as log:
            log.append_many(entries)
        args = [str(tmp_path / f"www-{name}"), "--home", str(tmp_path / name)]
        if store:
            args += ["--store", store]
        assert _publish(capsys, *args)[0] == 0
    for rel in ("tile/0/000", "tile/0/001.p/44", "tile/1/000.p/1", "tile/entries/001.p/44"):
        assert (tmp_path / "www-pg" / rel).read_bytes() == (tmp_path / "www-sq" / rel).read_bytes()
    with Log.open(tmp_path / "pg", store=pg_url) as log:
        vkey = log.verifier_key
    url = serve_dir(tmp_path / "www-pg")  # type: ignore[operator]
    assert [d for _, d in LogClient(url, vkey).entries(0, 300)] == entries


def _one_line_error(code: int, err: str) -> None:
    assert code == 2
    assert err.strip().count("\n") == 0 and "Traceback" not in err, err


def test_bad_directories_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = tmp_path / "home"
    with Log.open(home, max_delay=0) as log:
        log.append_many([entry(i) for i in range(10)])
    a_file = tmp_path / "file"
    a_file.write_text("x")
    code, _, err = _publish(capsys, str(a_file), "--home", str(home))
    _one_line_error(code, err)
    # A directory holding another log's checkpoint, garbage, or an oversized checkpoint.
    other = tmp_path / "other-home"
    with Log.open(other, max_delay=0) as log:
        log.append(b"other")
    foreign = tmp_path / "foreign"
    assert _publish(capsys, str(foreign), "--home", str(other))[0] == 0
    for content in (None, b"garbage\n", b"x" * 100_000, b"\xff\xfe\x00"):
        if content is not None:
            (foreign / "checkpoint").write_bytes(content)
        before = {p: p.read_bytes() for p in foreign.rglob("*") if p.is_file()}
        code, _, err = _publish(capsys, str(foreign), "--home", str(home))
        _one_line_error(code, err)
        assert {p: p.read_bytes() for p in foreign.rglob("*") if p.is_file()} == before


def test_a_checkpoint_the_log_outgrew_the_other_way_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The directory's checkpoint is this log's but bigger than a (restored, older) store.
    home = tmp_path / "home"
    with Log.open(home, max_delay=0) as log:
        log.append_many([entry(i) for i in range(10)])
    out = tmp_path / "www"
    assert _publish(capsys, str(out), "--home", str(home))[0] == 0
    sqlite_copy = tmp_path / "small.db"
    with Log.open(home, store=str(sqlite_copy)) as small:  # same key, a smaller tree
        small.append_many([entry(i) for i in range(5)])
    code, _, err = _publish(capsys, str(out), "--home", str(home), "--store", str(sqlite_copy))
    _one_line_error(code, err)


@pytest.mark.parametrize(
    "store",
    [
        "mysql://root@localhost/log",
        "postgresql://h:99999/db",
        "postgresql://u@/db?no_such_option=1",
        "postgresql://nobody@/db?host=/nonexistent-socket-dir&connect_timeout=1",
        "",
    ],
)
def test_bad_store_urls_are_one_line_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], store: str
) -> None:
    code, _, err = _publish(
        capsys, str(tmp_path / "www"), "--home", str(tmp_path), "--store", store
    )
    _one_line_error(code, err)
    code = run(["node", "serve", "--home", str(tmp_path), "--store", store, "--port", "0"])
    _one_line_error(code, capsys.readouterr().err)
