"""Issue 5: ZK receipts (EZKL) on the digits MLP beside plain inference and raw EZKL calls.

One run, same machine, same settings and SRS for both sides:

* plain onnxruntime inference, a signed (onnxruntime) receipt, a fixed-point receipt;
* raw EZKL, the baseline: gen_settings + calibrate_settings, compile_circuit, setup,
  gen_witness + prove, verify — the calls edgetrust makes, with nothing around them;
* edgetrust: `zk_setup` (cold, then cached), `issue_zk_receipt` (onnxruntime reference,
  witness, top-1 check, prove, sign), `verify_zk_proof` and `verify_zk_receipt`.

Proofs take seconds, so raw and edgetrust proofs are interleaved and the best of three kept;
edgetrust's own time around EZKL's calls is also measured directly.
Peak memory is the kernel's high-water mark of this process's RSS (VmHWM), reset before each
phase through /proc/self/clear_refs: EZKL allocates in Rust, where tracemalloc sees nothing.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import ezkl
import numpy as np
import onnxruntime as ort

from bench._util import median_of, table
from edgetrust.identity import Identity
from edgetrust.models import ModelCard
from edgetrust.receipts import issue_receipt, read_receipt
from edgetrust.verify.zk import (
    UnsafeLocalSrs,
    card_with_zk,
    export_verifier_files,
    issue_zk_receipt,
    verify_zk_proof,
    verify_zk_receipt,
    zk_setup,
)
from edgetrust.verify.zk.setup import VISIBILITY
from edgetrust.zoo import digits_mlp_onnx, load_digits_split

T = TypeVar("T")

ANCHOR = {"setup": 5.0, "prove": 7.25, "verify": 0.027, "proof_kb": 27.8, "pk_mb": 138}


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _peak_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measured(fn: Callable[[], T]) -> tuple[T, float, float | None]:
    """(result, seconds, peak RSS MiB of this phase or None when it cannot be reset)."""
    ok = _reset_peak()
    start = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - start
    return result, seconds, (_peak_mib() if ok else None)


def _mib(peak: float | None) -> str:
    return "n/a" if peak is None else f"{peak:,.0f} MiB"


def _raw_setup(model: Path, calib: np.ndarray[Any, Any], srs: Path, d: Path) -> None:
    run_args = ezkl.PyRunArgs()
    run_args.input_visibility = VISIBILITY["input"]
    run_args.param_visibility = VISIBILITY["param"]
    run_args.output_visibility = VISIBILITY["output"]
    run_args.variables = [("batch", 1)]
    (d / "cal.json").write_text(json.dumps({"input_data": [calib.reshape(-1).tolist()]}))
    ezkl.gen_settings(str(model), str(d / "settings.json"), run_args)
    ezkl.calibrate_settings(
        str(d / "cal.json"), str(model), str(d / "settings.json"), "resources", 2.0, [7], [1], None
    )
    ezkl.compile_circuit(str(model), str(d / "model.compiled"), str(d / "settings.json"))
    ezkl.setup(
        str(d / "model.compiled"), str(d / "vk.key"), str(d / "pk.key"), str(srs), None, False
    )


def _raw_prove(x: np.ndarray[Any, Any], srs: Path, d: Path) -> dict[str, Any]:
    (d / "input.json").write_text(json.dumps({"input_data": [x.reshape(-1).tolist()]}))
    ezkl.gen_witness(str(d / "input.json"), str(d / "model.compiled"), str(d / "witness.json"))
    result: dict[str, Any] = ezkl.prove(
        str(d / "witness.json"), str(d / "model.compiled"), str(d / "pk.key"),
        str(d / "proof.json"), str(srs),
    )  # fmt: skip
    return result


def _raw_verify(srs: Path, d: Path) -> None:
    ok = ezkl.verify(
        str(d / "proof.json"), str(d / "settings.json"), str(d / "vk.key"), str(srs), False
    )
    assert ok is True


_VERIFIER_SCRIPT = """
import sys
from pathlib import Path
from edgetrust.verify.zk import load_verifier_key, parse_zk_proof, verify_zk_proof
import logging
logging.getLogger("edgetrust.verify.zk.proof").setLevel(logging.ERROR)
def hwm():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
key = load_verifier_key(Path(sys.argv[1]))
proof = parse_zk_proof(Path(sys.argv[2]).read_bytes())
base = hwm()
verify_zk_proof(proof, key=key, allow_unsafe_srs=True)
print(hwm(), base)
"""


def _verify_in_fresh_process(art: Any, proof: Any, work: Path) -> tuple[float, float]:
    """Peak RSS of a verifier on another machine: a fresh process with only the exported key.

    In this process the allocator keeps what proving used, which would count as the verifier's.
    """
    key_dir = work / "verifier"
    export_verifier_files(art, key_dir)
    (work / "proof.json").write_bytes(proof.to_json())
    out = subprocess.run(
        [sys.executable, "-c", _VERIFIER_SCRIPT, str(key_dir), str(work / "proof.json")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return float(out[0]), float(out[1])


def run() -> str:
    for name in ("ezkl", "tract_onnx", "tract_core", "tract_hir"):
        logging.getLogger(name).setLevel(logging.ERROR)
    # The benchmark accepts its own local SRS on purpose; one warning per call is noise here.
    logging.getLogger("edgetrust.verify.zk.proof").setLevel(logging.ERROR)
    model_bytes, _ = digits_mlp_onnx()
    _, x_test, _, _ = load_digits_split()
    calib, x = x_test[:32], x_test[40:41].astype(np.float32)
    issuer = Identity.generate()
    card = ModelCard.from_onnx_bytes(model_bytes)
    work = Path(tempfile.mkdtemp(prefix="bench-zk-"))
    try:
        model_path = work / "model.onnx"
        model_path.write_bytes(model_bytes)
        raw_dir, home = work / "raw", work / "home"
        raw_dir.mkdir()
        srs_dir = home / "zk" / "srs"
        srs_dir.mkdir(parents=True)

        # Plain inference and ordinary receipts.
        sess = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
        t_plain = median_of(lambda: sess.run(None, {"input": x}), repeat=201)

        def signed() -> None:
            out = {"probabilities": sess.run(None, {"input": x})[0]}
            issue_receipt(
                issuer=issuer, card=card, inputs={"input": x}, outputs=out,
                executor={"name": "onnxruntime"},
            )  # fmt: skip

        t_signed = median_of(signed, repeat=101)
        t_fixed: float | None = None
        try:
            from edgetrust.runtime.fixed import FixedRuntime

            fx = FixedRuntime(home=work / "fixed-home", keep_traces=False)

            def fixed() -> None:
                out = fx.run(card, model_bytes, {"input": x})
                issue_receipt(
                    issuer=issuer, card=card, inputs={"input": x}, outputs=out,
                    executor=fx.descriptor(),
                )  # fmt: skip

            fixed()
            t_fixed = median_of(fixed, repeat=51)
        except Exception:  # the fixed-point executor is another issue's; report n/a if absent
            t_fixed = None

        # The SRS, shared by both sides (an unsafe local one: nothing is downloaded).
        logrows = 15
        srs = srs_dir / f"kzg{logrows}-unsafe.srs"
        _, t_srs, _ = measured(lambda: ezkl.gen_srs(str(srs), logrows))

        # Setup: raw EZKL, then edgetrust cold, then edgetrust again (cached).
        _, t_raw_setup, m_raw_setup = measured(lambda: _raw_setup(model_path, calib, srs, raw_dir))
        art, t_et_setup, m_et_setup = measured(
            lambda: zk_setup(model_bytes, srs=UnsafeLocalSrs(), home=home, calibration=calib)
        )
        assert art.key.logrows == logrows, art.key.logrows
        calls: list[str] = []
        real_setup = ezkl.setup

        def counting_setup(*a: Any, **k: Any) -> Any:
            calls.append("setup")
            return real_setup(*a, **k)

        ezkl.setup = counting_setup
        try:
            art2, t_cached, _ = measured(
                lambda: zk_setup(model_bytes, srs=UnsafeLocalSrs(), home=home, calibration=calib)
            )
        finally:
            ezkl.setup = real_setup
        assert art2 == art
        zcard = card_with_zk(card, art)

        # Proving, interleaved: raw, edgetrust, raw, edgetrust, … Inside the edgetrust runs the
        # time spent in EZKL's own calls is summed, so that edgetrust's overhead around them is
        # measured directly, free of the run-to-run noise of proving itself (±10 % here).
        in_ezkl = [0.0]
        real = {name: getattr(ezkl, name) for name in ("gen_witness", "prove")}

        def timed(fn: Callable[..., Any]) -> Callable[..., Any]:
            def wrapper(*a: Any, **k: Any) -> Any:
                start = time.perf_counter()
                try:
                    return fn(*a, **k)
                finally:
                    in_ezkl[0] += time.perf_counter() - start

            return wrapper

        raw_times, et_times, raw_mem, et_mem, overheads = [], [], [], [], []
        zr = None
        for _ in range(3):
            _, t, m = measured(lambda: _raw_prove(x, srs, raw_dir))
            raw_times.append(t)
            raw_mem.append(m)
            in_ezkl[0] = 0.0
            for name, fn in real.items():
                setattr(ezkl, name, timed(fn))
            try:
                zr, t, m = measured(
                    lambda: issue_zk_receipt(
                        issuer=issuer, card=zcard, artifacts=art, inputs={"input": x}
                    )
                )
            finally:
                for name, fn in real.items():
                    setattr(ezkl, name, fn)
            et_times.append(t)
            et_mem.append(m)
            overheads.append(t - in_ezkl[0])
        assert zr is not None
        t_raw_prove, t_et_prove = min(raw_times), min(et_times)
        receipt = read_receipt(zr.bundle)

        # Verification.
        _raw_verify(srs, raw_dir)
        # Interleaved, best median of three rounds: machine noise hits all three alike.
        rv, pv, vv = [], [], []
        for _ in range(3):
            rv.append(median_of(lambda: _raw_verify(srs, raw_dir), repeat=7))
            pv.append(
                median_of(
                    lambda: verify_zk_proof(zr.proof, key=art, allow_unsafe_srs=True), repeat=7
                )
            )
            vv.append(
                median_of(
                    lambda: verify_zk_receipt(receipt, key=art, card=zcard, allow_unsafe_srs=True),
                    repeat=7,
                )
            )
        t_raw_verify, t_et_verify, t_et_vreceipt = min(rv), min(pv), min(vv)
        m_verify, m_verify_base = _verify_in_fresh_process(art, zr.proof, work)

        # Sizes.
        proof_raw = len(zr.proof.proof)
        proof_json = (raw_dir / "proof.json").stat().st_size
        bundle = len(zr.bundle.to_json())
        pk_mb = art.pk_path.stat().st_size / 1e6
        vk_kb = art.key.vk_path.stat().st_size / 1e3
        raw_pk_mb = (raw_dir / "pk.key").stat().st_size / 1e6
    finally:
        shutil.rmtree(work, ignore_errors=True)

    ratio = t_et_prove / t_raw_prove
    acc = art.accuracy
    ms = 1e3
    rows = [
        ["plain onnxruntime inference", f"{t_plain * ms:.3f} ms", "", "", "1× plain"],
        [
            "receipt (onnxruntime + signature)",
            f"{t_signed * ms:.3f} ms",
            "",
            "",
            f"{t_signed / t_plain:,.0f}× plain",
        ],
        [
            "receipt (fixed-point executor + signature)",
            "n/a" if t_fixed is None else f"{t_fixed * ms:.3f} ms",
            "",
            "",
            "" if t_fixed is None else f"{t_fixed / t_plain:,.0f}× plain",
        ],
        [f"SRS, logrows {logrows} (gen_srs, once per home)", f"{t_srs:.2f} s", "", "", ""],
        [
            "setup: raw EZKL (settings, calibrate, compile, keys)",
            f"{t_raw_setup:.2f} s",
            _mib(m_raw_setup),
            "1.00×",
            f"anchor {ANCHOR['setup']} s",
        ],
        [
            "setup: edgetrust zk_setup, cold (+ accuracy on 32 samples)",
            f"{t_et_setup:.2f} s",
            _mib(m_et_setup),
            f"{t_et_setup / t_raw_setup:.2f}×",
            "",
        ],
        [
            "setup: edgetrust zk_setup, cached (repeat proofs)",
            f"{t_cached * ms:.1f} ms",
            "",
            f"{len(calls)} EZKL setup calls",
            "target: no setup " + ("✓" if not calls else "✗ missed"),
        ],
        [
            "prove: raw EZKL (gen_witness + prove)",
            f"{t_raw_prove:.2f} s",
            _mib(min((m for m in raw_mem if m is not None), default=None)),
            "1.00×",
            f"anchor {ANCHOR['prove']} s",
        ],
        [
            "prove: edgetrust ZK receipt (reference, witness, top-1, prove, sign)",
            f"{t_et_prove:.2f} s",
            _mib(min((m for m in et_mem if m is not None), default=None)),
            f"{ratio:.3f}×",
            "target ≤ 1.10× "
            + ("✓" if ratio <= 1.1 else "✗ missed")
            + f"; {t_et_prove / t_plain:,.0f}× plain",
        ],
        [
            "prove: edgetrust's own work around EZKL's calls (best of 3)",
            f"{min(overheads) * ms:.1f} ms",
            "",
            f"{min(overheads) / t_raw_prove:.2%} of raw prove",
            "",
        ],
        [
            "verify: raw EZKL verify",
            f"{t_raw_verify * ms:.1f} ms",
            "",
            "1.00×",
            f"anchor {ANCHOR['verify'] * ms:.0f} ms",
        ],
        [
            "verify: edgetrust verify_zk_proof",
            f"{t_et_verify * ms:.1f} ms",
            f"{m_verify:,.0f} MiB ({m_verify - m_verify_base:+,.0f})",
            f"{t_et_verify / t_raw_verify:.2f}×",
            "target ≤ 50 ms " + ("✓" if t_et_verify <= 0.05 else "✗ missed"),
        ],
        [
            "verify: edgetrust verify_zk_receipt (+ binding, card)",
            f"{t_et_vreceipt * ms:.1f} ms",
            "",
            f"{t_et_vreceipt / t_raw_verify:.2f}×",
            "target ≤ 50 ms " + ("✓" if t_et_vreceipt <= 0.05 else "✗ missed"),
        ],
    ]
    est = art.estimate
    sizes = [
        ["proof (raw bytes)", f"{proof_raw / 1e3:.1f} KB", ""],
        ["proof as EZKL's proof.json", f"{proof_json / 1e3:.1f} KB", f"{ANCHOR['proof_kb']} KB"],
        ["ZK receipt bundle (envelope + base64 proof)", f"{bundle / 1e3:.1f} KB", ""],
        [
            "proving key (edgetrust / raw)",
            f"{pk_mb:.0f} / {raw_pk_mb:.0f} MB",
            f"{ANCHOR['pk_mb']} MB",
        ],
        ["verifying key", f"{vk_kb:.0f} KB", ""],
        [
            "estimate before setup: peak / proving key",
            f"{est.peak_bytes / 2**20:,.0f} / {est.proving_key_bytes / 2**20:,.0f} MiB",
            "",
        ],
    ]
    top1 = "n/a" if acc.top1_agreement is None else f"{acc.top1_agreement:.0%}"
    return "\n\n".join(
        [
            "## Zero-knowledge receipts (EZKL) — digits MLP",
            f"Circuit: 2^{logrows} rows, input hashed (Poseidon, private), parameters fixed, "
            f"output public; scale 2^-{art.key.input_scale}; unsafe local SRS (same file for "
            f"both sides). Accuracy vs onnxruntime on {acc.samples} test samples: max |Δ| "
            f"{acc.max_abs_error:.4f}, mean {acc.mean_abs_error:.4f}, top-1 agreement {top1}.",
            table(["step", "time", "peak RSS", "vs raw EZKL", "target / anchor"], rows),
            table(["size", "value", "anchor"], sizes),
            "The anchor figures were measured with other EZKL settings (the issue's); this "
            "run's raw EZKL column, same settings as edgetrust, is the baseline for ratios. "
            "Peak RSS is per phase (VmHWM reset through /proc/self/clear_refs); the verifier's is "
            "measured in a fresh process holding only the exported key (in brackets: the rise "
            "during verification, over the interpreter with edgetrust and ezkl imported).",
        ]
    )
