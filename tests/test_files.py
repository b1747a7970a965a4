"""Size-limited reads of user-named files."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgetrust.errors import NotFoundError, ResourceLimitError
from edgetrust.files import checked_size, read_limited


def test_reads_a_file_within_the_limit(tmp_path: Path) -> None:
    f = tmp_path / "a.bin"
    f.write_bytes(b"12345")
    assert checked_size(f, "thing", max_bytes=5) == 5
    assert read_limited(f, "thing", max_bytes=5) == b"12345"


def test_refuses_a_file_over_the_limit_naming_it(tmp_path: Path) -> None:
    f = tmp_path / "big.bin"
    f.write_bytes(b"123456")
    with pytest.raises(ResourceLimitError, match=r"model file .*big\.bin is 6 bytes") as info:
        read_limited(f, "model file", max_bytes=5)
    assert info.value.limit == 5


def test_a_missing_file_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="cannot read recording"):
        checked_size(tmp_path / "nope.edf", "recording", max_bytes=10)
