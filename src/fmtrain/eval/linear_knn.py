"""The scikit-learn probes on pooled features: a linear probe and a weighted k-NN probe.

Classification returns class probabilities [M, C] with columns in ``np.unique(train
labels)`` order; regression returns values [M].
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import GroupKFold
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from fmtrain.eval.probe_tasks import Kind, check_kind, classes_text

__all__ = ["ALPHA_GRID", "C_GRID", "fit_linear", "knn_probe", "linear_probe"]

C_GRID = (0.01, 0.1, 1.0, 10.0)
ALPHA_GRID = (0.1, 1.0, 10.0, 100.0, 1000.0)


# ------------------------------------------------------------------------- linear probe


def _make_linear(kind: Kind, value: float, seed: int) -> Pipeline:
    """Standardise (fit on the training rows only, inside every fold) + linear model."""
    if kind == "classification":
        # lbfgs on several classes fits the multinomial (softmax) model
        model = LogisticRegression(C=value, max_iter=2000, random_state=seed)
    else:
        model = Ridge(alpha=value)
    return make_pipeline(StandardScaler(), model)


def _val_loss(model: Pipeline, x: np.ndarray, y: np.ndarray, kind: Kind, n_classes: int) -> float:
    """Log loss (classification) or MSE: smoother than accuracy, so the grid rarely ties."""
    if kind == "regression":
        return float(np.mean((model.predict(x) - y) ** 2))
    proba = np.full((len(x), n_classes), 1e-15)
    proba[:, model.classes_] = np.clip(model.predict_proba(x), 1e-15, 1)
    return float(-np.mean(np.log(proba[np.arange(len(y)), y])))


def _select_by_grouped_cv(
    x: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray,
    kind: Kind,
    grid: Sequence[float],
    seed: int,
    n_splits: int = 5,
) -> float:
    """The grid value with the lowest mean held-out loss over participant-grouped folds."""
    n_groups = len(np.unique(groups))
    if n_groups < 2 or len(grid) == 1:
        return grid[len(grid) // 2]
    n_classes = int(y.max()) + 1 if kind == "classification" else 0
    losses: dict[float, list[float]] = {value: [] for value in grid}
    folds = GroupKFold(n_splits=min(n_splits, n_groups)).split(x, y, groups)
    with warnings.catch_warnings():
        # grid points that do not converge are expected, and lose on held-out loss
        warnings.simplefilter("ignore", ConvergenceWarning)
        for fit_rows, val_rows in folds:
            if kind == "classification" and len(np.unique(y[fit_rows])) < 2:
                continue
            for value in grid:
                model = _make_linear(kind, value, seed).fit(x[fit_rows], y[fit_rows])
                losses[value].append(_val_loss(model, x[val_rows], y[val_rows], kind, n_classes))
    if not losses[grid[0]]:
        return grid[len(grid) // 2]
    return min(grid, key=lambda value: float(np.mean(losses[value])))


def fit_linear(
    train_x: ArrayLike,
    train_y: ArrayLike,
    test_x: ArrayLike,
    kind: Kind,
    seed: int,
    train_groups: ArrayLike | None,
    grid: Sequence[float] | None,
) -> tuple[np.ndarray, float]:
    """:func:`linear_probe`, also returning the chosen C (classification) or alpha."""
    check_kind(kind)
    x = np.asarray(train_x, dtype=np.float64)
    groups = np.arange(len(x)) if train_groups is None else np.asarray(train_groups)
    if kind == "classification":
        classes, y = np.unique(np.asarray(train_y), return_inverse=True)
        if len(classes) < 2:
            raise ValueError(f"linear probe: train labels hold {classes_text(classes)}")
    else:
        y = np.asarray(train_y, dtype=np.float64)
    grid = tuple(grid or (C_GRID if kind == "classification" else ALPHA_GRID))
    value = _select_by_grouped_cv(x, y, groups, kind, grid, seed)
    model = _make_linear(kind, value, seed).fit(x, y)
    test = np.asarray(test_x, dtype=np.float64)
    return (model.predict_proba(test) if kind == "classification" else model.predict(test)), value


def linear_probe(
    train_x: ArrayLike,
    train_y: ArrayLike,
    test_x: ArrayLike,
    kind: Kind,
    seed: int = 0,
    *,
    train_groups: ArrayLike | None = None,
    grid: Sequence[float] | None = None,
) -> np.ndarray:
    """Linear probe on standardized features, regularisation chosen by grouped inner CV.

    Features are standardized with train statistics only. Classification fits a
    multinomial LogisticRegression (lbfgs) and picks C from ``grid`` (default
    :data:`C_GRID`); regression fits Ridge and picks alpha (default :data:`ALPHA_GRID`).
    The pick minimises held-out log loss / MSE over GroupKFold folds of train, so no
    participant is in both a fold's fit and its validation part.

    Args:
        train_x: [N, D] features.
        train_y: N labels (any sortable type) or float targets.
        test_x: [M, D] features.
        kind: "classification" or "regression".
        seed: passed to the estimator (lbfgs itself is deterministic).
        train_groups: participant id per train row; None treats rows as participants.
        grid: candidate C (classification) or alpha (regression) values.

    Returns:
        [M, C] probabilities, columns in ``np.unique(train_y)`` order, or [M] values.
    """
    return fit_linear(train_x, train_y, test_x, kind, seed, train_groups, grid)[0]


# ---------------------------------------------------------------------------- k-NN probe


def _l2_normalize(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def knn_probe(
    train_x: ArrayLike,
    train_y: ArrayLike,
    test_x: ArrayLike,
    kind: Kind,
    k: int = 20,
    *,
    temperature: float = 0.07,
    center: bool = False,
    chunk_size: int = 1024,
) -> np.ndarray:
    """Weighted k-NN on cosine similarity, as in DINO's k-NN evaluation.

    Each of the k most similar train rows votes with weight exp(similarity / temperature);
    the normalized votes are the class probabilities (classification) and the weighted
    mean of their targets the prediction (regression; exp weights stay positive where raw
    cosine similarities may not). No fitting, so it measures what the geometry of the
    features already separates.

    Args:
        train_x: [N, D] features.
        train_y: N labels or targets.
        test_x: [M, D] features.
        kind: "classification" or "regression".
        k: neighbours, clipped to N.
        temperature: softmax temperature of the similarity weights.
        center: subtract the train mean first; helps when all features share one large
            direction (mean-pooled transformer tokens), which makes every cosine ~1.
        chunk_size: test rows per similarity block, bounding memory to chunk_size × N.

    Returns:
        [M, C] probabilities, columns in ``np.unique(train_y)`` order, or [M] values.
    """
    check_kind(kind)
    if k < 1:
        raise ValueError(f"knn_probe: k must be >= 1, got {k}")
    train = np.asarray(train_x, dtype=np.float64)
    test = np.asarray(test_x, dtype=np.float64)
    if center:
        mean = train.mean(axis=0, keepdims=True)
        train, test = train - mean, test - mean
    train, test = _l2_normalize(train), _l2_normalize(test)
    k = min(k, len(train))
    if kind == "classification":
        classes, codes = np.unique(np.asarray(train_y), return_inverse=True)
        targets = np.eye(len(classes))[codes]  # [N, C] one-hot votes
    else:
        targets = np.asarray(train_y, dtype=np.float64)[:, None]
    out = []
    for start in range(0, len(test), chunk_size):
        sim = test[start : start + chunk_size] @ train.T
        idx = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        top = np.take_along_axis(sim, idx, axis=1)
        # subtracting the row max cancels in the normalisation and avoids overflow
        weights = np.exp((top - top.max(axis=1, keepdims=True)) / temperature)
        weights /= weights.sum(axis=1, keepdims=True)
        out.append(np.einsum("mk,mkc->mc", weights, targets[idx]))
    pred = np.concatenate(out) if out else np.zeros((0, targets.shape[1]))
    return pred if kind == "classification" else pred[:, 0]
