"""Chain fixtures: the in-process eth-tester chain and a real anvil node, same flows on both."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount

from edgetrust.chain import AnchorParams, Chain, LogAnchor, connect
from edgetrust.chain._devchain import anvil
from edgetrust.identity import Identity

FUNDING = 100 * 10**18
BOND = 10**18
WINDOW = 3600


@pytest.fixture(scope="session")
def anvil_url() -> Iterator[str]:
    """One anvil node for the session, on a free 127.0.0.1 port, stopped at the end."""
    with anvil() as url:
        yield url


@pytest.fixture(params=["eth-tester", "anvil"])
def chain(request: pytest.FixtureRequest) -> Chain:
    """A connected chain: a fresh in-process eth-tester chain, or the session's anvil node."""
    if request.param == "eth-tester":
        return connect(None)
    return connect(request.getfixturevalue("anvil_url"))


@pytest.fixture
def eth_tester_chain() -> Chain:
    return connect(None)


def funded(chain: Chain) -> LocalAccount:
    """A fresh account with 100 ether from the node's dev account."""
    acct: LocalAccount = Account.create()
    chain.fund(acct.address, FUNDING)
    return acct


def note_key_for(identity: Identity, origin: str) -> str:
    """A C2SP signed-note verifier key for `identity` (name+hash+base64(0x01||key))."""
    import base64
    import hashlib

    raw = b"\x01" + identity.public_bytes
    key_hash = hashlib.sha256(origin.encode() + b"\n" + raw).digest()[:4]
    return f"{origin}+{key_hash.hex()}+{base64.b64encode(raw).decode()}"


class Deployed:
    """A LogAnchor with one registered log, its operator and another party."""

    def __init__(self, chain: Chain) -> None:
        self.chain = chain
        self.deployer = funded(chain)
        self.operator = funded(chain)
        self.other = funded(chain)
        self.log_key = Identity.generate("log")
        self.origin = "example.com/log"
        self.anchor, _ = LogAnchor.deploy(
            chain,
            self.deployer,
            AnchorParams(min_bond=BOND, challenge_bond=BOND // 10, response_window=WINDOW),
        )
        self.anchor.register_log(
            self.operator,
            origin=self.origin,
            note_key=note_key_for(self.log_key, self.origin),
            log_identity=self.log_key,
            bond=BOND,
        )


@pytest.fixture
def deployed(chain: Chain) -> Deployed:
    return Deployed(chain)
