"""Verification of receipts and bundles, disputes, and zero-knowledge proofs."""
