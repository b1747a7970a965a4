"""Fault injection for demos and tests: a device that lies about one element of its trace."""

from __future__ import annotations

from dataclasses import dataclass

from edgetrust.errors import InvalidInputError


@dataclass(frozen=True)
class Fault:
    """A deliberate lie, for demos and tests only: add `delta` to one element of one entry.

    The device then computes everything downstream from the corrupted value and commits to
    that trace - a consistent liar, which the dispute game must convict. If adding `delta`
    would saturate to no change, the element moves by -delta instead.
    """

    node: str | int
    """Node name, ``#<index>`` or index - or ``input:<name>`` for a quantized input."""
    element: int
    """C-order index in that entry's output."""
    delta: int
    output: int = 0
    """Which output of the node (multi-output nodes such as Split)."""

    @staticmethod
    def parse(spec: str) -> Fault:
        """Parse ``node=NODE,element=I,delta=D`` (the CLI's --simulate-fault)."""
        fields: dict[str, str] = {}
        for part in spec.split(","):
            key, sep, value = part.partition("=")
            if not sep or key.strip() not in ("node", "element", "delta") or key.strip() in fields:
                raise InvalidInputError(
                    f"fault must be node=NODE,element=I,delta=D, got {spec!r:.80}"
                )
            fields[key.strip()] = value.strip()
        if set(fields) != {"node", "element", "delta"}:
            raise InvalidInputError(f"fault must be node=NODE,element=I,delta=D, got {spec!r:.80}")
        try:
            element, delta = int(fields["element"]), int(fields["delta"])
        except ValueError as exc:
            raise InvalidInputError("fault element and delta must be integers") from exc
        node: str | int = int(fields["node"]) if fields["node"].isdigit() else fields["node"]
        if element < 0 or delta == 0:
            raise InvalidInputError("fault element must be ≥ 0 and delta non-zero")
        return Fault(node, element, delta)
