"""Zero-knowledge receipts with EZKL: prove an inference without revealing the input.

`zk_setup` prepares a model once (settings, calibration, circuit, SRS, keys; cached under
``$EDGETRUST_HOME/zk/<model hex>/``, refused up front when it would exceed the memory budget);
`zk_prove` proves one inference; `verify_zk_proof` checks a proof step by step;
`issue_zk_receipt` / `verify_zk_receipt` carry proofs in signed receipts. Importing this
package registers the exact ``ezkl`` executor, which re-executes ZK receipts. See docs/zk.md.
"""

from __future__ import annotations

from edgetrust.verify.zk.executor import ZK_EXECUTOR, ZkWitnessExecutor, zk_witness_outputs
from edgetrust.verify.zk.proof import (
    PROOF_MEDIA_TYPE,
    STEP_KEY,
    STEP_PROOF,
    STEP_PUBLIC,
    STEP_RECEIPT,
    STEP_SRS,
    QuantizationMismatchError,
    ZkProof,
    parse_zk_proof,
    verify_zk_proof,
    zk_input_hash,
    zk_prove,
)
from edgetrust.verify.zk.receipt import (
    ZkReceipt,
    card_with_zk,
    find_zk_artifacts,
    find_zk_key,
    issue_zk_receipt,
    verify_zk_bundle,
    verify_zk_receipt,
    zk_claim,
)
from edgetrust.verify.zk.resources import (
    ResourceEstimate,
    ZkResourceLimitError,
    default_memory_budget,
    estimate_from_onnx,
    estimate_from_settings,
)
from edgetrust.verify.zk.setup import (
    VISIBILITY,
    ZkAccuracy,
    ZkArtifacts,
    ZkVerifierKey,
    export_verifier_files,
    load_verifier_key,
    load_zk_artifacts,
    zk_setup,
)
from edgetrust.verify.zk.srs import (
    PPOT_SRS_SHA256,
    PpotSrs,
    SrsChoice,
    SrsKind,
    UnsafeLocalSrs,
    check_ppot_srs,
)

__all__ = [
    "PPOT_SRS_SHA256",
    "PROOF_MEDIA_TYPE",
    "STEP_KEY",
    "STEP_PROOF",
    "STEP_PUBLIC",
    "STEP_RECEIPT",
    "STEP_SRS",
    "VISIBILITY",
    "ZK_EXECUTOR",
    "PpotSrs",
    "QuantizationMismatchError",
    "ResourceEstimate",
    "SrsChoice",
    "SrsKind",
    "UnsafeLocalSrs",
    "ZkAccuracy",
    "ZkArtifacts",
    "ZkProof",
    "ZkReceipt",
    "ZkResourceLimitError",
    "ZkVerifierKey",
    "ZkWitnessExecutor",
    "card_with_zk",
    "check_ppot_srs",
    "default_memory_budget",
    "estimate_from_onnx",
    "estimate_from_settings",
    "export_verifier_files",
    "find_zk_artifacts",
    "find_zk_key",
    "issue_zk_receipt",
    "load_verifier_key",
    "load_zk_artifacts",
    "parse_zk_proof",
    "verify_zk_bundle",
    "verify_zk_proof",
    "verify_zk_receipt",
    "zk_claim",
    "zk_input_hash",
    "zk_prove",
    "zk_setup",
    "zk_witness_outputs",
]
