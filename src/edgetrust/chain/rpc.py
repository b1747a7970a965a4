"""A connection to an EVM chain: any JSON-RPC endpoint, or an in-process eth-tester chain.

`connect(None)` gives the embedded default: a py-evm chain inside this process (eth-tester),
which needs no node and no network and vanishes with the process. `connect(url)` talks to any
Ethereum-compatible JSON-RPC endpoint (anvil, a testnet, a mainnet node).

Transactions are signed locally with the caller's `eth_account` key and sent raw, so the node
never holds a key. A revert becomes one `RevertError` carrying the contract's reason string.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from eth_account.signers.local import LocalAccount
from eth_typing import ChecksumAddress
from web3 import Web3
from web3.exceptions import ContractLogicError, TimeExhausted, Web3Exception
from web3.types import TxReceipt, Wei

from edgetrust.errors import ConflictError, Error, InvalidInputError, UnsupportedError

__all__ = [
    "Chain",
    "ChainUnavailableError",
    "RevertError",
    "checksum_address",
    "connect",
]

_REVERT_PREFIXES = ("execution reverted: ", "execution reverted", "VM Exception while processing")


class ChainUnavailableError(Error):
    """The JSON-RPC endpoint cannot be reached, or answered something that is not a chain."""


class RevertError(ConflictError):
    """The chain refused a transaction or call: the contract reverted.

    `reason` is the contract's revert string (e.g. ``"size decreased"``), or a short
    description when the contract gave none.
    """

    def __init__(self, reason: str, *, action: str) -> None:
        super().__init__(f"{action} reverted on chain: {reason}")
        self.reason = reason
        """The revert reason the contract gave."""
        self.action = action
        """What was being attempted (e.g. ``"anchor"``)."""


def revert_reason(exc: BaseException) -> str:
    """Extract the contract's reason string from an eth-tester or JSON-RPC revert."""
    text = getattr(exc, "message", None) or (str(exc.args[0]) if exc.args else str(exc))
    text = str(text).strip()
    for prefix in _REVERT_PREFIXES:
        if text.startswith(prefix):
            text = text[len(prefix) :].strip(" :")
            break
    return text or "no reason given"


def _is_revert(exc: BaseException) -> bool:
    if isinstance(exc, ContractLogicError):
        return True
    # eth-tester raises its own TransactionFailed for reverts in the in-process chain.
    return type(exc).__name__ == "TransactionFailed"


@dataclass
class Chain:
    """A connected chain and how to drive it.

    Use `connect()` to make one. `w3` is the web3.py handle for anything this class does not
    wrap.
    """

    w3: Web3
    """The web3.py connection."""
    url: str | None
    """The JSON-RPC URL, or None for the in-process eth-tester chain."""

    @property
    def in_process(self) -> bool:
        """Whether this is the in-process eth-tester chain (nothing persists after exit)."""
        return self.url is None

    @property
    def chain_id(self) -> int:
        """The EIP-155 chain id."""
        return int(self.w3.eth.chain_id)

    def timestamp(self) -> int:
        """The timestamp of the latest block (what a contract sees as `block.timestamp`)."""
        return int(self.w3.eth.get_block("latest")["timestamp"])

    def balance(self, address: str) -> int:
        """The balance of `address` in wei."""
        return int(self.w3.eth.get_balance(Web3.to_checksum_address(address)))

    # -- development chains only ------------------------------------------------------------

    def fund(self, address: str, wei: int) -> None:
        """Send `wei` to `address` from the node's first unlocked dev account.

        Only development chains (eth-tester, anvil) hold unlocked funded accounts; on any other
        chain fund your account the ordinary way.
        """
        try:
            accounts = self.w3.eth.accounts
        except Web3Exception as exc:
            raise UnsupportedError(f"this chain has no unlocked dev accounts: {exc}") from exc
        if not accounts:
            raise UnsupportedError("this chain has no unlocked dev accounts to fund from")
        tx_hash = self.w3.eth.send_transaction(
            {"from": accounts[0], "to": Web3.to_checksum_address(address), "value": Wei(wei)}
        )
        self.w3.eth.wait_for_transaction_receipt(tx_hash)

    def advance_time(self, seconds: int) -> None:
        """Move the chain's clock forward by `seconds` and mine a block (dev chains only)."""
        if seconds < 0:
            raise InvalidInputError("`seconds` must not be negative")
        if self.in_process:
            tester = self.w3.provider.ethereum_tester  # type: ignore[attr-defined]
            tester.time_travel(self.timestamp() + seconds)
            return
        try:
            self.w3.provider.make_request("evm_increaseTime", [seconds])  # type: ignore[arg-type]
            self.w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
        except Web3Exception as exc:
            raise UnsupportedError(f"this node cannot move its clock: {exc}") from exc

    # -- transactions -----------------------------------------------------------------------

    def transact(
        self,
        account: LocalAccount,
        call: Any,
        *,
        action: str,
        value: int = 0,
        timeout: float = 120.0,
    ) -> TxReceipt:
        """Sign `call` (a web3 contract function or constructor) with `account` and send it.

        The gas is estimated first, so a transaction that would revert is refused before it is
        sent and costs nothing.

        Raises:
            RevertError: the contract reverted (the message carries its reason).
            ChainUnavailableError: the node did not answer or did not mine the transaction.
        """
        with _chain_errors(action):
            tx = call.build_transaction(
                {
                    "from": account.address,
                    "value": value,
                    "nonce": self.w3.eth.get_transaction_count(account.address, "pending"),
                    "chainId": self.chain_id,
                }
            )
        return self._send(account, tx, action=action, timeout=timeout)

    def deploy(
        self, account: LocalAccount, abi: Any, bytecode: Any, *args: Any, name: str
    ) -> tuple[str, TxReceipt]:
        """Deploy a contract with constructor `args`; returns its address and the receipt."""
        factory = self.w3.eth.contract(abi=abi, bytecode=bytecode)
        receipt = self.transact(account, factory.constructor(*args), action=f"deploy {name}")
        address = receipt["contractAddress"]
        if address is None:
            raise RevertError("no contract address in receipt", action=f"deploy {name}")
        return str(address), receipt

    def transact_data(
        self, account: LocalAccount, to: str, data: bytes, *, action: str, timeout: float = 120.0
    ) -> TxReceipt:
        """Send raw calldata `data` to contract `to`, estimating gas first like `transact`.

        For contracts called with pre-encoded calldata, like EZKL's verifier.
        """
        tx: dict[str, Any] = {
            "from": account.address,
            "to": Web3.to_checksum_address(to),
            "data": "0x" + data.hex(),
            "value": 0,
        }
        with _chain_errors(action):
            tx["gas"] = self.w3.eth.estimate_gas(tx)  # type: ignore[arg-type]
            tx["nonce"] = self.w3.eth.get_transaction_count(account.address, "pending")
            tx["chainId"] = self.chain_id
            fees = self.w3.eth.get_block("latest").get("baseFeePerGas")
            if fees is not None:
                tx["maxFeePerGas"] = 2 * int(fees) + 10**9
                tx["maxPriorityFeePerGas"] = 10**9
            else:
                tx["gasPrice"] = self.w3.eth.gas_price
        return self._send(account, tx, action=action, timeout=timeout)

    def _send(self, account: LocalAccount, tx: Any, *, action: str, timeout: float) -> TxReceipt:
        """Sign `tx` locally, send it raw and wait until it is mined; a failed one reverts."""
        if "gas" in tx:
            # The estimate is the least gas that succeeded against the state it was run on; a
            # block mined a moment later (another timestamp, a refund counted differently) can
            # need a little more, and an out-of-gas revert says nothing. 20% headroom; unused
            # gas is not charged, so gas_used and every measurement stay the same.
            tx = {**tx, "gas": int(tx["gas"]) * 6 // 5 + 10_000}
        with _chain_errors(action, timeout):
            signed = account.sign_transaction(tx)
            tx_hash = self.w3.eth.send_raw_transaction(signed.raw_transaction)
            receipt = self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=timeout)
        if receipt["status"] != 1:
            raise RevertError("transaction failed", action=action)
        return receipt

    def call_data(self, to: str, data: bytes, *, action: str) -> bytes:
        """`eth_call` with raw calldata; returns the raw return data."""
        with _chain_errors(action):
            out = self.w3.eth.call(
                {"to": Web3.to_checksum_address(to), "data": "0x" + data.hex()}  # type: ignore[typeddict-item]
            )
        return bytes(out)

    def call(self, call: Any, *, action: str) -> Any:
        """Run a view function (`eth_call`), turning a revert into `RevertError`."""
        with _chain_errors(action):
            return call.call()


@contextlib.contextmanager
def _chain_errors(action: str, timeout: float | None = None) -> Iterator[None]:
    """A revert becomes `RevertError` with the contract's reason; a node that fails, one line."""
    try:
        yield
    except TimeExhausted as exc:
        raise ChainUnavailableError(f"{action}: transaction not mined in {timeout} s") from exc
    except Exception as exc:
        if _is_revert(exc):
            raise RevertError(revert_reason(exc), action=action) from exc
        if isinstance(exc, (Web3Exception, OSError, ValueError)):
            raise ChainUnavailableError(f"{action}: {_one_line(exc)}") from exc
        raise


def checksum_address(address: str) -> ChecksumAddress:
    """`address` in EIP-55 form, or `InvalidInputError` naming what was given."""
    try:
        return Web3.to_checksum_address(address)
    except (ValueError, TypeError) as exc:
        raise InvalidInputError(f"not an EVM address: {address!r:.80}") from exc


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:200] or type(exc).__name__


def connect(rpc: str | None = None, *, timeout: float = 10.0) -> Chain:
    """Connect to the chain at JSON-RPC URL `rpc`, or start an in-process chain if None.

    The in-process chain (eth-tester on py-evm) is the embedded default: it needs no node, its
    dev accounts are funded, and it disappears when the process exits.

    Raises:
        InvalidInputError: `rpc` is not an http(s) URL.
        ChainUnavailableError: nothing answers at `rpc`.
    """
    if rpc is None:
        from web3.providers.eth_tester import EthereumTesterProvider

        return Chain(Web3(EthereumTesterProvider()), None)
    if not rpc.startswith(("http://", "https://")):
        raise InvalidInputError(f"--rpc must be an http:// or https:// URL, got {rpc!r:.80}")
    w3 = Web3(Web3.HTTPProvider(rpc, request_kwargs={"timeout": timeout}))
    deadline = time.monotonic() + timeout
    try:
        w3.eth.chain_id  # noqa: B018  (a round trip proves the endpoint is a chain)
    except Exception as exc:
        if time.monotonic() > deadline:
            raise ChainUnavailableError(f"no answer from {rpc} in {timeout} s") from exc
        raise ChainUnavailableError(f"cannot reach a chain at {rpc}: {_one_line(exc)}") from exc
    return Chain(w3, rpc)
