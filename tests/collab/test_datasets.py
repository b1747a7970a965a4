"""The bundled data sets federated sessions train on, and sessions on the second one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from edgetrust.collab.abort import min_neighbours
from edgetrust.collab.audit import audit_log
from edgetrust.collab.datasets import DATASETS, dataset_shape, load_dataset
from edgetrust.collab.local import simulate
from edgetrust.collab.session import SessionSpec
from edgetrust.errors import InvalidInputError
from edgetrust.models import ModelRegistry
from tests.collab.test_session import ListLog


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_every_dataset_loads_with_its_declared_shape(name: str) -> None:
    data = load_dataset(name, seed=0)
    features, classes = dataset_shape(name)
    assert data.x_train.shape[1] == data.x_test.shape[1] == features
    assert data.x_train.dtype == np.float32 and data.y_train.dtype == np.int64
    assert set(np.unique(data.y_train)) == set(range(classes))
    assert len(data.x_train) == len(data.y_train) and len(data.x_test) == len(data.y_test)


def test_shifted_digits_are_the_images_moved_one_pixel() -> None:
    plain, shifted = load_dataset("digits"), load_dataset("digits-shifted")
    n = len(plain.x_train)
    assert len(shifted.x_train) == 5 * n
    np.testing.assert_array_equal(shifted.x_train[:n], plain.x_train)
    np.testing.assert_array_equal(shifted.y_train, np.tile(plain.y_train, 5))
    np.testing.assert_array_equal(shifted.x_test, plain.x_test)  # the test set is not shifted
    image = plain.x_train[0].reshape(8, 8)
    down = shifted.x_train[n].reshape(8, 8)  # first shift: one row down, top row blank
    np.testing.assert_array_equal(down[1:], image[:-1])
    assert not down[0].any()


def test_breast_cancer_is_standardized_on_the_training_split() -> None:
    data = load_dataset("breast-cancer")
    assert data.x_train.shape == (426, 30)
    np.testing.assert_allclose(data.x_train.mean(axis=0), 0.0, atol=1e-4)
    np.testing.assert_allclose(data.x_train.std(axis=0), 1.0, atol=1e-3)


def test_unknown_dataset_is_refused_with_the_choices() -> None:
    with pytest.raises(InvalidInputError, match="unknown data set 'mnist': use one of digits"):
        SessionSpec(dataset="mnist")
    with pytest.raises(InvalidInputError, match="unknown data set"):
        load_dataset("../etc/passwd")


def test_session_on_the_second_dataset_learns_and_audits(tmp_path: Path) -> None:
    log = ListLog()
    spec = SessionSpec(rounds=3, local_epochs=2, dataset="breast-cancer", model_name="bc-fl")
    result = simulate(spec, num_clients=5, dropout=0.2, home=tmp_path, log=log)
    report = audit_log(log, home=tmp_path, require_artifacts=True)
    assert len(report.rounds) == 3 and all(r.model_recomputed for r in report.rounds)
    # the published model takes the 30 features and answers 2 classes
    model = onnx.load_from_string(ModelRegistry(tmp_path).model_bytes(result.rounds[-1].model))
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims[-1] == 30
    out = [d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim]
    assert out[-1] == 2
    # well above always answering the majority class (63% of the test set)
    assert (result.rounds[-1].accuracy or 0.0) > 0.8


def test_a_fine_split_with_neighbourhoods(tmp_path: Path) -> None:
    """200 clients of a few shifted digits each, SecAgg+ sized for 10% dropout."""
    k = min_neighbours(200, 0.1)
    assert k is not None and k < 199
    spec = SessionSpec(rounds=1, local_epochs=1, dataset="digits-shifted", neighbours=k)
    log = ListLog()
    result = simulate(spec, num_clients=200, dropout=0.1, non_iid_alpha=1.0, home=tmp_path, log=log)
    (summary,) = result.rounds
    # 20 drop, at random stages; those gone after sending their input are still summed
    assert summary.survivors + summary.dropped == 200 and 0 < summary.dropped <= 20
    assert audit_log(log, home=tmp_path).rounds[0].survivors == summary.survivors
