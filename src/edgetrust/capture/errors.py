"""The typed refusals of a capture: each names the chunk (by its signed index) it is about.

A verifier that finds a stream wrong says *how* it is wrong and *where*: a dropped chunk, a
chunk moved, a chunk that was never signed, a chunk whose samples changed, a head signed by
another key. Callers read `chunk` (and the error's other fields) rather than parsing text.
"""

from __future__ import annotations

from edgetrust.errors import InvalidInputError, VerificationError

__all__ = [
    "AlteredChunkError",
    "BrokenChainError",
    "CaptureError",
    "ConsentError",
    "ForeignSignatureError",
    "GapError",
    "InsertedChunkError",
    "MalformedChunkError",
    "ReorderedChunkError",
]


class MalformedChunkError(InvalidInputError):
    """A chunk that no honest device emits: wrong shape or dtype, out of range, NaN, empty."""

    def __init__(self, message: str, *, chunk: int | None) -> None:
        super().__init__(message if chunk is None else f"chunk {chunk}: {message}")
        self.chunk = chunk
        """Index of the chunk in the stream (None when the index itself is unknown)."""


class CaptureError(VerificationError):
    """A capture check failed; `chunk` is the signed index of the first chunk at fault."""

    def __init__(self, message: str, *, chunk: int | None, step: str = "capture") -> None:
        super().__init__(message, step=step)
        self.chunk = chunk
        """Signed index of the chunk the failure is about (None: the stream as a whole)."""


class GapError(CaptureError):
    """Signed chunks are missing: dropped from the middle, or cut from the end."""

    def __init__(self, missing: tuple[int, ...], *, step: str = "capture chunks") -> None:
        shown = ", ".join(map(str, missing[:8])) + (", ..." if len(missing) > 8 else "")
        super().__init__(
            f"{len(missing)} signed chunk(s) missing: {shown}", chunk=missing[0], step=step
        )
        self.missing = missing
        """Signed indices of every missing chunk (in order)."""


class ReorderedChunkError(CaptureError):
    """A signed chunk appears at another position than the one it was signed at."""

    def __init__(self, chunk: int, position: int, *, step: str = "capture chunks") -> None:
        super().__init__(
            f"chunk {chunk} appears at position {position} (reordered or duplicated)",
            chunk=chunk,
            step=step,
        )
        self.position = position
        """Where the chunk was found (0-based, in the data verified)."""


class InsertedChunkError(CaptureError):
    """Data that no seal signed: an extra chunk in the middle or after the last signed one."""

    def __init__(self, position: int, *, step: str = "capture chunks") -> None:
        super().__init__(
            f"chunk at position {position} was never signed (inserted)",
            chunk=position,
            step=step,
        )
        self.position = position


class AlteredChunkError(CaptureError):
    """A chunk is where it was signed, but its samples differ from what was signed."""

    def __init__(self, chunk: int, *, expected: str, actual: str, step: str = "capture chunks"):
        super().__init__(
            f"chunk {chunk} was altered (signed {expected[:12]}, found {actual[:12]})",
            chunk=chunk,
            step=step,
        )
        self.expected = expected
        """The signed chunk digest (hex)."""
        self.actual = actual
        """The digest of the samples found (hex)."""


class ForeignSignatureError(CaptureError):
    """A chain head (a seal) or the root is signed by another key than the capture device."""

    def __init__(self, chunk: int | None, signer: str, device: str, *, step: str = "capture seal"):
        what = "the stream root" if chunk is None else f"the seal ending at chunk {chunk}"
        super().__init__(
            f"{what} is signed by {signer:.60}, not by the capture device {device:.60}",
            chunk=chunk,
            step=step,
        )
        self.signer = signer
        self.device = device


class BrokenChainError(CaptureError):
    """A seal's head or the root does not follow from the chunk digests before it."""


class ConsentError(CaptureError):
    """The wearer named in the stream header did not co-sign its root (or is not a reviewer)."""
