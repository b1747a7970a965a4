"""C2SP tlog-checkpoint, signed-note and tlog-cosignature: spec examples, Go vectors, tampering."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgetrust.errors import Error, InvalidInputError, VerificationError
from edgetrust.identity import Identity
from edgetrust.log import checkpoint as checkpoint_module
from edgetrust.log.checkpoint import (
    MAX_NOTE_BYTES,
    SIG_COSIGNATURE_V1,
    SIG_ED25519,
    Checkpoint,
    NoteSigner,
    NoteVerifier,
    cosign_checkpoint,
    cosignature_line,
    cosignature_timestamp,
    key_id,
    parse_checkpoint_body,
    parse_note,
    sign_checkpoint,
    sign_note,
    verify_checkpoint,
    verify_cosignatures,
    verify_note,
)

VECTORS = json.loads(
    (Path(__file__).parent.parent / "assets" / "log" / "signed-note-vectors.json").read_text()
)
GO = VECTORS["go_note"]
DASH = "\u2014"


def _signer_from_go_skey(skey: str) -> NoteSigner:
    """Go's private key format: PRIVATE+KEY+name+keyid+base64(0x01 || seed)."""
    _, _, name, _, b64 = skey.split("+", 4)
    raw = base64.b64decode(b64)
    assert raw[0] == SIG_ED25519
    return NoteSigner(name, Identity.from_seed(raw[1:]))


LOG = NoteSigner("example.org/log", Identity.from_seed(bytes(range(32))))
W1 = NoteSigner("witness.example/w1", Identity.from_seed(bytes(range(1, 33))))
W2 = NoteSigner("witness.example/w2", Identity.from_seed(bytes(range(2, 34))))
CP = Checkpoint("example.org/log", 12345, bytes(range(32)))


# --- golang.org/x/mod/sumdb/note vectors ---


def test_go_signer_key_reproduces_the_vkey_and_signature_byte_for_byte() -> None:
    signer = _signer_from_go_skey(GO["peter_skey"])
    assert signer.vkey == GO["peter_vkey"]
    assert signer.key_id.hex() == "c74f20a3"
    note = sign_note(GO["text"].encode(), signer)
    assert note == (GO["text"] + "\n" + GO["peter_sig"]).encode()


def test_go_note_verifies_with_either_known_key_and_ignores_unknown_ones() -> None:
    note = GO["text"] + "\n" + GO["peter_sig"] + GO["enoch_sig"]
    assert verify_note(note, [GO["peter_vkey"]]) == GO["text"].encode()
    assert verify_note(note, [GO["enoch_vkey"]]) == GO["text"].encode()
    assert verify_note(note, [GO["peter_vkey"], GO["enoch_vkey"]]) == GO["text"].encode()
    with pytest.raises(VerificationError):
        verify_note(note, [])
    with pytest.raises(VerificationError):
        verify_note(note, [LOG.vkey])


def test_go_invalid_signature_by_a_known_key_rejects_the_note() -> None:
    sig = GO["peter_sig"]
    mangled = GO["text"] + "\n" + sig[:60] + "ABCD" + sig[60:]
    with pytest.raises(VerificationError):
        verify_note(mangled, [GO["peter_vkey"]])
    enoch = GO["enoch_sig"]
    # A bad line by a key we do not trust is ignored, as signed-note requires.
    with_bad_unknown = GO["text"] + "\n" + sig + enoch[:60] + "ABCD" + enoch[60:]
    assert verify_note(with_bad_unknown, [GO["peter_vkey"]]) == GO["text"].encode()
    with pytest.raises(VerificationError):
        verify_note(with_bad_unknown, [GO["peter_vkey"], GO["enoch_vkey"]])


@pytest.mark.parametrize(
    "note",
    [
        GO["text"],
        GO["text"] + "\n",
        GO["text"] + "\n" + GO["peter_sig"][:-1],
        "\x01" + GO["text"] + "\n" + GO["peter_sig"],
        GO["text"]
        + "\n"
        + f"{DASH} Bad Name x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1F"
        "FYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=",
        GO["text"] + "\n" + GO["peter_sig"] + "Unexpected line.\n",
        GO["text"] + "\n" + GO["peter_sig"] * 101,
        GO["text"].replace("\n", "\r\n") + "\r\n" + GO["peter_sig"],
        GO["text"] + "\n" + GO["peter_sig"].replace("=\n", "\n"),  # unpadded base64
        GO["text"] + "\n" + f"{DASH} PeterNeumann AAAA\n",  # 3 bytes: no room for a key ID
        GO["text"] + "\n" + f"{DASH} PeterNeumann\n",
        GO["text"] + "\n" + f"- PeterNeumann {GO['peter_sig'][15:]}",  # hyphen, not em dash
    ],
    ids=[
        "no-signatures",
        "blank-line-only",
        "no-final-newline",
        "control-char",
        "space-in-name",
        "unexpected-line",
        "too-many-signatures",
        "crlf",
        "unpadded-base64",
        "short-signature",
        "missing-signature",
        "hyphen",
    ],
)
def test_go_malformed_notes_are_refused(note: str) -> None:
    with pytest.raises(InvalidInputError):
        verify_note(note, [GO["peter_vkey"]])


def test_non_utf8_note_is_refused() -> None:
    with pytest.raises(InvalidInputError):
        parse_note(b"\xff" + (GO["text"] + "\n" + GO["peter_sig"]).encode())


def test_go_vkey_manglings_are_all_refused() -> None:
    vkey = GO["peter_vkey"]
    assert NoteVerifier.from_vkey(vkey).vkey == vkey
    for i in range(len(vkey) + 1):
        for j in range(i + 1, len(vkey) + 1):
            if (i, j) != (0, len(vkey)):
                with pytest.raises(InvalidInputError):
                    NoteVerifier.from_vkey(vkey[i:j])
    for i in range(len(vkey)):
        mangled = vkey[:i] + chr(ord(vkey[i]) + 1) + vkey[i + 1 :]
        with pytest.raises(InvalidInputError):
            NoteVerifier.from_vkey(mangled)
    for bad in [*GO["bad_vkeys"], *VECTORS["formats"]["bad_vkeys"]]:
        with pytest.raises(InvalidInputError):
            NoteVerifier.from_vkey(bad)


def test_duplicate_verifier_keys_are_refused() -> None:
    with pytest.raises(InvalidInputError):
        verify_note(GO["text"] + "\n" + GO["peter_sig"], [GO["peter_vkey"], GO["peter_vkey"]])


# --- C2SP spec examples ---


def test_c2sp_signed_note_example_parses_exactly() -> None:
    text = VECTORS["c2sp_signed_note_example"]
    note = parse_note(text)
    assert note.text.decode() == (
        "Ognuno sta solo sul cuor della terra\ntrafitto da un raggio di sole:\n\n"
        "ed \u00e8 subito sera.\n"
    )
    (sig,) = note.signatures
    assert sig.name == "quasimodo.example/salvatore"
    assert len(sig.key_id) == 4
    assert len(sig.signature) == 64
    assert note.to_bytes() == text.encode()
    # Its public key is not published, so no key here can vouch for it.
    with pytest.raises(VerificationError):
        verify_note(text, [LOG.vkey])


def test_c2sp_checkpoint_and_cosignature_examples() -> None:
    note = parse_note(VECTORS["c2sp_cosigned_checkpoint_example"])
    cp = parse_checkpoint_body(note.text)
    assert cp.origin == "example.com/behind-the-sofa"
    assert cp.size == 20852163
    assert cp.root == base64.b64decode("CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=")
    assert cp.body() == note.text
    log_sig, witness_sig = note.signatures
    assert witness_sig.name == "witness.example.com/w1"
    assert cosignature_timestamp(witness_sig) == VECTORS["c2sp_cosignature_example_time"]
    with pytest.raises(InvalidInputError):
        cosignature_timestamp(log_sig)  # a plain Ed25519 line is not a cosignature
    with pytest.raises(VerificationError):
        verify_cosignatures(note.to_bytes(), [W1.cosignature_vkey], 1)


def test_transparency_dev_cosignature_vectors() -> None:
    f = VECTORS["formats"]
    w = NoteVerifier.from_vkey(f["cosignature_vkey"])
    assert (w.name, w.sig_type, w.vkey) == (
        "remora.n621.de",
        SIG_COSIGNATURE_V1,
        f["cosignature_vkey"],
    )
    assert NoteVerifier.from_vkey(f["ed25519_vkey"]).sig_type == SIG_ED25519
    raw = base64.b64decode(f["cosignature_b64"])
    sig = checkpoint_module.NoteSignature("x", raw[:4], raw[4:])
    assert cosignature_timestamp(sig) == f["cosignature_time"]
    raw = base64.b64decode(f["not_a_cosignature_b64"])
    with pytest.raises(InvalidInputError):
        cosignature_timestamp(checkpoint_module.NoteSignature("x", raw[:4], raw[4:]))


# --- our checkpoints, signatures and cosignatures ---


def test_key_ids_follow_the_spec() -> None:
    import hashlib

    pub = LOG.public_key
    assert LOG.key_id == hashlib.sha256(b"example.org/log\n\x01" + pub).digest()[:4]
    assert (
        key_id("example.org/log", 4, pub)
        == hashlib.sha256(b"example.org/log\n\x04" + pub).digest()[:4]
    )
    assert (
        LOG.vkey
        == f"example.org/log+{LOG.key_id.hex()}+" + base64.b64encode(b"\x01" + pub).decode()
    )
    assert NoteVerifier.from_vkey(LOG.cosignature_vkey).sig_type == SIG_COSIGNATURE_V1


def test_checkpoint_sign_verify_round_trip() -> None:
    note = sign_checkpoint(CP, LOG)
    assert note == CP.body() + b"\n" + LOG.sign(CP.body()).line()
    assert verify_checkpoint(note, LOG.vkey) == CP
    assert verify_checkpoint(note.decode(), LOG.vkey, origin="example.org/log") == CP
    with pytest.raises(VerificationError):
        verify_checkpoint(note, LOG.vkey, origin="other.org/log")
    with pytest.raises(VerificationError):
        verify_checkpoint(note, W1.vkey)
    with pytest.raises(InvalidInputError):
        verify_checkpoint(note, LOG.cosignature_vkey)  # a witness key cannot be a log key


def test_checkpoint_with_extensions_round_trips() -> None:
    cp = Checkpoint("o", 0, bytes(32), ("ext one", "ext\u00e9two"))
    assert parse_checkpoint_body(cp.body()) == cp
    assert verify_checkpoint(sign_checkpoint(cp, LOG), LOG.vkey) == cp


def test_witness_cosigning() -> None:
    note = sign_checkpoint(CP, LOG)
    one = cosign_checkpoint(note, W1, 1_700_000_000)
    assert one == note + cosignature_line(note, W1, 1_700_000_000)
    both = cosign_checkpoint(one, W2, 1_700_000_001)
    keys = [W1.cosignature_vkey, W2.cosignature_vkey]
    assert verify_cosignatures(both, keys, 2) == ["witness.example/w1", "witness.example/w2"]
    assert verify_cosignatures(one, keys, 1) == ["witness.example/w1"]
    with pytest.raises(VerificationError, match="1 of the required 2"):
        verify_cosignatures(one, keys, 2)
    with pytest.raises(InvalidInputError, match="`min_count`"):
        verify_cosignatures(both, keys, 3)
    with pytest.raises(InvalidInputError, match="`min_count`"):
        verify_cosignatures(both, keys, 0)
    with pytest.raises(InvalidInputError):
        verify_cosignatures(both, [W1.vkey], 1)  # a note key is not a witness key
    # Cosignatures are ignored by log verification, and the log line by witness verification.
    assert verify_checkpoint(both, LOG.vkey) == CP
    # Re-cosigning replaces the witness's old line instead of adding a second.
    again = cosign_checkpoint(both, W1, 1_700_000_099)
    sigs = parse_note(again).signatures
    assert len(sigs) == 3
    assert cosignature_timestamp(sigs[-1]) == 1_700_000_099


def test_a_cosignature_moved_to_another_checkpoint_fails() -> None:
    other = Checkpoint("example.org/log", 12346, bytes(range(1, 33)))
    line = cosignature_line(sign_checkpoint(other, LOG), W1, 5)
    forged = sign_checkpoint(CP, LOG) + line
    with pytest.raises(VerificationError):
        verify_cosignatures(forged, [W1.cosignature_vkey], 1)


def test_a_cosignature_with_a_changed_timestamp_fails() -> None:
    note = cosign_checkpoint(sign_checkpoint(CP, LOG), W1, 1000)
    parsed = parse_note(note)
    sig = parsed.signatures[-1]
    moved = checkpoint_module.NoteSignature(
        sig.name, sig.key_id, (1001).to_bytes(8, "big") + sig.signature[8:]
    )
    forged = checkpoint_module.Note(parsed.text, (*parsed.signatures[:-1], moved)).to_bytes()
    with pytest.raises(VerificationError):
        verify_cosignatures(forged, [W1.cosignature_vkey], 1)


def test_cosigning_refuses_a_note_that_is_not_a_checkpoint() -> None:
    note = sign_note(b"just some text\n", LOG)
    with pytest.raises(InvalidInputError):
        cosign_checkpoint(note, W1, 1)
    with pytest.raises(InvalidInputError):
        cosign_checkpoint(sign_checkpoint(CP, LOG), W1, -1)
    with pytest.raises(InvalidInputError):
        cosign_checkpoint(sign_checkpoint(CP, LOG), W1, 2**63)


@pytest.mark.parametrize(
    "body",
    [
        b"o\n1\n",  # two lines
        b"o\n1\n" + base64.b64encode(bytes(32)),  # no final newline
        b"\n1\n" + base64.b64encode(bytes(32)) + b"\n",  # empty origin
        b"o\n01\n" + base64.b64encode(bytes(32)) + b"\n",  # leading zero
        b"o\n+1\n" + base64.b64encode(bytes(32)) + b"\n",
        b"o\n-1\n" + base64.b64encode(bytes(32)) + b"\n",
        b"o\n 1\n" + base64.b64encode(bytes(32)) + b"\n",
        b"o\n1\n" + base64.b64encode(bytes(31)) + b"\n",  # short root
        b"o\n1\n" + base64.b64encode(bytes(32)).rstrip(b"=") + b"\n",  # unpadded
        b"o\n1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAB=\n",  # non-canonical bits
        b"o\n1\n" + base64.b64encode(bytes(32)) + b"\n\n",  # empty extension line
        b"o\n99999999999999999999\n" + base64.b64encode(bytes(32)) + b"\n",  # beyond 2^63
        b"o\r\n1\n" + base64.b64encode(bytes(32)) + b"\n",
        b"\xffo\n1\n" + base64.b64encode(bytes(32)) + b"\n",
    ],
)
def test_malformed_checkpoint_bodies_are_refused(body: bytes) -> None:
    with pytest.raises(InvalidInputError):
        parse_checkpoint_body(body)
    try:
        note = sign_note(body, LOG)
    except InvalidInputError:
        return  # not even valid note text
    with pytest.raises(InvalidInputError):
        verify_checkpoint(note, LOG.vkey)


@pytest.mark.parametrize("name", ["", "a b", "a+b", "tab\there", "nl\nx", "\u2003em-space"])
def test_bad_key_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidInputError):
        NoteSigner(name, Identity.generate())


def test_oversized_note_is_refused() -> None:
    note = sign_checkpoint(CP, LOG)
    big = b"x" * MAX_NOTE_BYTES + note
    with pytest.raises(InvalidInputError):
        parse_note(big)
    with pytest.raises(InvalidInputError):
        parse_note(note, max_bytes=len(note) - 1)


def test_invalid_checkpoint_fields() -> None:
    for kwargs in [
        {"origin": "", "size": 1, "root": bytes(32)},
        {"origin": "a\nb", "size": 1, "root": bytes(32)},
        {"origin": "o", "size": -1, "root": bytes(32)},
        {"origin": "o", "size": True, "root": bytes(32)},
        {"origin": "o", "size": 1, "root": bytes(31)},
        {"origin": "o", "size": 1, "root": bytes(32), "extensions": ("",)},
    ]:
        with pytest.raises(InvalidInputError):
            Checkpoint(**kwargs)  # type: ignore[arg-type]


# --- hypothesis: round trips and tampering ---

line_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cc", "Cs"), blacklist_characters="\n"),
    min_size=1,
    max_size=30,
)


@given(
    line_text,
    st.integers(0, 2**63 - 1),
    st.binary(min_size=32, max_size=32),
    st.lists(line_text, max_size=3),
)
def test_checkpoint_body_round_trip(origin: str, size: int, root: bytes, ext: list[str]) -> None:
    cp = Checkpoint(origin, size, root, tuple(ext))
    assert parse_checkpoint_body(cp.body()) == cp


SIGNED = cosign_checkpoint(cosign_checkpoint(sign_checkpoint(CP, LOG), W1, 77), W2, 78)


@settings(max_examples=400, deadline=None)
@given(st.integers(0, len(SIGNED) - 1), st.integers(1, 255))
def test_any_byte_change_to_a_cosigned_checkpoint_is_caught(pos: int, xor: int) -> None:
    data = bytearray(SIGNED)
    data[pos] ^= xor
    tampered = bytes(data)
    keys = [W1.cosignature_vkey, W2.cosignature_vkey]
    outcomes = []
    for check in (
        lambda: verify_checkpoint(tampered, LOG.vkey),
        lambda: verify_cosignatures(tampered, keys, 2),
    ):
        try:
            check()
            outcomes.append(True)
        except Error:  # InvalidInputError or VerificationError: never anything else
            outcomes.append(False)
    # A change to one signature line can leave the other check passing; never both.
    assert not all(outcomes)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_parse_note_on_arbitrary_bytes_only_raises_invalid_input(data: bytes) -> None:
    try:
        parse_note(data)
    except InvalidInputError:
        pass


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=120).map(lambda t: (t + "\n").encode("utf-8", "surrogatepass")))
def test_sign_verify_any_valid_text(text: bytes) -> None:
    try:
        note = sign_note(text, LOG)
    except InvalidInputError:
        return
    assert verify_note(note, [LOG.vkey]) == text


def test_random_witness_keys_do_not_match() -> None:
    stranger = NoteSigner("witness.example/w1", Identity.from_seed(os.urandom(32)))
    note = cosign_checkpoint(sign_checkpoint(CP, LOG), W1, 1)
    # Same name, different key: a different key ID, so the line is not the stranger's.
    with pytest.raises(VerificationError):
        verify_cosignatures(note, [stranger.cosignature_vkey], 1)


def test_module_exports_are_sorted() -> None:
    # isort-style, as ruff's RUF022 sorts: CONSTANTS, then Classes, then functions.
    names = checkpoint_module.__all__
    assert names == sorted(names, key=lambda n: (not n.isupper(), not n[0].isupper(), n))
