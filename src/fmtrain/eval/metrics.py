"""Probe metrics: score predictions against coded labels or regression targets.

Classification predictions are class probabilities [N, C] (or a binary score [N]) and the
labels are column indices 0..C-1; regression predictions and targets are values [N].
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from numpy.typing import ArrayLike
from scipy.stats import rankdata

__all__ = [
    "LOWER_IS_BETTER",
    "METRICS",
    "accuracy",
    "auroc",
    "balanced_accuracy",
    "mae",
    "r2",
]

# Written in numpy rather than sklearn.metrics: the bootstrap calls each metric thousands
# of times, and sklearn's input validation costs more than the metric on small test sets.


def _as_proba(score: ArrayLike) -> np.ndarray:
    """[N, C] probabilities; a 1D binary score s becomes columns (1 - s, s)."""
    score = np.asarray(score, dtype=np.float64)
    return np.stack([1 - score, score], axis=1) if score.ndim == 1 else score


def accuracy(y_true: ArrayLike, proba: ArrayLike) -> float:
    """Fraction of rows whose most probable class is the true class (coded 0..C-1)."""
    return float(np.mean(np.argmax(_as_proba(proba), axis=1) == np.asarray(y_true)))


def balanced_accuracy(y_true: ArrayLike, proba: ArrayLike) -> float:
    """Mean recall over the classes present in y_true, so a majority-class guess scores
    1/C rather than the majority share."""
    y = np.asarray(y_true)
    hit = np.argmax(_as_proba(proba), axis=1) == y
    _, codes = np.unique(y, return_inverse=True)
    return float(np.mean(np.bincount(codes, weights=hit) / np.bincount(codes)))


def _binary_auroc(positive: np.ndarray, score: np.ndarray) -> float:
    """Mann-Whitney form of the AUROC, ties counted half; NaN with one class only."""
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = rankdata(score)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def auroc(y_true: ArrayLike, proba: ArrayLike) -> float:
    """Macro one-vs-rest AUROC from probabilities [N, C] (or a binary score [N]).

    Binary: the AUROC of the positive-class column. Multiclass: the mean over the classes
    present in y_true (as balanced accuracy does); NaN when fewer than two are present.
    """
    y = np.asarray(y_true)
    p = _as_proba(proba)
    if p.shape[1] == 2:
        return _binary_auroc(y == 1, p[:, 1])
    present = np.unique(y)
    if len(present) < 2:
        return math.nan
    return float(np.mean([_binary_auroc(y == c, p[:, c]) for c in present]))


def mae(y_true: ArrayLike, pred: ArrayLike) -> float:
    """Mean absolute error, in the units of the target."""
    return float(np.mean(np.abs(np.asarray(y_true, float) - np.asarray(pred, float))))


def r2(y_true: ArrayLike, pred: ArrayLike) -> float:
    """Coefficient of determination; 0 for predicting the test mean, NaN for a constant target."""
    y = np.asarray(y_true, float)
    total = np.sum((y - y.mean()) ** 2)
    if total == 0:
        return math.nan
    return float(1 - np.sum((y - np.asarray(pred, float)) ** 2) / total)


METRICS: dict[str, dict[str, Callable[[ArrayLike, ArrayLike], float]]] = {
    "classification": {
        "accuracy": accuracy,
        "balanced_accuracy": balanced_accuracy,
        "auroc": auroc,
    },
    "regression": {"mae": mae, "r2": r2},
}
LOWER_IS_BETTER = frozenset({"mae"})
