"""Dataset cards: canonical digests, loaders, cards, the owner store."""

from __future__ import annotations

import io
import json
import stat
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from edgetrust.data.dataset import (
    DatasetCard,
    canonical_records,
    digest_table,
    parse_table,
    read_dataset_card,
)
from edgetrust.data.store import DataStore
from edgetrust.encoding import digest_bytes
from edgetrust.errors import InvalidInputError, NotFoundError, ProfileError, ResourceLimitError
from edgetrust.identity import Identity

OWNER = Identity.from_seed(bytes(range(32)), "owner")

# A fixed vector: these records must have this digest on every machine and Python.
VECTOR = {"x": np.array([[1.5, -2.0], [0.0, 3.25]]), "y": np.array([1, 0], dtype=np.int64)}
VECTOR_DIGEST = "sha256:acac8ff646cf92b6e4ff845ae4db731c0a8d127ee2a689eb74d72b6a17ee6a5d"


def test_vector_digest_is_fixed() -> None:
    assert digest_table(VECTOR) == VECTOR_DIGEST

    # the layout, built by hand from the spec in `canonical_records`' docstring
    def tensor(dtype: str, shape: str, data: bytes) -> bytes:
        h = b'{"dtype":"' + dtype.encode() + b'","shape":' + shape.encode() + b"}"
        return b"ETT1" + struct.pack("<I", len(h)) + h + data

    header = b'{"columns":["x","y"],"count":2}'
    expected = (
        b"ETD1"
        + struct.pack("<I", len(header))
        + header
        + tensor("float64", "[2,2]", struct.pack("<4d", 1.5, -2.0, 0.0, 3.25))
        + tensor("int64", "[2]", struct.pack("<2q", 1, 0))
    )
    assert canonical_records(VECTOR) == expected
    assert digest_bytes(expected) == VECTOR_DIGEST


finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
tables = st.dictionaries(
    st.from_regex(r"[a-z][a-z0-9_]{0,6}", fullmatch=True),
    st.one_of(
        hnp.arrays(np.float64, st.tuples(st.just(5), st.integers(0, 3)), elements=finite),
        hnp.arrays(np.int64, st.just(5)),
        hnp.arrays(np.bool_, st.just(5)),
    ),
    min_size=1,
    max_size=4,
)


@settings(max_examples=60, deadline=None)
@given(tables)
def test_digest_ignores_byte_order_layout_and_key_order(table: dict[str, np.ndarray]) -> None:
    base = digest_table(table)
    swapped = {k: v.astype(v.dtype.newbyteorder(">")) for k, v in reversed(table.items())}
    fortran = {k: np.asfortranarray(v) for k, v in table.items()}
    assert digest_table(swapped) == base
    assert digest_table(fortran) == base
    assert digest_bytes(canonical_records(table)) == base


@settings(max_examples=60, deadline=None)
@given(tables, st.data())
def test_any_change_changes_digest(table: dict[str, np.ndarray], data: st.DataObject) -> None:
    name = data.draw(st.sampled_from(sorted(table)))
    col = table[name].copy()
    if col.size == 0:
        return
    flat = col.reshape(-1)
    i = data.draw(st.integers(0, flat.size - 1))
    if col.dtype == np.bool_:
        flat[i] = not flat[i]
    elif col.dtype.kind == "f":
        flat[i] = flat[i] + 1.0 if abs(flat[i]) < 1e15 else 0.0
    else:
        flat[i] = flat[i] ^ 1
    assert digest_table({**table, name: col}) != digest_table(table)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(-(10**12), 10**12), st.floats(-1e6, 1e6, allow_nan=False)),
        min_size=1,
        max_size=20,
    )
)
def test_csv_and_jsonl_of_the_same_records_share_a_digest(rows: list[tuple[int, float]]) -> None:
    csv_text = "a,b\n" + "".join(f"{a},{b!r}\n" for a, b in rows)
    jsonl = "".join(json.dumps({"b": b, "a": a}) + "\n" for a, b in rows)
    assert digest_table(parse_table(csv_text.encode(), "csv")) == digest_table(
        parse_table(jsonl.encode(), "jsonl")
    )


def test_npy_npz_loaders() -> None:
    buf = io.BytesIO()
    np.save(buf, np.arange(12, dtype=np.float32).reshape(4, 3))
    t = parse_table(buf.getvalue(), "npy")
    assert t["x"].shape == (4, 3)
    buf = io.BytesIO()
    np.savez(buf, x=VECTOR["x"], y=VECTOR["y"])
    assert digest_table(parse_table(buf.getvalue(), "npz")) == digest_table(VECTOR)


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (b"\x93NUMPY garbage", "npy"),
        (b"PK\x03\x04 truncated zip", "npz"),
        (b"a,b\n1\n", "csv"),
        (b"a,a\n1,2\n", "csv"),
        (b"a\nnan\n", "csv"),
        (b"a\nhello\n", "csv"),
        (b"a\n", "csv"),
        (b"\xff\xfe", "csv"),
        (b'{"a": 1}\n{"b": 2}\n', "jsonl"),
        (b'{"a": 1}\n{"a": "x"}\n', "jsonl"),
        (b'{"a": NaN}\n', "jsonl"),
        (b'{"a": [1, 2]}\n{"a": [1]}\n', "jsonl"),
        (b"[1, 2]\n", "jsonl"),
        (b"{", "jsonl"),
        (b"", "jsonl"),
        (b'{"a": 1e999}\n', "jsonl"),
        (b'{"a": 99999999999999999999999}\n', "jsonl"),
        (b"x", "parquet"),
    ],
)
def test_malformed_files_are_refused(data: bytes, kind: str) -> None:
    with pytest.raises(InvalidInputError):
        parse_table(data, kind)


def test_pickled_npy_is_refused() -> None:
    buf = io.BytesIO()
    np.save(buf, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(InvalidInputError):
        parse_table(buf.getvalue(), "npy")


def test_card_signs_and_reads_back() -> None:
    card = DatasetCard.describe(VECTOR, name="v", owner=OWNER.did, licence="CC-BY-4.0")
    assert card.count == 2
    assert [(c.name, c.dtype, c.shape) for c in card.columns] == [
        ("x", "float64", (2,)),
        ("y", "int64", ()),
    ]
    env = card.sign(OWNER)
    assert read_dataset_card(env.to_json()) == card
    with pytest.raises(InvalidInputError):
        card.sign(Identity.generate())  # only the owner signs its card


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("name", "payroll\u202egpj.csv"),  # bidi override: shows as another name
        ("name", "two\nlines"),
        ("licence", "CC-BY\x00-4.0"),
        ("name", "cafe\u0301"),  # not NFC
        ("description", "fine\nuntil\x1b[2J"),  # a terminal escape
    ],
)
def test_card_text_outside_the_text_profile_is_refused(field: str, value: str) -> None:
    args = {"name": "v", "licence": "CC-BY-4.0", "description": "line one\nline two"}
    assert DatasetCard.describe(VECTOR, owner=OWNER.did, **args).description == "line one\nline two"
    args[field] = value
    with pytest.raises(ProfileError, match=f"dataset {field}"):
        DatasetCard.describe(VECTOR, owner=OWNER.did, **args)


def test_tampered_card_is_refused() -> None:
    card = DatasetCard.describe(VECTOR, name="v", owner=OWNER.did)
    env = json.loads(card.sign(OWNER).to_json())
    import base64

    payload = json.loads(base64.b64decode(env["payload"]))
    payload["predicate"]["count"] = 3
    env["payload"] = base64.b64encode(json.dumps(payload).encode()).decode()
    from edgetrust.errors import VerificationError

    with pytest.raises(VerificationError):
        read_dataset_card(json.dumps(env).encode())


def test_store_is_content_addressed_and_private(tmp_path) -> None:  # type: ignore[no-untyped-def]
    store = DataStore(tmp_path)
    src = tmp_path / "d.csv"
    src.write_text("a,b\n1,2.5\n3,4.5\n")
    card, _ = store.add_file(src, owner=OWNER)
    again, _ = store.add_file(src, owner=OWNER)
    assert again == card
    d = tmp_path / "data" / card.digest[7:]
    for f in d.iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o600
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    assert store.resolve("d") == card
    assert store.resolve(card.digest[7:19]) == card
    assert digest_table(store.table(card.digest)) == card.digest
    # a file changed on disk is refused, not used
    (d / "source.csv").write_text("a,b\n1,2.5\n3,9.5\n")
    with pytest.raises(InvalidInputError):
        store.table(card.digest)
    with pytest.raises(NotFoundError):
        store.resolve("nope")


def test_store_refuses_oversized_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    src = tmp_path / "big.csv"
    src.write_text("a\n" + "1\n" * 1000)
    with pytest.raises(ResourceLimitError):
        DataStore(tmp_path, max_bytes=100).add_file(src, owner=OWNER)
    assert DataStore(tmp_path).digests() == []
