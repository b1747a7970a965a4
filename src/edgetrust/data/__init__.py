"""Data stays home: dataset cards, consent grants, compute-to-data jobs, usage, attribution."""

from edgetrust.data.dataset import DatasetCard, canonical_records, digest_table, load_table
from edgetrust.data.store import DataStore

__all__ = ["DataStore", "DatasetCard", "canonical_records", "digest_table", "load_table"]
