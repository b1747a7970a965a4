"""A directory of captures as a dataset: the card cites the capture roots as provenance."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgetrust.capture.dataset import describe_captures, verify_capture_provenance
from edgetrust.capture.edf import manifest_path
from edgetrust.capture.errors import CaptureError
from edgetrust.capture.record import log_capture, record, save_recording
from edgetrust.capture.sources import eeg_like, numpy_sensor
from edgetrust.capture.stream import CaptureDevice
from edgetrust.data.dataset import read_dataset_card
from edgetrust.errors import NotFoundError
from edgetrust.identity import Identity
from edgetrust.log.service import Log


def test_card_cites_logged_captures(tmp_path: Path) -> None:
    dev = CaptureDevice(Identity.generate(), numpy_sensor(4))
    owner = Identity.generate()
    d = tmp_path / "eeg"
    d.mkdir()
    log = Log.open(tmp_path / "home")
    try:
        roots = []
        for i in range(3):
            s = record(dev, [eeg_like(2.0 + i, 4, seed=i)], seal_every=2)
            save_recording(s, d / f"s{i}.bdf")
            log_capture(log, s.statement)  # type: ignore[arg-type]
            roots.append("sha256:" + s.root.hex())
        card, table = describe_captures(d, name="eeg", owner=owner.did, licence="CC-BY-4.0")
        assert list(card.provenance) == roots
        assert card.count == 250 * (2 + 3 + 4) and table["x"].shape == (card.count, 4)
        assert read_dataset_card(card.sign(owner)).provenance == card.provenance
        verify_capture_provenance(card, log)
        # a capture that was never logged is refused
        s = record(dev, [eeg_like(1.0, 4, seed=9)])
        save_recording(s, d / "s9.bdf")
        card2, _ = describe_captures(d, name="eeg", owner=owner.did)
        with pytest.raises(CaptureError, match="not in the log"):
            verify_capture_provenance(card2, log)
    finally:
        log.close()


def test_tampered_capture_is_not_a_dataset(tmp_path: Path) -> None:
    dev = CaptureDevice(Identity.generate(), numpy_sensor(4))
    s = record(dev, [eeg_like(2.0, 4)])
    save_recording(s, tmp_path / "a.bdf")
    manifest_path(tmp_path / "a.bdf").write_bytes(b"{}")
    with pytest.raises(Exception, match="manifest"):
        describe_captures(tmp_path, name="x", owner=Identity.generate().did)
    with pytest.raises(NotFoundError):
        describe_captures(tmp_path / "a.bdf.capture.json", name="x", owner="did:key:z")


def test_data_add_takes_a_directory_of_captures(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`edgetrust data add DIR`: the stored dataset is the signed frames, its card cites them."""
    import json

    from edgetrust.cli import run
    from edgetrust.data.store import DataStore
    from edgetrust.identity import Keystore

    home = tmp_path / "home"
    Keystore(str(home)).create("default")
    dev = CaptureDevice(Identity.generate(), numpy_sensor(4))
    d = tmp_path / "eeg"
    d.mkdir()
    roots = []
    for i in range(2):
        s = record(dev, [eeg_like(1.0 + i, 4, seed=i)], seal_every=2)
        save_recording(s, d / f"s{i}.bdf")
        roots.append("sha256:" + s.root.hex())
    assert run(["data", "add", str(d), "--home", str(home), "--json"]) == 0
    card = json.loads(capsys.readouterr().out)
    assert card["name"] == "eeg" and card["provenance"] == roots and card["count"] == 750
    assert [c["root"] for c in card["extra"]["captures"]] == roots
    store = DataStore(home)
    table = store.table(card["digest"])  # stored, re-read and re-digested
    assert table["x"].shape == (750, 4) and list(np.unique(table["capture"])) == [0, 1]
    # provenance comes from the captures, never from the command line
    code = run(["data", "add", str(d), "--provenance", "sha256:" + "0" * 64, "--home", str(home)])
    assert code == 2 and "provenance" in capsys.readouterr().err
    # an altered capture is refused: one line, exit 2, nothing stored
    raw = bytearray((d / "s1.bdf").read_bytes())
    raw[-3] ^= 0xFF
    (d / "s1.bdf").write_bytes(bytes(raw))
    code = run(["data", "add", str(d), "--name", "eeg2", "--home", str(home)])
    err = capsys.readouterr().err
    assert code in (1, 2) and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert [c.name for c in store.cards()] == ["eeg"]
