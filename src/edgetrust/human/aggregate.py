"""Aggregating reviewers' answers: majority vote, Dawid–Skene (EM) and MACE, gold-anchored.

Input is a label matrix ``labels[task, reviewer]`` of class indices, ``-1`` where a reviewer
did not answer. Gold tasks (known answers) are clamped to their answer in every E-step, so they
anchor each reviewer's confusion matrix (DS) or competence (MACE). Outputs are floats (EM
posteriors); compare them with bounds, never exactly.

Dawid & Skene (1979), "Maximum likelihood estimation of observer error-rates using the EM
algorithm"; Hovy et al. (2013), "Learning whom to trust with MACE".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from edgetrust.errors import InvalidInputError

__all__ = ["Aggregate", "dawid_skene", "mace", "majority_vote"]

_EPS = 1e-9


@dataclass(frozen=True)
class Aggregate:
    """The aggregate answer per task, its posterior, and per-reviewer reliability."""

    answers: npt.NDArray[np.int64]
    """Class index per task."""
    posterior: npt.NDArray[np.float64]
    """``[task, class]`` probabilities (rows sum to 1)."""
    reliability: npt.NDArray[np.float64]
    """Per reviewer: estimated probability of a correct answer."""


def _check(
    labels: npt.ArrayLike, n_classes: int, gold: Mapping[int, int] | None
) -> npt.NDArray[np.int64]:
    arr = np.asarray(labels)
    if arr.ndim != 2 or arr.size == 0 or not np.issubdtype(arr.dtype, np.integer):
        raise InvalidInputError("labels must be a non-empty 2-D integer matrix [task, reviewer]")
    if n_classes < 2:
        raise InvalidInputError("`n_classes` must be at least 2")
    if arr.min() < -1 or arr.max() >= n_classes:
        raise InvalidInputError(f"labels must be -1 (missing) or in [0, {n_classes})")
    for t, c in (gold or {}).items():
        if not 0 <= t < arr.shape[0] or not 0 <= c < n_classes:
            raise InvalidInputError("gold maps a task index to a class index in range")
    return arr.astype(np.int64)


def _onehot(labels: npt.NDArray[np.int64], n_classes: int) -> npt.NDArray[np.float64]:
    """``[task, reviewer, class]`` indicator of each answer."""
    out = np.zeros((*labels.shape, n_classes))
    t, r = np.nonzero(labels >= 0)
    out[t, r, labels[t, r]] = 1.0
    return out


def _clamp(post: npt.NDArray[np.float64], gold: Mapping[int, int] | None) -> None:
    for t, c in (gold or {}).items():
        post[t] = 0.0
        post[t, c] = 1.0


def majority_vote(
    labels: npt.ArrayLike, n_classes: int, *, gold: Mapping[int, int] | None = None
) -> Aggregate:
    """Plurality per task (ties to the lowest class); posterior = vote shares."""
    arr = _check(labels, n_classes, gold)
    votes = _onehot(arr, n_classes).sum(axis=1)
    totals = votes.sum(axis=1, keepdims=True)
    post = np.where(totals > 0, votes / np.maximum(totals, 1), 1.0 / n_classes)
    _clamp(post, gold)
    answers = post.argmax(axis=1)
    return Aggregate(answers, post, _agreement(arr, answers))


def _agreement(
    arr: npt.NDArray[np.int64], answers: npt.NDArray[np.int64]
) -> npt.NDArray[np.float64]:
    seen = arr >= 0
    hits = (arr == answers[:, None]) & seen
    return np.asarray(hits.sum(axis=0) / np.maximum(seen.sum(axis=0), 1), dtype=np.float64)


def dawid_skene(
    labels: npt.ArrayLike,
    n_classes: int,
    *,
    gold: Mapping[int, int] | None = None,
    max_iter: int = 100,
    tol: float = 1e-6,
) -> Aggregate:
    """Dawid–Skene EM: a confusion matrix per reviewer, initialised from majority vote."""
    arr = _check(labels, n_classes, gold)
    n_tasks, n_rev = arr.shape
    # The observed answers only (a crowd is sparse): task t, reviewer r answered a.
    t_idx, r_idx = np.nonzero(arr >= 0)
    a_idx = arr[t_idx, r_idx]
    cell = r_idx * n_classes + a_idx  # column of conf.reshape(n_rev * k) per true class
    post = majority_vote(arr, n_classes, gold=gold).posterior
    for _ in range(max_iter):
        # M-step: class priors and confusion[r, true, answered], Laplace-smoothed.
        prior = post.mean(axis=0) + _EPS
        counts = np.zeros((n_classes, n_rev * n_classes))
        for c in range(n_classes):
            counts[c] = np.bincount(cell, weights=post[t_idx, c], minlength=n_rev * n_classes)
        conf = counts.reshape(n_classes, n_rev, n_classes).transpose(1, 0, 2) + 0.01
        conf /= conf.sum(axis=2, keepdims=True)
        # E-step in log space: log p(true=c) + sum_r log conf[r, c, answer_r].
        log_conf = np.log(conf)
        log_post = np.tile(np.log(prior), (n_tasks, 1))
        for c in range(n_classes):
            log_post[:, c] += np.bincount(
                t_idx, weights=log_conf[r_idx, c, a_idx], minlength=n_tasks
            )
        log_post -= log_post.max(axis=1, keepdims=True)
        new = np.exp(log_post)
        new /= new.sum(axis=1, keepdims=True)
        _clamp(new, gold)
        delta = float(np.abs(new - post).max())
        post = new
        if delta < tol:
            break
    answers = post.argmax(axis=1)
    reliability = np.einsum("rcc,c->r", conf, prior / prior.sum())
    return Aggregate(answers, post, reliability)


def mace(
    labels: npt.ArrayLike,
    n_classes: int,
    *,
    gold: Mapping[int, int] | None = None,
    max_iter: int = 100,
    tol: float = 1e-6,
) -> Aggregate:
    """MACE EM: each reviewer knows the answer with probability theta, else spams from xi.

    p(answer a | true c) = theta_r [a = c] + (1 - theta_r) xi_r[a]; fewer parameters than DS
    (n_classes + 1 per reviewer instead of n_classes²), so it learns from sparse crowds.
    """
    arr = _check(labels, n_classes, gold)
    x = _onehot(arr, n_classes)
    seen = arr >= 0
    n_rev = arr.shape[1]
    theta = np.full(n_rev, 0.5)
    xi = np.full((n_rev, n_classes), 1.0 / n_classes)
    post = majority_vote(arr, n_classes, gold=gold).posterior
    for it in range(max_iter):
        if it > 0:
            log_post = np.zeros_like(post)
            for c in range(n_classes):
                # p(a_r | c) for each observed answer.
                p = (
                    theta[None, :] * (arr == c)
                    + (1 - theta[None, :])
                    * xi[None, :, :].repeat(arr.shape[0], 0)[
                        np.arange(arr.shape[0])[:, None],
                        np.arange(n_rev)[None, :],
                        np.maximum(arr, 0),
                    ]
                )
                log_post[:, c] = np.where(seen, np.log(p + _EPS), 0.0).sum(axis=1)
            log_post -= log_post.max(axis=1, keepdims=True)
            new = np.exp(log_post)
            new /= new.sum(axis=1, keepdims=True)
            _clamp(new, gold)
            delta = float(np.abs(new - post).max())
            post = new
            if delta < tol:
                break
        # M-step: responsibility that a reviewer "knew" each answer.
        p_true = np.einsum("tc,trc->tr", post, x)  # posterior that answer == truth
        xi_a = xi[np.arange(n_rev)[None, :], np.maximum(arr, 0)]
        know = np.where(seen, theta * p_true / (theta * p_true + (1 - theta) * xi_a + _EPS), 0.0)
        theta = (know.sum(axis=0) + 0.5) / (seen.sum(axis=0) + 1.0)
        spam = (1 - know)[:, :, None] * x
        xi = spam.sum(axis=0) + 0.1
        xi /= xi.sum(axis=1, keepdims=True)
    answers = post.argmax(axis=1)
    reliability = theta + (1 - theta) * xi.max(axis=1) / n_classes
    return Aggregate(answers, post, np.clip(reliability, 0.0, 1.0))
