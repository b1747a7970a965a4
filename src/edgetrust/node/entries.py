"""What may be logged: a submitted DSSE envelope checked and reduced to its logged bytes.

A library function of its own (the node, the CLI's offline ``log append`` and the benchmarks
all call `prepare_entry`): validation is `open_signed_statement`; this module adds the
canonical form of the envelope and the entry-size limit, and fans a batch out to processes.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

# The entry types a node accepts are those registered with the statement registry: importing
# these modules registers receipts, batch receipts and model cards.
import edgetrust.models
import edgetrust.receipts  # noqa: F401
from edgetrust.dsse import Envelope, Signature, envelope_from_dict
from edgetrust.errors import Error, InvalidInputError, ProfileError
from edgetrust.statement import COSIGNER_RULE, named_cosigners, open_signed_statement

__all__ = [
    "BatchEntryError",
    "COSIGNER_RULE",
    "ONE_SIGNATURE_RULE",
    "PreparedEntry",
    "canonical_envelope_bytes",
    "canonical_signatures",
    "prepare_entries",
    "prepare_entry",
]


@dataclass(frozen=True)
class PreparedEntry:
    """A submission that passed every check, ready to append."""

    data: bytes
    """The entry as it will be logged: the canonical (RFC 8785) JSON of the envelope."""
    signer: str
    """The verified DID of the envelope's first signer (rate limits are charged to it)."""


ONE_SIGNATURE_RULE = "one signature per key id, the issuer's first"
"""The rule named by `ProfileError` when a key id signs an envelope twice."""


def canonical_signatures(envelope: Envelope, cosigners: frozenset[str] = frozenset()) -> Envelope:
    """The envelope in its one logged form: the issuer's signature first, co-signers by key id.

    The issuer is the first signer (the one the predicate's validator checked). The other
    signers must be exactly `cosigners`, the DIDs the statement names as its co-signers
    (`edgetrust.statement.named_cosigners`): a signature by anyone else would let anyone make
    a new entry of a logged statement by adding their own, and a named co-signer's missing
    signature would let anyone make one by taking it away. So a payload has one logged form,
    and a replay in any signature order is found by its bytes (`Log.index_of`), by any node.

    Raises:
        ProfileError: a key id signs twice (`ONE_SIGNATURE_RULE`), or the co-signers are not
            those the statement names (`COSIGNER_RULE`).
    """
    seen: set[str] = set()
    for s in envelope.signatures:
        if s.keyid in seen:
            raise ProfileError(
                f"envelope is signed twice by {s.keyid:.80}", rule=ONE_SIGNATURE_RULE
            )
        seen.add(s.keyid)
    first, *rest = envelope.signatures
    others = {s.keyid for s in rest}
    if others != cosigners:
        extra, missing = sorted(others - cosigners), sorted(cosigners - others)
        what = (
            f"signed by {extra[0]:.80}, not a co-signer the statement names"
            if extra
            else f"not signed by {missing[0]:.80}, a co-signer the statement names"
        )
        raise ProfileError(f"envelope is {what}", rule=COSIGNER_RULE)
    ordered: tuple[Signature, ...] = (first, *sorted(rest, key=lambda s: s.keyid))
    return Envelope(envelope.payload, envelope.payload_type, ordered)


def canonical_envelope_bytes(envelope: Envelope) -> bytes:
    r"""The bytes of ``envelope.to_json()`` (RFC 8785), computed about ten times faster.

    Written here because the `rfc8785` package is pure Python and costs ~100 µs per envelope,
    close to an Ed25519 verification, on the node's hot path. An envelope holds only strings
    under fixed ASCII keys, and for strings RFC 8785 §3.2.2.2 escaping is exactly what
    ``json.dumps(ensure_ascii=False)`` does (short escapes, lower-case ``\u00xx`` for other
    controls, everything else verbatim), and its key order is plain sorting. A property test
    checks the equality against `Envelope.to_json`.
    """
    try:
        return json.dumps(
            envelope.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=False
        ).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidInputError("envelope has no canonical JSON form (lone surrogate)") from exc


def prepare_entry(envelope: Envelope | bytes, *, max_entry: int) -> PreparedEntry:
    """Check that `envelope` may be logged and return its canonical bytes and signer.

    Steps: (1) it parses as a DSSE envelope, every signature verifies, its statement is of a
    registered predicate type and passes that type's validator (`open_signed_statement`);
    (2) no key id signs twice, the signers besides the issuer are exactly the co-signers the
    statement names (a capture root's wearer; none for most types), and the logged form lists
    the issuer's signature first and co-signatures by key id (`canonical_signatures`); (3) its
    canonical form fits in a tlog-tiles entry (`max_entry` bytes).

    Every accepted submission of one payload thus reduces to the same bytes: a replay or a
    reordering of a logged entry is found by `Log.index_of`, in any node sharing the store.

    Raises:
        ProfileError: the payload is not canonical JSON, a key id signs twice, or the
            co-signers are not those the statement names.
        InvalidInputError, VerificationError, UnsupportedError: the envelope is refused.
    """
    signed = open_signed_statement(envelope, max_bytes=max(max_entry * 2, 1024))
    cosigners = named_cosigners(signed.statement, signed.signer)
    canonical = canonical_signatures(signed.envelope, cosigners)
    data = canonical_envelope_bytes(canonical)
    if len(data) > max_entry:
        raise InvalidInputError(
            f"entry is {len(data)} bytes canonically, over the {max_entry}-byte entry limit"
        )
    return PreparedEntry(data, signed.signer)


def _prepare_dict(obj: object, max_entry: int) -> PreparedEntry:
    return prepare_entry(envelope_from_dict(obj), max_entry=max_entry)


def _prepare_chunk(
    items: Sequence[object], offset: int, max_entry: int
) -> list[tuple[bytes, str]] | tuple[int, str, str]:
    """Prepare a chunk of a batch, in a worker process or not.

    Returns plain tuples, which pickle cheaply, or the first refused entry by its position in
    the whole batch.
    """
    out = []
    for i, obj in enumerate(items):
        try:
            p = _prepare_dict(obj, max_entry)
        except Error as exc:
            return offset + i, type(exc).__name__, exc.diagnostics()
        out.append((p.data, p.signer))
    return out


class BatchEntryError(InvalidInputError):
    """One entry of a batch was refused; nothing of the batch was logged."""

    def __init__(self, position: int, error: str, message: str) -> None:
        super().__init__(f"entry {position}: {message}")
        self.position = position
        """Index of the refused entry within the submitted batch."""
        self.error = error
        """The error type that refused it."""


def prepare_entries(
    items: Sequence[object],
    *,
    max_entry: int,
    pool: ProcessPoolExecutor | None = None,
    workers: int = 1,
) -> list[PreparedEntry]:
    """Prepare every envelope (as parsed JSON) of a batch; all must pass, or none is logged.

    With `pool` (of `workers` processes), signatures are verified in worker processes:
    cryptography's Ed25519 verify holds the GIL (measured: two threads verify barely faster
    than one), so processes are the only way to use a second core for it.

    Raises:
        BatchEntryError: the first refused entry, by position.
    """
    if pool is None or len(items) < 64:
        result = _prepare_chunk(items, 0, max_entry)
        if isinstance(result, tuple):
            raise BatchEntryError(*result)
        return [PreparedEntry(*r) for r in result]
    step = -(-len(items) // max(workers, 1))
    futures = [
        pool.submit(_prepare_chunk, items[i : i + step], i, max_entry)
        for i in range(0, len(items), step)
    ]
    prepared: list[PreparedEntry] = []
    for fut in futures:
        result = fut.result()
        if isinstance(result, tuple):
            raise BatchEntryError(*result)
        prepared.extend(PreparedEntry(*r) for r in result)
    return prepared
