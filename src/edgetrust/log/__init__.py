"""The transparency log: RFC 9162 Merkle trees, a SQLite store, C2SP checkpoints and notes."""
