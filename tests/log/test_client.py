"""LogClient: tiles paths, proofs computed from tiles, fork and rollback detection, state."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgetrust.errors import Error, InvalidInputError, NotFoundError, VerificationError
from edgetrust.identity import Identity
from edgetrust.log.checkpoint import NoteSigner, verify_checkpoint, verify_cosignatures
from edgetrust.log.client import (
    ForkError,
    LogClient,
    encode_tile_index,
    monitor,
    parse_bundle,
    parse_tile_path,
    tile_path,
)
from edgetrust.log.service import Log
from edgetrust.node.app import create_app
from edgetrust.node.settings import NodeSettings
from edgetrust.node.witness import Witness, create_witness_app
from tests.node.conftest import card_envelope, fork_logs


@pytest.fixture
def publisher() -> Identity:
    return Identity.from_seed(b"\x07" * 32, "publisher")


@pytest.fixture
def log(tmp_path: Path) -> Iterator[Log]:
    the_log = Log.open(tmp_path / "log", max_delay=0.002)
    yield the_log
    the_log.close()


def serve(log: Log) -> TestClient:
    return TestClient(create_app(log, settings=NodeSettings(rate=0)), base_url="http://log")


# --- tile paths -----------------------------------------------------------------------------


def test_tile_index_encoding_examples() -> None:
    # The examples of C2SP tlog-tiles §"Merkle Tree".
    assert encode_tile_index(1234067) == "x001/x234/067"
    assert encode_tile_index(0) == "000"
    assert encode_tile_index(1000) == "x001/000"
    assert tile_path(0, 1234067) == "tile/0/x001/x234/067"
    assert tile_path("entries", 3, 17) == "tile/entries/003.p/17"
    assert parse_tile_path("0/x001/x234/067") == (0, 1234067, 256)
    assert parse_tile_path("entries/003.p/17") == (None, 3, 17)


@given(
    st.one_of(st.just("entries"), st.integers(0, 63)),
    st.integers(0, 2**56),
    st.integers(1, 256),
)
def test_tile_path_round_trip(level: int | str, index: int, width: int) -> None:
    path = tile_path(level, index, width)
    assert parse_tile_path(path.removeprefix("tile/")) == (
        None if level == "entries" else level,
        index,
        width,
    )


@pytest.mark.parametrize(
    "path",
    [
        "0/1",
        "0/0001",
        "00/000",
        "0/x000/001",
        "0/000.p/0",
        "0/000.p/256",
        "0/000.p/007",
        "64/000",
        "-1/000",
        "entries",
        "",
        "0/",
        "0/x001",
        "0/abc",
        "0/x001/x002",
        "0/000.p/",
        "0/0٠٠",
        "0/000/000",
        "0/x999/x999/x999/x999/x999/x999/x999/999",
    ],
)
def test_bad_tile_paths(path: str) -> None:
    with pytest.raises(InvalidInputError):
        parse_tile_path(path)


def test_parse_bundle_rejects_truncation() -> None:
    assert parse_bundle(b"\x00\x01a\x00\x00", 2) == [b"a", b""]
    for bad, n in ((b"\x00", 1), (b"\x00\x05ab", 1), (b"\x00\x01a", 2), (b"\x00\x01ab", 1)):
        with pytest.raises(InvalidInputError):
            parse_bundle(bad, n)


# --- proofs from tiles ----------------------------------------------------------------------


def test_proofs_from_tiles_equal_the_stores(log: Log, publisher: Identity) -> None:
    log.append_many([card_envelope(publisher, i) for i in range(600)])
    with serve(log) as http, LogClient("http://log", log.verifier_key, http=http) as client:
        cp = client.update()
        assert cp.size == 600
        for index in (0, 1, 255, 256, 257, 511, 512, 599):
            assert client.inclusion_proof(index, 600) == log.inclusion_proof(index, 600)
        for old in (1, 2, 7, 255, 256, 300, 512, 599):
            assert client.consistency_proof(old, 600) == log.consistency_proof(old, 600)
        got = client.get_entry(300)
        assert got.data == log.entry(300)
        entries = list(client.entries(250, 520))
        assert [i for i, _ in entries] == list(range(250, 520))
        assert all(data == log.entry(i) for i, data in entries[::37])
        with pytest.raises(NotFoundError):
            client.get_entry(600)
        with pytest.raises(InvalidInputError):
            client.get_entry(-1)


def test_client_follows_growth_and_persists_state(
    tmp_path: Path, log: Log, publisher: Identity
) -> None:
    state = tmp_path / "state.json"
    with serve(log) as http:
        log.append_many([card_envelope(publisher, i) for i in range(5)])
        with LogClient("http://log", log.verifier_key, state_path=state, http=http) as c:
            assert c.update().size == 5
        log.append_many([card_envelope(publisher, i) for i in range(5, 40)])
        with LogClient("http://log", log.verifier_key, state_path=state, http=http) as c:
            assert c.trusted is not None and c.trusted.size == 5
            sizes = [cp.size for cp in monitor(c, interval=0, rounds=2)]
            assert sizes == [40]
        assert (
            verify_checkpoint(
                json.loads(state.read_text())["checkpoint"].encode(), log.verifier_key
            ).size
            == 40
        )


def test_state_for_another_key_or_corrupt_is_refused(tmp_path: Path, log: Log) -> None:
    state = tmp_path / "state.json"
    state.write_text(json.dumps({"vkey": "someone+00000000+AQ==", "checkpoint": "x"}))
    with pytest.raises(InvalidInputError):
        LogClient("http://log", log.verifier_key, state_path=state)
    state.write_text("{not json")
    with pytest.raises(InvalidInputError):
        LogClient("http://log", log.verifier_key, state_path=state)
    with pytest.raises(InvalidInputError):
        LogClient("ftp://log", log.verifier_key)


def test_fork_is_detected_across_runs_with_evidence(tmp_path: Path, publisher: Identity) -> None:
    log_a, log_b = fork_logs(tmp_path, publisher)
    state = tmp_path / "state.json"
    try:
        with serve(log_a) as http_a, serve(log_b) as http_b:
            with LogClient("http://log", log_a.verifier_key, state_path=state, http=http_a) as c:
                c.update()
            with LogClient("http://log", log_a.verifier_key, state_path=state, http=http_b) as c:
                with pytest.raises(ForkError) as info:
                    c.update()
            assert info.value.trusted == log_a.checkpoint()
            assert info.value.presented == log_b.checkpoint()
            assert "two different roots" in info.value.message
            # The trusted checkpoint was not replaced by the forked one.
            assert json.loads(state.read_text())["checkpoint"].encode() == log_a.checkpoint()
            # A fork that also grew: the consistency proof from tiles cannot match.
            log_b.append(card_envelope(publisher, 200))
            with LogClient("http://log", log_a.verifier_key, state_path=state, http=http_b) as c:
                with pytest.raises(ForkError, match="not consistent"):
                    c.update()
    finally:
        log_a.close()
        log_b.close()


def test_rollback_and_bad_signature(log: Log, publisher: Identity) -> None:
    log.append_many([card_envelope(publisher, i) for i in range(3)])
    old_note = log.checkpoint()
    log.append(card_envelope(publisher, 3))
    with serve(log) as http, LogClient("http://log", log.verifier_key, http=http) as c:
        c.update()
        with pytest.raises(ForkError, match="rollback"):
            c.accept(verify_checkpoint(old_note, log.verifier_key), old_note)
        impostor = NoteSigner(log.verifier_key.split("+")[0], Identity.generate()).vkey
        with pytest.raises(VerificationError):
            LogClient("http://log", impostor, http=http).update()


def test_tampered_tiles_and_bundles_are_caught(log: Log, publisher: Identity) -> None:
    log.append_many([card_envelope(publisher, i) for i in range(20)])
    with serve(log) as real:

        def evil(request: httpx.Request) -> httpx.Response:
            resp = real.get(request.url.path)
            content = resp.content
            if request.url.path.startswith("/tile/0/"):
                content = bytes([content[0] ^ 1]) + content[1:]
            if request.url.path.startswith("/tile/entries/"):
                content = content[:5] + bytes([content[5] ^ 1]) + content[6:]
            return httpx.Response(resp.status_code, content=content)

        http = httpx.Client(transport=httpx.MockTransport(evil), base_url="http://log")
        with LogClient("http://log", log.verifier_key, http=http) as c:
            c.update()
            with pytest.raises(VerificationError):
                c.get_entry(3)
            with pytest.raises(VerificationError):
                list(c.entries(0, 20))

        def short(request: httpx.Request) -> httpx.Response:
            resp = real.get(request.url.path)
            cut = request.url.path.startswith("/tile/")
            return httpx.Response(
                resp.status_code, content=resp.content[:-1] if cut else resp.content
            )

        http = httpx.Client(transport=httpx.MockTransport(short), base_url="http://log")
        with LogClient("http://log", log.verifier_key, http=http) as c:
            c.update()
            with pytest.raises(VerificationError):
                c.get_entry(3)

        def truncated_note(request: httpx.Request) -> httpx.Response:
            return httpx.Response(200, content=real.get(request.url.path).content[:-1])

        http = httpx.Client(transport=httpx.MockTransport(truncated_note), base_url="http://log")
        with LogClient("http://log", log.verifier_key, http=http) as c:
            with pytest.raises(InvalidInputError):
                c.update()


def test_submit_and_witness(tmp_path: Path, log: Log, publisher: Identity) -> None:
    w = Witness(
        tmp_path / "w", identity=Identity.generate(), name="w.test", log_keys=[log.verifier_key]
    )
    with serve(log) as http, TestClient(create_witness_app(w), base_url="http://w") as whttp:
        with LogClient("http://log", log.verifier_key, http=http) as c:
            sub = c.submit(card_envelope(publisher, 0))
            assert sub.index == 0 and sub.checkpoint.size == 1
            subs = c.submit_many([card_envelope(publisher, i) for i in range(1, 6)])
            assert [s.index for s in subs] == [1, 2, 3, 4, 5]
            cosigned = c.witness("http://w", http=whttp)
            verify_cosignatures(cosigned, [w.vkey], 1)
            c.submit(card_envelope(publisher, 9))
            # The witness is at 6 now; the client learns that from a 409 and proves 6 -> 7.
            cosigned = c.witness("http://w", http=whttp)
            verify_cosignatures(cosigned, [w.vkey], 1)
            assert w.latest(w.origins[0])[0] == 7  # type: ignore[index]
            with pytest.raises(InvalidInputError):
                c.submit(b'{"payload": "e30="}')


@given(
    size=st.integers(1, 70_000),
    root=st.binary(min_size=32, max_size=32),
    tile=st.binary(max_size=600),
    status=st.sampled_from([200, 200, 200, 404, 500, 302]),
    index=st.integers(0, 70_000),
)
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
def test_a_hostile_log_only_ever_causes_typed_errors(
    size: int, root: bytes, tile: bytes, status: int, index: int
) -> None:
    """A log that signs what it likes and serves garbage tiles and bundles."""
    from edgetrust.log.checkpoint import Checkpoint, sign_checkpoint

    signer = NoteSigner("hostile.example/log", Identity.from_seed(b"\x03" * 32))
    note = sign_checkpoint(Checkpoint("hostile.example/log", size, root), signer)

    def hostile(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/checkpoint":
            return httpx.Response(200, content=note)
        return httpx.Response(status, content=tile)

    http = httpx.Client(transport=httpx.MockTransport(hostile), base_url="http://log")
    with LogClient("http://log", signer.vkey, http=http) as c:
        assert c.update().size == size
        for call in (
            lambda: c.get_entry(index),
            lambda: list(c.entries(max(0, index - 3), min(size, index + 3))),
            lambda: c.consistency_proof(max(1, size // 3), size),
        ):
            try:
                call()
            except Error:
                pass


def test_the_witness_parser_only_raises_typed_errors() -> None:
    from edgetrust.node.witness import parse_add_checkpoint

    @given(st.binary(max_size=400) | st.text(max_size=200).map(lambda t: ("old " + t).encode()))
    @settings(max_examples=200, deadline=None)
    def check(raw: bytes) -> None:
        try:
            parse_add_checkpoint(raw)
        except InvalidInputError:
            pass

    check()
