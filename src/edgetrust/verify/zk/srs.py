"""The structured reference string (SRS) of EZKL's KZG commitments: where it comes from, and trust.

A KZG SRS is the list of powers ``[τ^i]G`` of a secret τ. Whoever knows τ can forge proofs for
any circuit, so the SRS must come from a ceremony in which τ was never known to anyone: the
Perpetual Powers of Tau (PPoT) ceremony for BN254. EZKL publishes that SRS, converted to halo2's
format for each circuit size ``2^logrows`` (https://kzg.ezkl.xyz/kzg<logrows>.srs, converted by
han0110/halo2-kzg-srs), and pins the sha256 of each file in its source (``src/srs_sha.rs``,
``PUBLIC_SRS_SHA256_HASHES``). `PPOT_SRS_SHA256` below is that table; the test suite checks that
every entry is also embedded in the installed ezkl binary, so the two cannot drift apart.

edgetrust never downloads an SRS. `ezkl.get_srs` would (from kzg.ezkl.xyz) and is never called:
every ezkl call that needs an SRS is given an explicit file. There are two ways to get one:

* `PpotSrs(path)`: a PPoT file the user fetched out of band, checked here against the table.
* `UnsafeLocalSrs()`: ``ezkl.gen_srs`` on this machine. Its τ came from this machine's RNG and
  was not provably destroyed, so proofs made with it are worthless to anyone who does not trust
  this machine. They are marked ``unsafe_test_srs`` and verification rejects them unless told
  otherwise. Meant for the embedded demo and for tests.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Literal

from edgetrust.encoding import DIGEST_PREFIX, digest_hex
from edgetrust.errors import InvalidInputError, NotFoundError

__all__ = [
    "MAX_LOGROWS",
    "PPOT_SRS_SHA256",
    "PpotSrs",
    "SrsChoice",
    "SrsKind",
    "UnsafeLocalSrs",
    "check_ppot_srs",
    "digest_file",
    "srs_kind",
]

SrsKind = Literal["ppot", "unsafe_test_srs"]
"""``ppot``: a published Perpetual Powers of Tau SRS. ``unsafe_test_srs``: anything else."""

PPOT_SRS_SHA256: Mapping[int, str] = MappingProxyType(
    {
        1: "cafb2aa72c200ddc4e28aacabb8066e829207e2484b8d17059a566232f8a297b",
        2: "8194ec51da5d332d2e17283ade34920644774452c2fadf33742e8c739e275d8e",
        3: "0729e815bce2ac4dfad7819982c6479c3b22c32b71f64dca05e8fdd90e8535ef",
        4: "2c0785da20217fcafd3b12cc363a95eb2529037cc8a9bddf8fb15025cbc8cdc9",
        5: "5b950e3b76e7a9923d69f6d6585ce6b5f9458e5ec57a71c9de5005d32d544692",
        6: "85030b2924111fc60acaf4fb8a7bad89531fbe0271aeab0c21e545f71eee273d",
        7: "e65f95150519fe01c2bedf8f832f5249822ef84c9c017307419e10374ff9eeb1",
        8: "446092fd1d6030e5bb2f2a8368267d5ed0fbdb6a766f6c5e4a4841827ad3106f",
        9: "493d088951882ad81af11e08c791a38a37c0ffff14578cf2c7fb9b7bca654d8b",
        10: "9705d450e5dfd06adb673705f7bc34418ec86339203198beceb2ae7f1ffefedb",
        11: "257fa566ed9bc0767d3e63e92b5e966829fa3347d320a32055dc31ee7d33f8a4",
        12: "28b151069f41abc121baa6d2eaa8f9e4c4d8326ddbefee2bd9c0776b80ac6fad",
        13: "d5d94bb25bdc024f649213593027d861042ee807cafd94b49b54f1663f8f267d",
        14: "c09129f064c08ecb07ea3689a2247dcc177de6837e7d2f5f946e30453abbccef",
        15: "90807800a1c3b248a452e1732c45ee5099f38b737356f5542c0584ec9c3ebb45",
        16: "2a1a494630e71bc026dd5c0eab4c1b9a5dbc656228c1f0d48f5dbd3909b161d3",
        17: "41509f380362a8d14401c5ae92073154922fe23e45459ce6f696f58607655db7",
        18: "d0148475717a2ba269784a178cb0ab617bc77f16c58d4a3cbdfe785b591c7034",
        19: "d1a1655b4366a766d1578beb257849a92bf91cb1358c1a2c37ab180c5d3a204d",
        20: "54ef75911da76d7a6b7ea341998aaf66cb06c679c53e0a88a4fe070dd3add963",
        21: "486e044cf98704e07f41137d2b89698dc03d1fbf34d13b60902fea19a6013b4b",
        22: "1ee9b4396db3e4e2516ac5016626ab6ba967f091d5d23afbdb7df122a0bb9d0c",
        23: "748e48b9b6d06f9c82d26bf551d0af43ee2e801e4be56d7ccb20312e267fd1d6",
        24: "f94fa4afa2f5147680f907d4dd96a8826206c26bd3328cd379feaed614b234de",
        25: "dec49a69893fbcd66cd06296b2d936a6aceb431c130b2e52675fe4274b504f57",
        26: "b198a51d48b88181508d8e4ea9dea39db285e4585663b29b7e4ded0c22a94875",
    }
)
"""sha256 (hex) of the published PPoT SRS file for each logrows, from ezkl ``src/srs_sha.rs``."""

MAX_LOGROWS = max(PPOT_SRS_SHA256)
"""The largest circuit (2^26 rows) for which a published SRS exists."""

_PPOT_BY_DIGEST = {h: k for k, h in PPOT_SRS_SHA256.items()}


@dataclass(frozen=True)
class PpotSrs:
    """A Perpetual Powers of Tau SRS file, to be checked against `PPOT_SRS_SHA256`."""

    path: Path
    """The file, in halo2 raw format (as published at kzg.ezkl.xyz for each logrows)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))


@dataclass(frozen=True)
class UnsafeLocalSrs:
    """Generate the SRS on this machine with ``ezkl.gen_srs``: INSECURE, for demos and tests.

    Whoever ran the generation could have kept τ and can then forge proofs, so every proof made
    with this SRS is marked ``unsafe_test_srs`` and `verify_zk_proof` rejects it unless called
    with ``allow_unsafe_srs=True``.
    """


SrsChoice = PpotSrs | UnsafeLocalSrs


def digest_file(path: Path) -> str:
    """``sha256:<hex>`` of a file, streamed (SRS files reach gigabytes)."""
    try:
        with path.open("rb") as f:
            return DIGEST_PREFIX + hashlib.file_digest(f, "sha256").hexdigest()
    except OSError as exc:
        raise NotFoundError(f"cannot read {path}: {exc.strerror}") from exc


def srs_kind(digest: str, logrows: int) -> SrsKind:
    """``ppot`` when `digest` is the published PPoT SRS for exactly `logrows`, else unsafe."""
    return "ppot" if PPOT_SRS_SHA256.get(logrows) == digest_hex(digest) else "unsafe_test_srs"


def check_ppot_srs(path: Path, logrows: int) -> str:
    """Check that `path` is the published PPoT SRS for `logrows`; return its digest.

    Raises:
        InvalidInputError: the file is not a known PPoT SRS, or is the one for another size.
        NotFoundError: the file cannot be read.
    """
    if logrows not in PPOT_SRS_SHA256:
        raise InvalidInputError(
            f"no published Perpetual Powers of Tau SRS for logrows {logrows} "
            f"(known: 1-{MAX_LOGROWS})"
        )
    digest = digest_file(path)
    hexd = digest_hex(digest)
    if hexd == PPOT_SRS_SHA256[logrows]:
        return digest
    other = _PPOT_BY_DIGEST.get(hexd)
    if other is not None:
        raise InvalidInputError(
            f"SRS file {path} is the Perpetual Powers of Tau SRS for logrows {other}, but this "
            f"circuit needs logrows {logrows} (kzg{logrows}.srs)"
        )
    raise InvalidInputError(
        f"SRS file {path} (sha256 {hexd[:16]}…) is not the published Perpetual Powers of Tau "
        f"SRS for logrows {logrows} (sha256 {PPOT_SRS_SHA256[logrows][:16]}…)"
    )


def install_srs(choice: SrsChoice, logrows: int, srs_dir: Path) -> tuple[Path, str, SrsKind]:
    """Put the SRS for `logrows` under `srs_dir`; return its path, digest and kind.

    A PPoT file is checked, then copied (so the cache survives the user moving it). An unsafe
    local SRS is generated once per home and logrows and reused by every model of that size.
    """
    import ezkl

    srs_dir.mkdir(parents=True, exist_ok=True)
    if isinstance(choice, PpotSrs):
        digest = check_ppot_srs(choice.path, logrows)
        target = srs_dir / f"kzg{logrows}-ppot.srs"
        if not target.exists() or digest_file(target) != digest:
            _copy_atomic(choice.path, target)
        return target, digest, "ppot"
    target = srs_dir / f"kzg{logrows}-unsafe.srs"
    if not target.exists():
        fd, tmp = tempfile.mkstemp(dir=srs_dir, prefix=".gen-", suffix=".srs")
        os.close(fd)
        try:
            ezkl.gen_srs(tmp, logrows)
            os.replace(tmp, target)
        finally:
            Path(tmp).unlink(missing_ok=True)
    digest = digest_file(target)
    if srs_kind(digest, logrows) == "ppot":
        # Cannot happen by chance (it would take τ); kept so a mix-up of files is visible.
        return target, digest, "ppot"
    return target, digest, "unsafe_test_srs"


def _copy_atomic(src: Path, dst: Path) -> None:
    fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=".copy-", suffix=".srs")
    os.close(fd)
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    finally:
        Path(tmp).unlink(missing_ok=True)
