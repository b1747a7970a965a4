"""The golden cases of the fixed-point executor, from committed files only.

Each case is a committed model file, a committed plan and a committed input under
tests/assets/runtime/golden/ (written once by make_golden.py there). Nothing here trains or
calibrates: those are float steps whose results may differ with the BLAS kernel, and the golden
roots must pin only the exact integer run. `python -m tests.runtime.golden` prints the roots as
JSON, so a test can compute them under other BLAS and thread settings in a subprocess.

Each case has a root per trace layout: ``<case>`` in layout v1 (executor version 1, roots
unchanged since they were first written) and ``<case>@trace-v2`` in layout v2.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from edgetrust.runtime.fixed import FixedExecutor, QuantPlan
from edgetrust.runtime.trace import LAYOUT_V1, LAYOUT_V2

GOLDEN_DIR = Path(__file__).resolve().parents[1] / "assets" / "runtime" / "golden"
GOLDEN_ROOTS = GOLDEN_DIR.parent / "fixed_golden.json"


def compute_roots() -> dict[str, str]:
    """Trace roots of every golden case, keyed like fixed_golden.json."""
    roots = {}
    for plan_path in sorted(GOLDEN_DIR.glob("*.plan.json")):
        case = plan_path.name.removesuffix(".plan.json")
        model_name, _, precision = case.rpartition("-")
        model = (GOLDEN_DIR / f"{model_name}.onnx").read_bytes()
        with np.load(GOLDEN_DIR / f"{model_name}-input.npz") as data:
            inputs = {k: data[k] for k in data.files}
        plan = QuantPlan.from_json(plan_path.read_bytes())
        for suffix, layout in (("", LAYOUT_V1), ("@trace-v2", LAYOUT_V2)):
            ex = FixedExecutor(
                model,
                precision=precision,  # type: ignore[arg-type]
                plan=plan,
                trace_layout=layout,
            )
            roots[case + suffix] = ex.run_traced(inputs)[1].root.hex()
    return roots


if __name__ == "__main__":
    print(json.dumps(compute_roots(), sort_keys=True))
