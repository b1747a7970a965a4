"""The explorer index, the proof-path drawing and `Verifier.report` on their own."""

from __future__ import annotations

import hashlib
import sqlite3
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgetrust.errors import InvalidInputError
from edgetrust.identity import Identity
from edgetrust.log.merkle import inclusion_proof, leaf_hash
from edgetrust.log.service import Log
from edgetrust.node.web.charts import bar_chart, line_chart, proof_path
from edgetrust.node.web.describe import mentioned_dids
from edgetrust.node.web.index import ExplorerIndex, parse_digest_query
from edgetrust.receipts import parse_bundle
from edgetrust.verify.verifier import STEPS, Verifier
from tests.node.conftest import card_envelope
from tests.web.world import World


def test_index_kinds_dids_digests(tmp_path: Path, log: Log, publisher: Identity) -> None:
    entries = [card_envelope(publisher, i) for i in range(30)] + [b"not an envelope"]
    log.append_many(entries)
    index = ExplorerIndex(tmp_path / "x.db")
    assert index.catch_up(log.entries, log.size(), chunk=7) == 31
    assert index.catch_up(log.entries, log.size()) == 31  # nothing more to do
    cards = index.by_kind("model card", before=31, limit=100)
    assert [r.index for r in cards] == list(range(29, -1, -1))
    assert [r.index for r in index.by_kind("model card", before=10, limit=3)] == [9, 8, 7]
    assert [r.index for r in index.by_kind("unparseable", before=31, limit=5)] == [30]
    assert len(index.by_did(publisher.did, before=31, limit=100)) == 30
    subject = "sha256:" + hashlib.sha256(b"m-4").hexdigest()
    assert [r.index for r in index.by_digest(subject, before=31, limit=5)] == [4]
    own = hashlib.sha256(entries[12]).hexdigest().upper()
    assert [r.index for r in index.by_digest(own, before=31, limit=5)] == [12]
    with pytest.raises(InvalidInputError):
        index.by_digest("sha256:zz", before=31, limit=5)
    index.close()


def test_index_rebuilds_an_old_schema_and_follows(
    tmp_path: Path, log: Log, publisher: Identity
) -> None:
    path = tmp_path / "old.db"
    old = sqlite3.connect(path)
    old.execute("CREATE TABLE entries (idx INTEGER PRIMARY KEY, junk TEXT)")
    old.execute("INSERT INTO entries VALUES (999, 'x')")
    old.commit()
    old.close()
    index = ExplorerIndex(path)
    assert index.indexed() == 0
    log.append_many([card_envelope(publisher, i) for i in range(5)])
    index.follow(log.entries, log.size)
    deadline = time.monotonic() + 10
    while index.indexed() < 5 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert index.indexed() == 5
    index.close()


def test_mentioned_dids_and_digest_queries() -> None:
    pred = {"a": "did:key:z1", "b": [{"c": "did:key:z2"}, "did:key:z1"], "d": "x" + "did:"}
    assert mentioned_dids(pred) == ("did:key:z1", "did:key:z2")
    assert len(mentioned_dids({"p": [f"did:key:{i}" for i in range(500)]})) == 64
    assert parse_digest_query("sha256:" + "A" * 64) == "a" * 64
    assert parse_digest_query("sha256:" + "a" * 63) is None


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 300), st.data())
def test_proof_path_reaches_the_root(size: int, data: st.DataObject) -> None:
    index = data.draw(st.integers(0, size - 1))
    leaves = [f"e{i}".encode() for i in range(size)]
    hashes = [leaf_hash(x) for x in leaves]
    from edgetrust.log.merkle import root_from_leaves

    levels = proof_path(leaves[index], index, size, inclusion_proof(index, hashes))
    assert levels[0].path_range == (index, index + 1)
    assert levels[-1].path_range == (0, size) and levels[-1].sibling_range is None
    assert levels[-1].path_hash == root_from_leaves(hashes).hex()


def test_charts_layout() -> None:
    chart = line_chart("t", "x", [("a", [(1, 0.5), (2, 0.7)], "s1")], y2=("e", [(1, 1.0)], "s2"))
    assert len(chart.series) == 2 and chart.series[0].points.count(",") == 2
    assert line_chart("t", "x", [("a", [], "s1")]).series[0].points == ""
    bars = bar_chart([("a", 2, "2"), ("b", 1, "1")], width=100)
    assert [b.width for b in bars] == [100, 50]
    assert bar_chart([("a", 0, "0")])[0].width == 0


def test_report_matches_verify(world: World) -> None:
    with Log.open(world.home) as log:
        verifier = Verifier(log_keys=[log.verifier_key])
    bundle = parse_bundle(world.bundle.read_bytes())
    report = verifier.report(bundle)
    verified = verifier.verify(bundle)
    assert report.ok and report.receipt is not None
    assert [s.step for s in report.steps] == list(STEPS)
    assert {s.step for s in report.steps if s.status == "pass"} == set(verified.checked)
    assert len([s for s in report.steps if s.status == "skip"]) == len(verified.skipped)
    with Log.open(world.home.parent / "other") as other_log:
        other = Verifier(log_keys=[other_log.verifier_key])
    failed = other.report(bundle)
    assert not failed.ok and failed.steps[5].status == "fail"
    assert [s.status for s in failed.steps[6:]] == ["not run", "not run"]
    assert failed.steps[0].status == "pass" and failed.steps[3].status == "skip"


def test_note_lines_check_log_and_witness_signatures(log: Log, publisher: Identity) -> None:
    from edgetrust.log.checkpoint import NoteSigner, cosign_checkpoint
    from edgetrust.node.web.log_pages import note_lines

    log.append(card_envelope(publisher, 1))
    witness = NoteSigner("witness.test", Identity.generate("w"))
    note = cosign_checkpoint(log.checkpoint(), witness, 1_700_000_000)
    lines = note_lines(note, log.verifier_key, (witness.cosignature_vkey,))
    assert [(x.role, x.status) for x in lines] == [("log", "pass"), ("witness", "pass")]
    assert "1700000000" in lines[1].detail
    unknown = note_lines(note, log.verifier_key)
    assert unknown[1].status == "skip" and "no key" in unknown[1].detail
    forged = note.replace(b"\n\n", b"\nextra\n\n", 1)
    assert [
        x.status for x in note_lines(forged, log.verifier_key, (witness.cosignature_vkey,))
    ] == [
        "fail",
        "fail",
    ]
    other = NoteSigner("witness.test", Identity.generate("w2"))
    spoof = cosign_checkpoint(log.checkpoint(), other, 1)
    assert note_lines(spoof, log.verifier_key, (witness.cosignature_vkey,))[1].status == "skip"
