"""Write the golden cases of the fixed-point executor (run once; the output is committed).

`python tests/assets/runtime/golden/make_golden.py` writes, per case, the model file, the
calibrated plan and the input as files, and the trace roots to ../fixed_golden.json. Training the
digits MLP and calibrating are float work that may differ between BLAS kernels, so the golden test
never redoes them: it loads these files, and only the exact integer run is compared.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from tests.runtime import graphs
from tests.runtime.conftest import cnn_input

from edgetrust.runtime.fixed import FixedExecutor
from edgetrust.zoo import digits_mlp_onnx, load_digits_split

HERE = Path(__file__).resolve().parent


def main() -> None:
    digits_onnx, _ = digits_mlp_onnx()
    x_train, x_test, _, _ = load_digits_split()
    models = {
        "digits": (digits_onnx, {"input": x_train[:64]}, {"input": x_test[:16]}),
        "resnet": (
            graphs.resnet_style(size=32, width=8).SerializeToString(),
            cnn_input(1),
            cnn_input(2),
        ),
    }
    roots = {}
    for name, (model, calib, inputs) in models.items():
        (HERE / f"{name}.onnx").write_bytes(model)
        np.savez(HERE / f"{name}-input.npz", **inputs)
        for precision in ("int8", "int16"):
            ex = FixedExecutor(model, precision=precision, calibration=[calib])  # type: ignore[arg-type]
            (HERE / f"{name}-{precision}.plan.json").write_bytes(ex.plan.to_json())
            roots[f"{name}-{precision}"] = ex.run_traced(inputs)[1].root.hex()
    (HERE.parent / "fixed_golden.json").write_text(
        json.dumps(roots, indent=2, sort_keys=True) + "\n"
    )


if __name__ == "__main__":
    main()
