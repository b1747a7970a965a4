"""The transparency log: RFC 9162 Merkle trees, a SQLite store, C2SP checkpoints and notes.

`Log` is the usual entry point (an embedded log with a signing key); the pure Merkle functions,
the store and the checkpoint formats are usable on their own. See docs/log.md.
"""

from edgetrust.log.checkpoint import (
    Checkpoint,
    Note,
    NoteSignature,
    NoteSigner,
    NoteVerifier,
    cosign_checkpoint,
    cosignature_line,
    cosignature_timestamp,
    parse_checkpoint_body,
    parse_note,
    sign_checkpoint,
    sign_note,
    verify_checkpoint,
    verify_cosignatures,
    verify_note,
)
from edgetrust.log.merkle import (
    EMPTY_ROOT,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    merkle_root_and_paths,
    node_hash,
    root_from_inclusion_proof,
    root_from_leaves,
    verify_consistency,
    verify_inclusion,
)
from edgetrust.log.service import DEFAULT_ORIGIN, Log
from edgetrust.log.store import LogStore, SqliteLogStore, StoreError

__all__ = [
    "DEFAULT_ORIGIN",
    "EMPTY_ROOT",
    "Checkpoint",
    "Log",
    "LogStore",
    "Note",
    "NoteSignature",
    "NoteSigner",
    "NoteVerifier",
    "SqliteLogStore",
    "StoreError",
    "consistency_proof",
    "cosign_checkpoint",
    "cosignature_line",
    "cosignature_timestamp",
    "inclusion_proof",
    "leaf_hash",
    "merkle_root_and_paths",
    "node_hash",
    "parse_checkpoint_body",
    "parse_note",
    "root_from_inclusion_proof",
    "root_from_leaves",
    "sign_checkpoint",
    "sign_note",
    "verify_checkpoint",
    "verify_consistency",
    "verify_cosignatures",
    "verify_inclusion",
    "verify_note",
]
