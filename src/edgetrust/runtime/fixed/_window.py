"""The window of a 2-D sliding op (Conv and the pools): kernel, strides, dilations, padding.

One parser and one output-geometry rule for every op that slides a window over (N, C, H, W),
so that Conv, MaxPool and AveragePool cannot disagree on where a window starts.
"""

from __future__ import annotations

from collections.abc import Sequence

from edgetrust.errors import InvalidInputError
from edgetrust.runtime.fixed._base import Op

_AUTO_PADS = ("NOTSET", "VALID", "SAME_UPPER", "SAME_LOWER")


def same_geometry(
    h: int, w: int, strides: Sequence[int], ekh: int, ekw: int, upper: bool
) -> tuple[int, int, int, int, int, int]:
    """(OH, OW, pad_top, pad_left, pad_bottom, pad_right) for auto_pad SAME_UPPER (`upper`)
    or SAME_LOWER: ceil(size / stride) outputs, the total padding split with the odd one at
    the end (UPPER) or the start (LOWER); `ekh`, `ekw` are the dilated kernel extents."""
    sh, sw = strides
    oh, ow = -(-h // sh), -(-w // sw)
    th = max(0, (oh - 1) * sh + ekh - h)
    tw = max(0, (ow - 1) * sw + ekw - w)
    pt, pl = (th // 2, tw // 2) if upper else (th - th // 2, tw - tw // 2)
    return oh, ow, pt, pl, th - pt, tw - pl


class Window2D(Op):
    """An op with a 2-D window; subclasses set `kh`, `kw` and call `window_attrs` in setup."""

    kh: int
    kw: int
    ceil = False
    """ceil_mode: the pools' last partial window (never for Conv)."""

    def window_attrs(self) -> None:
        """strides, dilations, pads and auto_pad from the node, checked."""
        self.strides = [int(s) for s in self.attrs.get("strides", [1, 1])]
        self.dilations = [int(d) for d in self.attrs.get("dilations", [1, 1])]
        self.pads_attr = [int(p) for p in self.attrs.get("pads", [0, 0, 0, 0])]
        raw = self.attrs.get("auto_pad", b"NOTSET")
        self.auto_pad = raw.decode() if isinstance(raw, bytes) else str(raw)
        if self.auto_pad not in _AUTO_PADS:
            raise self.fail(f"auto_pad={self.auto_pad} is not supported")
        if len(self.strides) != 2 or len(self.dilations) != 2 or len(self.pads_attr) != 4:
            raise self.fail("strides, dilations and pads must be for 2 spatial dimensions")
        if min(self.kh, self.kw, *self.strides, *self.dilations) < 1 or min(self.pads_attr) < 0:
            raise self.fail("kernel, strides and dilations must be ≥ 1 and pads ≥ 0")

    def extents(self) -> tuple[int, int]:
        """The dilated kernel's height and width."""
        return (
            self.dilations[0] * (self.kh - 1) + 1,
            self.dilations[1] * (self.kw - 1) + 1,
        )

    def geometry(self, h: int, w: int) -> tuple[int, int, int, int, int, int]:
        """(OH, OW, pad_top, pad_left, pad_bottom, pad_right) for an H×W input."""
        ekh, ekw = self.extents()
        if self.auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            return same_geometry(h, w, self.strides, ekh, ekw, self.auto_pad == "SAME_UPPER")
        pt, pl, pb, pr = self.pads_attr if self.auto_pad == "NOTSET" else (0, 0, 0, 0)
        dims = []
        for size, p0, p1, ek, st in (
            (h, pt, pb, ekh, self.strides[0]),
            (w, pl, pr, ekw, self.strides[1]),
        ):
            span = size + p0 + p1 - ek
            if span < 0:
                raise InvalidInputError(
                    f"{self.node.op_type} node {self.label}: input {h}×{w} is smaller than "
                    "the kernel window"
                )
            o = (-(-span // st) if self.ceil else span // st) + 1
            if self.ceil and (o - 1) * st >= size + p0:
                o -= 1  # the last window would start in the padding
            dims.append(o)
        return dims[0], dims[1], pt, pl, pb, pr

    def require_inside(self, h: int, w: int) -> None:
        """Refuse a geometry in which some window holds no input position (only padding):
        its max, or its average over the positions inside, is undefined (onnxruntime gives
        -FLT_MAX where the ONNX reference gives 0)."""
        checked: set[tuple[int, int]] = self.__dict__.setdefault("_inside", set())
        if self.dilations == [1, 1] or (h, w) in checked:
            return  # with pads below the kernel, a contiguous window always reaches inside
        oh, ow, pt, pl, _, _ = Window2D.geometry(self, h, w)
        axes = (
            (oh, h, pt, self.kh, self.strides[0], self.dilations[0]),
            (ow, w, pl, self.kw, self.strides[1], self.dilations[1]),
        )
        for out, size, p0, k, st, dil in axes:
            for o in range(out):
                start = o * st - p0
                if not any(0 <= start + t * dil < size for t in range(k)):
                    raise InvalidInputError(
                        f"{self.node.op_type} node {self.label}: on a {h}×{w} input, output "
                        f"position {o} of an axis has a window wholly in the padding"
                    )
        checked.add((h, w))
