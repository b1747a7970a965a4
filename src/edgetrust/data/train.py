"""``train`` jobs: one local training step on the owner's records, answered as a DP update.

The job names a model the grant allows (an MLP exported by `zoo.mlp_to_onnx`, as federated
sessions use) and the feature and label columns. The owner trains from the model's weights
(`collab.training.train_local`), clips the whole update to L2 norm C and adds Gaussian noise of
standard deviation z·C before anything leaves: whatever records the dataset holds, the released
update is one Gaussian mechanism of sensitivity C, so its ε (at δ, from the same PLD
accountant as federated rounds) protects every record and the dataset as a whole. The answer
is the noised update, its digest and the bounds (clip, noise, ε, δ); it must fit in
`DataOwner.max_output_ratio` times the input's bytes, like an ``infer`` job's outputs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgetrust.errors import InvalidInputError, ResourceLimitError

__all__ = ["TrainQuery", "run_train"]

_KEYS = {"features", "labels", "epochs", "lr", "batchSize", "clip", "noiseMultiplier", "delta"}


def _num(params: Mapping[str, Any], key: str, default: float, lo: float, hi: float) -> float:
    v = params.get(key, default)
    if not isinstance(v, int | float) or isinstance(v, bool) or not lo <= v <= hi:
        raise InvalidInputError(f"train {key} must be a number in [{lo:g}, {hi:g}]")
    return float(v)


@dataclass(frozen=True)
class TrainQuery:
    """A parsed ``train`` job."""

    features: str
    labels: str
    epochs: int
    lr: float
    batch_size: int
    clip: float
    noise_multiplier: float
    delta: float

    @classmethod
    def parse(cls, params: Mapping[str, Any]) -> TrainQuery:
        """Parse and check a ``train`` job's params."""
        if set(params) - _KEYS:
            raise InvalidInputError(f"train params are {', '.join(sorted(_KEYS))}")
        cols = [params.get("features", "x"), params.get("labels", "label")]
        if not all(isinstance(c, str) and 0 < len(c) <= 64 for c in cols):
            raise InvalidInputError("train features and labels are column names")
        epochs = params.get("epochs", 1)
        batch = params.get("batchSize", 16)
        for name, v in (("epochs", epochs), ("batchSize", batch)):
            if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= 100:
                raise InvalidInputError(f"train {name} must be an integer in 1..100")
        return cls(
            cols[0],
            cols[1],
            epochs,
            _num(params, "lr", 0.1, 1e-6, 10.0),
            batch,
            _num(params, "clip", 1.0, 1e-6, 1e6),
            _num(params, "noiseMultiplier", 1.0, 0.0, 1e6),
            _num(params, "delta", 1e-5, 1e-12, 0.1),
        )

    @property
    def epsilon(self) -> float | None:
        """ε of the released update (one Gaussian mechanism); None without noise (unbounded)."""
        if self.noise_multiplier == 0:
            return None
        from edgetrust.collab.dp import epsilon_after

        return float(
            epsilon_after(
                1, noise_multiplier=self.noise_multiplier, sampling_rate=1.0, delta=self.delta
            )
        )


def run_train(
    table: Mapping[str, Any],
    model_bytes: bytes,
    model_digest: str,
    query: TrainQuery,
    *,
    max_output_ratio: float,
    rng: np.random.Generator,
) -> dict[str, Any]:
    """Train from the model on the table's records; return the clipped, noised update.

    Raises:
        InvalidInputError: missing columns, labels out of range, a model that is not an MLP.
        ResourceLimitError: the update is over `max_output_ratio` times the input's bytes.
    """
    from edgetrust.collab.dp import clip_update
    from edgetrust.collab.training import MLP, flatten, mlp_weights_from_onnx, train_local
    from edgetrust.encoding import canonical_tensor_bytes, digest_bytes

    for col in (query.features, query.labels):
        if col not in table:
            raise InvalidInputError(f"the dataset has no column {col!r:.40}")
    x = np.asarray(table[query.features], dtype=np.float64)
    y = np.asarray(table[query.labels])
    if x.ndim != 2 or y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise InvalidInputError("train needs a 2-D feature column and an integer label column")
    weights, biases = mlp_weights_from_onnx(model_bytes)
    start: list[Any] = []
    for w, b in zip(weights, biases, strict=True):
        start += [np.asarray(w, dtype=np.float64), np.asarray(b, dtype=np.float64)]
    if start[0].shape[0] != x.shape[1]:
        raise InvalidInputError(f"the model takes {start[0].shape[0]} features, not {x.shape[1]}")
    classes = start[-1].shape[0]
    if y.size and (int(y.min()) < 0 or int(y.max()) >= classes):
        raise InvalidInputError(f"labels must be in 0..{classes - 1}")
    model = MLP((start[0].shape[0], *(w.shape[1] for w in weights)))
    update_bytes = model.num_params * 8
    if update_bytes > max_output_ratio * (x.nbytes + y.nbytes):
        raise ResourceLimitError(
            f"the update is {update_bytes} bytes, over {max_output_ratio:g}× the input's "
            f"{x.nbytes + y.nbytes}",
            limit=int(max_output_ratio * (x.nbytes + y.nbytes)),
        )
    trained = train_local(
        model,
        start,
        x,
        y.astype(np.int64),
        epochs=query.epochs,
        lr=query.lr,
        batch_size=query.batch_size,
        seed=int(rng.integers(2**31)),
    )
    update, norm = clip_update(flatten(trained) - flatten(start), query.clip)
    std = query.noise_multiplier * query.clip
    noisy = update + rng.normal(0.0, std, update.shape) if std > 0 else update
    eps = query.epsilon
    return {
        "model": model_digest,
        "records": len(y),
        "update": {"dtype": "float64", "length": int(noisy.size), "values": noisy.tolist()},
        "updateDigest": digest_bytes(canonical_tensor_bytes(noisy)),
        "bounds": {
            "clip": query.clip,
            "noiseStd": std,
            "epsilon": None if eps is None or math.isinf(eps) else eps,
            "delta": query.delta,
            "clipped": bool(norm > query.clip),
        },
    }
