"""Our Dawid–Skene against crowd-kit's (an independent implementation, installed for tests).

The two differ in details (our Laplace smoothing 0.01 and stopping rule), so answers are compared
on most tasks and posteriors within a bound, never as exact floats.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from crowdkit.aggregation import DawidSkene

from edgetrust.human.aggregate import dawid_skene

# crowd-kit 1.4.2 uses pandas idioms that pandas 3.1 deprecates; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")


def _crowd(seed: int, tasks: int, reviewers: int, classes: int, density: float) -> tuple:
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, classes, tasks)
    skill = rng.uniform(0.3, 0.95, reviewers)
    labels = np.full((tasks, reviewers), -1, dtype=np.int64)
    for j in range(reviewers):
        seen = rng.random(tasks) < density
        right = rng.random(tasks) < skill[j]
        labels[seen, j] = np.where(right, truth, rng.integers(0, classes, tasks))[seen]
    t, r = np.nonzero(labels >= 0)
    frame = pd.DataFrame({"task": t, "worker": r, "label": labels[t, r]})
    return labels, frame, truth


@pytest.mark.parametrize(
    ("seed", "tasks", "reviewers", "classes", "density"),
    [(3, 300, 12, 3, 0.5), (4, 500, 20, 2, 0.3), (5, 400, 15, 4, 0.4)],
)
def test_dawid_skene_agrees_with_crowd_kit(
    seed: int, tasks: int, reviewers: int, classes: int, density: float
) -> None:
    labels, frame, truth = _crowd(seed, tasks, reviewers, classes, density)
    answered = np.flatnonzero((labels >= 0).any(axis=1))
    ck = DawidSkene(n_iter=100).fit(frame)
    theirs = ck.labels_.reindex(answered).to_numpy()
    post = ck.probas_.reindex(answered)[list(range(classes))].to_numpy()
    ours = dawid_skene(labels, classes)
    assert np.mean(ours.answers[answered] == theirs) >= 0.98
    assert np.mean(np.abs(ours.posterior[answered] - post)) < 0.01
    # and both are far better than chance on these crowds
    assert np.mean(theirs == truth[answered]) > 0.8
