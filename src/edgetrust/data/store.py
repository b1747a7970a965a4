"""The owner's dataset store: files under `$EDGETRUST_HOME/data/`, content-addressed, 0600.

Layout: ``<home>/data/<hex>/source.<kind>`` holds the exact bytes the owner added and
``<hex>/card.json`` the signed card, where ``<hex>`` is the digest of the canonical records.
Reading a dataset back re-parses and re-digests it, so a file changed on disk is refused, not
used. Nothing here leaves the owner's machine; only cards (and results, through jobs) do.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from edgetrust.data.dataset import (
    DEFAULT_MAX_DATASET_BYTES,
    DatasetCard,
    Table,
    digest_table,
    load_table,
    parse_table,
    read_dataset_card,
)
from edgetrust.dsse import Envelope, parse_envelope
from edgetrust.encoding import digest_hex
from edgetrust.errors import InvalidInputError, NotFoundError
from edgetrust.files import write_private
from edgetrust.home import resolve_home
from edgetrust.identity import Identity

__all__ = ["DataStore"]

_PREFIX_RE = re.compile(r"^(sha256:)?[0-9a-f]{8,64}$")


class DataStore:
    """Datasets an owner keeps, by digest, with their signed cards."""

    def __init__(
        self,
        home: str | os.PathLike[str] | None = None,
        *,
        max_bytes: int = DEFAULT_MAX_DATASET_BYTES,
    ) -> None:
        self.root = resolve_home(home) / "data"
        self.max_bytes = max_bytes

    def _dir(self, digest: str) -> Path:
        return self.root / digest_hex(digest)

    def add_file(
        self,
        path: str | os.PathLike[str],
        *,
        owner: Identity,
        name: str | None = None,
        licence: str = "all-rights-reserved",
        provenance: tuple[str, ...] | list[str] = (),
        description: str = "",
    ) -> tuple[DatasetCard, Envelope]:
        """Add a dataset file (``.npy``, ``.npz``, ``.csv``, ``.jsonl``) and sign its card."""
        table, data, kind = load_table(Path(path), max_bytes=self.max_bytes)
        return self._add(
            table,
            data,
            kind,
            owner=owner,
            name=name or Path(path).stem,
            licence=licence,
            provenance=provenance,
            description=description,
        )

    def add_captures(
        self,
        directory: str | os.PathLike[str],
        *,
        owner: Identity,
        name: str | None = None,
        licence: str = "all-rights-reserved",
        description: str = "",
    ) -> tuple[DatasetCard, Envelope]:
        """Add a directory of signed EDF/BDF captures as one dataset and sign its card.

        Every file is verified against its signed manifest first (`capture.dataset`); the card's
        provenance lists each capture's root and its ``extra`` names each root's device, so
        anyone can check the roots against a log (`verify_capture_provenance`). The frames are
        stored as an ``.npz`` (columns ``x``, ``capture``, ``frame``).
        """
        import io

        import numpy as np

        from edgetrust.capture.dataset import describe_captures

        root = Path(directory)
        card, table = describe_captures(
            root,
            name=name or root.name,
            owner=owner.did,
            licence=licence,
            description=description,
        )
        buf = io.BytesIO()
        np.savez(buf, allow_pickle=False, **table)
        data = buf.getvalue()
        if len(data) > self.max_bytes:
            raise InvalidInputError(f"the captures are {len(data)} bytes, over {self.max_bytes}")
        return self._store(card, data, "npz", owner)

    def add_bytes(
        self,
        data: bytes,
        kind: str,
        *,
        owner: Identity,
        name: str,
        licence: str = "all-rights-reserved",
        provenance: tuple[str, ...] | list[str] = (),
        description: str = "",
    ) -> tuple[DatasetCard, Envelope]:
        """Add a dataset from the bytes of a file of `kind`."""
        if len(data) > self.max_bytes:
            raise InvalidInputError(f"dataset is {len(data)} bytes, over {self.max_bytes}")
        table = parse_table(data, kind)
        return self._add(
            table,
            data,
            kind,
            owner=owner,
            name=name,
            licence=licence,
            provenance=provenance,
            description=description,
        )

    def _add(
        self,
        table: Table,
        data: bytes,
        kind: str,
        *,
        owner: Identity,
        name: str,
        licence: str,
        provenance: tuple[str, ...] | list[str],
        description: str,
    ) -> tuple[DatasetCard, Envelope]:
        card = DatasetCard.describe(
            table,
            name=name,
            owner=owner.did,
            licence=licence,
            provenance=provenance,
            description=description,
        )
        return self._store(card, data, kind, owner)

    def _store(
        self, card: DatasetCard, data: bytes, kind: str, owner: Identity
    ) -> tuple[DatasetCard, Envelope]:
        d = self._dir(card.digest)
        if (d / "card.json").exists():
            return self.card(card.digest)
        envelope = card.sign(owner)
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        d.mkdir(mode=0o700, exist_ok=True)
        write_private(d / f"source.{kind}", data)
        write_private(d / "card.json", envelope.to_json())  # last: its presence means complete
        return card, envelope

    def digests(self) -> list[str]:
        """Digests of every complete dataset in the store, sorted."""
        if not self.root.is_dir():
            return []
        return sorted(
            "sha256:" + p.parent.name
            for p in self.root.glob("*/card.json")
            if re.fullmatch(r"[0-9a-f]{64}", p.parent.name)
        )

    def cards(self) -> list[DatasetCard]:
        """Every stored card, by name then digest."""
        return sorted((self.card(d)[0] for d in self.digests()), key=lambda c: (c.name, c.digest))

    def card(self, digest: str) -> tuple[DatasetCard, Envelope]:
        """The stored card (and envelope) of a full digest."""
        try:
            raw = (self._dir(digest) / "card.json").read_bytes()
        except FileNotFoundError as exc:
            raise NotFoundError(f"no dataset {digest} in {self.root}") from exc
        envelope = parse_envelope(raw)
        return read_dataset_card(envelope), envelope

    def resolve(self, ref: str) -> DatasetCard:
        """Find a dataset by digest, digest prefix (≥ 8 hex) or name."""
        if _PREFIX_RE.match(ref):
            prefix = ref.removeprefix("sha256:")
            found = [d for d in self.digests() if d[7:].startswith(prefix)]
            if len(found) > 1:
                raise InvalidInputError(f"digest prefix {ref!r} is ambiguous ({len(found)})")
            if found:
                return self.card(found[0])[0]
        named = [c for c in self.cards() if c.name == ref]
        if len(named) > 1:
            raise InvalidInputError(f"{len(named)} datasets are named {ref!r}: use a digest")
        if named:
            return named[0]
        raise NotFoundError(f"no dataset {ref!r:.80} (see 'edgetrust data list')")

    def table(self, digest: str) -> Table:
        """The records of a stored dataset, re-checked against its digest."""
        d = self._dir(digest)
        sources = sorted(d.glob("source.*")) if d.is_dir() else []
        if not sources:
            raise NotFoundError(f"no dataset {digest} in {self.root}")
        src = sources[0]
        table = parse_table(src.read_bytes(), src.suffix.lstrip("."))
        if digest_table(table) != digest:
            raise InvalidInputError(f"stored dataset {src} no longer matches its digest")
        return table

    def describe(self, digest: str) -> Mapping[str, Any]:
        """The card as JSON-ready data."""
        return self.card(digest)[0].to_predicate()
