"""The demo's receipt-to-slash path (step 10).

Carol's lying receipt loses her bond on chain, and a mistaken challenger of bob's honest receipt
loses its challenge bond.

Everything is real: the demo's log is anchored on an in-process chain, both devices register
their did:key with a bond and co-sign their receipts at receipt time, the challenger re-executes
and plays the referee's commit-reveal bisection, the contract recomputes one element.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eth_account import Account

from edgetrust.chain.anchor import AnchorParams, LogAnchor
from edgetrust.chain.receipt_dispute import cosign_bundle, dispute_receipt
from edgetrust.chain.referee import DisputeOutcome, Referee, RefereeParams
from edgetrust.chain.referee_play import DeviceSide
from edgetrust.chain.rpc import Chain, connect

__all__ = ["ReceiptDisputes", "run_receipt_disputes"]

BOND = 10**18
CHALLENGE_BOND = 10**17


@dataclass
class ReceiptDisputes:
    """What happened, for the demo's table."""

    rows: list[tuple[str, int | None, str]] = field(default_factory=list)
    carol: DisputeOutcome | None = None
    false_challenge: DisputeOutcome | None = None
    carol_bond_after: int = -1
    challenger_lost: int = 0


def run_receipt_disputes(
    *,
    log: Any,
    log_identity: Any,
    model: bytes,
    inputs: dict[str, Any],
    honest: tuple[Any, Any],
    lying: tuple[Any, Any],
    chain: Chain | None = None,
) -> ReceiptDisputes:
    """`honest`/`lying` are (device, bundle) pairs whose receipts are in `log`."""
    from edgetrust.runtime.fixed import Fault, TraceStore

    chain = chain or connect()
    out = ReceiptDisputes()
    operator, challenger, mistaken = (Account.create() for _ in range(3))
    dev_keys = {name: Account.create() for name in ("bob", "carol")}
    for a in (operator, challenger, mistaken, *dev_keys.values()):
        chain.fund(a.address, 10**20)
    anchor, _ = LogAnchor.deploy(chain, operator, AnchorParams(response_window=3600))
    referee, tx = Referee.deploy(
        chain, operator, anchor.address, RefereeParams(BOND, CHALLENGE_BOND, 3600)
    )
    out.rows.append(("deploy Referee", tx.gas_used, referee.address))
    latest = log.latest()
    anchor.register_log(
        operator,
        origin=latest.origin,
        bond=BOND,
        log_identity=log_identity,
        note_key=log.verifier_key,
    )
    cosigs = {}
    for name, (device, bundle) in (("bob", honest), ("carol", lying)):
        acct = dev_keys[name]
        tx = referee.register_device(acct, device.identity, bond=BOND)
        index = referee.log_registration(device.identity, acct.address, log)
        out.rows.append(
            (f"{name} registers did:key + 1 ETH bond", tx.gas_used, f"logged at {index}")
        )
        cosigs[name] = cosign_bundle(referee, acct, bundle, model)
    tx = anchor.anchor(operator, origin=latest.origin, size=latest.size, root=latest.root)
    out.rows.append((f"anchor the demo log at size {latest.size}", tx.gas_used, "anchored"))

    def play(name: str, who: Any, fault: Any = None) -> DisputeOutcome:
        device, bundle = honest if name == "bob" else lying
        from edgetrust.chain.receipt_dispute import receipt_claim

        ex, claim = receipt_claim(bundle, model)
        trace = TraceStore(Path(device.home)).get(claim.trace_root, ex)
        return dispute_receipt(
            referee,
            anchor,
            who,
            bundle,
            cosigs[name],
            model=model,
            inputs=inputs,
            opening=device.reveal(bundle),
            device=dev_keys[name],
            device_side=DeviceSide(trace),
            on_move=lambda what, gas: out.rows.append((f"  {name}: {what}", gas, "")),
            fault=fault,
            log=log,
        )

    out.carol = play("carol", challenger)
    verdict = "CONVICTED" if out.carol.convicted else "cleared"
    out.rows.append(
        (
            "referee recomputes carol's element",
            None,
            f"{verdict}: said {out.carol.claimed}, rule gives {out.carol.recomputed}",
        )
    )
    out.carol_bond_after = referee.bond_of(dev_keys["carol"].address)
    before = chain.balance(mistaken.address)
    out.false_challenge = play("bob", mistaken, fault=Fault(0, 5, 40))
    out.challenger_lost = before - chain.balance(mistaken.address)
    out.rows.append(
        (
            "a mistaken challenger disputes bob",
            None,
            ("cleared" if not out.false_challenge.convicted else "CONVICTED")
            + f": challenger lost {out.challenger_lost / 1e18:.3f} ETH (bond + gas)",
        )
    )
    return out
