"""Both sides of a `Referee` dispute, and `play_dispute`, which runs one to its verdict.

`DeviceSide` answers from the device's stored trace; `ChallengerSide` moves from its own
re-execution and builds the final step's openings (a Gemm element for `Referee.final_step`, a
Conv element as `ConvReferee.recompute` calldata for `Referee.final_step_conv`). The challenger
reads the device's reveals from the contract's events, as a stranger would.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from eth_account.signers.local import LocalAccount

from edgetrust.chain.anchor import TxResult
from edgetrust.chain.dispute import range_proof
from edgetrust.chain.referee import (
    CHUNK,
    KIND_CONV,
    KIND_DENSE,
    DisputeOutcome,
    ReceiptClaim,
    Referee,
    op_table,
)
from edgetrust.errors import InvalidInputError, UnsupportedError
from edgetrust.log.merkle import leaf_hash
from edgetrust.runtime.trace import LAYOUT_V2, MerkleLevels, Trace

if TYPE_CHECKING:
    from edgetrust.runtime.fixed import FixedExecutor

__all__ = ["ChallengerSide", "DeviceSide", "play_dispute", "referee_window"]


class DeviceSide:
    """The device's answers, from its stored trace."""

    def __init__(self, trace: Trace) -> None:
        if trace.layout != LAYOUT_V2:
            raise UnsupportedError("the on-chain referee checks trace layout v2 only")
        self.trace = trace

    def entry_hashes(self) -> list[bytes]:
        """Every entry-leaf hash (level 0 of the trace tree)."""
        return list(self.trace.tree.levels[0])

    def entry(self, k: int) -> tuple[bytes, list[bytes], list[bytes]]:
        """Entry k's leaf, its audit path, its chunk hashes."""
        op = self.trace.open_leaf(k)
        return op.data, list(op.path), list(self.trace.commitment(k).levels.levels[0])

    def chunk(self, k: int, c: int) -> tuple[bytes, bytes, list[bytes]]:
        """Entry k's leaf, chunk c and the chunk's audit path."""
        op = self.trace.open_chunk(k, c)
        return self.trace.leaf_bytes[k], op.data, list(op.path)


class ChallengerSide:
    """The challenger's moves, from its own re-execution (`trace`) of the receipt's model."""

    def __init__(self, executor: FixedExecutor, trace: Trace) -> None:
        self.ex = executor
        self.trace = trace
        self.weights = executor.weight_commitments()
        self.ops = op_table(executor, self.weights)
        self.ops_tree = MerkleLevels([leaf_hash(r) for r in self.ops])
        self.device_tree: MerkleLevels | None = None

    def pick_entry(self, hashes: list[bytes]) -> int:
        """The first entry whose leaf differs from this re-execution's."""
        mine = self.trace.tree.levels[0]
        self.device_tree = MerkleLevels(hashes)
        for k, (a, b) in enumerate(zip(hashes, mine, strict=True)):
            if a != b:
                return k
        raise InvalidInputError("the device's trace equals this re-execution: nothing to dispute")

    def pick_chunk(self, k: int, leaf: bytes, chunk_hashes: list[bytes]) -> int:
        """The first chunk of entry k that differs from this re-execution's."""
        mine = self.trace.commitment(k).levels.levels[0]
        if self.trace.leaf_bytes[k] != leaf and len(mine) != len(chunk_hashes):
            return 0
        for c, (a, b) in enumerate(zip(chunk_hashes, mine, strict=False)):
            if a != b:
                return c
        return 0

    def pick_element(self, k: int, leaf: bytes, c: int, data: bytes) -> int:
        """The first element of chunk c (as revealed) that differs from this re-execution's."""
        isz = self.trace.values[k].dtype.itemsize
        per = CHUNK // isz
        flat = self.trace.values[k].reshape(-1)
        count = int.from_bytes(leaf[32:64], "big")
        for j in range(c * per, min((c + 1) * per, count)):
            off = (j - c * per) * isz
            if int.from_bytes(data[off : off + isz], "big", signed=True) != int(flat[j]):
                return j
        return c * per

    def final_args(self, k: int, leaf: bytes, data: bytes, element: int) -> list[Any]:
        """The final step's arguments for `element` of entry k (device's leaf and chunk)."""
        rec = self.ops[k]
        fields = [int.from_bytes(rec[32 * i : 32 * i + 32], "big") for i in range(8)]
        if fields[0] != KIND_DENSE:
            raise UnsupportedError(
                f"entry {k} ({self.ex.entries[k].label}) is not a Gemm the contract recomputes"
            )
        _, _, src, _, wi, bi, mi, si = fields
        a_vals = self.trace.values[src]
        m_rows, kk = a_vals.shape
        n_out = self.weights.values[wi].shape[0]
        row, col = divmod(element, n_out) if element < m_rows * n_out else (0, 0)

        def run(c: Any, lo: int, count: int) -> tuple[bytes, list[bytes]]:
            isz = c.values_itemsize
            c0, c1 = lo * isz // CHUNK, ((lo + count) * isz - 1) // CHUNK + 1
            chunks = b"".join(c.open(j) for j in range(c0, c1))
            return chunks, range_proof(c.levels, c0, c1 - c0)

        def leaf_of(w: Any, i: int) -> tuple[bytes, list[bytes]]:
            op = w.open_leaf(i)
            return op.data, list(op.path)

        def one(i: int) -> tuple[tuple[bytes, list[bytes]], tuple[bytes, list[bytes]]]:
            n = self.weights.values[i].size
            return leaf_of(self.weights, i), run(_Tensor(self.weights, i), col if n > 1 else 0, 1)

        # The input's leaf is this re-execution's (they agree); its audit path runs through the
        # device's tree (the revealed entry hashes).
        a_leaf = self.trace.leaf_bytes[src]
        a_path = (self.device_tree or self.trace.tree).path(src)
        b_l, b_r = one(bi)
        m_l, m_r = one(mi)
        s_l, s_r = one(si)
        return [
            leaf,
            data,
            element,
            tuple(fields),
            self.ops_tree.path(k),
            (a_leaf, a_path),
            run(_Tensor(self.trace, src), row * kk, kk),
            leaf_of(self.weights, wi),
            run(_Tensor(self.weights, wi), col * kk, kk),
            b_l,
            b_r,
            m_l,
            m_r,
            s_l,
            s_r,
        ]

    def conv_call(
        self, referee: Referee, claim: ReceiptClaim, k: int, leaf: bytes, element: int
    ) -> bytes:
        """`ConvReferee.recompute` calldata for `element` of Conv entry k."""
        rec = self.ops[k]
        f = [int.from_bytes(rec[32 * i : 32 * i + 32], "big") for i in range(19)]
        if f[0] != KIND_CONV:
            raise UnsupportedError(f"entry {k} ({self.ex.entries[k].label}) is not a Conv")
        _, _, src, _, wi, bi, mi, si, kh, kw, sy, sx, dy, dx, pt, pl, group, _, _ = f
        x = self.trace.values[src]
        _, c_in, h, w_ = x.shape
        oc_all, k_len = self.weights.values[wi].shape
        _, _, oh, ow = self.trace.values[k].shape if self.trace.values[k].ndim == 4 else (0,) * 4
        ox, oy = element % max(ow, 1), (element // max(ow, 1)) % max(oh, 1)
        oc = (element // max(ow * oh, 1)) % oc_all
        nb = element // max(ow * oh * oc_all, 1)
        cg = c_in // group
        g = oc // (oc_all // group)
        xt = _Tensor(self.trace, src)
        ix0 = ox * sx - pl
        kx_lo = 0 if ix0 >= 0 else (-ix0 + dx - 1) // dx
        kx_hi = min(kw, (w_ - ix0 + dx - 1) // dx) if w_ > ix0 else 0
        taps = []
        for c in range(cg):
            for ky in range(kh):
                iy = oy * sy + ky * dy - pt
                if iy < 0 or iy >= h or kx_lo >= kx_hi:
                    continue
                start = ((nb * c_in + g * cg + c) * h + iy) * w_ + ix0 + kx_lo * dx
                taps.append(_run(xt, start, (kx_hi - 1 - kx_lo) * dx + 1))
        one = self._one
        b_l, b_r = one(bi, oc)
        m_l, m_r = one(mi, oc)
        s_l, s_r = one(si, 0)
        conv = referee.conv_referee()
        fn = conv.functions.recompute(
            claim.args(),
            k,
            leaf,
            element,
            tuple(f),
            self.ops_tree.path(k),
            (self.trace.leaf_bytes[src], (self.device_tree or self.trace.tree).path(src)),
            taps,
            self._leaf(wi),
            _run(_Tensor(self.weights, wi), oc * k_len, k_len),
            b_l,
            b_r,
            m_l,
            m_r,
            s_l,
            s_r,
        )
        return bytes.fromhex(fn._encode_transaction_data()[2:])

    def _leaf(self, i: int) -> tuple[bytes, list[bytes]]:
        op = self.weights.open_leaf(i)
        return op.data, list(op.path)

    def _one(
        self, i: int, channel: int
    ) -> tuple[tuple[bytes, list[bytes]], tuple[bytes, list[bytes]]]:
        n = self.weights.values[i].size
        return self._leaf(i), _run(_Tensor(self.weights, i), channel if n > 1 else 0, 1)


def _run(t: _Tensor, lo: int, count: int) -> tuple[bytes, list[bytes]]:
    """Chunks covering elements [lo, lo + count) of a tensor, with their range proof."""
    isz = t.values_itemsize
    c0, c1 = lo * isz // CHUNK, ((lo + count) * isz - 1) // CHUNK + 1
    return b"".join(t.open(j) for j in range(c0, c1)), range_proof(t.levels, c0, c1 - c0)


@dataclass
class _Tensor:
    """Chunks and levels of entry i of a trace or weight commitments."""

    owner: Any
    i: int

    @property
    def values_itemsize(self) -> int:
        return int(self.owner.values[self.i].dtype.itemsize)

    @property
    def levels(self) -> list[list[bytes]]:
        return list(self.owner.commitment(self.i).levels.levels)

    def open(self, c: int) -> bytes:
        return bytes(self.owner.open_chunk(self.i, c).data)


def play_dispute(
    referee: Referee,
    *,
    device: LocalAccount,
    device_side: DeviceSide | None,
    challenger: LocalAccount,
    challenger_side: ChallengerSide,
    open_args: dict[str, Any],
    claim: ReceiptClaim,
    on_move: Callable[[str, int], None] | None = None,
) -> DisputeOutcome:
    """Open a dispute and play every move; a silent device (`device_side` None) times out.

    The challenger reads the device's reveals from the contract's events, as a stranger would.
    """
    gas: dict[str, int] = {}

    def note(what: str, tx: TxResult) -> None:
        gas[what] = tx.gas_used
        if on_move is not None:
            on_move(what, tx.gas_used)

    dispute_id, tx = referee.open_dispute(challenger, claim=claim, **open_args)
    note("open", tx)
    if device_side is None:
        referee.chain.advance_time(referee_window(referee) + 1)
        out = referee.claim_timeout(challenger, dispute_id)
        out.gas.update(gas)
        return out
    tx = referee.reveal_entries(device, dispute_id, claim, device_side.entry_hashes())
    note("reveal entries", tx)
    hashes = [bytes(h) for h in _logged(referee, tx, "EntriesRevealed")["hashes"]]
    k = challenger_side.pick_entry(hashes)
    note("name entry", referee.name_entry(challenger, dispute_id, claim, k))
    tx = referee.reveal_entry(device, dispute_id, claim, device_side.entry(k))
    note("reveal entry", tx)
    ev = _logged(referee, tx, "EntryRevealed")
    leaf, chunk_hashes = bytes(ev["leaf"]), [bytes(h) for h in ev["chunk_hashes"]]
    c = challenger_side.pick_chunk(k, leaf, chunk_hashes)
    note("name chunk", referee.name_chunk(challenger, dispute_id, claim, c))
    tx = referee.reveal_chunk(device, dispute_id, claim, device_side.chunk(k, c))
    note("reveal chunk", tx)
    data = bytes(_logged(referee, tx, "ChunkRevealed")["data"])
    element = challenger_side.pick_element(k, leaf, c, data)
    if int.from_bytes(challenger_side.ops[k][:32], "big") == KIND_CONV:
        call = challenger_side.conv_call(referee, claim, k, leaf, element)
        out, tx = referee.final_step_conv(
            challenger, dispute_id, claim, (leaf, data, element), call
        )
    else:
        args = challenger_side.final_args(k, leaf, data, element)
        out, tx = referee.final_step(challenger, dispute_id, claim, args)
    note("final", tx)
    out.gas = gas
    return out


def referee_window(referee: Referee) -> int:
    """The referee's response window (seconds)."""
    return int(referee._view("RESPONSE_WINDOW"))


def _logged(referee: Referee, tx: TxResult, name: str) -> Any:
    receipt = referee.chain.w3.eth.get_transaction_receipt(tx.tx_hash)  # type: ignore[arg-type]
    return referee._event(receipt, name)
