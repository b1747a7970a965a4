"""EVM accounts in the keystore: create, import, encrypt, refuse unsafe files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from eth_account import Account
from hypothesis import given
from hypothesis import strategies as st

from edgetrust.chain.accounts import EvmKeystore, binding_message, parse_private_key
from edgetrust.errors import InvalidInputError, KeystoreError, NotFoundError

DEV_KEY = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
DEV_ADDRESS = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"


def test_create_load_and_mode(edgetrust_home: Path) -> None:
    ks = EvmKeystore()
    acct = ks.create("op")
    path = edgetrust_home / "keys" / "op.evm.json"
    assert path.stat().st_mode & 0o777 == 0o600
    assert ks.load("op").address == acct.address == ks.address("op")
    assert ks.names() == ["op"]
    with pytest.raises(KeystoreError, match="already exists"):
        ks.create("op")


@pytest.mark.slow
def test_import_dev_key_and_passphrase() -> None:
    ks = EvmKeystore()
    acct = ks.import_key("anvil0", parse_private_key(DEV_KEY), passphrase="pw")
    assert acct.address == DEV_ADDRESS
    assert ks.address("anvil0") == DEV_ADDRESS  # readable without the passphrase
    with pytest.raises(KeystoreError, match="encrypted"):
        ks.load("anvil0")
    with pytest.raises(KeystoreError, match="wrong passphrase"):
        ks.load("anvil0", passphrase="nope")
    assert ks.load("anvil0", passphrase="pw").address == DEV_ADDRESS


def test_unsafe_and_broken_files(edgetrust_home: Path) -> None:
    ks = EvmKeystore()
    ks.create("a")
    path = edgetrust_home / "keys" / "a.evm.json"
    os.chmod(path, 0o644)
    with pytest.raises(KeystoreError, match="chmod 600"):
        ks.load("a")
    os.chmod(path, 0o600)
    path.write_text("[1, 2]")
    with pytest.raises(KeystoreError, match="not a JSON object"):
        ks.load("a")
    path.write_text('{"type": "edgetrust-evm-key/v1", "private_key": "zz"}')
    with pytest.raises(KeystoreError, match="no valid key"):
        ks.load("a")
    path.write_text("{truncated")
    with pytest.raises(KeystoreError, match="cannot read"):
        ks.load("a")
    with pytest.raises(NotFoundError, match="chain account new"):
        ks.load("missing")
    with pytest.raises(InvalidInputError, match="account name"):
        ks.load("../escape")


@pytest.mark.parametrize(
    "text",
    ["", "0x", "12", "0x" + "g" * 64, "0x" + "00" * 32, "ff" * 32, DEV_KEY + "00", "0x" + "1" * 63],
)
def test_bad_private_keys(text: str) -> None:
    with pytest.raises(InvalidInputError):
        parse_private_key(text)


@given(st.integers(min_value=1, max_value=2**255))
def test_parse_round_trip(n: int) -> None:
    key = n.to_bytes(32, "big")
    assert parse_private_key("  0x" + key.hex() + "\n") == key
    assert Account.from_key(parse_private_key(key.hex())).key == key


def test_binding_message_scopes_everything() -> None:
    base = dict(chain_id=1, contract="0xAbC", operator="0xDeF", origin="a/log")
    msg = binding_message(**base)  # type: ignore[arg-type]
    assert msg.startswith(b"edgetrust.dev/chain-binding/v1\n")
    for field, value in [
        ("chain_id", 2),
        ("contract", "0xAbD"),
        ("operator", "0xDeA"),
        ("origin", "b/log"),
    ]:
        assert binding_message(**{**base, field: value}) != msg  # type: ignore[arg-type]
