"""The capture chain: chunking, seals, the root, and each refusal named by chunk index."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgetrust.capture.errors import (
    AlteredChunkError,
    BrokenChainError,
    ConsentError,
    ForeignSignatureError,
    GapError,
    InsertedChunkError,
    MalformedChunkError,
    ReorderedChunkError,
)
from edgetrust.capture.stream import (
    CAPTURE_PREDICATE_TYPE,
    CaptureSession,
    StreamHeader,
    check_chunk,
    chunk_digest,
    parse_seal,
)
from edgetrust.capture.verify import (
    Manifest,
    StreamVerifier,
    cosign_root,
    find_chunk_fault,
    parse_manifest,
    verify_manifest,
    verify_samples,
)
from edgetrust.dsse import sign_envelope
from edgetrust.encoding import canonical_tensor_bytes
from edgetrust.errors import InvalidInputError
from edgetrust.identity import Identity
from edgetrust.statement import open_signed_statement

from .conftest import make_sensor, record


def test_chunks_seals_and_root(session: CaptureSession) -> None:
    assert len(session.chunks) == 11  # 10 full chunks and a short one of 17 frames
    assert session.chunks[-1].samples.shape == (17, 8)
    assert [len(s.digests) for s in session.seals] == [4, 4, 3]
    signed = open_signed_statement(session.statement)  # type: ignore[arg-type]
    assert signed.statement.predicate_type == CAPTURE_PREDICATE_TYPE
    assert signed.statement.subjects[0].sha256 == session.root.hex()
    v = verify_manifest(parse_manifest(Manifest.from_session(session).to_json()))
    assert v.root == session.root and v.samples == 2517 and v.chunks == 11
    verify_samples(v, [c.samples for c in session.chunks])


def test_chunk_digest_is_canonical_tensor_bytes() -> None:
    import hashlib

    x = np.arange(24, dtype=np.int32).reshape(3, 8)
    assert chunk_digest(x) == hashlib.sha256(canonical_tensor_bytes(x)).digest()
    # byte order and memory layout do not change the digest
    assert chunk_digest(x.astype(">i4")) == chunk_digest(x)
    assert chunk_digest(np.asfortranarray(x)) == chunk_digest(x)


def test_frames_split_across_adds_give_the_same_root(device) -> None:  # type: ignore[no-untyped-def]
    data = np.random.default_rng(3).integers(-9, 9, (1234, 8))
    roots = []
    for cuts in ([1234], [1, 249, 984], [600, 634]):
        s = device.start(seal_every=3, start_ms=5)
        s.header = replace(s.header, stream_id="ab" * 16)
        s.header_digest = s.header.digest
        from edgetrust.capture.stream import genesis_head

        s.head = genesis_head(s.header_digest)
        at = 0
        for n in cuts:
            s.add(data[at : at + n])
            at += n
        s.finish()
        roots.append(s.root)
    assert len(set(roots)) == 1


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        (np.zeros((250, 7), np.int32), "shape"),
        (np.zeros((0, 8), np.int32), "frames"),
        (np.zeros((251, 8), np.int32), "frames"),
        (np.full((250, 8), 2**24, np.int64), "range"),
        (np.zeros((250, 8), np.float64), "integer"),
    ],
)
def test_malformed_chunks_are_named(session: CaptureSession, bad: np.ndarray, why: str) -> None:
    with pytest.raises(MalformedChunkError, match=why) as exc:
        check_chunk(session.header, bad, 7)
    assert exc.value.chunk == 7


def test_float_stream_refuses_nan() -> None:
    from edgetrust.capture.stream import CaptureDevice

    dev = CaptureDevice(Identity.generate(), make_sensor(dtype="float32"))
    s = dev.start()
    x = np.zeros((250, 8), np.float32)
    x[3, 2] = np.nan
    with pytest.raises(MalformedChunkError, match="NaN") as exc:
        s.add(x)
    assert exc.value.chunk == 0


def _tamper(chunks: list[np.ndarray], how: str) -> list[np.ndarray]:
    c = list(chunks)
    if how == "drop":
        del c[5]
    elif how == "swap":
        c[5], c[6] = c[6], c[5]
    elif how == "insert":
        c.insert(5, np.ones_like(c[0]))
    elif how == "alter":
        c[5] = c[5].copy()
        c[5][100, 3] += 1
    elif how == "truncate":
        c = c[:8]
    elif how == "append":
        c.append(c[0])
    return c


@pytest.mark.parametrize(
    ("how", "error", "chunk"),
    [
        ("drop", GapError, 5),
        ("swap", ReorderedChunkError, 6),
        ("insert", InsertedChunkError, 5),
        ("alter", AlteredChunkError, 5),
        ("truncate", GapError, 8),
        ("append", InsertedChunkError, 11),
    ],
)
def test_tampered_samples_are_found_and_named(
    session: CaptureSession, how: str, error: type, chunk: int
) -> None:
    v = verify_manifest(Manifest.from_session(session))
    with pytest.raises(error) as exc:
        verify_samples(v, _tamper([c.samples for c in session.chunks], how))
    assert exc.value.chunk == chunk


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(0, 5), min_size=1, max_size=12),
    st.sampled_from(["drop", "swap", "insert", "alter", "dup"]),
    st.data(),
)
def test_any_tamper_is_found(contents: list[int], how: str, data: st.DataObject) -> None:
    signed = [bytes([i, c]) * 16 for i, c in enumerate(contents)]  # distinct per position
    found = list(signed)
    i = data.draw(st.integers(0, len(signed) - 1))
    if how == "drop":
        del found[i]
    elif how == "swap":
        if len(found) < 2:
            return
        j = (i + 1) % len(found)
        found[i], found[j] = found[j], found[i]
    elif how == "insert":
        found.insert(i, b"\xff" * 32)
    elif how == "alter":
        found[i] = b"\xee" * 32
    else:
        found.insert(i, found[i])
    fault = find_chunk_fault(signed, found)
    assert fault is not None
    assert fault.chunk is not None and 0 <= fault.chunk <= len(found)
    expected = {
        "drop": GapError,
        "swap": ReorderedChunkError,
        "insert": InsertedChunkError,
        "alter": AlteredChunkError,
    }.get(how)
    if expected is not None:
        assert isinstance(fault, expected)
        assert fault.chunk == (max(i, (i + 1) % len(signed)) if how == "swap" else i)
    assert find_chunk_fault(signed, signed) is None


@settings(max_examples=30, deadline=None)
@given(
    st.sampled_from(["int16", "int32", "float32", "float64"]),
    st.integers(1, 700),
    st.integers(1, 5),
    st.integers(0, 2**32 - 1),
)
def test_manifest_round_trip(dtype: str, frames: int, seal_every: int, seed: int) -> None:
    from edgetrust.capture.stream import CaptureDevice

    dev = CaptureDevice(Identity.from_seed(b"\x02" * 32), make_sensor(3, 100, dtype))
    s = dev.start(seal_every=seal_every, start_ms=1)
    rng = np.random.default_rng(seed)
    x = rng.integers(-30000, 30000, (frames, 3)).astype(dtype)
    if dtype.startswith("float"):
        x = x / 7
    s.add(x)
    s.finish()
    text = Manifest.from_session(s).to_json()
    m = parse_manifest(text)
    assert m.to_json() == text
    v = verify_manifest(m)
    assert v.samples == frames
    joined = np.concatenate([c.samples for c in s.chunks])
    assert joined.dtype == np.dtype(dtype) and np.array_equal(joined, x.astype(dtype))
    verify_samples(v, [c.samples for c in s.chunks])


def test_seal_by_another_device_is_named(session: CaptureSession) -> None:
    m = Manifest.from_session(session)
    intruder = Identity.generate()
    forged = sign_envelope(m.seals[1].envelope.payload, m.seals[1].envelope.payload_type, intruder)
    seals = (m.seals[0], parse_seal(forged), m.seals[2])
    with pytest.raises(ForeignSignatureError) as exc:
        verify_manifest(Manifest(m.header, seals, m.statement))
    assert exc.value.chunk == 7 and exc.value.signer == intruder.did
    # the device's seal with an extra signature by another key is refused too
    env = m.seals[1].envelope
    both = sign_envelope(env.payload, env.payload_type, session.identity, intruder)
    with pytest.raises(ForeignSignatureError) as exc2:
        verify_manifest(Manifest(m.header, (m.seals[0], parse_seal(both), m.seals[2]), m.statement))
    assert exc2.value.signer == intruder.did


def test_root_by_another_device_is_refused(session: CaptureSession) -> None:
    m = Manifest.from_session(session)
    intruder = Identity.generate()
    forged = sign_envelope(m.statement.payload, m.statement.payload_type, intruder)
    with pytest.raises(ForeignSignatureError) as exc:
        verify_manifest(Manifest(m.header, m.seals, forged))
    assert exc.value.chunk is None


def test_dropped_or_moved_seals_and_edited_digests(session: CaptureSession) -> None:
    m = Manifest.from_session(session)
    with pytest.raises(BrokenChainError):
        verify_manifest(Manifest(m.header, (m.seals[0], m.seals[2]), m.statement))
    with pytest.raises(BrokenChainError):
        verify_manifest(Manifest(m.header, (m.seals[1], m.seals[0], m.seals[2]), m.statement))
    with pytest.raises(GapError):
        verify_manifest(Manifest(m.header, m.seals[:2], m.statement))


def test_wearer_consent(device) -> None:  # type: ignore[no-untyped-def]
    wearer = Identity.generate()
    s = record(device, 600, wearer=wearer)
    v = verify_manifest(Manifest.from_session(s))
    assert v.consented

    class Registry:
        def __init__(self, dids: set[str]) -> None:
            self.dids = dids

        def is_reviewer(self, did: str) -> bool:
            return did in self.dids

    verify_manifest(Manifest.from_session(s), reviewers=Registry({wearer.did}))
    with pytest.raises(ConsentError, match="not a registered reviewer"):
        verify_manifest(Manifest.from_session(s), reviewers=Registry(set()))
    # the wearer named in the header did not co-sign
    s2 = device.start(wearer=wearer.did)
    s2.add(np.zeros((300, 8), np.int32))
    unsigned = s2.finish()
    with pytest.raises(ConsentError):
        verify_manifest(Manifest(s2.header, tuple(s2.seals), unsigned))
    later = cosign_root(unsigned, wearer)
    assert verify_manifest(Manifest(s2.header, tuple(s2.seals), later)).consented
    with pytest.raises(InvalidInputError):
        s3 = device.start(wearer=wearer.did)
        s3.add(np.zeros((300, 8), np.int32))
        s3.finish(Identity.generate())
    with pytest.raises(ConsentError, match="names no wearer"):
        verify_manifest(Manifest.from_session(record(device, 300)), require_consent=True)


def test_live_verifier(session: CaptureSession) -> None:
    v = StreamVerifier(session.header)
    seals = {s.last: s for s in session.seals}
    for c in session.chunks:
        v.add_chunk(c.index, c.samples)
        if c.index in seals:
            v.add_seal(seals[c.index].envelope)
    assert v.finish(session.statement).root == session.root  # type: ignore[arg-type]


def test_live_verifier_names_faults(session: CaptureSession) -> None:
    chunks = session.chunks
    v = StreamVerifier(session.header)
    v.add_chunk(0, chunks[0].samples)
    with pytest.raises(GapError) as gap:
        v.add_chunk(2, chunks[2].samples)
    assert gap.value.missing == (1,)
    with pytest.raises(ReorderedChunkError):
        v.add_chunk(0, chunks[0].samples)
    v.add_chunk(1, chunks[1].samples + 1)  # altered in transit
    v.add_chunk(2, chunks[2].samples)
    v.add_chunk(3, chunks[3].samples)
    with pytest.raises(AlteredChunkError) as alt:
        v.add_seal(session.seals[0].envelope)
    assert alt.value.chunk == 1
    intruder = Identity.generate()
    env = session.seals[0].envelope
    with pytest.raises(ForeignSignatureError):
        v.add_seal(sign_envelope(env.payload, env.payload_type, intruder))


def test_header_and_manifest_refuse_bad_input(session: CaptureSession) -> None:
    good = session.header.to_dict()
    for key, value in [
        ("stream_id", "x"),
        ("chunk_samples", 0),
        ("seal_every", True),
        ("device", "did:web:x"),
        ("start_ms", -1),
    ]:
        with pytest.raises(InvalidInputError):
            StreamHeader.from_dict({**good, key: value})
    with pytest.raises(InvalidInputError):
        StreamHeader.from_dict({**good, "extra": 1})
    for text in (b"", b"[]", b'{"format": "x"}', b"{" * 5000, b"\xff\xfe"):
        with pytest.raises(InvalidInputError):
            parse_manifest(text)
    m = Manifest.from_session(session).to_dict()
    m["seals"] = []
    import json

    with pytest.raises(InvalidInputError):
        parse_manifest(json.dumps(m))


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 9), st.sampled_from(["drop", "swap", "insert", "alter"]), st.data())
def test_tampered_stream_end_to_end(chunks: int, how: str, data: st.DataObject) -> None:
    from edgetrust.capture.stream import CaptureDevice

    dev = CaptureDevice(Identity.from_seed(b"\x05" * 32), make_sensor(2, 10))
    s = dev.start(seal_every=3, start_ms=0)
    seed = data.draw(st.integers(0, 2**16))
    s.add(np.random.default_rng(seed).integers(-100, 100, (chunks * 10, 2)))
    s.finish()
    v = verify_manifest(Manifest.from_session(s))
    found = [c.samples for c in s.chunks]
    i = data.draw(st.integers(0, chunks - 2))
    if how == "drop":
        del found[i]
        want: type = GapError
    elif how == "swap":
        found[i], found[i + 1] = found[i + 1], found[i]
        want, i = ReorderedChunkError, i + 1
    elif how == "insert":
        found.insert(i, np.full((10, 2), 101))
        want = InsertedChunkError
    else:
        found[i] = found[i].copy()
        found[i][data.draw(st.integers(0, 9)), data.draw(st.integers(0, 1))] += 1
        want = AlteredChunkError
    with pytest.raises(want) as exc:
        verify_samples(v, found)
    assert exc.value.chunk == i
