"""The chain demo: anchoring, a slashed operator and a convicted device, on one chain.

A log is anchored and challenged, an equivocating operator slashed, and a lying device
convicted by the on-chain referee, on the in-process chain by default.

`run_story(chain)` is what `edgetrust chain demo` prints and what the project demo can call;
every step is a real transaction whose gas is reported.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount

from edgetrust.chain._digits import digits_executor, digits_run
from edgetrust.chain.anchor import AnchorParams, LogAnchor, note_verifier_key
from edgetrust.chain.dispute import DisputeGame, DisputeParams, mirror_verdict
from edgetrust.chain.rpc import Chain, RevertError
from edgetrust.identity import Identity
from edgetrust.log.merkle import consistency_proof, leaf_hash, root_from_leaves

__all__ = ["Story", "StoryStep", "run_story"]

ORIGIN = "demo.edgetrust.dev/log"
_FUND = 100 * 10**18
_BOND = 10**18


@dataclass(frozen=True)
class StoryStep:
    """One transaction of the story."""

    what: str
    """What happened, in a few words."""
    gas: int | None
    """Gas used (None for a transaction the chain refused)."""
    outcome: str
    """What the chain said."""


@dataclass
class Story:
    """The story's steps, in order, and its contracts."""

    chain_id: int
    in_process: bool
    log_anchor: str = ""
    dispute_game: str = ""
    steps: list[StoryStep] = field(default_factory=list)

    def add(self, what: str, gas: int | None, outcome: str) -> None:
        """Record a step."""
        self.steps.append(StoryStep(what, gas, outcome))

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "chain_id": self.chain_id,
            "in_process": self.in_process,
            "LogAnchor": self.log_anchor,
            "DisputeGame": self.dispute_game,
            "steps": [s.__dict__ for s in self.steps],
        }

    def table(self) -> Any:
        """A Rich table for the terminal."""
        from rich.table import Table

        where = "in-process chain" if self.in_process else f"chain {self.chain_id}"
        t = Table(title=f"edgetrust on an EVM chain ({where})")
        t.add_column("step")
        t.add_column("gas", justify="right")
        t.add_column("outcome")
        for s in self.steps:
            t.add_row(s.what, "-" if s.gas is None else f"{s.gas:,}", s.outcome)
        return t


def _account(chain: Chain) -> LocalAccount:
    acct: LocalAccount = Account.create()
    chain.fund(acct.address, _FUND)
    return acct


def run_story(chain: Chain, *, log: Any | None = None) -> Story:
    """Run the demo on `chain` (needs dev-chain funding: eth-tester or anvil).

    With `log` (an `edgetrust.log.service.Log`), the on-chain verdict is mirrored into it as
    a signed dispute-verdict statement.
    """
    story = Story(chain.chain_id, chain.in_process)
    operator, watcher, device, deployer = (_account(chain) for _ in range(4))
    log_key = Identity.generate("demo-log")

    anchor, tx = LogAnchor.deploy(chain, deployer, AnchorParams(response_window=3600))
    story.log_anchor = anchor.address
    story.add("deploy LogAnchor", tx.gas_used, anchor.address)
    game, tx = DisputeGame.deploy(chain, deployer, DisputeParams(response_window=3600))
    story.dispute_game = game.address
    story.add("deploy DisputeGame", tx.gas_used, game.address)

    # A log of receipts (their digests stand in for the DSSE envelopes here).
    leaves = [leaf_hash(f"receipt {i}".encode()) for i in range(13)]
    tx = anchor.register_log(
        operator,
        origin=ORIGIN,
        note_key=note_verifier_key(ORIGIN, log_key),
        log_identity=log_key,
        bond=_BOND,
    )
    story.add("register log (bond 1 ETH)", tx.gas_used, ORIGIN)
    for n in (8, 13):
        tx = anchor.anchor(operator, origin=ORIGIN, size=n, root=root_from_leaves(leaves[:n]))
        story.add(f"anchor checkpoint size {n}", tx.gas_used, "anchored")
    cid, tx = anchor.challenge(watcher, origin=ORIGIN, size1=8, size2=13)
    story.add("challenge: is 13 an extension of 8?", tx.gas_used, f"challenge {cid}")
    tx = anchor.answer_challenge(
        operator, challenge_id=cid, proof=consistency_proof(8, leaves[:13])
    )
    story.add("operator answers with a consistency proof", tx.gas_used, "verified on chain")

    forged = root_from_leaves([*leaves[:12], leaf_hash(b"rewritten")])
    tx = anchor.anchor(operator, origin=ORIGIN, size=13, root=forged)
    story.add("operator anchors a second root for 13", tx.gas_used, "equivocation recorded")
    size, root_a, root_b = anchor.equivocations(ORIGIN)[0]
    tx = anchor.report_equivocation(watcher, origin=ORIGIN, size=size, root_a=root_a, root_b=root_b)
    story.add("watcher reports the equivocation", tx.gas_used, "operator slashed, bond to watcher")
    try:
        anchor.anchor(operator, origin=ORIGIN, size=14, root=forged)
    except RevertError as exc:
        story.add("slashed operator tries to anchor", None, f"refused: {exc.reason}")

    tx = game.stake(device, _BOND)
    story.add("device stakes 1 ETH", tx.gas_used, "staked")
    lying = digits_run(lie_at=(2, 3))
    sig = game.sign_commitment(device, lying)
    did, tx = game.open_dispute(
        watcher, device=device.address, commitment=lying, device_sig=sig, node_index=2, element=3
    )
    story.add("challenger disputes output 3 of Gemm 2", tx.gas_used, f"dispute {did}")
    verdict = game.resolve(watcher, did, lying.final_step(2, 3))
    story.add(
        "referee recomputes the element on chain",
        verdict.tx.gas_used,
        f"{'CONVICTED' if verdict.convicted else 'cleared'}: device said {verdict.claimed}, "
        f"rule gives {verdict.recomputed}",
    )
    if log is not None:
        _, index = mirror_verdict(
            verdict,
            game=game,
            commitment=lying,
            executor=digits_executor(),
            node_index=2,
            element=3,
            signer=Identity.generate("referee"),
            log=log,
        )
        story.add("verdict mirrored into the log", None, f"log entry {index}")
    return story
