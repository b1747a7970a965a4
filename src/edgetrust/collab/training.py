"""Local training for federated learning: the digits MLP in numpy, and non-IID partitions.

The model is the demo's dense ReLU network (64 → hidden → 10, softmax), written here with a
numpy forward and backward pass rather than scikit-learn's `MLPClassifier`, because a client
must start from the *global* weights each round and return exactly its update; the whole
computation is deterministic given a seed. Parameters are a list ``[W0, b0, W1, b1, ...]``
with ``W_i`` of shape (in, out), the layout `edgetrust.zoo.mlp_to_onnx` exports.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from edgetrust.errors import InvalidInputError

__all__ = [
    "MLP",
    "accuracy",
    "dirichlet_partition",
    "flatten",
    "mlp_weights_from_onnx",
    "train_centralized",
    "train_local",
    "train_local_dp",
    "unflatten",
]

F64 = npt.NDArray[np.float64]
Params = list[F64]

SCHEDULES = ("constant", "cosine")


@dataclass(frozen=True)
class MLP:
    """Layer sizes of a dense ReLU network, e.g. ``MLP((64, 32, 10))``."""

    sizes: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.sizes) < 2 or any(s < 1 for s in self.sizes):
            raise InvalidInputError("`sizes` needs at least an input and an output layer")

    @property
    def num_params(self) -> int:
        """Total number of weights and biases."""
        return sum(a * b + b for a, b in zip(self.sizes[:-1], self.sizes[1:], strict=True))

    def init(self, seed: int) -> Params:
        """He-initialised weights and zero biases, deterministic per seed."""
        rng = np.random.default_rng(seed)
        params: Params = []
        for a, b in zip(self.sizes[:-1], self.sizes[1:], strict=True):
            params.append(rng.normal(0.0, np.sqrt(2.0 / a), size=(a, b)))
            params.append(np.zeros(b))
        return params

    def logits(self, params: Sequence[F64], x: npt.ArrayLike) -> F64:
        """Forward pass to the output layer's pre-softmax values."""
        h = np.asarray(x, dtype=np.float64)
        for i in range(0, len(params), 2):
            h = h @ params[i] + params[i + 1]
            if i + 2 < len(params):
                h = np.maximum(h, 0.0)
        return h


def flatten(params: Sequence[npt.ArrayLike]) -> F64:
    """Concatenate parameters into one vector (the order of `params`, C order)."""
    return np.concatenate([np.asarray(p, dtype=np.float64).ravel() for p in params])


def unflatten(vector: npt.ArrayLike, like: Sequence[F64]) -> Params:
    """Split a flat vector back into arrays shaped like `like`."""
    v = np.asarray(vector, dtype=np.float64)
    total = sum(p.size for p in like)
    if v.ndim != 1 or v.size != total:
        raise InvalidInputError(f"parameter vector has {v.size} values, the model needs {total}")
    out, pos = [], 0
    for p in like:
        out.append(v[pos : pos + p.size].reshape(p.shape).copy())
        pos += p.size
    return out


def accuracy(model: MLP, params: Sequence[F64], x: npt.ArrayLike, y: npt.ArrayLike) -> float:
    """Fraction of examples whose arg-max class is the label."""
    pred = np.argmax(model.logits(params, x), axis=1)
    return float(np.mean(pred == np.asarray(y)))


def _sgd_epoch(
    model: MLP,
    params: Params,
    x: F64,
    y: npt.NDArray[np.int64],
    *,
    lr: float,
    batch_size: int,
    rng: np.random.Generator,
    anchor: Sequence[F64] | None = None,
    prox_mu: float = 0.0,
    lr_at: Callable[[], float] | None = None,
) -> None:
    n = x.shape[0]
    order = rng.permutation(n)
    classes = model.sizes[-1]
    for start in range(0, n, batch_size):
        idx = order[start : start + batch_size]
        xb, yb = x[idx], y[idx]
        # forward, keeping activations
        acts = [xb]
        for i in range(0, len(params), 2):
            z = acts[-1] @ params[i] + params[i + 1]
            acts.append(np.maximum(z, 0.0) if i + 2 < len(params) else z)
        z = acts[-1] - acts[-1].max(axis=1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(axis=1, keepdims=True)
        # backward: softmax cross-entropy gradient, then through each ReLU layer
        grad = (p - np.eye(classes)[yb]) / len(idx)
        step = lr if lr_at is None else lr_at()
        for i in range(len(params) - 2, -1, -2):
            gw = acts[i // 2].T @ grad
            gb = grad.sum(axis=0)
            if i > 0:
                grad = (grad @ params[i].T) * (acts[i // 2] > 0)
            if anchor is not None and prox_mu > 0:
                # FedProx (Li et al. 2020): the proximal term μ/2·‖w - w_global‖² keeps a
                # client with skewed data from drifting far from the global model.
                gw = gw + prox_mu * (params[i] - anchor[i])
                gb = gb + prox_mu * (params[i + 1] - anchor[i + 1])
            params[i] -= step * gw
            params[i + 1] -= step * gb


def train_local(
    model: MLP,
    params: Sequence[F64],
    x: npt.ArrayLike,
    y: npt.ArrayLike,
    *,
    epochs: int = 1,
    lr: float = 0.1,
    batch_size: int = 16,
    seed: int = 0,
    prox_mu: float = 0.0,
    schedule: str = "constant",
) -> Params:
    """Minibatch SGD on softmax cross-entropy from `params`; returns the new parameters.

    `prox_mu` > 0 adds FedProx's proximal term towards `params`; `schedule` "cosine" decays
    the learning rate from `lr` towards 0 over the local steps (cosine annealing without
    restarts, Loshchilov & Hutter 2017), "constant" keeps it.
    """
    if epochs < 0 or batch_size < 1 or not lr > 0:
        raise InvalidInputError("`epochs` ≥ 0, `batch_size` ≥ 1 and `lr` > 0 are required")
    if not prox_mu >= 0 or schedule not in SCHEDULES:
        raise InvalidInputError(f"`prox_mu` ≥ 0 and `schedule` in {SCHEDULES} are required")
    xs = np.asarray(x, dtype=np.float64)
    ys = np.asarray(y, dtype=np.int64)
    out = [p.copy() for p in params]
    if xs.shape[0] == 0:
        return out
    anchor = [np.asarray(p, dtype=np.float64) for p in params] if prox_mu > 0 else None
    total = epochs * -(-xs.shape[0] // batch_size)
    done = [0]

    def lr_at() -> float:
        t = done[0]
        done[0] += 1
        return lr * 0.5 * (1.0 + math.cos(math.pi * t / total))

    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        _sgd_epoch(
            model,
            out,
            xs,
            ys,
            lr=lr,
            batch_size=batch_size,
            rng=rng,
            anchor=anchor,
            prox_mu=prox_mu,
            lr_at=lr_at if schedule == "cosine" else None,
        )
    return out


def _forward(model: MLP, params: Sequence[F64], xb: F64) -> tuple[list[F64], F64]:
    """Activations of every layer and the softmax probabilities."""
    acts = [xb]
    for i in range(0, len(params), 2):
        z = acts[-1] @ params[i] + params[i + 1]
        acts.append(np.maximum(z, 0.0) if i + 2 < len(params) else z)
    z = acts[-1] - acts[-1].max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    return acts, p


def _clipped_gradient_sum(
    model: MLP, params: Sequence[F64], xb: F64, yb: npt.NDArray[np.int64], clip: float
) -> Params:
    """Σ over the batch of each example's gradient, each scaled to L2 norm at most `clip`.

    A dense layer's per-example gradient is the outer product ``a_i g_iᵀ`` of its input and
    its output gradient, so its squared norm is ``‖a_i‖²·‖g_i‖²`` (bias: ``‖g_i‖²``) and the
    per-example norms come without materialising per-example gradients (Goodfellow 2015).
    """
    acts, p = _forward(model, params, xb)
    grads = [p - np.eye(model.sizes[-1])[yb]]  # output gradients, last layer first
    for i in range(len(params) - 2, 0, -2):
        grads.append((grads[-1] @ params[i].T) * (acts[i // 2] > 0))
    grads.reverse()
    sq = np.zeros(xb.shape[0])
    for layer, g in enumerate(grads):
        gg = np.einsum("ij,ij->i", g, g)
        sq += gg * (np.einsum("ij,ij->i", acts[layer], acts[layer]) + 1.0)
    scale = np.minimum(1.0, clip / np.maximum(np.sqrt(sq), 1e-12))
    out: Params = []
    for layer, g in enumerate(grads):
        gs = g * scale[:, None]
        out += [acts[layer].T @ gs, gs.sum(axis=0)]
    return out


def train_local_dp(
    model: MLP,
    params: Sequence[F64],
    x: npt.ArrayLike,
    y: npt.ArrayLike,
    *,
    steps: int,
    sampling_rate: float,
    clip: float,
    noise_multiplier: float,
    expected_batch: float,
    lr: float = 0.1,
    rng: np.random.Generator,
    prox_mu: float = 0.0,
    schedule: str = "constant",
) -> Params:
    """DP-SGD (Abadi et al. 2016) on this client's data: the sample-level DP mechanism.

    Each of `steps` steps draws a Poisson sample (every example independently with
    probability `sampling_rate`), clips each example's gradient to L2 norm `clip`, adds
    Gaussian noise of standard deviation ``noise_multiplier·clip`` to their sum and divides
    by `expected_batch` (a constant, so the division is post-processing). One example's
    presence then changes each step by a subsampled Gaussian mechanism, which is exactly
    what `collab.dp` accounts for. `rng` drives sampling and noise; it must be secret from
    the coordinator (a device passes fresh OS entropy). FedProx's term depends on no data
    and is added after the noise.
    """
    if steps < 0 or not 0 < sampling_rate <= 1 or not clip > 0 or not lr > 0:
        raise InvalidInputError(
            "`steps` ≥ 0, `sampling_rate` in (0, 1], `clip` > 0 and `lr` > 0 are required"
        )
    if not noise_multiplier >= 0 or not expected_batch > 0 or schedule not in SCHEDULES:
        raise InvalidInputError(
            f"`noise_multiplier` ≥ 0, `expected_batch` > 0, `schedule` in {SCHEDULES} required"
        )
    xs = np.asarray(x, dtype=np.float64)
    ys = np.asarray(y, dtype=np.int64)
    out = [np.asarray(p, dtype=np.float64).copy() for p in params]
    anchor = [p.copy() for p in out] if prox_mu > 0 else None
    std = noise_multiplier * clip
    for t in range(steps):
        step = lr if schedule == "constant" else lr * 0.5 * (1.0 + math.cos(math.pi * t / steps))
        mask = rng.random(xs.shape[0]) < sampling_rate
        grads = _clipped_gradient_sum(model, out, xs[mask], ys[mask], clip)
        for i, g in enumerate(grads):
            noisy = (g + rng.normal(0.0, std, size=g.shape)) / expected_batch
            if anchor is not None:
                noisy = noisy + prox_mu * (out[i] - anchor[i])
            out[i] -= step * noisy
    return out


def train_centralized(
    model: MLP,
    x: npt.ArrayLike,
    y: npt.ArrayLike,
    *,
    epochs: int,
    lr: float = 0.1,
    batch_size: int = 16,
    seed: int = 0,
) -> Params:
    """The baseline: the same model and optimiser on all the data in one place."""
    return train_local(
        model, model.init(seed), x, y, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed
    )


def dirichlet_partition(
    labels: npt.ArrayLike, *, num_clients: int, alpha: float, seed: int, min_size: int = 2
) -> list[npt.NDArray[np.int64]]:
    """Split example indices among clients, non-IID: class shares drawn from Dir(α).

    Small α gives each client few classes; large α approaches an IID split (Hsu et al. 2019).
    Redraws until every client has at least `min_size` examples.
    """
    y = np.asarray(labels)
    if num_clients < 1:
        raise InvalidInputError("`num_clients` must be at least 1")
    if not alpha > 0:
        raise InvalidInputError("`alpha` must be positive")
    if num_clients * min_size > y.size:
        raise InvalidInputError(
            f"{y.size} examples cannot give {num_clients} clients {min_size} each"
        )
    rng = np.random.default_rng(seed)
    for _ in range(1000):
        parts: list[list[int]] = [[] for _ in range(num_clients)]
        for c in np.unique(y):
            idx = rng.permutation(np.flatnonzero(y == c))
            shares = rng.dirichlet(np.full(num_clients, alpha))
            cuts = (np.cumsum(shares)[:-1] * idx.size).astype(int)
            for k, chunk in enumerate(np.split(idx, cuts)):
                parts[k].extend(chunk.tolist())
        if min(len(p) for p in parts) >= min_size:
            return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]
    raise InvalidInputError(
        f"could not give every client {min_size} examples with alpha={alpha}; raise `alpha`"
    )


def mlp_weights_from_onnx(
    data: bytes,
) -> tuple[list[npt.NDArray[np.float32]], list[npt.NDArray[np.float32]]]:
    """Read back ``(weights, biases)`` from an MLP exported by `zoo.mlp_to_onnx`.

    Raises:
        InvalidInputError: not an ONNX model, or not one with W0, B0, W1, B1, … initializers.
    """
    import onnx
    from onnx import numpy_helper

    try:
        model = onnx.load_from_string(data)
    except Exception as exc:  # onnx raises DecodeError and others, not one type
        raise InvalidInputError(f"not an ONNX model: {exc}") from exc
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    weights, biases = [], []
    i = 0
    while f"W{i}" in inits:
        if f"B{i}" not in inits:
            raise InvalidInputError(f"ONNX MLP has W{i} but no B{i}")
        weights.append(np.asarray(inits[f"W{i}"], dtype=np.float32))
        biases.append(np.asarray(inits[f"B{i}"], dtype=np.float32))
        i += 1
    if not weights:
        raise InvalidInputError("ONNX model is not an edgetrust MLP (no W0 initializer)")
    return weights, biases
