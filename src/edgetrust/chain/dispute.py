"""The `DisputeGame` contract from Python: the on-chain referee for a dispute's final step.

The bisection over a trace runs off chain and ends on one output element of one dense node
(Gemm/MatMul with constant weights). This module builds the referee commitment v1 the contract
checks (see `contracts/DisputeGame.vy` for the layout), opens exactly what the final step needs
(K inputs, K weights, bias, multiplier, the claimed output: contiguous RFC 9162 range proofs),
and drives the contract: stake, open a dispute over a computation the device signed, resolve it
(the contract recomputes the element), or claim a timeout.

`referee_element()` is the fixed-point rule in plain Python integers, the same rule as
`edgetrust.runtime.fixed` (dot product, bias, per-channel multiplier and shift rounding half
away from zero, saturation) and as the contract; `RefereeCommitment.from_executor` commits a
real run of the deterministic executor.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from eth_abi.abi import encode as abi_encode
from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount
from web3 import Web3

from edgetrust.chain.anchor import TxResult
from edgetrust.chain.artifacts import load_artifact
from edgetrust.chain.rpc import Chain, checksum_address
from edgetrust.errors import InvalidInputError, NotFoundError, UnsupportedError
from edgetrust.log.merkle import inclusion_proof, leaf_hash, node_hash, root_from_leaves

if TYPE_CHECKING:
    from edgetrust.dsse import Envelope
    from edgetrust.identity import Identity
    from edgetrust.runtime.fixed import Fault, FixedExecutor

__all__ = [
    "CHUNK",
    "KIND_CONV",
    "KIND_DENSE",
    "ConvNode",
    "ConvStep",
    "DenseNode",
    "DisputeGame",
    "DisputeParams",
    "DisputeState",
    "FinalStep",
    "RefereeCommitment",
    "TensorCommitment",
    "VerdictEvent",
    "encode_int64",
    "mirror_verdict",
    "range_proof",
    "referee_element",
    "requantize",
]

KIND_DENSE = 1
KIND_CONV = 2
MAX_K = 256
CHUNK = 8
"""Elements per Merkle leaf of a committed tensor (64 bytes of int64)."""
MAX_TAPS = 48
MAX_TAP_VALUES = 8 * CHUNK * 4
MAX_TAP_PROOF = 40
_INT64_MIN = -(1 << 63)
_INT64_MAX = (1 << 63) - 1
_STATUS = {0: "none", 1: "open", 2: "cleared", 3: "convicted", 4: "timed-out"}
_RECORD_TYPES = ["uint256"] * 6 + ["bytes32", "bytes32", "uint256", "bytes32"] + ["uint256"] * 2
_CONV_TYPES = [*_RECORD_TYPES, *(["uint256"] * 14)]
_EMPTY_RECORD = abi_encode(_RECORD_TYPES, [0] * 6 + [bytes(32)] * 2 + [0, bytes(32)] + [0] * 2)


def requantize(acc: int, *, mult: int, shift: int, qmax: int) -> int:
    """``acc · mult / 2**shift`` rounded half away from zero, clamped to [-qmax, qmax].

    `edgetrust.runtime.fixed`'s `apply_rescale` then `saturate`, in Python integers: on the
    magnitude ``floor((|acc|·mult + 2**(s-1)) / 2**s)``, sign restored; a shift below 31 first
    moves ``min(|acc|, 2**(61-left))`` left by ``left = 31 - shift``, as the executor does.
    """
    a = abs(acc)
    s = shift
    if s < 31:
        left = 31 - s
        a = min(a, 1 << (61 - left)) << left
        s = 31
    r = (a * mult + (1 << (s - 1))) >> s
    y = -r if acc < 0 else r
    return max(-qmax, min(qmax, y))


def referee_element(
    a: Sequence[int], w: Sequence[int], bias: int, *, mult: int, shift: int, qmax: int
) -> int:
    """One output element of a dense node under the fixed-point rule (``Gemm.element``).

    ``acc = Σ a_j·w_j + bias``, then `requantize`.
    """
    if len(a) != len(w):
        raise InvalidInputError("inputs and weights differ in length")
    acc = sum(x * y for x, y in zip(a, w, strict=True)) + bias
    return requantize(acc, mult=mult, shift=shift, qmax=qmax)


def encode_int64(values: Sequence[int]) -> bytes:
    """Elements as packed 8-byte big-endian two's-complement int64 (the v1 leaf data)."""
    out = bytearray()
    for v in values:
        if not _INT64_MIN <= int(v) <= _INT64_MAX:
            raise InvalidInputError(f"value {v} does not fit in int64")
        out += int(v).to_bytes(8, "big", signed=True)
    return bytes(out)


def _levels(leaves: list[bytes]) -> list[list[bytes]]:
    # Level by level, promoting an unpaired last node: the RFC 9162 tree (section 2.1.1).
    levels = [leaves]
    while len(levels[-1]) > 1:
        cur = levels[-1]
        nxt = [node_hash(cur[i], cur[i + 1]) for i in range(0, len(cur) - 1, 2)]
        if len(cur) % 2:
            nxt.append(cur[-1])
        levels.append(nxt)
    return levels


def range_proof(levels: list[list[bytes]], start: int, count: int) -> list[bytes]:
    """The proof the contract's `_range_root` expects for leaves [start, start+count).

    Per level, bottom up: the left neighbour when the range starts on a right child, then the
    right neighbour when it ends on a left child that has a sibling. For one leaf this is the
    RFC 9162 audit path.
    """
    size = len(levels[0])
    if count < 1 or start < 0 or start + count > size:
        raise InvalidInputError(f"range [{start}, {start + count}) is outside a tree of {size}")
    proof: list[bytes] = []
    lo, hi = start, start + count
    for level in levels[:-1]:
        if lo % 2 == 1:
            proof.append(level[lo - 1])
            lo -= 1
        if hi % 2 == 1 and hi < len(level):
            proof.append(level[hi])
            hi += 1
        lo, hi = lo // 2, (hi + 1) // 2
    return proof


@dataclass(frozen=True)
class TensorCommitment:
    """A tensor (2-D view, C order) committed as an RFC 9162 tree of int64 leaves."""

    rows: int
    """Rows of the 2-D view."""
    cols: int
    """Columns of the 2-D view."""
    values: tuple[int, ...] = field(repr=False)
    """The elements, row-major."""
    levels: list[list[bytes]] = field(repr=False, compare=False)
    """Every level of the tree, leaves first (for proofs)."""

    @classmethod
    def of(cls, rows: int, cols: int, values: Sequence[int]) -> TensorCommitment:
        """Commit `values` (rows·cols int64 elements, row-major)."""
        vals = tuple(int(v) for v in values)
        if rows < 1 or cols < 1 or len(vals) != rows * cols:
            raise InvalidInputError(f"a {rows}x{cols} tensor needs {rows * cols} values")
        data = encode_int64(vals)
        step = 8 * CHUNK
        leaves = [leaf_hash(data[i : i + step]) for i in range(0, len(data), step)]
        return cls(rows, cols, vals, _levels(leaves))

    @property
    def root(self) -> bytes:
        """The tree's root hash."""
        return self.levels[-1][0]

    def record(self) -> bytes:
        """Leaf data of this tensor in a trace: abi.encode(rows, cols, root)."""
        return abi_encode(["uint256", "uint256", "bytes32"], [self.rows, self.cols, self.root])

    def opening(self, start: int, count: int) -> tuple[bytes, list[bytes]]:
        """Packed values of the chunks covering elements [start, start+count), and their proof.

        The contract finds element e of the range at offset ``e - CHUNK·(start // CHUNK)``.
        """
        if count < 1 or start < 0 or start + count > len(self.values):
            raise InvalidInputError(f"elements [{start}, {start + count}) are out of range")
        c0, c1 = start // CHUNK, (start + count - 1) // CHUNK + 1
        values = encode_int64(self.values[c0 * CHUNK : c1 * CHUNK])
        return values, range_proof(self.levels, c0, c1 - c0)


@dataclass(frozen=True)
class DenseNode:
    """A dense node's record in the model commitment, with its committed constants."""

    input_index: int
    """Trace index of the input activation A (M x K)."""
    output_index: int
    """Trace index of the output Y (M x N)."""
    weights: TensorCommitment
    """W as (N, K): one row of K weights per output channel."""
    bias: TensorCommitment
    """Bias at the accumulator scale, (1, N) or (1, 1)."""
    mult: TensorCommitment
    """Rescale multipliers, (1, N) or (1, 1)."""
    shift: int
    """Right shift of the rescale (the executor's `Rescale.shift`)."""
    qmax: int
    """Saturation bound."""

    @property
    def n(self) -> int:
        """Output channels."""
        return self.weights.rows

    @property
    def k(self) -> int:
        """Dot product length."""
        return self.weights.cols

    def fields(self) -> tuple[Any, ...]:
        """The NodeRecord tuple, in the contract's field order."""
        return (
            KIND_DENSE,
            self.input_index,
            self.output_index,
            self.n,
            self.k,
            self.qmax,
            self.weights.root,
            self.bias.root,
            self.bias.rows * self.bias.cols,
            self.mult.root,
            self.mult.rows * self.mult.cols,
            self.shift,
        )

    def record(self) -> bytes:
        """Leaf data of this node in the model commitment."""
        return abi_encode(_RECORD_TYPES, list(self.fields()))


@dataclass(frozen=True)
class ConvNode:
    """A Conv node's record in the model commitment (NCHW, the executor's geometry)."""

    input_index: int
    """Trace index of the input X (batch, C, H, W)."""
    output_index: int
    """Trace index of the output Y (batch, OC, OH, OW)."""
    weights: TensorCommitment
    """W as (OC, Cg·KH·KW): one row per output channel, as the executor stores it."""
    bias: TensorCommitment
    """Bias at the accumulator scale, (1, OC) or (1, 1)."""
    mult: TensorCommitment
    """Rescale multipliers, (1, OC) or (1, 1)."""
    shift: int
    """Right shift of the rescale."""
    qmax: int
    """Saturation bound."""
    c_in: int
    h: int
    w: int
    kh: int
    kw: int
    strides: tuple[int, int]
    dilations: tuple[int, int]
    pads: tuple[int, int]
    """(top, left) padding actually applied."""
    group: int
    oh: int
    ow: int

    @property
    def oc(self) -> int:
        """Output channels."""
        return self.weights.rows

    @property
    def k(self) -> int:
        """Taps per output element (Cg·KH·KW)."""
        return self.weights.cols

    def fields(self) -> tuple[Any, ...]:
        """The ConvRecord tuple, in the contract's field order."""
        return (
            KIND_CONV,
            self.input_index,
            self.output_index,
            self.oc,
            self.k,
            self.qmax,
            self.weights.root,
            self.bias.root,
            self.bias.rows * self.bias.cols,
            self.mult.root,
            self.mult.rows * self.mult.cols,
            self.shift,
            self.c_in,
            self.h,
            self.w,
            self.kh,
            self.kw,
            *self.strides,
            *self.dilations,
            *self.pads,
            self.group,
            self.oh,
            self.ow,
        )

    def record(self) -> bytes:
        """Leaf data of this node in the model commitment."""
        return abi_encode(_CONV_TYPES, list(self.fields()))

    def taps(self, element: int) -> list[tuple[int, int]]:
        """The input runs (start, count) output `element` reads, in the contract's order."""
        ox = element % self.ow
        oy = (element // self.ow) % self.oh
        oc = (element // (self.ow * self.oh)) % self.oc
        nb = element // (self.oc * self.oh * self.ow)
        cg = self.c_in // self.group
        g = oc // (self.oc // self.group)
        sy, sx = self.strides
        dy, dx = self.dilations
        ix0 = ox * sx - self.pads[1]
        kx_lo = 0 if ix0 >= 0 else (-ix0 + dx - 1) // dx
        kx_hi = min(self.kw, (self.w - ix0 + dx - 1) // dx) if self.w > ix0 else 0
        runs = []
        for c in range(cg):
            for ky in range(self.kh):
                iy = oy * sy + ky * dy - self.pads[0]
                if iy < 0 or iy >= self.h or kx_lo >= kx_hi:
                    continue
                start = ((nb * self.c_in + g * cg + c) * self.h + iy) * self.w + ix0 + kx_lo * dx
                runs.append((start, (kx_hi - 1 - kx_lo) * dx + 1))
        return runs


@dataclass(frozen=True)
class RefereeCommitment:
    """The model commitment (node records) and trace commitment (tensor records) of a run."""

    nodes: tuple[DenseNode | ConvNode | None, ...]
    """Node records in graph order (leaf i of the model tree); None for a node the contract
    cannot referee (an all-zero record of kind 0)."""
    tensors: tuple[TensorCommitment, ...]
    """Traced tensors (leaf t of the trace tree)."""

    @property
    def model_root(self) -> bytes:
        """Root of the model commitment."""
        return root_from_leaves([leaf_hash(_record(n)) for n in self.nodes])

    @property
    def trace_root(self) -> bytes:
        """Root of the trace commitment."""
        return root_from_leaves([leaf_hash(t.record()) for t in self.tensors])

    @classmethod
    def from_executor(
        cls, executor: FixedExecutor, inputs: Mapping[str, Any], *, fault: Fault | None = None
    ) -> RefereeCommitment:
        """Run `executor` on `inputs` and commit its trace and dense nodes in the v1 layout.

        Node records are indexed like the graph's nodes; a node the contract cannot referee
        (anything but Gemm without transA and MatMul, with constant weights) gets an empty
        record (kind 0), which the contract refuses. `fault` makes a lying device (see
        `edgetrust.runtime.fixed.Fault`; demos and tests only).
        """
        _, trace = executor.run_traced(dict(inputs), fault=fault)
        tensors = tuple(_commit_2d(np.asarray(v, np.int64)) for v in trace.values)
        by_name = {e.tensor: i for i, e in enumerate(executor.entries)}
        nodes: list[DenseNode | ConvNode | None] = []
        for node, op in zip(executor.nodes, executor.ops, strict=True):
            if node.op_type == "Conv":
                nodes.append(
                    _conv_node(executor, op, trace.values[by_name[node.input[0]]], by_name)
                )
                continue
            dense = (
                node.op_type in ("Gemm", "MatMul")
                and getattr(op, "b_const", False)
                and not getattr(op, "trans_a", False)
            )
            if not dense:
                nodes.append(None)
                continue
            p = op.params()
            w = np.asarray(p["w"], np.int64)
            shift = np.asarray(p["shift"], np.int64)
            bias = np.asarray(p["b"], np.int64).reshape(-1)
            mult = np.asarray(p["mult"], np.int64).reshape(-1)
            nodes.append(
                DenseNode(
                    input_index=by_name[node.input[0]],
                    output_index=by_name[node.output[0]],
                    weights=TensorCommitment.of(w.shape[0], w.shape[1], w.reshape(-1).tolist()),
                    bias=TensorCommitment.of(1, bias.size, bias.tolist()),
                    mult=TensorCommitment.of(1, mult.size, mult.tolist()),
                    shift=int(shift[0]),
                    qmax=executor.qmax,
                )
            )
        return cls(nodes=tuple(nodes), tensors=tensors)

    def _conv_step(self, node_index: int, node: ConvNode, element: int) -> ConvStep:
        return _conv_step_of(self, node_index, node, element)

    def final_step(self, node_index: int, element: int) -> FinalStep | ConvStep:
        """Everything the contract needs to recompute output `element` of node `node_index`."""
        if not 0 <= node_index < len(self.nodes):
            raise InvalidInputError(f"node index {node_index} out of range")
        node = self.nodes[node_index]
        if node is None:
            raise UnsupportedError(
                f"node {node_index} is not a node the on-chain referee can recompute"
            )
        if isinstance(node, ConvNode):
            step = self._conv_step(node_index, node, element)
            if len(step.taps) > MAX_TAPS:
                raise UnsupportedError(
                    f"node {node_index} reads {len(step.taps)} input runs per element; the "
                    f"on-chain referee takes at most {MAX_TAPS}"
                )
            return step
        a = self.tensors[node.input_index]
        y = self.tensors[node.output_index]
        if not 0 <= element < y.rows * y.cols:
            raise InvalidInputError(f"element {element} out of range")
        m, n = divmod(element, node.n)
        k = node.k
        model_leaves = [leaf_hash(_record(nd)) for nd in self.nodes]
        trace_leaves = [leaf_hash(t.record()) for t in self.tensors]
        return FinalStep(
            node=node.fields(),
            node_proof=inclusion_proof(node_index, model_leaves),
            a_rec=(a.rows, a.cols, a.root),
            a_rec_proof=inclusion_proof(node.input_index, trace_leaves),
            y_rec=(y.rows, y.cols, y.root),
            y_rec_proof=inclusion_proof(node.output_index, trace_leaves),
            a=a.opening(m * k, k),
            w=node.weights.opening(n * k, k),
            b=node.bias.opening(n if node.bias.cols > 1 else 0, 1),
            mult=node.mult.opening(n if node.mult.cols > 1 else 0, 1),
            y=y.opening(element, 1),
        )


def _conv_step_of(
    commitment: RefereeCommitment, node_index: int, node: ConvNode, element: int
) -> ConvStep:
    x = commitment.tensors[node.input_index]
    y = commitment.tensors[node.output_index]
    if not 0 <= element < y.rows * y.cols:
        raise InvalidInputError(f"element {element} out of range")
    oc = (element // (node.ow * node.oh)) % node.oc
    k = node.k
    trace_leaves = [leaf_hash(t.record()) for t in commitment.tensors]
    return ConvStep(
        node=node.fields(),
        node_proof=inclusion_proof(node_index, _model_leaves(commitment.nodes)),
        x_rec=(x.rows, x.cols, x.root),
        x_rec_proof=inclusion_proof(node.input_index, trace_leaves),
        y_rec=(y.rows, y.cols, y.root),
        y_rec_proof=inclusion_proof(node.output_index, trace_leaves),
        taps=[_tap(x, start, count) for start, count in node.taps(element)],
        w=node.weights.opening(oc * k, k),
        b=node.bias.opening(oc if node.bias.cols > 1 else 0, 1),
        mult=node.mult.opening(oc if node.mult.cols > 1 else 0, 1),
        y=y.opening(element, 1),
    )


def _tap(x: TensorCommitment, start: int, count: int) -> tuple[bytes, list[bytes]]:
    values, proof = x.opening(start, count)
    if len(values) > MAX_TAP_VALUES or len(proof) > MAX_TAP_PROOF:
        raise UnsupportedError("a Conv input run is too long for the on-chain referee")
    return values, proof


def _record(node: DenseNode | ConvNode | None) -> bytes:
    return _EMPTY_RECORD if node is None else node.record()


def _conv_node(
    executor: FixedExecutor, op: Any, x: npt.NDArray[Any], by_name: Mapping[str, int]
) -> ConvNode:
    p = op.params()
    w = np.asarray(p["w"], np.int64)
    bias = np.asarray(p["b"], np.int64).reshape(-1)
    mult = np.asarray(p["mult"], np.int64).reshape(-1)
    _, c_in, h, w_in = (int(d) for d in x.shape)
    oh, ow, pt, pl, _, _ = op.geometry(h, w_in)
    return ConvNode(
        input_index=by_name[op.node.input[0]],
        output_index=by_name[op.node.output[0]],
        weights=TensorCommitment.of(w.shape[0], w.shape[1], w.reshape(-1).tolist()),
        bias=TensorCommitment.of(1, bias.size, bias.tolist()),
        mult=TensorCommitment.of(1, mult.size, mult.tolist()),
        shift=int(np.asarray(p["shift"]).reshape(-1)[0]),
        qmax=executor.qmax,
        c_in=c_in,
        h=h,
        w=w_in,
        kh=int(op.kh),
        kw=int(op.kw),
        strides=(int(op.strides[0]), int(op.strides[1])),
        dilations=(int(op.dilations[0]), int(op.dilations[1])),
        pads=(int(pt), int(pl)),
        group=int(op.group),
        oh=int(oh),
        ow=int(ow),
    )


def _commit_2d(values: npt.NDArray[np.int64]) -> TensorCommitment:
    # The v1 trace views a tensor as (rows, last dimension); a scalar as 1 x 1.
    cols = int(values.shape[-1]) if values.ndim else 1
    rows = int(values.size // cols) if cols else 0
    return TensorCommitment.of(max(rows, 1), max(cols, 1), values.reshape(-1).tolist() or [0])


@dataclass(frozen=True)
class ConvStep:
    """Arguments of `DisputeGame.resolve_conv`: one opening per input run."""

    node: tuple[Any, ...]
    node_proof: list[bytes]
    x_rec: tuple[int, int, bytes]
    x_rec_proof: list[bytes]
    y_rec: tuple[int, int, bytes]
    y_rec_proof: list[bytes]
    taps: list[tuple[bytes, list[bytes]]]
    w: tuple[bytes, list[bytes]]
    b: tuple[bytes, list[bytes]]
    mult: tuple[bytes, list[bytes]]
    y: tuple[bytes, list[bytes]]

    def args(self) -> list[Any]:
        """Positional arguments after the dispute id."""
        return [
            self.node,
            self.node_proof,
            self.x_rec,
            self.x_rec_proof,
            self.y_rec,
            self.y_rec_proof,
            self.taps,
            self.w,
            self.b,
            self.mult,
            self.y,
        ]


def _model_leaves(nodes: Sequence[DenseNode | ConvNode | None]) -> list[bytes]:
    return [leaf_hash(_record(n)) for n in nodes]


@dataclass(frozen=True)
class FinalStep:
    """Arguments of `DisputeGame.resolve` (openings and proofs), ABI-ready."""

    node: tuple[Any, ...]
    node_proof: list[bytes]
    a_rec: tuple[int, int, bytes]
    a_rec_proof: list[bytes]
    y_rec: tuple[int, int, bytes]
    y_rec_proof: list[bytes]
    a: tuple[bytes, list[bytes]]
    w: tuple[bytes, list[bytes]]
    b: tuple[bytes, list[bytes]]
    mult: tuple[bytes, list[bytes]]
    y: tuple[bytes, list[bytes]]

    def args(self) -> list[Any]:
        """Positional arguments after the dispute id."""
        return [
            self.node,
            self.node_proof,
            self.a_rec,
            self.a_rec_proof,
            self.y_rec,
            self.y_rec_proof,
            self.a,
            self.w,
            self.b,
            self.mult,
            self.y,
        ]


@dataclass(frozen=True)
class DisputeParams:
    """Deployment parameters of a `DisputeGame`; immutable once deployed."""

    min_stake: int = 10**18
    """Smallest stake (wei) a device must hold to be disputed."""
    challenge_bond: int = 10**17
    """Bond (wei) a challenger posts; the device receives it when cleared."""
    response_window: int = 24 * 3600
    """Seconds to resolve a dispute before it times out against the device."""

    def __post_init__(self) -> None:
        if self.min_stake < 0:
            raise InvalidInputError("`min_stake` must not be negative")
        if self.challenge_bond < 0:
            raise InvalidInputError("`challenge_bond` must not be negative")
        if self.response_window <= 0:
            raise InvalidInputError("`response_window` must be a positive number of seconds")


@dataclass(frozen=True)
class DisputeState:
    """A dispute as stored in the contract."""

    dispute_id: int
    device: str
    challenger: str
    node_index: int
    element: int
    deadline: int
    bond: int
    status: str
    """"open", "cleared", "convicted" or "timed-out"."""


@dataclass(frozen=True)
class VerdictEvent:
    """A `Verdict` event: the outcome of a dispute."""

    dispute_id: int
    device: str
    convicted: bool
    claimed: int
    recomputed: int
    reason: str
    """"recomputed" or "timeout"."""
    tx: TxResult


def mirror_verdict(
    verdict: VerdictEvent,
    *,
    game: DisputeGame,
    commitment: RefereeCommitment,
    executor: FixedExecutor,
    node_index: int,
    element: int,
    signer: Identity,
    log: Any | None = None,
) -> tuple[Envelope, int | None]:
    """Mirror an on-chain verdict into the log as a signed `dispute-verdict/v1` statement.

    The statement is `edgetrust.verify.dispute`'s (same predicate type, validator and
    fields), with a ``chain`` member naming the chain, contract, dispute and transaction so
    that anyone can check it against the `Verdict` event. Appended to `log` (an
    `edgetrust.log.service.Log`) when given; returns the envelope and its log index.
    """
    from edgetrust.verify.dispute import Claim, Verdict, log_verdict, sign_verdict

    record = commitment.nodes[node_index] if 0 <= node_index < len(commitment.nodes) else None
    claim = Claim(
        trace_root=commitment.trace_root,
        weights_root=commitment.model_root,
        weights_size=len(commitment.nodes),
    )
    off_chain = Verdict(
        loser="device" if verdict.convicted else "challenger",
        reason=f"on-chain referee ({verdict.reason}): device said {verdict.claimed}, "
        f"rule gives {verdict.recomputed}",
        entry=None if record is None else record.output_index,
        node=f"#{node_index}",
        node_index=node_index,
        element=element,
        device_value=verdict.claimed,
        referee_value=verdict.recomputed,
        referee_reads=0 if record is None else 2 * record.k + 3,
        referee_macs=0 if record is None else record.k,
    )
    envelope = sign_verdict(
        off_chain,
        claim,
        executor,
        signer,
        chain={
            "chain_id": game.chain.chain_id,
            "contract": game.address,
            "dispute_id": verdict.dispute_id,
            "tx": verdict.tx.tx_hash,
            "commitment": "https://edgetrust.dev/referee-commitment/v1",
        },
    )
    index = None if log is None else log_verdict(envelope, log)
    return envelope, index


class DisputeGame:
    """A deployed `DisputeGame` contract."""

    def __init__(self, chain: Chain, address: str) -> None:
        self.chain = chain
        self.address = checksum_address(address)
        self.contract: Any = chain.w3.eth.contract(
            address=self.address, abi=load_artifact("DisputeGame").abi
        )

    @classmethod
    def deploy(
        cls, chain: Chain, account: LocalAccount, params: DisputeParams | None = None
    ) -> tuple[DisputeGame, TxResult]:
        """Deploy a new `DisputeGame` from the committed build."""
        p = params or DisputeParams()
        art = load_artifact("DisputeGame")
        address, receipt = chain.deploy(
            account,
            art.abi,
            art.bytecode,
            p.min_stake,
            p.challenge_bond,
            p.response_window,
            name="DisputeGame",
        )
        return cls(chain, address), TxResult.of(receipt)

    def stake(self, device: LocalAccount, amount: int) -> TxResult:
        """Add `amount` wei to `device`'s stake."""
        fn = self.contract.functions.stake()
        return TxResult.of(self.chain.transact(device, fn, action="stake", value=amount))

    def stake_of(self, address: str) -> int:
        """The stake (wei) `address` holds."""
        return int(
            self.chain.call(
                self.contract.functions.stake_of(Web3.to_checksum_address(address)),
                action="stake_of",
            )
        )

    def withdraw(self, device: LocalAccount, amount: int) -> TxResult:
        """Withdraw stake (refused while a dispute against `device` is open)."""
        fn = self.contract.functions.withdraw(amount)
        return TxResult.of(self.chain.transact(device, fn, action="withdraw"))

    def sign_commitment(self, device: LocalAccount, commitment: RefereeCommitment) -> bytes:
        """The device's EIP-191 signature committing it to (model root, trace root) here."""
        inner = Web3.keccak(
            abi_encode(
                ["bytes32", "uint256", "address", "bytes32", "uint256", "bytes32", "uint256"],
                [
                    Web3.keccak(text="edgetrust.dev/dispute-commitment/v1"),
                    self.chain.chain_id,
                    self.address,
                    commitment.model_root,
                    len(commitment.nodes),
                    commitment.trace_root,
                    len(commitment.tensors),
                ],
            )
        )
        signed = device.sign_message(encode_defunct(primitive=bytes(inner)))
        return bytes(signed.signature)

    def open_dispute(
        self,
        challenger: LocalAccount,
        *,
        device: str,
        commitment: RefereeCommitment,
        device_sig: bytes,
        node_index: int,
        element: int,
    ) -> tuple[int, TxResult]:
        """Open a dispute over output `element` of node `node_index`; returns (id, tx)."""
        bond = int(self.chain.call(self.contract.functions.CHALLENGE_BOND(), action="bond"))
        fn = self.contract.functions.open_dispute(
            Web3.to_checksum_address(device),
            commitment.model_root,
            len(commitment.nodes),
            commitment.trace_root,
            len(commitment.tensors),
            device_sig,
            node_index,
            element,
        )
        receipt = self.chain.transact(challenger, fn, action="open dispute", value=bond)
        events = self.contract.events.DisputeOpened().process_receipt(receipt)
        return int(events[0]["args"]["dispute_id"]), TxResult.of(receipt)

    def resolve(
        self, account: LocalAccount, dispute_id: int, step: FinalStep | ConvStep
    ) -> VerdictEvent:
        """Submit the final step; the contract recomputes the element and rules."""
        if isinstance(step, ConvStep):
            fn = self.contract.functions.resolve_conv(dispute_id, *step.args())
        else:
            fn = self.contract.functions.resolve(dispute_id, *step.args())
        receipt = self.chain.transact(account, fn, action="resolve dispute")
        return self._verdict(receipt)

    def claim_timeout(self, challenger: LocalAccount, dispute_id: int) -> VerdictEvent:
        """Convict a device that let the deadline pass without resolving."""
        fn = self.contract.functions.claim_timeout(dispute_id)
        receipt = self.chain.transact(challenger, fn, action="claim timeout")
        return self._verdict(receipt)

    def _verdict(self, receipt: Any) -> VerdictEvent:
        events = self.contract.events.Verdict().process_receipt(receipt)
        a = events[0]["args"]
        return VerdictEvent(
            dispute_id=int(a["dispute_id"]),
            device=Web3.to_checksum_address(a["device"]),
            convicted=bool(a["convicted"]),
            claimed=int(a["claimed"]),
            recomputed=int(a["recomputed"]),
            reason=str(a["reason"]),
            tx=TxResult.of(receipt),
        )

    def state(self, dispute_id: int) -> DisputeState:
        """Read dispute `dispute_id` from the contract."""
        d = self.chain.call(self.contract.functions.disputes(dispute_id), action="dispute")
        if int(d[10]) == 0:
            raise NotFoundError(f"no dispute {dispute_id} on {self.address}")
        return DisputeState(
            dispute_id=dispute_id,
            device=Web3.to_checksum_address(d[0]),
            challenger=Web3.to_checksum_address(d[1]),
            node_index=int(d[6]),
            element=int(d[7]),
            deadline=int(d[8]),
            bond=int(d[9]),
            status=_STATUS.get(int(d[10]), "unknown"),
        )

    def requantize(self, acc: int, *, mult: int, shift: int, qmax: int) -> int:
        """The contract's rescale-and-saturate of one accumulator (a free call, for tests)."""
        return int(
            self.chain.call(
                self.contract.functions.requantize(acc, mult, shift, qmax), action="requantize"
            )
        )
