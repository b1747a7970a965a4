"""EVM accounts (secp256k1, eth-account) kept in the keystore beside the Ed25519 identities.

An account lives in `$EDGETRUST_HOME/keys/<name>.evm.json`, mode 0600: an Ethereum V3 keystore
(scrypt + AES-128-CTR, as geth and eth-account write it) when a passphrase is given, otherwise
the hex private key in a small JSON record. As with Ed25519 keys, a file other users can read
is refused rather than used, and an existing account is never overwritten.

An account is bound to an Ed25519 identity by a signature of that identity over
`binding_message()`, which names the chain, the contract, the EVM address and the log origin:
the log registration on chain carries it, so anyone can check that the log key agreed to be
represented by that address (EVM has no Ed25519 precompile, so watchers check it off chain).
"""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path

from eth_account import Account
from eth_account.signers.local import LocalAccount

from edgetrust.errors import InvalidInputError, KeystoreError, NotFoundError
from edgetrust.home import resolve_home

__all__ = [
    "BINDING_CONTEXT",
    "EvmKeystore",
    "binding_message",
    "parse_private_key",
]

BINDING_CONTEXT = b"edgetrust.dev/chain-binding/v1\n"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_HEX_KEY_RE = re.compile(r"^(0x)?[0-9a-fA-F]{64}$")
_RECORD_TYPE = "edgetrust-evm-key/v1"
# secp256k1 group order: a private key must be in [1, n-1].
_SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


def binding_message(*, chain_id: int, contract: str, operator: str, origin: str) -> bytes:
    """The bytes an Ed25519 log key signs to bind itself to an EVM operator address.

    Every field that scopes the binding is in it, so the signature cannot be replayed on
    another chain, another contract, for another address or another log.
    """
    return (
        BINDING_CONTEXT
        + (
            f"chain_id {chain_id}\ncontract {contract.lower()}\n"
            f"operator {operator.lower()}\norigin {origin}\n"
        ).encode()
    )


def parse_private_key(text: str) -> bytes:
    """Parse a hex secp256k1 private key (64 hex digits, optional 0x, surrounding space).

    Raises:
        InvalidInputError: not 32 bytes of hex, or not a valid secp256k1 scalar.
    """
    text = text.strip()
    if not _HEX_KEY_RE.match(text):
        raise InvalidInputError("a private key is 64 hex digits (optionally 0x-prefixed)")
    key = bytes.fromhex(text.removeprefix("0x"))
    if not 0 < int.from_bytes(key, "big") < _SECP256K1_N:
        raise InvalidInputError("the private key is out of range for secp256k1")
    return key


class EvmKeystore:
    """EVM accounts on disk under `<home>/keys`, one `<name>.evm.json` per account."""

    def __init__(self, home: str | os.PathLike[str] | None = None) -> None:
        self.root = resolve_home(home) / "keys"

    def _path(self, name: str) -> Path:
        if not _NAME_RE.match(name):
            raise InvalidInputError(
                f"account name {name!r:.80} must be 1-64 letters, digits, '.', '_' or '-'"
            )
        return self.root / f"{name}.evm.json"

    def names(self) -> list[str]:
        """Names of the stored accounts, sorted."""
        if not self.root.is_dir():
            return []
        return sorted(p.name.removesuffix(".evm.json") for p in self.root.glob("*.evm.json"))

    def exists(self, name: str) -> bool:
        """Whether an account called `name` is stored."""
        return self._path(name).exists()

    def create(self, name: str = "default", *, passphrase: str | None = None) -> LocalAccount:
        """Generate a new random account and store it; refuses to overwrite."""
        account: LocalAccount = Account.create()
        self._write(name, account.key, passphrase)
        return account

    def import_key(
        self, name: str, private_key: bytes, *, passphrase: str | None = None
    ) -> LocalAccount:
        """Store an existing private key (e.g. one of anvil's funded dev keys) as `name`."""
        account: LocalAccount = Account.from_key(private_key)
        self._write(name, account.key, passphrase)
        return account

    def _write(self, name: str, key: bytes, passphrase: str | None) -> Path:
        path = self._path(name)
        account = Account.from_key(key)
        record: dict[str, object]
        if passphrase:
            record = dict(Account.encrypt(key, passphrase))
        else:
            record = {"type": _RECORD_TYPE, "address": account.address, "private_key": key.hex()}
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            # O_EXCL: never replace a key silently; 0600 from the first byte written.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError as exc:
            raise KeystoreError(f"an account named {name!r} already exists at {path}") from exc
        with os.fdopen(fd, "w") as fh:
            json.dump(record, fh, indent=1)
        return path

    def address(self, name: str = "default") -> str:
        """The checksummed address of account `name`, without decrypting it."""
        record = self._read(name)
        address = record.get("address")
        if not isinstance(address, str):
            raise KeystoreError(f"account file for {name!r} has no address")
        if not address.startswith("0x"):
            address = "0x" + address
        from web3 import Web3

        return Web3.to_checksum_address(address)

    def _read(self, name: str) -> dict[str, object]:
        path = self._path(name)
        try:
            mode = path.stat().st_mode
        except FileNotFoundError as exc:
            raise NotFoundError(
                f"no EVM account named {name!r} in {self.root} (run 'edgetrust chain account new')"
            ) from exc
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise KeystoreError(
                f"account file {path} is accessible by other users (mode {stat.S_IMODE(mode):o}); "
                f"run 'chmod 600 {path}'"
            )
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise KeystoreError(f"cannot read account file {path}: {exc}") from exc
        if not isinstance(record, dict):
            raise KeystoreError(f"account file {path} is not a JSON object")
        return record

    def load(self, name: str = "default", *, passphrase: str | None = None) -> LocalAccount:
        """Load account `name`, decrypting it with `passphrase` when it is encrypted."""
        record = self._read(name)
        if record.get("type") == _RECORD_TYPE:
            if passphrase:
                raise KeystoreError(f"account {name!r} is not encrypted: do not give a passphrase")
            try:
                key = parse_private_key(str(record["private_key"]))
            except (KeyError, InvalidInputError) as exc:
                raise KeystoreError(f"account file for {name!r} holds no valid key") from exc
            account: LocalAccount = Account.from_key(key)
            return account
        if "crypto" not in record and "Crypto" not in record:
            raise KeystoreError(f"account file for {name!r} is not a key record or V3 keystore")
        if not passphrase:
            raise KeystoreError(f"account {name!r} is encrypted: give its passphrase")
        try:
            key = Account.decrypt(record, passphrase)
        except ValueError as exc:
            raise KeystoreError(f"cannot decrypt account {name!r}: wrong passphrase") from exc
        decrypted: LocalAccount = Account.from_key(key)
        return decrypted

    def load_or_create(self, name: str = "default") -> LocalAccount:
        """Load `name`, creating an unencrypted account first if there is none."""
        if self.exists(name):
            return self.load(name)
        return self.create(name)
