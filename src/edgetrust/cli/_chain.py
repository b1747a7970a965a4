"""`edgetrust chain …`: EVM accounts, anchoring, equivocation and append-only challenges, ZK."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from edgetrust.cli._app import HomeOpt, JsonOpt, app, emit, out, set_json_mode
from edgetrust.errors import InvalidInputError, NotFoundError, UnsupportedError
from edgetrust.home import resolve_home
from edgetrust.identity import Keystore

if TYPE_CHECKING:
    from edgetrust.chain.anchor import LogAnchor
    from edgetrust.chain.rpc import Chain

# web3, eth-account and py-evm take over a second to import: every chain module is imported
# inside the command that needs it, so that other commands start fast.

_IN_PROCESS_NOTE = (
    "Without --rpc every command runs on a fresh in-process chain (eth-tester) that vanishes "
    "when the command ends: useful to see what a transaction does and costs, and for "
    "'edgetrust chain demo'. Give --rpc URL (e.g. anvil's http://127.0.0.1:8545) for state that "
    "persists."
)

chain_app = typer.Typer(
    name="chain",
    help=(
        "Settle on an EVM chain: anchor log checkpoints, punish an equivocating or forking log "
        "operator, referee disputes, verify ZK proofs.\n\n" + _IN_PROCESS_NOTE
    ),
    no_args_is_help=True,
)
account_app = typer.Typer(
    name="account",
    help=(
        "EVM accounts (secp256k1) in the keystore beside your Ed25519 identity. Against anvil, "
        "import one of its funded dev keys; the in-process chain funds accounts itself."
    ),
    no_args_is_help=True,
)
chain_app.add_typer(account_app, name="account")
app.add_typer(chain_app, name="chain")

RpcOpt = Annotated[
    str | None,
    typer.Option(
        "--rpc",
        envvar="EDGETRUST_RPC",
        help="JSON-RPC URL of the chain. Default: a fresh in-process chain (nothing persists).",
    ),
]
AccountOpt = Annotated[str, typer.Option("--account", help="EVM account name in the keystore.")]
PassFileOpt = Annotated[
    Path | None,
    typer.Option("--passphrase-file", help="File holding the account's passphrase."),
]
ContractOpt = Annotated[
    str | None,
    typer.Option("--contract", help="LogAnchor address (default: the one 'deploy' recorded)."),
]
OriginOpt = Annotated[str, typer.Option("--origin", help="The log's checkpoint origin.")]

_DEV_FUNDS = 1000 * 10**18


def _passphrase(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        text = path.read_text().rstrip("\r\n")
    except OSError as exc:
        raise InvalidInputError(f"cannot read passphrase file {path}: {exc.strerror}") from exc
    if not text:
        raise InvalidInputError(f"passphrase file {path} is empty")
    return text


def _deployments(home: str | None) -> Path:
    return resolve_home(home) / "chain.json"


def _record(home: str | None, chain: Chain, name: str, address: str) -> None:
    path = _deployments(home)
    try:
        data: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    except (OSError, ValueError):
        data = {}
    data.setdefault(str(chain.chain_id), {})[name] = address
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def _recorded(home: str | None, chain: Chain, name: str) -> str | None:
    path = _deployments(home)
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
        value = data[str(chain.chain_id)][name]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return str(value) if isinstance(value, str) else None


def _session(rpc: str | None, home: str | None, account: str, passfile: Path | None) -> Any:
    from edgetrust.chain.accounts import EvmKeystore
    from edgetrust.chain.rpc import connect

    chain = connect(rpc)
    acct = (
        EvmKeystore(home).load_or_create(account)
        if passfile is None
        else (EvmKeystore(home).load(account, passphrase=_passphrase(passfile)))
    )
    if chain.in_process:
        chain.fund(acct.address, _DEV_FUNDS)
    return chain, acct


def _anchor_contract(chain: Chain, acct: Any, home: str | None, contract: str | None) -> LogAnchor:
    from edgetrust.chain.anchor import LogAnchor

    if contract:
        return LogAnchor(chain, contract)
    recorded = _recorded(home, chain, "LogAnchor")
    if recorded:
        return LogAnchor(chain, recorded)
    if chain.in_process:
        anchor, _ = LogAnchor.deploy(chain, acct)
        return anchor
    raise NotFoundError(
        "no LogAnchor known for this chain: run 'edgetrust chain deploy' or give --contract"
    )


def _need_rpc(rpc: str | None, what: str) -> None:
    if rpc is None:
        raise UnsupportedError(
            f"{what} needs state on a persistent chain: give --rpc URL "
            "(or run 'edgetrust chain demo' for the whole story on the in-process chain)"
        )


def _hex32(text: str, what: str) -> bytes:
    t = text.strip().removeprefix("0x")
    try:
        raw = bytes.fromhex(t)
    except ValueError as exc:
        raise InvalidInputError(f"{what} is not hex") from exc
    if len(raw) != 32:
        raise InvalidInputError(f"{what} must be 32 bytes (64 hex digits)")
    return raw


# -- accounts --------------------------------------------------------------------------------


@account_app.command("new")
def account_new(
    name: Annotated[str, typer.Option("--name", help="Account name.")] = "default",
    passphrase_file: PassFileOpt = None,
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Create a new EVM account (encrypted as a V3 keystore if a passphrase file is given)."""
    from edgetrust.chain.accounts import EvmKeystore

    set_json_mode(json_out)
    acct = EvmKeystore(home).create(name, passphrase=_passphrase(passphrase_file))
    emit(
        json_out,
        {"name": name, "address": acct.address},
        lambda: out.print(f"created EVM account [bold]{name}[/]: {acct.address}"),
    )


@account_app.command("import")
def account_import(
    name: Annotated[str, typer.Option("--name", help="Account name.")] = "default",
    key_file: Annotated[
        str,
        typer.Option("--key-file", help="File with the hex private key, or '-' for stdin."),
    ] = "-",
    passphrase_file: PassFileOpt = None,
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Import a hex private key from a file or stdin (never from the command line)."""
    from edgetrust.chain.accounts import EvmKeystore, parse_private_key

    set_json_mode(json_out)
    if key_file == "-":
        text = sys.stdin.read(200)
    else:
        try:
            text = Path(key_file).read_text()[:200]
        except OSError as exc:
            raise InvalidInputError(f"cannot read key file {key_file}: {exc.strerror}") from exc
    key = parse_private_key(text)
    acct = EvmKeystore(home).import_key(name, key, passphrase=_passphrase(passphrase_file))
    emit(
        json_out,
        {"name": name, "address": acct.address},
        lambda: out.print(f"imported EVM account [bold]{name}[/]: {acct.address}"),
    )


@account_app.command("show")
def account_show(
    name: Annotated[str, typer.Option("--name", help="Account name.")] = "default",
    rpc: RpcOpt = None,
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Show an account's address (and its balance on --rpc)."""
    from edgetrust.chain.accounts import EvmKeystore
    from edgetrust.chain.rpc import connect

    set_json_mode(json_out)
    address = EvmKeystore(home).address(name)
    data: dict[str, Any] = {"name": name, "address": address}
    if rpc is not None:
        data["balance_wei"] = connect(rpc).balance(address)

    def human() -> None:
        out.print(f"{name}: {address}")
        if "balance_wei" in data:
            out.print(f"balance: {data['balance_wei'] / 1e18:.6f} ETH")

    emit(json_out, data, human)


# -- contracts -------------------------------------------------------------------------------


@chain_app.command("deploy")
def deploy(
    rpc: RpcOpt = None,
    account: AccountOpt = "default",
    passphrase_file: PassFileOpt = None,
    min_bond: Annotated[int, typer.Option(help="Operator bond (wei).")] = 10**18,
    challenge_bond: Annotated[int, typer.Option(help="Challenger bond (wei).")] = 10**17,
    window: Annotated[int, typer.Option(help="Seconds to answer a challenge.")] = 86400,
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Deploy LogAnchor and DisputeGame from the committed build; remember their addresses."""
    from edgetrust.chain.anchor import AnchorParams, LogAnchor

    set_json_mode(json_out)
    from edgetrust.chain.dispute import DisputeGame, DisputeParams

    chain, acct = _session(rpc, home, account, passphrase_file)
    anchor, tx1 = LogAnchor.deploy(chain, acct, AnchorParams(min_bond, challenge_bond, window))
    game, tx2 = DisputeGame.deploy(chain, acct, DisputeParams(min_bond, challenge_bond, window))
    if not chain.in_process:
        _record(home, chain, "LogAnchor", anchor.address)
        _record(home, chain, "DisputeGame", game.address)
    data = {
        "chain_id": chain.chain_id,
        "in_process": chain.in_process,
        "LogAnchor": anchor.address,
        "DisputeGame": game.address,
        "gas": {"LogAnchor": tx1.gas_used, "DisputeGame": tx2.gas_used},
    }

    def human() -> None:
        out.print(f"LogAnchor   {anchor.address}  ({tx1.gas_used:,} gas)")
        out.print(f"DisputeGame {game.address}  ({tx2.gas_used:,} gas)")
        if chain.in_process:
            out.print("[dim](in-process chain: gone when this command ends)[/]")

    emit(json_out, data, human)


@chain_app.command("anchor")
def anchor_cmd(
    size: Annotated[
        int | None, typer.Option("--size", help="Tree size (default: your log's latest).")
    ] = None,
    root: Annotated[
        str | None, typer.Option("--root", help="Root hash, hex (with --size and --origin).")
    ] = None,
    origin: Annotated[
        str | None, typer.Option("--origin", help="Log origin (default: your log's).")
    ] = None,
    bond: Annotated[int, typer.Option(help="Bond (wei) if the log must be registered.")] = 10**18,
    rpc: RpcOpt = None,
    account: AccountOpt = "default",
    passphrase_file: PassFileOpt = None,
    contract: ContractOpt = None,
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Anchor your log's latest signed checkpoint (or --origin/--size/--root) on chain.

    The first anchor registers the log: its Ed25519 key (the home's 'log' key) signs a binding
    to your EVM account, and --bond is posted.
    """
    from edgetrust.chain.anchor import note_verifier_key

    set_json_mode(json_out)
    from edgetrust.log.checkpoint import verify_checkpoint
    from edgetrust.log.service import LOG_KEY_NAME, Log

    given = (size is not None, root is not None, origin is not None)
    if any(given) and not all(given):
        raise InvalidInputError("give --origin, --size and --root together, or none of them")
    ident = Keystore(home).load_or_create(LOG_KEY_NAME)
    if root is not None and size is not None and origin is not None:
        root_bytes = _hex32(root, "--root")
    else:
        with Log.open(home) as log:
            checkpoint = verify_checkpoint(log.checkpoint(), log.verifier_key)
        origin, size, root_bytes = checkpoint.origin, checkpoint.size, checkpoint.root
    chain, acct = _session(rpc, home, account, passphrase_file)
    la = _anchor_contract(chain, acct, home, contract)
    registered = la.operator(origin) is not None or la.is_slashed(origin)
    reg_gas = None
    if not registered:
        reg_gas = la.register_log(
            acct,
            origin=origin,
            note_key=note_verifier_key(origin, ident),
            log_identity=ident,
            bond=bond,
        ).gas_used
    tx = la.anchor(acct, origin=origin, size=size, root=root_bytes)
    data = {
        "contract": la.address,
        "origin": origin,
        "size": size,
        "root": root_bytes.hex(),
        "tx": tx.tx_hash,
        "gas": tx.gas_used,
        "registered_now": reg_gas is not None,
        "in_process": chain.in_process,
    }

    def human() -> None:
        if reg_gas is not None:
            out.print(f"registered log {origin} ({reg_gas:,} gas)")
        out.print(
            f"anchored {origin} size {size} root {root_bytes.hex()[:16]}… ({tx.gas_used:,} gas)"
        )
        if chain.in_process:
            out.print("[dim](in-process chain: gone when this command ends)[/]")

    emit(json_out, data, human)


@chain_app.command("watch")
def watch(
    origin: Annotated[
        str | None, typer.Option("--origin", help="Log origin (default: your log's).")
    ] = None,
    checkpoint: Annotated[
        Path | None,
        typer.Option("--checkpoint", help="A checkpoint note the log served, to check."),
    ] = None,
    log_url: Annotated[
        str | None, typer.Option("--log", help="Read a remote log's tiles at this URL.")
    ] = None,
    rpc: RpcOpt = None,
    contract: ContractOpt = None,
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Compare what a log serves with what is anchored: alarm (exit 1) on any conflict.

    Reads a checkpoint note (--checkpoint), a remote log (--log URL), or your own log. Alarms:
    a different root anchored for the served size, a served tree that forks from the latest
    anchored one (checked with the log's consistency proof), two roots anchored for one size,
    a slashed log. The note must be signed by the key the log registered on chain.
    """
    from edgetrust.chain.anchor import LogAnchor
    from edgetrust.chain.rpc import connect

    set_json_mode(json_out)
    from edgetrust.chain.watch import check_served_checkpoint, client_source, watch_log
    from edgetrust.log.checkpoint import parse_note
    from edgetrust.log.service import Log

    _need_rpc(rpc, "watch")
    if checkpoint is not None and log_url is not None:
        raise InvalidInputError("give --checkpoint or --log, not both")
    chain = connect(rpc)
    la = LogAnchor(chain, contract or _recorded(home, chain, "LogAnchor") or _no_contract())
    if checkpoint is not None:
        try:
            note = checkpoint.read_bytes()[: 64 * 1024]
        except OSError as exc:
            raise InvalidInputError(f"cannot read {checkpoint}: {exc.strerror}") from exc
        from edgetrust.log.checkpoint import parse_checkpoint_body

        body = parse_checkpoint_body(parse_note(note).text)
        if origin is not None and body.origin != origin:
            raise InvalidInputError(f"checkpoint is for {body.origin!r}, not {origin!r}")
        report = check_served_checkpoint(
            la, origin=body.origin, size=body.size, root=body.root, note=note
        )
    elif log_url is not None:
        from edgetrust.log.client import LogClient

        if origin is None:
            raise InvalidInputError("--log needs --origin (to find the log's registered key)")
        vkey = la.registration(origin).note_key
        with LogClient(log_url, vkey) as client:
            report = watch_log(la, origin, client_source(client))
    else:
        with Log.open(home) as log:
            report = watch_log(la, origin or log.origin, log)
    emit(json_out, report.as_dict(), lambda: out.print(report.summary()))
    report.raise_for_alarms()


def _no_contract() -> str:
    raise NotFoundError("no LogAnchor known for this chain: give --contract")


@chain_app.command("report-equivocation")
def report_equivocation(
    origin: OriginOpt,
    rpc: RpcOpt = None,
    account: AccountOpt = "default",
    passphrase_file: PassFileOpt = None,
    contract: ContractOpt = None,
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Find two roots the operator anchored for one size and claim its bond."""
    set_json_mode(json_out)
    _need_rpc(rpc, "report-equivocation")
    chain, acct = _session(rpc, home, account, passphrase_file)
    la = _anchor_contract(chain, acct, home, contract)
    found = la.equivocations(origin)
    if not found:
        raise NotFoundError(f"no equivocation recorded for {origin}")
    size, root_a, root_b = found[0]
    tx = la.report_equivocation(acct, origin=origin, size=size, root_a=root_a, root_b=root_b)
    emit(
        json_out,
        {"origin": origin, "size": size, "tx": tx.tx_hash, "gas": tx.gas_used},
        lambda: out.print(f"reported equivocation at size {size}: operator slashed ({tx.tx_hash})"),
    )


@chain_app.command("challenge")
def challenge(
    origin: OriginOpt,
    size1: Annotated[int, typer.Option("--size1", help="The smaller anchored size.")],
    size2: Annotated[int, typer.Option("--size2", help="The larger anchored size.")],
    rpc: RpcOpt = None,
    account: AccountOpt = "default",
    passphrase_file: PassFileOpt = None,
    contract: ContractOpt = None,
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Challenge a log to prove (on chain) that anchored size2 extends anchored size1."""
    set_json_mode(json_out)
    _need_rpc(rpc, "challenge")
    chain, acct = _session(rpc, home, account, passphrase_file)
    la = _anchor_contract(chain, acct, home, contract)
    cid, tx = la.challenge(acct, origin=origin, size1=size1, size2=size2)
    state = la.challenge_state(cid)
    emit(
        json_out,
        {"challenge_id": cid, "deadline": state.deadline, "tx": tx.tx_hash, "gas": tx.gas_used},
        lambda: out.print(
            f"challenge {cid} opened: the operator must answer before unix time {state.deadline}"
        ),
    )


@chain_app.command("claim-timeout")
def claim_timeout(
    challenge_id: Annotated[int, typer.Option("--challenge-id", help="The challenge.")],
    rpc: RpcOpt = None,
    account: AccountOpt = "default",
    passphrase_file: PassFileOpt = None,
    contract: ContractOpt = None,
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Slash the operator of an append-only challenge left unanswered past its deadline."""
    set_json_mode(json_out)
    _need_rpc(rpc, "claim-timeout")
    chain, acct = _session(rpc, home, account, passphrase_file)
    la = _anchor_contract(chain, acct, home, contract)
    tx = la.claim_timeout(acct, challenge_id=challenge_id)
    emit(
        json_out,
        {"challenge_id": challenge_id, "tx": tx.tx_hash, "gas": tx.gas_used},
        lambda: out.print(f"challenge {challenge_id}: operator slashed ({tx.tx_hash})"),
    )


@chain_app.command("verify-zk")
def verify_zk(
    calldata: Annotated[
        Path | None,
        typer.Option(
            "--calldata",
            help="EVM calldata of an EZKL proof (encode_evm_calldata). Default: the demo proof.",
        ),
    ] = None,
    rpc: RpcOpt = None,
    account: AccountOpt = "default",
    passphrase_file: PassFileOpt = None,
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Deploy EZKL's verifier for the demo model and verify a proof on chain (exit 1 if not)."""
    set_json_mode(json_out)
    from edgetrust.chain.zkverifier import MAX_CALLDATA, ZkVerifier, demo_calldata

    if calldata is None:
        data = demo_calldata()
    else:
        try:
            with calldata.open("rb") as fh:
                data = fh.read(MAX_CALLDATA + 1)  # the check below refuses anything larger
        except OSError as exc:
            raise InvalidInputError(f"cannot read {calldata}: {exc.strerror}") from exc
    chain, acct = _session(rpc, home, account, passphrase_file)
    verifier, deploy_tx = ZkVerifier.deploy(chain, acct)
    tx = verifier.verify_tx(acct, data)
    emit(
        json_out,
        {
            "verifier": verifier.address,
            "verified": True,
            "gas": tx.gas_used,
            "deploy_gas": deploy_tx.gas_used,
        },
        lambda: out.print(f"proof verified on chain by {verifier.address} ({tx.gas_used:,} gas)"),
    )


@chain_app.command("demo")
def demo(
    rpc: RpcOpt = None,
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """The whole story on a chain: anchor a log, catch an equivocating operator, convict a lying
    device with the on-chain referee, mirror the verdict into your log. Runs on the in-process
    chain unless --rpc is given."""
    from edgetrust.chain.rpc import connect

    set_json_mode(json_out)
    from edgetrust.chain.story import run_story
    from edgetrust.log.service import Log

    with Log.open(home) as log:
        result = run_story(connect(rpc), log=log)
    emit(json_out, result.as_dict(), lambda: out.print(result.table()))
