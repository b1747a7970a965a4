"""From a receipt bundle to an on-chain dispute: the co-signature sidecar and the checks before it.

`cosign_bundle` is what a device runs at receipt time (it holds the trace): it co-signs the
logged envelope and the receipt's `ReceiptClaim` for one referee, as a JSON sidecar
(`Cosignature`). `dispute_receipt` is the challenger's side: it re-executes the receipt, checks
everything the contract would refuse (so that a bad dispute costs no gas and fails with one
line), then plays the dispute through `edgetrust.chain.referee.play_dispute`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from eth_account.signers.local import LocalAccount
from web3 import Web3

from edgetrust.chain.referee import DisputeOutcome, ReceiptClaim, Referee
from edgetrust.chain.referee_play import ChallengerSide, DeviceSide, play_dispute
from edgetrust.chain.rpc import checksum_address
from edgetrust.encoding import canonical_json, parse_digest, parse_json
from edgetrust.errors import InvalidInputError, NotFoundError, UnsupportedError, VerificationError

if TYPE_CHECKING:
    from edgetrust.chain.anchor import LogAnchor
    from edgetrust.receipts import Bundle
    from edgetrust.runtime.fixed import Fault, FixedExecutor

__all__ = ["COSIGNATURE_TYPE", "Cosignature", "cosign_bundle", "dispute_receipt", "receipt_claim"]

COSIGNATURE_TYPE = "https://edgetrust.dev/chain-cosignature/v1"


@dataclass(frozen=True)
class Cosignature:
    """A device's EIP-712 co-signature of one logged receipt for one referee contract."""

    chain_id: int
    referee: str
    account: str
    envelope_sha256: bytes
    claim: ReceiptClaim
    signature: bytes

    def to_json(self) -> bytes:
        """Canonical JSON."""
        c = self.claim
        return canonical_json(
            {
                "type": COSIGNATURE_TYPE,
                "chainId": self.chain_id,
                "referee": self.referee,
                "account": self.account,
                "envelopeSha256": self.envelope_sha256.hex(),
                "claim": {
                    "traceRoot": c.trace_root.hex(),
                    "traceSize": c.trace_size,
                    "weightsRoot": c.weights_root.hex(),
                    "weightsSize": c.weights_size,
                    "opsRoot": c.ops_root.hex(),
                },
                "signature": self.signature.hex(),
            }
        )

    @staticmethod
    def parse(data: bytes) -> Cosignature:
        """Parse a co-signature file (untrusted), checking every field's form."""
        obj = parse_json(data, what="co-signature", max_bytes=8192)
        if not isinstance(obj, dict) or obj.get("type") != COSIGNATURE_TYPE:
            raise InvalidInputError(f"not a co-signature (type must be {COSIGNATURE_TYPE})")
        claim = obj.get("claim")
        if not isinstance(claim, dict):
            raise InvalidInputError("co-signature: claim must be an object")

        def h(v: Any, what: str, n: int = 32) -> bytes:
            try:
                raw = bytes.fromhex(v) if isinstance(v, str) else b""
            except ValueError:
                raw = b""
            if len(raw) != n:
                raise InvalidInputError(f"co-signature: {what} must be {2 * n} hex digits")
            return raw

        def i(v: Any, what: str) -> int:
            if not isinstance(v, int) or isinstance(v, bool) or not 0 < v < 2**63:
                raise InvalidInputError(f"co-signature: {what} must be a positive integer")
            return v

        if not isinstance(obj.get("referee"), str) or not isinstance(obj.get("account"), str):
            raise InvalidInputError("co-signature: referee and account must be addresses")
        return Cosignature(
            chain_id=i(obj.get("chainId"), "chainId"),
            referee=checksum_address(obj["referee"]),
            account=checksum_address(obj["account"]),
            envelope_sha256=h(obj.get("envelopeSha256"), "envelopeSha256"),
            claim=ReceiptClaim(
                h(claim.get("traceRoot"), "traceRoot"),
                i(claim.get("traceSize"), "traceSize"),
                h(claim.get("weightsRoot"), "weightsRoot"),
                i(claim.get("weightsSize"), "weightsSize"),
                h(claim.get("opsRoot"), "opsRoot"),
            ),
            signature=h(obj.get("signature"), "signature", 65),
        )


def receipt_claim(bundle: Bundle, model: bytes) -> tuple[FixedExecutor, ReceiptClaim]:
    """The receipt's fixed executor (its model and plan) and the claim its co-signature holds.

    Raises:
        UnsupportedError: not a fixed-point receipt in trace layout v2, or a batch item.
        InvalidInputError: `model` is not the receipt's model.
    """
    from edgetrust.encoding import digest_bytes
    from edgetrust.receipts import read_receipt
    from edgetrust.runtime.fixed import FixedExecutor
    from edgetrust.verify.dispute import _receipt_claim

    if bundle.item is not None:
        raise UnsupportedError("a batch item cannot be disputed on chain yet (log it alone)")
    receipt = read_receipt(bundle)
    plan, claim = _receipt_claim(receipt)
    if claim.layout.version != 2:
        raise UnsupportedError(
            f"the on-chain referee checks trace layout v2; this receipt is v{claim.layout.version}"
        )
    if digest_bytes(model) != receipt.model_digest:
        raise InvalidInputError("the model file is not the receipt's model (digests differ)")
    ex = FixedExecutor(model, precision=plan.precision, plan=plan, trace_layout=claim.layout)
    rc = ReceiptClaim.of(ex, claim.trace_root)
    if (rc.weights_root, rc.weights_size) != (claim.weights_root, claim.weights_size):
        raise VerificationError(
            "the receipt's weights root does not match the model and plan", step="weights"
        )
    return ex, rc


def cosign_bundle(
    referee: Referee, device: LocalAccount, bundle: Bundle, model: bytes
) -> Cosignature:
    """The device's co-signature of `bundle` (made at receipt time, by the device's EVM key)."""
    _, claim = receipt_claim(bundle, model)
    envelope = bundle.leaf_data()
    return Cosignature(
        referee.chain.chain_id,
        referee.address,
        device.address,
        hashlib.sha256(envelope).digest(),
        claim,
        referee.cosign(device, envelope, claim),
    )


def dispute_receipt(
    referee: Referee,
    anchor: LogAnchor,
    challenger: LocalAccount,
    bundle: Bundle,
    cosig: Cosignature,
    *,
    model: bytes,
    inputs: Mapping[str, Any],
    opening: Any,
    device: LocalAccount | None = None,
    device_side: DeviceSide | None = None,
    on_move: Callable[[str, int], None] | None = None,
    fault: Fault | None = None,
    log: Any = None,
) -> DisputeOutcome:
    """Re-execute `bundle` and dispute it on chain; the device plays `device_side` (None: silent).

    `fault` (demos and tests only) makes a mistaken challenger, whose re-execution is wrong.
    `log` (anything with ``inclusion_proof(index, size)``, e.g. the log's client) gives a fresh
    proof against the latest anchored size when the bundle's own checkpoint is not anchored.

    Raises:
        InvalidInputError / VerificationError / UnsupportedError / NotFoundError: the dispute
            would revert or has nothing to dispute (one-line reasons, no gas spent).
    """
    from edgetrust.receipts import read_receipt

    ex, claim = receipt_claim(bundle, model)
    envelope = bundle.leaf_data()
    if (cosig.chain_id, cosig.referee) != (referee.chain.chain_id, referee.address):
        raise InvalidInputError("the co-signature is for another referee contract or chain")
    if cosig.envelope_sha256 != hashlib.sha256(envelope).digest():
        raise InvalidInputError("the co-signature is for another receipt")
    if cosig.claim != claim:
        raise VerificationError(
            "the co-signed claim is not the receipt's (trace root, weights or op table differ)",
            step="co-signature",
        )
    receipt = read_receipt(bundle)
    reg = referee.registration(cosig.account)
    if reg.did != receipt.issuer:
        raise VerificationError(
            "the co-signing account is registered to another did:key than the receipt's issuer",
            step="registration",
        )
    proof = bundle.log
    if proof is None:
        raise NotFoundError("the receipt is not logged (its bundle has no log proof)")
    tree_size, path = proof.tree_size, list(proof.inclusion_proof)
    if anchor.root_at(proof.origin, tree_size) is None:
        latest, _ = anchor.latest(proof.origin)
        if log is None or latest <= proof.index:
            raise NotFoundError(
                f"no root anchored for {proof.origin} at size {tree_size} (nor a later one this "
                "receipt is under): anchor a checkpoint first ('edgetrust chain anchor')"
            )
        tree_size, path = latest, list(log.inclusion_proof(proof.index, latest))
    opening.verify(inputs)
    if opening.commitment != receipt.input_commitment:
        raise VerificationError("the opening is for another receipt", step="opening")
    _, mine = ex.run_traced(inputs, fault=fault)
    if mine.root == claim.trace_root:
        raise InvalidInputError("re-execution reproduces the receipt's trace: nothing to dispute")
    if device_side is not None and device is None:
        raise InvalidInputError("a device side needs the device's account to sign its moves")
    trace_root = parse_digest(receipt.trace_root) if receipt.trace_root else b""
    if trace_root != claim.trace_root:
        raise VerificationError("the receipt's trace root is not the claim's", step="claim")
    return play_dispute(
        referee,
        device=device or challenger,
        device_side=device_side,
        challenger=challenger,
        challenger_side=ChallengerSide(ex, mine),
        open_args={
            "device": Web3.to_checksum_address(cosig.account),
            "envelope": envelope,
            "log_id": anchor.log_id(proof.origin),
            "tree_size": tree_size,
            "index": proof.index,
            "proof": path,
            "cosignature": cosig.signature,
        },
        claim=claim,
        on_move=on_move,
    )
