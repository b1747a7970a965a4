"""The data sets federated sessions train on: all ship with scikit-learn, nothing is downloaded.

* ``digits``: the 8×8 handwritten digits (1,797 images, 10 classes), 75% to the clients.
* ``digits-shifted``: the same, with each training image also moved one pixel up, down, left
  and right (5 × 1,347 = 6,735 training images; the test images are not shifted), so a cohort
  of 1,000 clients still holds a few images each. Shifting is the augmentation scikit-learn's
  own RBM example uses on this set.
* ``breast-cancer``: the Wisconsin diagnostic set (569 tumours, 30 features, benign or
  malignant), standardized with the training split's mean and deviation: a second task with a
  different input size and class count, for the same MLP and protocol.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from edgetrust.errors import InvalidInputError

__all__ = ["DATASETS", "Dataset", "dataset_shape", "load_dataset"]


@dataclass(frozen=True)
class Dataset:
    """A train/test split: float32 features, int64 labels."""

    x_train: npt.NDArray[np.float32]
    x_test: npt.NDArray[np.float32]
    y_train: npt.NDArray[np.int64]
    y_test: npt.NDArray[np.int64]


DATASETS: dict[str, tuple[int, int]] = {
    "digits": (64, 10),
    "digits-shifted": (64, 10),
    "breast-cancer": (30, 2),
}
"""Name → (features, classes)."""


def dataset_shape(name: str) -> tuple[int, int]:
    """(features, classes) of a data set, without loading it."""
    try:
        return DATASETS[name]
    except KeyError:
        raise InvalidInputError(
            f"unknown data set {name!r}: use one of {', '.join(DATASETS)}"
        ) from None


def _shifted(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """`x` (n, 64) and its four one-pixel shifts, zero-filled at the edge: (5n, 64)."""
    images = x.reshape(-1, 8, 8)
    out = [images]
    for axis, step in ((1, 1), (1, -1), (2, 1), (2, -1)):
        moved = np.roll(images, step, axis=axis)
        edge = 0 if step == 1 else -1
        if axis == 1:
            moved[:, edge, :] = 0.0  # the row that wrapped around
        else:
            moved[:, :, edge] = 0.0
        out.append(moved)
    return np.concatenate(out).reshape(-1, 64).astype(np.float32)


def load_dataset(name: str, *, seed: int = 0, test_fraction: float = 0.25) -> Dataset:
    """Load and split a data set reproducibly (the split is stratified by label, seeded)."""
    from sklearn.model_selection import train_test_split

    dataset_shape(name)
    if name in ("digits", "digits-shifted"):
        from edgetrust.zoo import load_digits_split

        x_tr, x_te, y_tr, y_te = load_digits_split(seed=seed, test_fraction=test_fraction)
        if name == "digits-shifted":
            x_tr, y_tr = _shifted(x_tr), np.tile(y_tr, 5)
        return Dataset(x_tr, x_te, y_tr, y_te)
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    x_tr, x_te, y_tr, y_te = train_test_split(
        data.data,
        data.target.astype(np.int64),
        test_size=test_fraction,
        random_state=seed,
        stratify=data.target,
    )
    mean, std = x_tr.mean(axis=0), x_tr.std(axis=0) + 1e-12
    return Dataset(
        ((x_tr - mean) / std).astype(np.float32),
        ((x_te - mean) / std).astype(np.float32),
        y_tr,
        y_te,
    )
