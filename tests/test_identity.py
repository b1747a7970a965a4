from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from edgetrust.errors import InvalidInputError, KeystoreError, NotFoundError, VerificationError
from edgetrust.identity import (
    Identity,
    Keystore,
    did_from_public_bytes,
    public_bytes_from_did,
    verify_signature,
)

from .conftest import ASSETS

VECTORS = json.loads((ASSETS / "did-key" / "ed25519-x25519.json").read_text())


@pytest.mark.parametrize("did", sorted(VECTORS))
def test_did_key_conformance_vectors(did: str) -> None:
    identity = Identity.from_seed(bytes.fromhex(VECTORS[did]["seed"]))
    assert identity.did == did
    assert did_from_public_bytes(public_bytes_from_did(did)) == did


def test_sign_and_verify() -> None:
    ident = Identity.generate()
    sig = ident.sign(b"hello")
    verify_signature(ident.did, sig, b"hello")
    with pytest.raises(VerificationError):
        verify_signature(ident.did, sig, b"hellp")
    with pytest.raises(VerificationError):
        verify_signature(Identity.generate().did, sig, b"hello")


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "did:web:example.com",
        "did:key:z0OIl",
        "did:key:zQ3shokFTS3brHcDQrn82RUDfCZESWL1ZdCEJwekUDPQiYBme",
    ],
)
def test_malformed_dids_are_rejected(bad: str) -> None:
    with pytest.raises(InvalidInputError):
        public_bytes_from_did(bad)
    with pytest.raises(VerificationError):
        verify_signature(bad, b"\x00" * 64, b"x")


@pytest.mark.parametrize("bad", [None, ["did:key:z6Mk"], {"did": 1}, b"did:key:z6Mk"])
def test_non_string_dids_fail_verification_not_the_key_cache(bad: object) -> None:
    with pytest.raises(VerificationError):
        verify_signature(bad, b"\x00" * 64, b"x")  # type: ignore[arg-type]


def test_a_cached_key_still_checks_every_signature() -> None:
    ident = Identity.generate()
    sig = ident.sign(b"m")
    for _ in range(3):  # the second and third calls use the cached key
        verify_signature(ident.did, sig, b"m")
        with pytest.raises(VerificationError):
            verify_signature(ident.did, sig, b"n")


def test_keystore_round_trip_and_permissions(edgetrust_home: Path) -> None:
    ks = Keystore()
    ident = ks.create("device")
    path = ks.root / "device.pem"
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert ks.load("device").did == ident.did
    assert ks.names() == ["device"]
    with pytest.raises(KeystoreError, match="already exists"):
        ks.create("device")


def test_keystore_refuses_world_readable_key() -> None:
    ks = Keystore()
    ks.create("leaky")
    os.chmod(ks.root / "leaky.pem", 0o644)
    with pytest.raises(KeystoreError, match="chmod 600"):
        ks.load("leaky")


def test_keystore_passphrase() -> None:
    ks = Keystore()
    ident = ks.create("secret", passphrase="correct horse")
    assert b"ENCRYPTED" in (ks.root / "secret.pem").read_bytes()
    assert ks.load("secret", passphrase="correct horse").did == ident.did
    with pytest.raises(KeystoreError, match="passphrase"):
        ks.load("secret")
    with pytest.raises(KeystoreError):
        ks.load("secret", passphrase="wrong")


def test_keystore_missing_bad_name_and_garbage_file() -> None:
    ks = Keystore()
    with pytest.raises(NotFoundError):
        ks.load("nobody")
    with pytest.raises(InvalidInputError):
        ks.load("../escape")
    ks.root.mkdir(parents=True, exist_ok=True)
    fd = os.open(ks.root / "junk.pem", os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b"not a key")
    os.close(fd)
    with pytest.raises(KeystoreError):
        ks.load("junk")
