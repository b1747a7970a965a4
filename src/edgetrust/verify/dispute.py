"""The dispute game: bisect a fixed-point trace down to one element, which a referee recomputes.

A *device* committed to a trace root (in its receipt). A *challenger* re-executed the same
model on the same input with the deterministic executor and got a different trace. Refereed
delegation (as in opML and Gensyn's Verde) settles who is right without re-running the model:

1. **Bisection over trace entries** (graph inputs, then node outputs, in topological order).
   The trace root is an RFC 9162 tree over entry leaves. At each step the device reveals the
   two children of the current subtree; the referee checks they hash to it; the challenger
   descends into the *leftmost* child it disagrees with. This ends on the first entry k whose
   commitment differs while every entry before it - so every input of node k - agrees:
   ≤ ⌈log2 entries⌉ rounds. The device reveals entry leaves (dtype, shape, element root) as
   soon as a child is a single entry.
2. **Bisection over k's elements** (its element tree over 1 KiB chunks, same rule), then the
   challenger names one element j of the revealed chunk: ≤ ⌈log2 chunks⌉ rounds. A dispute
   about k's shape or dtype is settled here instead, from the input shapes.
3. **One element.** The device opens every input and weight element that output element
   depends on, each with its audit paths (to the trace root, or to the weights root agreed
   in the receipt). The referee recomputes the element with the executor's own integer
   definition (`Op.element`): one dot product for Gemm/MatMul/Conv, one row for Softmax or
   LayerNormalization - never the model. Whoever's claim differs from the recomputation loses.

Every step is checked as it arrives: a device that answers late (past its deadline), refuses,
reveals hashes inconsistent with what it committed, or gives a bad audit path loses at once;
a challenger that stalls or makes an invalid move loses. Total rounds (exchanges with the
device) ≤ ⌈log2 entries⌉ + ⌈log2 elements⌉ + 1.

Everything here is a pure state machine over frozen messages: transports (in process, or the
node's HTTP API) carry the messages; `play` runs a game in process. Verdicts are in-toto
statements of type `VERDICT_PREDICATE_TYPE`, signed by the referee (DSSE) and logged.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt

from edgetrust.dsse import Envelope, sign_envelope
from edgetrust.encoding import canonical_json, digest_bytes, parse_digest, parse_json
from edgetrust.errors import Error, InvalidInputError, UnsupportedError, VerificationError
from edgetrust.identity import Identity
from edgetrust.log.merkle import leaf_hash, node_hash
from edgetrust.runtime.fixed import FixedExecutor, Op, QuantPlan
from edgetrust.runtime.trace import (
    CHUNK_BYTES,
    LAYOUT_V2,
    ChunkOpening,
    EntryLeaf,
    LeafOpening,
    Trace,
    TraceLayout,
    WeightCommitments,
    layout_named,
    parse_entry_leaf,
    split,
)
from edgetrust.statement import (
    IN_TOTO_PAYLOAD_TYPE,
    Statement,
    Subject,
    encode_statement,
    register_predicate_type,
)

__all__ = [
    "VERDICT_PREDICATE_TYPE",
    "Answer",
    "ChallengeResult",
    "ChunkAnswer",
    "Challenger",
    "Claim",
    "Descend",
    "DeviceResponder",
    "DisputeElement",
    "DisputeGame",
    "DisputeHeader",
    "GameRecord",
    "HonestChallenger",
    "MAX_MESSAGE_BYTES",
    "OpenAnswer",
    "Query",
    "SplitAnswer",
    "Verdict",
    "challenge_receipt",
    "estimate_macs",
    "log_verdict",
    "max_rounds",
    "parse_answer",
    "parse_move",
    "parse_query",
    "play",
    "sign_verdict",
]

VERDICT_PREDICATE_TYPE = "https://edgetrust.dev/dispute-verdict/v1"

Party = Literal["device", "challenger"]


@dataclass(frozen=True)
class Claim:
    """What the device committed to and everyone agrees on before the game.

    `trace_root` comes from the device's receipt; `weights_root`/`weights_size` from the
    executor settings in it (the challenger recomputes them from the model and plan before
    challenging: a wrong weights root is refuted without a game).
    """

    trace_root: bytes
    weights_root: bytes
    weights_size: int
    layout: TraceLayout = LAYOUT_V2
    """The trace layout the receipt names (its executor settings' ``"trace"``)."""

    def to_dict(self) -> dict[str, Any]:
        """JSON form (the layout only when it is not v1, so v1 verdicts read as before)."""
        out: dict[str, Any] = {
            "trace_root": self.trace_root.hex(),
            "weights_root": self.weights_root.hex(),
            "weights_size": self.weights_size,
        }
        if self.layout.version != 1:
            out["trace"] = self.layout.type
        return out


# -- messages ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Query:
    """A request to the device.

    kind "split": reveal the children of subtree [lo, hi) of the trace tree (entry None) or of
    entry `entry`'s element tree. kind "chunk": reveal chunk `lo` of entry `entry`. kind "open":
    open what element `element` of entry `entry` depends on. kind "header": open what entry
    `entry`'s shape depends on.
    """

    kind: Literal["split", "chunk", "open", "header"]
    entry: int | None = None
    lo: int = 0
    hi: int = 0
    element: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "kind": self.kind,
            "entry": self.entry,
            "lo": self.lo,
            "hi": self.hi,
            "element": self.element,
        }


@dataclass(frozen=True)
class SplitAnswer:
    """Children hashes of a subtree; the preimage of a child that is a single leaf."""

    left: bytes
    right: bytes
    left_leaf: bytes | None = None
    right_leaf: bytes | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "type": "split",
            "left": self.left.hex(),
            "right": self.right.hex(),
            "left_leaf": None if self.left_leaf is None else self.left_leaf.hex(),
            "right_leaf": None if self.right_leaf is None else self.right_leaf.hex(),
        }


@dataclass(frozen=True)
class ChunkAnswer:
    """The bytes of one chunk (its hash is already committed)."""

    data: bytes

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"type": "chunk", "data": self.data.hex()}


@dataclass(frozen=True)
class OpenAnswer:
    """Openings of trace entries and weight params, with chunks, for the referee."""

    entries: Mapping[int, LeafOpening] = field(default_factory=dict)
    entry_chunks: Mapping[tuple[int, int], ChunkOpening] = field(default_factory=dict)
    params: Mapping[str, LeafOpening] = field(default_factory=dict)
    param_chunks: Mapping[tuple[str, int], ChunkOpening] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "type": "open",
            "entries": {str(k): v.to_dict() for k, v in self.entries.items()},
            "entry_chunks": [[k[0], v.to_dict()] for k, v in self.entry_chunks.items()],
            "params": {k: v.to_dict() for k, v in self.params.items()},
            "param_chunks": [[k[0], v.to_dict()] for k, v in self.param_chunks.items()],
        }


Answer = SplitAnswer | ChunkAnswer | OpenAnswer


@dataclass(frozen=True)
class Descend:
    """The challenger's choice of child: the leftmost it disagrees with."""

    side: Literal["left", "right"]

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"move": "descend", "side": self.side}


@dataclass(frozen=True)
class DisputeElement:
    """The challenger disputes element `element` of the entry, claiming `value`."""

    element: int
    value: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"move": "element", "element": self.element, "value": self.value}


@dataclass(frozen=True)
class DisputeHeader:
    """The challenger disputes the entry's dtype or shape."""

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"move": "header"}


Move = Descend | DisputeElement | DisputeHeader


def message_bytes(msg: Query | Answer | Move | None) -> int:
    """Size of a message in its canonical JSON form (what a transport would carry)."""
    return 0 if msg is None else len(canonical_json(msg.to_dict()))


# -- wire forms (untrusted input, parsed once at the edge) ----------------------------------

MAX_MESSAGE_BYTES = 64 * 2**20
"""An opening of a large receptive field is a few MB; anything beyond this is refused."""
_MAX_PATH = 64
_MAX_ITEMS = 1 << 20


def _obj(data: bytes | str | Mapping[str, Any], what: str) -> Mapping[str, Any]:
    obj = (
        data
        if isinstance(data, Mapping)
        else parse_json(data, what=what, max_bytes=MAX_MESSAGE_BYTES)
    )
    if not isinstance(obj, Mapping):
        raise InvalidInputError(f"{what} must be a JSON object")
    return obj


def _int(v: Any, what: str, *, optional: bool = False, lo: int = 0, hi: int = 1 << 62) -> Any:
    if v is None and optional:
        return None
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise InvalidInputError(f"{what} must be an integer in [{lo}, {hi}]")
    return v


def _hex(v: Any, what: str, *, size: int | None = None, max_size: int = CHUNK_BYTES) -> bytes:
    if not isinstance(v, str) or len(v) > 2 * max_size:
        raise InvalidInputError(f"{what} must be a hex string of at most {max_size} bytes")
    try:
        out = bytes.fromhex(v)
    except ValueError as exc:
        raise InvalidInputError(f"{what} is not hex") from exc
    if size is not None and len(out) != size:
        raise InvalidInputError(f"{what} must be {size} bytes")
    return out


def _path(v: Any, what: str) -> tuple[bytes, ...]:
    if not isinstance(v, list) or len(v) > _MAX_PATH:
        raise InvalidInputError(f"{what} must be a list of at most {_MAX_PATH} hashes")
    return tuple(_hex(h, what, size=32) for h in v)


def _leaf_opening(v: Any, what: str) -> LeafOpening:
    if not isinstance(v, Mapping):
        raise InvalidInputError(f"{what} must be an object")
    data = v.get("data")
    if "data_hex" in v:  # a binary (layout v2) leaf
        raw = _hex(v.get("data_hex"), f"{what} data_hex", max_size=4096)
    elif isinstance(data, str) and len(data) <= 4096:
        raw = data.encode()
    else:
        raise InvalidInputError(f"{what} data must be a short JSON text")
    return LeafOpening(
        _int(v.get("index"), f"{what} index"), raw, _path(v.get("path"), f"{what} path")
    )


def _chunk_opening(v: Any, what: str) -> ChunkOpening:
    if not isinstance(v, Mapping):
        raise InvalidInputError(f"{what} must be an object")
    return ChunkOpening(
        _int(v.get("index"), f"{what} index"),
        _hex(v.get("data"), f"{what} data"),
        _path(v.get("path"), f"{what} path"),
    )


def parse_query(data: bytes | str | Mapping[str, Any]) -> Query:
    """A query from its JSON form."""
    o = _obj(data, "query")
    kind = o.get("kind")
    if kind not in ("split", "chunk", "open", "header"):
        raise InvalidInputError("query kind must be split, chunk, open or header")
    return Query(
        kind,
        _int(o.get("entry"), "query entry", optional=True),
        _int(o.get("lo", 0), "query lo"),
        _int(o.get("hi", 0), "query hi"),
        _int(o.get("element"), "query element", optional=True),
    )


def parse_answer(data: bytes | str | Mapping[str, Any]) -> Answer:
    """A device's answer from its JSON form."""
    o = _obj(data, "answer")
    t = o.get("type")
    if t == "split":

        def leaf(key: str) -> bytes | None:
            v = o.get(key)
            return None if v is None else _hex(v, f"answer {key}", max_size=4096)

        return SplitAnswer(
            _hex(o.get("left"), "answer left", size=32),
            _hex(o.get("right"), "answer right", size=32),
            leaf("left_leaf"),
            leaf("right_leaf"),
        )
    if t == "chunk":
        return ChunkAnswer(_hex(o.get("data"), "answer data"))
    if t != "open":
        raise InvalidInputError("answer type must be split, chunk or open")
    entries, chunks, params, pchunks = (
        o.get(k) for k in ("entries", "entry_chunks", "params", "param_chunks")
    )
    if not isinstance(entries, Mapping) or not isinstance(params, Mapping):
        raise InvalidInputError("opening entries and params must be objects")
    if not isinstance(chunks, list) or not isinstance(pchunks, list):
        raise InvalidInputError("opening chunks must be lists")
    if len(entries) + len(params) + len(chunks) + len(pchunks) > _MAX_ITEMS:
        raise InvalidInputError("opening has too many items")
    out_entries: dict[int, LeafOpening] = {}
    for k, v in entries.items():
        if not isinstance(k, str) or not k.isdigit():
            raise InvalidInputError("opening entry keys must be entry indices")
        out_entries[int(k)] = _leaf_opening(v, f"entry {k}")
    out_params = {str(k): _leaf_opening(v, f"param {k}") for k, v in params.items()}
    out_chunks: dict[tuple[int, int], ChunkOpening] = {}
    for item in chunks:
        if not isinstance(item, list) or len(item) != 2:
            raise InvalidInputError("opening entry_chunks items must be [entry, chunk]")
        c = _chunk_opening(item[1], "entry chunk")
        out_chunks[(_int(item[0], "chunk entry"), c.index)] = c
    out_pchunks: dict[tuple[str, int], ChunkOpening] = {}
    for item in pchunks:
        if not isinstance(item, list) or len(item) != 2 or not isinstance(item[0], str):
            raise InvalidInputError("opening param_chunks items must be [param, chunk]")
        c = _chunk_opening(item[1], "param chunk")
        out_pchunks[(item[0], c.index)] = c
    return OpenAnswer(out_entries, out_chunks, out_params, out_pchunks)


def parse_move(data: bytes | str | Mapping[str, Any]) -> Move:
    """A challenger's move from its JSON form."""
    o = _obj(data, "move")
    m = o.get("move")
    if m == "descend":
        side = o.get("side")
        if side not in ("left", "right"):
            raise InvalidInputError("descend side must be left or right")
        return Descend(side)
    if m == "element":
        return DisputeElement(
            _int(o.get("element"), "move element"),
            _int(o.get("value"), "move value", optional=True, lo=-(1 << 63), hi=(1 << 63) - 1),
        )
    if m == "header":
        return DisputeHeader()
    raise InvalidInputError("move must be descend, element or header")


# -- verdicts ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    """The outcome of a game."""

    loser: Party
    reason: str
    entry: int | None = None
    """Trace entry in dispute (None if the game ended before one was found)."""
    node: str | None = None
    """Its node, by name or ``#<index>`` (``input:<name>`` for an input)."""
    node_index: int | None = None
    element: int | None = None
    device_value: int | None = None
    referee_value: int | None = None
    rounds: int = 0
    bytes_exchanged: int = 0
    referee_reads: int = 0
    """Input and weight elements the referee read to recompute the element."""
    referee_macs: int = 0
    """Multiply-adds of that recomputation (one dot product for Gemm/MatMul/Conv)."""
    entries: int = 0
    """Trace entries (graph inputs and nodes)."""
    elements: int = 0
    """Elements of the disputed entry (0 before one was found)."""

    @property
    def round_bound(self) -> int:
        """⌈log2 entries⌉ + ⌈log2 elements⌉ + 1."""
        return max_rounds(self.entries, self.elements)

    @property
    def device_convicted(self) -> bool:
        """Whether the device lost."""
        return self.loser == "device"

    def to_predicate(self, claim: Claim, executor: FixedExecutor, **extra: Any) -> dict[str, Any]:
        """The predicate of a verdict statement."""
        pred: dict[str, Any] = {
            "loser": self.loser,
            "reason": self.reason,
            "model": executor.model_digest,
            "executor": {
                "name": executor.name,
                "version": executor.version,
                "plan": executor.plan.digest,
            },
            "claim": claim.to_dict(),
            "entry": self.entry,
            "node": self.node,
            "node_index": self.node_index,
            "element": self.element,
            "device_value": self.device_value,
            "referee_value": self.referee_value,
            "rounds": self.rounds,
            "bytes_exchanged": self.bytes_exchanged,
            "referee_reads": self.referee_reads,
            "referee_macs": self.referee_macs,
        }
        pred.update(extra)
        return pred


class _DecidedError(Exception):
    """Internal: a verdict was reached while handling a message."""

    def __init__(self, loser: Party, reason: str) -> None:
        super().__init__(reason)
        self.loser = loser
        self.reason = reason


# -- the referee's element source ---------------------------------------------------------


class _OpeningSource:
    """An ElementSource backed by openings, checked against the committed roots; counts reads."""

    def __init__(
        self,
        game: DisputeGame,
        node_index: int,
        answer: OpenAnswer,
    ) -> None:
        self.game = game
        self.ex = game.executor
        self.node_index = node_index
        self.answer = answer
        self.reads = 0
        self.first_input_reads = 0
        self._leaves: dict[int, EntryLeaf] = {}
        self._params: dict[str, EntryLeaf] = {}
        self._checked: set[tuple[Any, int]] = set()

    def _entry_of(self, k: int) -> int:
        name = self.ex.nodes[self.node_index].input[k]
        entry = self.game._entry_of_tensor.get(name)
        if entry is None:
            raise _DecidedError(
                "challenger", f"input {name!r} of node {self.node_index} is not traced"
            )
        return entry

    def entry_leaf(self, entry: int) -> EntryLeaf:
        if entry not in self._leaves:
            op = self.answer.entries.get(entry)
            if op is None or op.index != entry:
                raise _DecidedError("device", f"opening lacks entry {entry}")
            try:
                leaf = op.verify(self.game.claim.trace_root, self.game.size)
            except Error as exc:
                raise _DecidedError(
                    "device", f"bad audit path for entry {entry}: {exc.message}"
                ) from exc
            self._check_layout(leaf, f"entry {entry}")
            self._leaves[entry] = leaf
        return self._leaves[entry]

    def _check_layout(self, leaf: EntryLeaf, what: str) -> None:
        if leaf.layout != self.game.claim.layout:
            raise _DecidedError(
                "device", f"{what} is not in trace layout v{self.game.claim.layout.version}"
            )

    def param_leaf(self, name: str) -> EntryLeaf:
        if name not in self._params:
            op = self.answer.params.get(name)
            if op is None:
                raise _DecidedError("device", f"opening lacks weight {name!r}")
            try:
                leaf = op.verify(self.game.claim.weights_root, self.game.claim.weights_size)
            except Error as exc:
                raise _DecidedError(
                    "device", f"bad audit path for weight {name!r}: {exc.message}"
                ) from exc
            self._check_layout(leaf, f"weight {name!r}")
            if leaf.extra != {"node": self.node_index, "param": name}:
                raise _DecidedError(
                    "device", f"opened weight is not {name!r} of node {self.node_index}"
                )
            self._params[name] = leaf
        return self._params[name]

    def _read(
        self,
        leaf: EntryLeaf,
        flat: npt.NDArray[np.int64],
        chunks: Mapping[Any, ChunkOpening],
        key: Any,
    ) -> npt.NDArray[np.int64]:
        idx = np.asarray(flat, np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= leaf.size):
            raise _DecidedError("challenger", "the element read lies outside the committed tensor")
        per = leaf.per_chunk
        out = np.empty(idx.shape, np.int64)
        flat_idx = idx.reshape(-1)
        flat_out = out.reshape(-1)
        for c in np.unique(flat_idx // per).tolist():
            opening = chunks.get((key, c))
            if opening is None or opening.index != c:
                raise _DecidedError("device", f"opening lacks chunk {c} of {key!r}")
            if (key, c) not in self._checked:
                try:
                    opening.verify(leaf)
                except Error as exc:
                    raise _DecidedError(
                        "device", f"bad audit path for chunk {c} of {key!r}: {exc.message}"
                    ) from exc
                self._checked.add((key, c))
            values = leaf.read(opening.data, 0, len(opening.data) // leaf.itemsize)
            sel = (flat_idx // per) == c
            flat_out[sel] = values[flat_idx[sel] - c * per]
        self.reads += int(idx.size)
        return out

    # ElementSource
    def input_shape(self, k: int) -> tuple[int, ...]:
        return self.entry_leaf(self._entry_of(k)).shape

    def read_input(self, k: int, flat: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        entry = self._entry_of(k)
        if k == 0:
            self.first_input_reads += int(np.size(flat))
        return self._read(self.entry_leaf(entry), flat, self.answer.entry_chunks, entry)

    def param_shape(self, name: str) -> tuple[int, ...]:
        return self.param_leaf(name).shape

    def read_param(self, name: str, flat: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        return self._read(self.param_leaf(name), flat, self.answer.param_chunks, name)


class _RecordingSource:
    """An ElementSource over the device's own trace that records what is read."""

    def __init__(self, ex: FixedExecutor, trace: Trace, node_index: int) -> None:
        self.ex = ex
        self.trace = trace
        self.node_index = node_index
        self.params = ex.params(node_index)
        self.entry_reads: dict[int, set[int]] = {}
        self.param_reads: dict[str, set[int]] = {}
        self.shapes: set[int] = set()
        self.param_shapes: set[str] = set()

    def _entry_of(self, k: int) -> int:
        name = self.ex.nodes[self.node_index].input[k]
        return next(i for i, e in enumerate(self.ex.entries) if e.tensor == name)

    def input_shape(self, k: int) -> tuple[int, ...]:
        e = self._entry_of(k)
        self.shapes.add(e)
        return tuple(self.trace.values[e].shape)

    def read_input(self, k: int, flat: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        e = self._entry_of(k)
        self.shapes.add(e)
        self.entry_reads.setdefault(e, set()).update(np.asarray(flat).reshape(-1).tolist())
        return np.asarray(self.trace.values[e], np.int64).reshape(-1)[np.asarray(flat, np.int64)]

    def param_shape(self, name: str) -> tuple[int, ...]:
        self.param_shapes.add(name)
        return tuple(self.params[name].shape)

    def read_param(self, name: str, flat: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        self.param_shapes.add(name)
        self.param_reads.setdefault(name, set()).update(np.asarray(flat).reshape(-1).tolist())
        return np.asarray(self.params[name], np.int64).reshape(-1)[np.asarray(flat, np.int64)]


# -- the device ---------------------------------------------------------------------------------


class DeviceResponder:
    """An honest device: answers every query from its stored trace and weight commitments.

    (A lying device is this same responder over a trace computed with a `Fault`: it lies
    consistently, because its answers come from the trace it committed to.)
    """

    def __init__(self, executor: FixedExecutor, trace: Trace) -> None:
        self.executor = executor
        self.trace = trace
        self.weights: WeightCommitments = executor.weight_commitments()

    def __call__(self, query: Query) -> Answer | None:
        """Answer `query`.

        Raises:
            InvalidInputError: a query no game asks (out of range): over HTTP, a client error.
        """
        entry = self.check_query(query)
        if query.kind == "split":
            return self._split(query)
        if query.kind == "chunk":
            return ChunkAnswer(self.trace.open_chunk(entry, query.lo).data)
        ans = self._open(entry, query.element)
        if query.kind == "open" and query.element is not None:
            ans = self._with_disputed_chunk(ans, entry, query.element)
        return ans

    def check_query(self, q: Query) -> int:
        """Refuse a query outside this trace; the entry it names (0 for the trace tree).

        `DisputeGame.query` only asks in range, but a device answering over the network gets
        whatever a client sends, and must answer that with an error, not a crash.
        """
        n = self.trace.size
        if q.kind == "split" and q.entry is None:
            _check_split(q.lo, q.hi, n, "trace entries")
            return 0
        if q.entry is None or not 0 <= q.entry < n:
            raise InvalidInputError(f"query entry must be an entry index below {n}")
        chunks = self.trace.commitment(q.entry).levels.size
        if q.kind == "split":
            _check_split(q.lo, q.hi, chunks, f"chunks of entry {q.entry}")
        elif q.kind == "chunk" and not q.lo < chunks:
            raise InvalidInputError(f"entry {q.entry} has {chunks} chunks, not {q.lo + 1}")
        elif q.kind == "open" and q.element is not None:
            size = int(self.trace.values[q.entry].size)
            if not q.element < size:
                raise InvalidInputError(f"entry {q.entry} has {size} elements")
        elif q.kind == "header" and q.element is not None:
            raise InvalidInputError("a header query names no element")
        return q.entry

    def _split(self, q: Query) -> SplitAnswer:
        k = split(q.lo, q.hi)
        tree = self.trace.tree if q.entry is None else self.trace.commitment(q.entry).levels
        return SplitAnswer(
            tree.subtree(q.lo, k),
            tree.subtree(k, q.hi),
            self._leaf(q.entry, q.lo) if k - q.lo == 1 else None,
            self._leaf(q.entry, k) if q.hi - k == 1 else None,
        )

    def _leaf(self, entry: int | None, i: int) -> bytes:
        """Preimage of leaf i: an entry leaf (trace tree) or a chunk (an entry's element tree)."""
        if entry is None:
            return self.trace.leaf_bytes[i]
        return self.trace.open_chunk(entry, i).data

    def _open(self, entry: int, element: int | None) -> OpenAnswer:
        ex = self.executor
        n_in = len(ex.input_names)
        if entry < n_in:
            return OpenAnswer()
        node, output = _node_output(ex, entry)
        op = ex.ops[node]
        src = _RecordingSource(ex, self.trace, node)
        if element is None:
            op.out_shape_of(output, src)
        else:
            op.element_of(output, element, tuple(self.trace.values[entry].shape), src)
        entries = {e: self.trace.open_leaf(e) for e in src.shapes | set(src.entry_reads)}
        chunks: dict[tuple[int, int], ChunkOpening] = {}
        for e, idx in src.entry_reads.items():
            per = self.trace.per_chunk(e)
            for c in sorted({i // per for i in idx}):
                chunks[(e, c)] = self.trace.open_chunk(e, c)
        params: dict[str, LeafOpening] = {}
        pchunks: dict[tuple[str, int], ChunkOpening] = {}
        for name in src.param_shapes | set(src.param_reads):
            w = self.weights.index[(node, name)]
            params[name] = self.weights.open_leaf(w)
            per = self.weights.per_chunk(w)
            for c in sorted({i // per for i in src.param_reads.get(name, set())}):
                pchunks[(name, c)] = self.weights.open_chunk(w, c)
        return OpenAnswer(entries, chunks, params, pchunks)

    def _with_disputed_chunk(self, ans: OpenAnswer, entry: int, element: int) -> OpenAnswer:
        """Add the chunk holding the disputed element (needed when it was never revealed)."""
        per = self.trace.per_chunk(entry)
        chunks = dict(ans.entry_chunks)
        chunks.setdefault((entry, element // per), self.trace.open_chunk(entry, element // per))
        return OpenAnswer(ans.entries, chunks, ans.params, ans.param_chunks)


def committed_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """The shape a trace commits for a tensor of `shape`: (1,) for a 0-d tensor."""
    return shape if shape else (1,)


def _check_split(lo: int, hi: int, size: int, what: str) -> None:
    """A split query names a subtree of at least two leaves of a tree of `size` leaves."""
    if not (0 <= lo and lo + 2 <= hi <= size):
        raise InvalidInputError(f"split [{lo}, {hi}) is not a range of 2+ of {size} {what}")


# -- the challenger -------------------------------------------------------------------------


class Challenger(Protocol):
    """Chooses moves from the device's answers."""

    def __call__(self, game: DisputeGame) -> Move | None:
        """The next move, given the game (its phase and the device's `last_answer`)."""
        ...


class HonestChallenger:
    """Descends into the leftmost child whose hash differs from its own (re-executed) trace."""

    def __init__(self, trace: Trace) -> None:
        self.trace = trace

    def __call__(self, game: DisputeGame) -> Move | None:
        """Follow the first disagreement."""
        answer = game.last_answer
        if game.phase == "trace":
            assert isinstance(answer, SplitAnswer)
            k = split(game.lo, game.hi)
            mine = self.trace.tree.subtree(game.lo, k)
            return Descend("left" if mine != answer.left else "right")
        if game.phase == "entry":
            assert game.entry is not None and game.leaf is not None
            if game.leaf_data != self.trace.leaf_bytes[game.entry]:
                own = parse_entry_leaf(self.trace.leaf_bytes[game.entry])
                if (own.dtype, own.shape) != (game.leaf.dtype, game.leaf.shape):
                    return DisputeHeader()
            return Descend("left")  # any: the element phase starts; side is ignored
        if game.phase == "elements":
            assert isinstance(answer, SplitAnswer) and game.entry is not None
            k = split(game.lo, game.hi)
            mine = self.trace.commitment(game.entry).levels.subtree(game.lo, k)
            return Descend("left" if mine != answer.left else "right")
        if game.phase == "chunk":
            assert game.entry is not None and game.chunk_data is not None and game.leaf is not None
            own_chunk = self.trace.open_chunk(game.entry, game.lo).data
            per = game.leaf.per_chunk
            count = min(per, game.leaf.size - game.lo * per)
            theirs = game.leaf.read(game.chunk_data, 0, count)
            ours = game.leaf.read(own_chunk, 0, count)
            diff = np.nonzero(theirs != ours)[0]
            j = int(diff[0]) if diff.size else 0
            return DisputeElement(game.lo * per + j, int(ours[j]))
        return None


# -- the referee's game -----------------------------------------------------------------------


Phase = Literal["trace", "entry", "elements", "chunk", "open", "header", "done"]


def max_rounds(entries: int, elements: int) -> int:
    """The bound on exchanges with the device: ⌈log2 entries⌉ + ⌈log2 elements⌉ + 1."""
    return (max(entries, 1) - 1).bit_length() + (max(elements, 1) - 1).bit_length() + 1


@dataclass
class GameRecord:
    """What happened: every message with its size, for audit and the benchmark."""

    messages: list[tuple[str, int]] = field(default_factory=list)

    @property
    def bytes(self) -> int:
        """Total canonical JSON bytes exchanged."""
        return sum(n for _, n in self.messages)


class DisputeGame:
    """The referee's state machine. Feed it device answers and challenger moves with times.

    Args:
        executor: the fixed executor for the receipt's model and plan (the referee builds it
            once per model; it reads the op definitions, never the weights).
        claim: the device's commitments.
        inputs: the raw inputs, already checked by the caller against the receipt's input
            commitment (only needed if the dispute lands on a quantized input).
        timeout: seconds each party has to answer a query or make a move.
        now: the start time (default: `time.monotonic()`; any clock, as long as later calls
            use the same one).
    """

    def __init__(
        self,
        executor: FixedExecutor,
        claim: Claim,
        *,
        inputs: Mapping[str, npt.ArrayLike] | None = None,
        timeout: float = 60.0,
        now: float | None = None,
    ) -> None:
        if timeout <= 0:
            raise InvalidInputError("timeout must be positive")
        self.executor = executor
        self.claim = claim
        self.inputs = inputs
        self.timeout = timeout
        self.size = len(executor.entries)
        self.phase: Phase = "trace"
        self.lo, self.hi = 0, self.size
        self.current = claim.trace_root
        self.entry: int | None = None
        self.leaf: EntryLeaf | None = None
        self.leaf_data: bytes | None = None
        self.chunk_data: bytes | None = None
        self.element: int | None = None
        self.challenger_value: int | None = None
        self.rounds = 0
        self.record = GameRecord()
        self.verdict: Verdict | None = None
        self.referee_reads = 0
        self.referee_macs = 0
        self.device_value: int | None = None
        self.referee_value: int | None = None
        self.referee_seconds = 0.0
        self.waiting: Party = "device"
        self.deadline = (time.monotonic() if now is None else now) + timeout
        self._fresh_split = False
        self._last_answer: Answer | None = None
        self._entry_of_tensor = {e.tensor: i for i, e in enumerate(executor.entries)}
        if self.size < 2:
            raise InvalidInputError("a trace needs at least two entries")

    # -- what the device is asked ------------------------------------------------------------

    def query(self) -> Query:
        """The current question for the device."""
        if self.phase == "trace":
            return Query("split", None, self.lo, self.hi)
        if self.phase == "elements":
            return Query("split", self.entry, self.lo, self.hi)
        if self.phase == "chunk":
            return Query("chunk", self.entry, self.lo, self.lo + 1)
        if self.phase == "open":
            return Query("open", self.entry, element=self.element)
        if self.phase == "header":
            return Query("header", self.entry)
        raise InvalidInputError(f"no query in phase {self.phase}")

    # -- time -----------------------------------------------------------------------------------

    def tick(self, now: float) -> None:
        """Decide against the party whose deadline has passed."""
        if self.verdict is None and now > self.deadline:
            self._decide(self.waiting, f"{self.waiting} did not answer within {self.timeout:g} s")

    def _expect(self, party: Party, now: float) -> None:
        self.waiting = party
        self.deadline = now + self.timeout

    # -- turn-taking ---------------------------------------------------------------------------

    def _next_party(self) -> Party:
        """Who acts next: the challenger when it can move on what it has already seen."""
        if self.phase == "entry":
            return "challenger"
        if self.phase == "chunk":
            return "device" if self.chunk_data is None else "challenger"
        if self.phase in ("trace", "elements"):
            return "challenger" if self._fresh_split else "device"
        return "device"

    @property
    def last_answer(self) -> Answer | None:
        """The device's latest answer (what the challenger decides on)."""
        return self._last_answer

    # -- device answers ---------------------------------------------------------------------

    def answer(self, ans: Answer | None, *, now: float) -> None:
        """Take the device's answer to `query()` (None: it refuses)."""
        if self.verdict is not None:
            return
        if self.waiting != "device":
            raise InvalidInputError("the game is waiting for the challenger")
        self.tick(now)
        if self.verdict is not None:
            return
        q = self.query()
        self.record.messages.append(("query", message_bytes(q)))
        self.record.messages.append(("answer", message_bytes(ans)))
        self.rounds += 1
        try:
            if ans is None:
                raise _DecidedError("device", "device refused to answer")
            if self.phase in ("trace", "elements"):
                self._take_split(ans)
                self._fresh_split = True
            elif self.phase == "chunk":
                self._take_chunk(ans)
            elif self.phase == "open":
                self._judge_element(ans)
            elif self.phase == "header":
                self._judge_header(ans)
        except _DecidedError as d:
            self._decide(d.loser, d.reason)
            return
        self._last_answer = ans
        self._expect(self._next_party(), now)

    def _chunk_size(self, i: int) -> int:
        """Expected byte length of chunk i of the disputed entry."""
        assert self.leaf is not None
        return self.leaf.chunk_length(i)

    def _take_split(self, ans: Answer) -> None:
        if not isinstance(ans, SplitAnswer):
            raise _DecidedError("device", "answer is not a split")
        if len(ans.left) != 32 or len(ans.right) != 32:
            raise _DecidedError("device", "hashes must be 32 bytes")
        if node_hash(ans.left, ans.right) != self.current:
            raise _DecidedError("device", "revealed children do not hash to the committed subtree")
        k = split(self.lo, self.hi)
        for lo, hi, h, data in (
            (self.lo, k, ans.left, ans.left_leaf),
            (k, self.hi, ans.right, ans.right_leaf),
        ):
            if hi - lo != 1:
                continue
            if data is None or leaf_hash(data) != h:
                raise _DecidedError(
                    "device", f"leaf {lo} was not revealed or does not match its hash"
                )
            if self.phase == "trace":
                self._parse_leaf(lo, data)
            else:
                self._check_chunk(lo, data)

    def _take_chunk(self, ans: Answer) -> None:
        if not isinstance(ans, ChunkAnswer):
            raise _DecidedError("device", "answer is not a chunk")
        if len(ans.data) != self._chunk_size(self.lo) or leaf_hash(ans.data) != self.current:
            raise _DecidedError("device", "chunk does not match the committed element root")
        self._check_chunk(self.lo, ans.data)
        self.chunk_data = ans.data

    def _parse_leaf(self, index: int, data: bytes) -> EntryLeaf:
        """An entry leaf the device revealed: well formed, in the receipt's layout."""
        try:
            leaf = parse_entry_leaf(data)
        except InvalidInputError as exc:
            raise _DecidedError("device", f"entry {index} is malformed: {exc.message}") from exc
        if leaf.layout != self.claim.layout:
            raise _DecidedError(
                "device", f"entry {index} is not in trace layout v{self.claim.layout.version}"
            )
        return leaf

    def _check_chunk(self, index: int, data: bytes) -> None:
        """A chunk the device revealed: its length, and zero padding (v2) past the tensor."""
        assert self.leaf is not None
        if len(data) != self._chunk_size(index):
            raise _DecidedError("device", f"chunk {index} has the wrong length")
        try:
            self.leaf.check_padding(index, data)
        except VerificationError as exc:
            raise _DecidedError("device", exc.message) from exc

    # -- challenger moves -----------------------------------------------------------------------

    def move(self, mv: Move | None, *, now: float) -> None:
        """Take the challenger's move (None: it gives up)."""
        if self.verdict is not None:
            return
        if self.waiting != "challenger":
            raise InvalidInputError("the game is waiting for the device")
        self.tick(now)
        if self.verdict is not None:
            return
        self.record.messages.append(("move", message_bytes(mv)))
        try:
            if mv is None:
                raise _DecidedError("challenger", "challenger gave up")
            self._take_move(mv)
        except _DecidedError as d:
            self._decide(d.loser, d.reason)
            return
        self._expect(self._next_party(), now)

    def _take_move(self, mv: Move) -> None:
        if self.phase in ("trace", "elements"):
            if not isinstance(mv, Descend) or mv.side not in ("left", "right"):
                raise _DecidedError("challenger", "expected a side to descend into")
            ans = self._last_answer
            assert isinstance(ans, SplitAnswer)
            self._fresh_split = False
            k = split(self.lo, self.hi)
            if mv.side == "left":
                self.hi, self.current, data = k, ans.left, ans.left_leaf
            else:
                self.lo, self.current, data = k, ans.right, ans.right_leaf
            if self.hi - self.lo == 1:
                assert data is not None  # checked in _take_split
                if self.phase == "trace":
                    self.entry, self.leaf_data = self.lo, data
                    self.leaf = self._parse_leaf(self.lo, data)
                    self.phase = "entry"
                else:
                    self.phase, self.chunk_data = "chunk", data
            return
        if self.phase == "entry":
            if isinstance(mv, DisputeHeader):
                self.phase = "header"
                return
            if not isinstance(mv, Descend):
                raise _DecidedError("challenger", "expected to dispute the header or descend")
            assert self.leaf is not None
            chunks = self.leaf.chunks
            if chunks == 0:
                raise _DecidedError(
                    "challenger", "the entry is empty: only its header can be wrong"
                )
            self.current, self.lo, self.hi = self.leaf.root, 0, chunks
            if chunks > 1:
                self.phase = "elements"
                return
            self.phase, self.chunk_data = "chunk", None
            if self.leaf.size == 1:  # one element, nothing to choose: skip the chunk query
                self._choose_element(DisputeElement(0))
            return
        if self.phase == "chunk":
            if not isinstance(mv, DisputeElement):
                raise _DecidedError("challenger", "expected an element to dispute")
            self._choose_element(mv)
            return
        raise _DecidedError("challenger", f"no move is expected in phase {self.phase}")

    def _choose_element(self, mv: DisputeElement) -> None:
        assert self.leaf is not None
        per = self.leaf.per_chunk
        if not self.lo * per <= mv.element < min(self.leaf.size, (self.lo + 1) * per):
            raise _DecidedError("challenger", f"element {mv.element} is not in chunk {self.lo}")
        self.element = mv.element
        self.challenger_value = mv.value
        self.phase = "open"

    # -- deciding ------------------------------------------------------------------------------

    def needs_device(self) -> bool:
        """Whether the next step is the device's (else the challenger's)."""
        return self.verdict is None and self.waiting == "device"

    def _device_value(self, ans: OpenAnswer) -> int:
        assert self.leaf is not None and self.element is not None and self.entry is not None
        per = self.leaf.per_chunk
        if self.chunk_data is None:
            # A one-element entry: the opening carries its only chunk.
            opening = ans.entry_chunks.get((self.entry, 0))
            if opening is None:
                raise _DecidedError("device", "the disputed element was never revealed")
            try:
                opening.verify(self.leaf)
            except Error as exc:
                raise _DecidedError(
                    "device", f"bad audit path for the disputed element: {exc.message}"
                ) from exc
            self.chunk_data = opening.data
        return int(self.leaf.read(self.chunk_data, self.element % per, 1)[0])

    def _judge_element(self, ans: Answer) -> None:
        assert self.entry is not None and self.element is not None and self.leaf is not None
        if not isinstance(ans, OpenAnswer):
            raise _DecidedError("device", "answer is not an opening")
        start = time.perf_counter()
        ex = self.executor
        n_in = len(ex.input_names)
        self.device_value = self._device_value(ans)
        if self.entry < n_in:
            expected = self._input_element(self.entry, self.element)
            self.referee_reads = 1
        else:
            node, output = _node_output(ex, self.entry)
            src = _OpeningSource(self, node, ans)
            op = ex.ops[node]
            try:
                expected = op.element_of(output, self.element, self.leaf.shape, src)
            except _DecidedError:
                raise
            except Error as exc:
                raise _DecidedError(
                    "device", f"the committed inputs cannot produce this element: {exc.message}"
                ) from exc
            except (ValueError, IndexError) as exc:  # shapes the device committed do not fit
                raise _DecidedError(
                    "device", f"the committed shapes cannot produce this element: {exc}"
                ) from exc
            self.referee_reads = src.reads
            self.referee_macs = _macs(op, src)
        self.referee_value = expected
        self.referee_seconds = time.perf_counter() - start
        if expected != self.device_value:
            raise _DecidedError(
                "device", f"device committed {self.device_value}, the referee computes {expected}"
            )
        raise _DecidedError(
            "challenger", f"device's value {self.device_value} matches the referee's recomputation"
        )

    def _input_element(self, entry: int, element: int) -> int:
        name = self.executor.input_names[entry]
        if self.inputs is None or name not in self.inputs:
            raise InvalidInputError(
                f"the dispute is about input {name!r}: the referee needs the raw input"
            )
        raw = np.asarray(self.inputs[name]).reshape(-1)
        assert self.leaf is not None
        if raw.size != self.leaf.size:
            raise _DecidedError(
                "device", f"input {name!r} has {raw.size} elements, the trace {self.leaf.size}"
            )
        return self.executor.quantize_element(name, raw[element].item())

    def _judge_header(self, ans: Answer) -> None:
        assert self.entry is not None and self.leaf is not None
        if not isinstance(ans, OpenAnswer):
            raise _DecidedError("device", "answer is not an opening")
        ex = self.executor
        n_in = len(ex.input_names)
        entry = ex.entries[self.entry]
        dtype = "int64" if entry.kind == "i" else np.dtype(ex.storage).name
        if self.entry < n_in:
            name = ex.input_names[self.entry]
            if self.inputs is None or name not in self.inputs:
                raise InvalidInputError(
                    f"the dispute is about input {name!r}: the referee needs the raw input"
                )
            shape = tuple(np.asarray(self.inputs[name]).shape)
        else:
            node, output = _node_output(ex, self.entry)
            src = _OpeningSource(self, node, ans)
            try:
                shape = ex.ops[node].out_shape_of(output, src)
            except _DecidedError:
                raise
            except Error as exc:
                raise _DecidedError(
                    "device", f"the committed input shapes are invalid: {exc.message}"
                ) from exc
            except (ValueError, IndexError) as exc:
                raise _DecidedError(
                    "device", f"the committed input shapes are invalid: {exc}"
                ) from exc
            self.referee_reads = src.reads
        # A 0-d tensor is committed as shape (1,) (`TensorCommitment` stores numpy's 1-d
        # contiguous form of it), so the honest header of a scalar entry says [1].
        shape = committed_shape(shape)
        if (dtype, shape) != (self.leaf.dtype, self.leaf.shape):
            raise _DecidedError(
                "device",
                f"device committed {self.leaf.dtype}{list(self.leaf.shape)}, "
                f"the referee computes {dtype}{list(shape)}",
            )
        raise _DecidedError("challenger", "device's dtype and shape match the referee's")

    def _decide(self, loser: Party, reason: str) -> None:
        ex = self.executor
        node = node_index = None
        if self.entry is not None:
            e = ex.entries[self.entry]
            node, node_index = e.label, e.node_index
        self.phase = "done"
        self.verdict = Verdict(
            loser=loser,
            reason=reason,
            entry=self.entry,
            node=node,
            node_index=node_index,
            element=self.element,
            device_value=self.device_value,
            referee_value=self.referee_value,
            rounds=self.rounds,
            bytes_exchanged=self.record.bytes,
            referee_reads=self.referee_reads,
            referee_macs=self.referee_macs,
            entries=self.size,
            elements=self.leaf.size if self.leaf is not None else 0,
        )


_CONV_OPS = ("Conv", "ConvInteger", "QLinearConv")
_MATMUL_OPS = ("Gemm", "MatMul", "MatMulInteger", "QLinearMatMul")


def _macs(op: Op, src: _OpeningSource) -> int:
    """Multiply-adds of one recomputed element: its dot product for dense ops, else 0."""
    if op.node.op_type in _CONV_OPS + _MATMUL_OPS:
        return src.first_input_reads
    return 0


def play(
    game: DisputeGame,
    device: Callable[[Query], Answer | None],
    challenger: Challenger,
    *,
    clock: Callable[[], float] = time.monotonic,
    max_steps: int = 10_000,
) -> Verdict:
    """Run a game in process to its verdict. A party that raises is treated as refusing."""
    for _ in range(max_steps):
        if game.verdict is not None:
            return game.verdict
        if game.needs_device():
            try:
                ans = device(game.query())
            except Exception:  # a crashing device is a refusing device
                ans = None
            game.answer(ans, now=clock())
        else:
            try:
                mv = challenger(game)
            except Exception:  # a crashing challenger gives up
                mv = None
            game.move(mv, now=clock())
    raise InvalidInputError("the game did not end")  # pragma: no cover - bounded by the tree depth


# -- signed, logged verdicts -------------------------------------------------------------------


def _validate_verdict(statement: Statement, signer: str) -> None:
    p = statement.predicate
    if p.get("loser") not in ("device", "challenger"):
        raise VerificationError("verdict loser must be device or challenger", step="predicate")
    if not isinstance(p.get("reason"), str) or not isinstance(p.get("claim"), dict):
        raise VerificationError("verdict needs a reason and the claim", step="predicate")
    for key in ("rounds", "bytes_exchanged", "referee_reads"):
        v = p.get(key)
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise VerificationError(
                f"verdict {key} must be a non-negative integer", step="predicate"
            )


register_predicate_type(VERDICT_PREDICATE_TYPE, _validate_verdict)


def sign_verdict(
    verdict: Verdict, claim: Claim, executor: FixedExecutor, referee: Identity, **extra: Any
) -> Envelope:
    """The verdict as a DSSE-signed in-toto statement (subject: the disputed trace root)."""
    statement = encode_statement(
        [Subject("trace", claim.trace_root.hex())],
        VERDICT_PREDICATE_TYPE,
        verdict.to_predicate(claim, executor, **extra),
    )
    return sign_envelope(statement, IN_TOTO_PAYLOAD_TYPE, referee)


def log_verdict(envelope: Envelope, log: Any) -> int:
    """Append a signed verdict to a transparency log (`edgetrust.log.Log`); its index."""
    index: int = log.append(envelope.to_json())
    return index


def _node_output(ex: FixedExecutor, entry: int) -> tuple[int, int]:
    """(node index, output index) of a node's trace entry."""
    e = ex.entries[entry]
    assert e.node_index is not None
    return e.node_index, e.output


# -- challenging a receipt ------------------------------------------------------------------


def estimate_macs(executor: FixedExecutor, trace: Trace) -> int:
    """Multiply-adds of a full run (dense ops: output elements × K): what the referee avoids."""
    total = 0
    for i, op in enumerate(executor.ops):
        t = op.node.op_type
        out = trace.values[executor.entry_index(i)]
        if t in _CONV_OPS:
            k = int(getattr(op, "cg", 0) * getattr(op, "kh", 0) * getattr(op, "kw", 0))
        elif t in _MATMUL_OPS:
            a = executor.entry_of_tensor(op.node.input[0])
            shape = trace.values[a].shape if a is not None else ()
            k = (
                int(shape[0] if t == "Gemm" and getattr(op, "trans_a", False) else shape[-1])
                if shape
                else 0
            )
        else:
            continue
        total += int(out.size) * k
    return total


ChallengeStatus = Literal["agrees", "convicted", "cleared", "invalid-receipt"]


@dataclass(frozen=True)
class ChallengeResult:
    """What `challenge_receipt` found."""

    status: ChallengeStatus
    """"agrees": re-execution reproduces the receipt, nothing to dispute; "convicted"/"cleared":
    a game was played and the device lost/won; "invalid-receipt": refuted without a game."""
    reason: str
    verdict: Verdict | None = None
    envelope: Envelope | None = None
    """The referee-signed verdict statement."""
    log_index: int | None = None
    claim: Claim | None = None
    model_macs: int = 0
    """Multiply-adds of a full run, for comparison with the referee's."""
    seconds: float = 0.0
    """Wall time of the game (bisection and referee), excluding re-execution."""
    referee_seconds: float = 0.0


def _receipt_claim(receipt: Any) -> tuple[QuantPlan, Claim]:
    from edgetrust.runtime.fixed import EXECUTOR_NAME

    ex = receipt.executor
    if ex.get("name") != EXECUTOR_NAME:
        raise UnsupportedError(
            f"only receipts of the {EXECUTOR_NAME!r} executor can be challenged (this one: "
            f"{ex.get('name')!r}): other executors are not bit-exact"
        )
    settings = ex.get("settings")
    root = receipt.trace_root
    if not isinstance(settings, dict) or not isinstance(root, str):
        raise InvalidInputError("the receipt has no trace root or executor settings")
    plan_obj, w_root, w_size = (
        settings.get("plan"),
        settings.get("weights_root"),
        settings.get("weights_size"),
    )
    if not isinstance(plan_obj, dict) or not isinstance(w_root, str) or not isinstance(w_size, int):
        raise InvalidInputError(
            "the receipt's executor settings lack plan, weights_root or weights_size"
        )
    plan = QuantPlan.from_json(canonical_json(plan_obj))
    layout = layout_named(settings.get("trace"))
    return plan, Claim(parse_digest(root), parse_digest(w_root), w_size, layout)


def challenge_receipt(
    bundle: Any,
    *,
    model: bytes,
    inputs: Mapping[str, Any],
    opening: Any,
    device: Callable[[Query], Answer | None] | None = None,
    device_home: str | Path | None = None,
    referee: Identity | None = None,
    log: Any = None,
    timeout: float = 60.0,
) -> ChallengeResult:
    """Re-execute a fixed-point receipt and, if its trace differs, play the dispute game.

    Steps: (1) the receipt's signature and statement; (2) it names the fixed executor, a trace
    root, the plan and the weights root; (3) `model` is the receipt's model; (4) `inputs` open
    its input commitment; (5) the weights root matches the model and plan (else the receipt is
    refuted without a game); (6) re-execution: the same trace root means nothing to dispute;
    (7) the game against the device (`device`, or its stored trace in `device_home`); (8) the
    verdict is signed by `referee` and appended to `log`, when given.

    Raises:
        VerificationError: the receipt's signature, or the input opening, fails.
        UnsupportedError: not a fixed-point receipt.
        InvalidInputError: wrong model, malformed settings.
        NotFoundError: the device's trace is not available.
    """
    from edgetrust.receipts import read_receipt

    # 1-2. The receipt.
    receipt = read_receipt(bundle)
    plan, claim = _receipt_claim(receipt)
    # 3. The model.
    if digest_bytes(model) != receipt.model_digest:
        raise InvalidInputError("the model file is not the receipt's model (digests differ)")
    # 4. The input opening.
    if opening.commitment != receipt.input_commitment:
        raise VerificationError("the opening is for another receipt", step="4 opening")
    opening.verify(inputs)
    executor = FixedExecutor(model, precision=plan.precision, plan=plan, trace_layout=claim.layout)
    # 5. The weights root.
    weights = executor.weight_commitments()
    if (weights.root, weights.size) != (claim.weights_root, claim.weights_size):
        return ChallengeResult(
            "invalid-receipt",
            "the receipt's weights root does not match the model and plan",
            claim=claim,
        )
    # 6. Re-execution.
    outputs, mine = executor.run_traced(inputs)
    macs = estimate_macs(executor, mine)
    if mine.root == claim.trace_root:
        from edgetrust.receipts import tensors_digest

        if tensors_digest(outputs) != receipt.output_digest:
            return ChallengeResult(
                "invalid-receipt",
                "the receipt's outputs are not those of its trace",
                claim=claim,
                model_macs=macs,
            )
        return ChallengeResult(
            "agrees",
            "re-execution reproduces the receipt's trace root",
            claim=claim,
            model_macs=macs,
        )
    # 7. The game.
    if device is None:
        from edgetrust.runtime.fixed import TraceStore

        device = DeviceResponder(executor, TraceStore(device_home).get(claim.trace_root, executor))
    start = time.perf_counter()
    game = DisputeGame(executor, claim, inputs=inputs, timeout=timeout, now=time.monotonic())
    verdict = play(game, device, HonestChallenger(mine))
    seconds = time.perf_counter() - start
    # 8. Sign and log.
    envelope = index = None
    if referee is not None:
        envelope = sign_verdict(
            verdict,
            claim,
            executor,
            referee,
            receipt=digest_bytes(bundle.envelope.to_json()),
            device=receipt.issuer,
            challenger=referee.did,
        )
        if log is not None:
            index = log_verdict(envelope, log)
    status: ChallengeStatus = "convicted" if verdict.device_convicted else "cleared"
    return ChallengeResult(
        status, verdict.reason, verdict, envelope, index, claim, macs, seconds, game.referee_seconds
    )
