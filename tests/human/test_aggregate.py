"""Aggregation on synthetic crowds with known truth, cross-checked with a loop-based DS."""

from __future__ import annotations

import numpy as np
import pytest

from edgetrust.errors import InvalidInputError
from edgetrust.human.aggregate import dawid_skene, mace, majority_vote


def crowd(n_tasks: int, n_rev: int, spam: float, density: float, k: int = 2, seed: int = 0):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, k, n_tasks)
    skill = np.where(np.arange(n_rev) < int(spam * n_rev), 1.0 / k, rng.uniform(0.7, 0.95, n_rev))
    labels = np.full((n_tasks, n_rev), -1)
    for t in range(n_tasks):
        who = rng.random(n_rev) < density
        right = rng.random(n_rev) < skill
        wrong = (truth[t] + rng.integers(1, k, n_rev)) % k
        labels[t, who] = np.where(right, truth[t], wrong)[who]
    return labels, truth


def loop_ds(labels: np.ndarray, k: int, iters: int = 50) -> np.ndarray:
    """An independent, plain-loop Dawid–Skene for cross-checking."""
    t_n, r_n = labels.shape
    post = np.zeros((t_n, k))
    for t in range(t_n):
        for r in range(r_n):
            if labels[t, r] >= 0:
                post[t, labels[t, r]] += 1
        post[t] = post[t] / post[t].sum() if post[t].sum() else 1 / k
    for _ in range(iters):
        prior = post.sum(0) / t_n
        conf = np.full((r_n, k, k), 0.01)
        for t in range(t_n):
            for r in range(r_n):
                if labels[t, r] >= 0:
                    conf[r, :, labels[t, r]] += post[t]
        conf /= conf.sum(2, keepdims=True)
        for t in range(t_n):
            lp = np.log(prior + 1e-9).copy()
            for r in range(r_n):
                if labels[t, r] >= 0:
                    lp += np.log(conf[r, :, labels[t, r]])
            e = np.exp(lp - lp.max())
            post[t] = e / e.sum()
    return post


def test_ds_beats_mv_with_half_random_reviewers() -> None:
    labels, truth = crowd(2000, 50, 0.5, 0.1)
    mv = (majority_vote(labels, 2).answers == truth).mean()
    ds = (dawid_skene(labels, 2).answers == truth).mean()
    mc = (mace(labels, 2).answers == truth).mean()
    assert ds > mv + 0.03
    assert ds > 0.8
    assert mc > mv


def test_reliability_separates_spammers() -> None:
    labels, _ = crowd(2000, 20, 0.5, 0.3)
    rel = dawid_skene(labels, 2).reliability
    assert rel[:10].mean() < 0.62 < rel[10:].mean()
    rel_m = mace(labels, 2).reliability
    assert rel_m[:10].mean() < rel_m[10:].mean()


def test_gold_anchors_and_is_respected() -> None:
    labels, truth = crowd(300, 10, 0.3, 0.5, k=3, seed=3)
    gold = {i: int(truth[i]) for i in range(30)}
    for agg in (majority_vote, dawid_skene, mace):
        res = agg(labels, 3, gold=gold)
        assert all(res.answers[i] == truth[i] for i in gold)
        assert np.allclose(res.posterior.sum(1), 1.0, atol=1e-6)
        assert (res.answers == truth).mean() > 0.8


def test_matches_independent_loop_implementation() -> None:
    labels, _ = crowd(150, 8, 0.3, 0.5, k=3, seed=7)
    ours = dawid_skene(labels, 3, max_iter=50, tol=0).posterior
    ref = loop_ds(labels, 3)
    assert np.abs(ours - ref).max() < 1e-3
    assert (ours.argmax(1) == ref.argmax(1)).all()


@pytest.mark.parametrize(
    "bad",
    [[], [1, 2], [[0, 5]], [[-2, 0]], [[0.5, 1.0]], [[[0]]]],
)
def test_bad_matrices_are_refused(bad: object) -> None:
    for agg in (majority_vote, dawid_skene, mace):
        with pytest.raises(InvalidInputError):
            agg(bad, 2)  # type: ignore[arg-type]


def test_bad_gold_and_classes_are_refused() -> None:
    with pytest.raises(InvalidInputError):
        dawid_skene([[0, 1]], 2, gold={5: 0})
    with pytest.raises(InvalidInputError):
        dawid_skene([[0, 1]], 1)
