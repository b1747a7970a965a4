"""`edgetrust chain dispute RECEIPT`: dispute a logged receipt on the on-chain referee."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from edgetrust.cli._app import HomeOpt, JsonOpt, emit, out, set_json_mode
from edgetrust.cli._chain import (
    AccountOpt,
    PassFileOpt,
    RpcOpt,
    _need_rpc,
    _recorded,
    _session,
    chain_app,
)
from edgetrust.cli._core import read_file
from edgetrust.errors import ConflictError, InvalidInputError, NotFoundError

_MODEL_BYTES = 2 * 2**30


@chain_app.command("dispute")
def dispute(
    receipt: Annotated[Path, typer.Argument(help="The logged receipt bundle to dispute.")],
    cosignature: Annotated[
        Path,
        typer.Option(
            "--cosignature", help="The device's co-signature file (made at receipt time)."
        ),
    ],
    model: Annotated[Path, typer.Option("--model", help="The receipt's ONNX model file.")],
    input: Annotated[Path, typer.Option("--input", "-i", help="The input (.npy, .npz, .json).")],
    opening: Annotated[Path, typer.Option("--opening", help="The input's opening.")],
    device_home: Annotated[
        Path,
        typer.Option(
            "--device-home",
            help="The device's home: its stored trace and EVM account answer the moves here "
            "(the in-process transport, as for 'edgetrust challenge').",
        ),
    ],
    device_account: Annotated[
        str, typer.Option("--device-account", help="The device's EVM account name.")
    ] = "default",
    anchor: Annotated[
        str | None,
        typer.Option("--anchor", help="LogAnchor address (default: the one 'deploy' recorded)."),
    ] = None,
    rpc: RpcOpt = None,
    account: AccountOpt = "default",
    passphrase_file: PassFileOpt = None,
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Re-execute a fixed-point receipt and dispute it on chain, down to one recomputed element.

    The referee checks the receipt's log inclusion against an anchored root and the device's
    co-signature, then the commit-reveal bisection runs move by move; a device that lied loses
    its bond, a false challenge loses the challenge bond. Exit 0: the receipt stands (the
    challenge failed); exit 1: the device is convicted; exit 2: bad input or a revert.
    """
    set_json_mode(json_out)
    _need_rpc(rpc, "a dispute")
    from edgetrust.models import ModelCard
    from edgetrust.receipts import parse_bundles, parse_opening
    from edgetrust.runtime.onnx import load_inputs

    bundles = parse_bundles(read_file(receipt, "receipt", max_bytes=64 * 2**20))
    if len(bundles) != 1:
        raise InvalidInputError("give one receipt bundle, not a batch file")
    model_bytes = read_file(model, "model", max_bytes=_MODEL_BYTES)
    inputs = load_inputs(input, ModelCard.from_onnx_bytes(model_bytes))
    opened = parse_opening(read_file(opening, "opening", max_bytes=64 * 1024))
    from edgetrust.chain.accounts import EvmKeystore
    from edgetrust.chain.anchor import LogAnchor
    from edgetrust.chain.receipt_dispute import Cosignature, dispute_receipt, receipt_claim
    from edgetrust.chain.referee import REVERTS, Referee
    from edgetrust.chain.referee_play import DeviceSide
    from edgetrust.chain.rpc import RevertError
    from edgetrust.runtime.fixed import TraceStore

    cosig = Cosignature.parse(read_file(cosignature, "co-signature", max_bytes=8192))
    chain, acct = _session(rpc, home, account, passphrase_file)
    anchor_addr = anchor or _recorded(home, chain, "LogAnchor")
    if anchor_addr is None:
        raise NotFoundError("no LogAnchor known for this chain: give --anchor")
    dev_acct = EvmKeystore(device_home).load(device_account)
    if dev_acct.address != cosig.account:
        raise InvalidInputError(
            f"the device account {device_account!r} is not the co-signing one ({cosig.account})"
        )
    ex, claim = receipt_claim(bundles[0], model_bytes)
    side = DeviceSide(TraceStore(device_home).get(claim.trace_root, ex))
    moves: list[dict[str, Any]] = []
    try:
        result = dispute_receipt(
            Referee(chain, cosig.referee),
            LogAnchor(chain, anchor_addr),
            acct,
            bundles[0],
            cosig,
            model=model_bytes,
            inputs=inputs,
            opening=opened,
            device=dev_acct,
            device_side=side,
            on_move=lambda what, gas: moves.append({"move": what, "gas": gas}),
        )
    except RevertError as exc:
        why = REVERTS.get(exc.reason)
        raise ConflictError(f"{exc.message}" + (f" ({why})" if why else "")) from exc
    data = {
        "disputeId": result.dispute_id,
        "convicted": result.convicted,
        "reason": result.reason,
        "claimed": result.claimed,
        "recomputed": result.recomputed,
        "moves": moves,
        "challengerGas": result.challenger_gas,
    }

    def human() -> None:
        verdict = "[red]device convicted[/]" if result.convicted else "[green]device cleared[/]"
        out.print(
            f"dispute {result.dispute_id}: {verdict} ({result.reason}): device said "
            f"{result.claimed}, rule gives {result.recomputed}"
        )
        for m in moves:
            out.print(f"  {m['move']:16s} {m['gas']:>9,} gas")
        out.print(f"  challenger paid {result.challenger_gas:,} gas")

    emit(json_out, data, human)
    if result.convicted:
        raise typer.Exit(1)


RefereeOpt = Annotated[str | None, typer.Option("--referee", help="Referee contract address.")]


def _referee_addr(home: str | None, chain: Any, given: str | None) -> str:
    addr = given or _recorded(home, chain, "Referee")
    if addr is None:
        raise NotFoundError("no Referee known for this chain: run 'chain deploy-referee'")
    return addr


@chain_app.command("deploy-referee")
def deploy_referee(
    anchor: Annotated[
        str | None,
        typer.Option("--anchor", help="LogAnchor address (default: the one 'deploy' recorded)."),
    ] = None,
    min_bond: Annotated[int, typer.Option(help="Device bond (wei).")] = 10**18,
    challenge_bond: Annotated[int, typer.Option(help="Challenger bond (wei).")] = 10**17,
    window: Annotated[int, typer.Option(help="Seconds per move.")] = 3600,
    rpc: RpcOpt = None,
    account: AccountOpt = "default",
    passphrase_file: PassFileOpt = None,
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Deploy the Referee (receipt disputes) over a LogAnchor; remember its address."""
    set_json_mode(json_out)
    _need_rpc(rpc, "a referee")
    from edgetrust.chain.referee import Referee, RefereeParams

    chain, acct = _session(rpc, home, account, passphrase_file)
    anchor_addr = anchor or _recorded(home, chain, "LogAnchor")
    if anchor_addr is None:
        raise NotFoundError("no LogAnchor known for this chain: give --anchor")
    ref, tx = Referee.deploy(
        chain, acct, anchor_addr, RefereeParams(min_bond, challenge_bond, window)
    )
    from edgetrust.cli._chain import _record

    _record(home, chain, "Referee", ref.address)
    data = {"Referee": ref.address, "anchor": anchor_addr, "gas": tx.gas_used}
    emit(json_out, data, lambda: out.print(f"Referee {ref.address}  ({tx.gas_used:,} gas)"))


@chain_app.command("register-device")
def register_device(
    bond: Annotated[int, typer.Option(help="Bond (wei).")] = 10**18,
    identity: Annotated[
        str, typer.Option("--identity", help="The device's keystore identity (its did:key).")
    ] = "default",
    referee: RefereeOpt = None,
    rpc: RpcOpt = None,
    account: AccountOpt = "default",
    passphrase_file: PassFileOpt = None,
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Bind this home's did:key to the EVM account with a bond (one Ed25519 signature)."""
    set_json_mode(json_out)
    _need_rpc(rpc, "a registration")
    from edgetrust.chain.referee import Referee
    from edgetrust.identity import Keystore

    chain, acct = _session(rpc, home, account, passphrase_file)
    ref = Referee(chain, _referee_addr(home, chain, referee))
    ident = Keystore(home).load(identity)
    tx = ref.register_device(acct, ident, bond=bond)
    data = {"account": acct.address, "did": ident.did, "bond": bond, "gas": tx.gas_used}
    emit(
        json_out,
        data,
        lambda: out.print(f"registered {ident.did[:32]}… to {acct.address} ({tx.gas_used:,} gas)"),
    )


@chain_app.command("cosign")
def cosign(
    receipt: Annotated[Path, typer.Argument(help="The receipt bundle (this device's).")],
    model: Annotated[Path, typer.Option("--model", help="The receipt's ONNX model file.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write it.")],
    referee: RefereeOpt = None,
    rpc: RpcOpt = None,
    account: AccountOpt = "default",
    passphrase_file: PassFileOpt = None,
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Co-sign a receipt for the referee with this device's EVM key (at receipt time)."""
    set_json_mode(json_out)
    _need_rpc(rpc, "a co-signature")
    from edgetrust.chain.receipt_dispute import cosign_bundle
    from edgetrust.chain.referee import Referee
    from edgetrust.receipts import parse_bundles

    bundles = parse_bundles(read_file(receipt, "receipt", max_bytes=64 * 2**20))
    if len(bundles) != 1:
        raise InvalidInputError("give one receipt bundle, not a batch file")
    chain, acct = _session(rpc, home, account, passphrase_file)
    ref = Referee(chain, _referee_addr(home, chain, referee))
    cs = cosign_bundle(ref, acct, bundles[0], read_file(model, "model", max_bytes=_MODEL_BYTES))
    output.write_bytes(cs.to_json())
    emit(json_out, {"output": str(output), "account": acct.address}, lambda: out.print(output))
