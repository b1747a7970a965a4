"""A directory of captures as a dataset: the card cites the capture roots as provenance."""

from __future__ import annotations

from pathlib import Path

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
