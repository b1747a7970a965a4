from __future__ import annotations

import numpy as np
import pytest

from edgetrust.collab.training import (
    MLP,
    accuracy,
    dirichlet_partition,
    flatten,
    mlp_weights_from_onnx,
    train_centralized,
    train_local,
    unflatten,
)
from edgetrust.errors import InvalidInputError
from edgetrust.zoo import load_digits_split, mlp_to_onnx


def test_centralized_digits_mlp_learns() -> None:
    x_tr, x_te, y_tr, y_te = load_digits_split(seed=0)
    model = MLP((64, 32, 10))
    params = train_centralized(model, x_tr, y_tr, epochs=10)
    assert accuracy(model, params, x_te, y_te) > 0.9


def test_training_is_deterministic_per_seed() -> None:
    x_tr, _, y_tr, _ = load_digits_split(seed=0)
    model = MLP((64, 16, 10))
    a = train_local(model, model.init(1), x_tr[:200], y_tr[:200], epochs=2, seed=5)
    b = train_local(model, model.init(1), x_tr[:200], y_tr[:200], epochs=2, seed=5)
    assert all(np.array_equal(p, q) for p, q in zip(a, b, strict=True))


def test_gradient_matches_finite_differences() -> None:
    """One SGD step with a tiny lr moves the loss as the numerical gradient predicts."""
    rng = np.random.default_rng(0)
    model = MLP((5, 4, 3))
    params = model.init(0)
    x = rng.normal(size=(8, 5))
    y = rng.integers(0, 3, 8)

    def loss(ps: list[np.ndarray]) -> float:
        z = model.logits(ps, x)
        z = z - z.max(axis=1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        return float(-logp[np.arange(8), y].mean())

    lr = 1e-4
    stepped = train_local(model, params, x, y, epochs=1, lr=lr, batch_size=8)
    grad_analytic = (flatten(params) - flatten(stepped)) / lr
    eps = 1e-6
    flat = flatten(params)
    numeric = np.zeros_like(flat)
    for i in range(flat.size):
        up, down = flat.copy(), flat.copy()
        up[i] += eps
        down[i] -= eps
        numeric[i] = (loss(unflatten(up, params)) - loss(unflatten(down, params))) / (2 * eps)
    np.testing.assert_allclose(grad_analytic, numeric, rtol=1e-4, atol=1e-7)


def test_flatten_roundtrip_and_onnx_roundtrip() -> None:
    model = MLP((64, 32, 10))
    params = model.init(0)
    assert flatten(params).size == model.num_params == 2410
    back = unflatten(flatten(params), params)
    assert all(np.array_equal(p, q) for p, q in zip(params, back, strict=True))
    data = mlp_to_onnx(params[0::2], params[1::2]).SerializeToString()
    w, _ = mlp_weights_from_onnx(data)
    assert all(
        np.array_equal(p.astype(np.float32), q) for p, q in zip(params[0::2], w, strict=True)
    )
    with pytest.raises(InvalidInputError, match="needs 2410"):
        unflatten(np.zeros(5), params)
    with pytest.raises(InvalidInputError):
        mlp_weights_from_onnx(b"not onnx")


@pytest.mark.parametrize("alpha", [0.1, 0.5, 100.0])
def test_dirichlet_partition(alpha: float) -> None:
    _, _, y, _ = load_digits_split(seed=0)
    parts = dirichlet_partition(y, num_clients=20, alpha=alpha, seed=3)
    allidx = np.concatenate(parts)
    assert sorted(allidx.tolist()) == list(range(y.size))  # a partition: disjoint, complete
    assert min(len(p) for p in parts) >= 2
    classes = np.mean([len(np.unique(y[p])) for p in parts])
    if alpha == 0.1:
        assert classes < 6  # strongly non-IID
    if alpha == 100.0:
        assert classes > 9


def test_partition_validation() -> None:
    with pytest.raises(InvalidInputError, match="`alpha`"):
        dirichlet_partition(np.zeros(10), num_clients=2, alpha=0, seed=0)
    with pytest.raises(InvalidInputError, match="cannot give"):
        dirichlet_partition(np.zeros(10), num_clients=6, alpha=1, seed=0)
