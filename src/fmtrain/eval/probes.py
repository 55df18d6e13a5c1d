"""Probes on frozen features: linear, k-NN and attentive, with participant-level intervals.

A pretrained encoder is only worth its compute if frozen features beat those of the same
architecture at random initialisation; random-init transformers already give linear
probes far above chance on many medical tasks. :func:`run_probes` scores one encoder's
features; :func:`compare` sets a pretrained result against several random-init seeds
with paired bootstrap differences on the same test participants; :func:`format_table`
prints the comparison.

Classification predictions are class probabilities [N, C] with columns in the order of
``np.unique(train labels)``; test labels are coded to those column indices. Regression
predictions are values [N].
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike
from scipy.stats import rankdata
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import GroupKFold
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from fmtrain.eval.attentive import fit_attentive_probe
from fmtrain.eval.bootstrap import bootstrap_ci, mean_paired_diff, too_few_for_interval

log = logging.getLogger("fmtrain")

Kind = Literal["classification", "regression"]
PROBES = ("linear", "knn", "attentive")
ATTENTIVE_LR_GRID = (3e-4, 1e-3, 3e-3)
C_GRID = (0.01, 0.1, 1.0, 10.0)
ALPHA_GRID = (0.1, 1.0, 10.0, 100.0, 1000.0)


class SplitTooSmallError(ValueError):
    """A task's labelled test rows are too few for a participant-level interval (the
    message says how many are needed); `fmtrain probe` refuses such a task, not the run."""


@dataclass(frozen=True)
class Task:
    """A probing target: ``name`` is the label key in the train/test dicts."""

    name: str
    kind: Kind

    def __post_init__(self) -> None:
        _check_kind(self.kind, f"Task {self.name!r}")


def _check_kind(kind: str, where: str = "kind") -> None:
    if kind not in ("classification", "regression"):
        raise ValueError(f"{where}: kind must be 'classification' or 'regression', got {kind!r}")


# ---------------------------------------------------------------------------- metrics
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


def _fit_linear(
    train_x: ArrayLike,
    train_y: ArrayLike,
    test_x: ArrayLike,
    kind: Kind,
    seed: int,
    train_groups: ArrayLike | None,
    grid: Sequence[float] | None,
) -> tuple[np.ndarray, float]:
    _check_kind(kind)
    x = np.asarray(train_x, dtype=np.float64)
    groups = np.arange(len(x)) if train_groups is None else np.asarray(train_groups)
    if kind == "classification":
        classes, y = np.unique(np.asarray(train_y), return_inverse=True)
        if len(classes) < 2:
            raise ValueError(f"linear probe: train labels hold {_classes_text(classes)}")
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
    return _fit_linear(train_x, train_y, test_x, kind, seed, train_groups, grid)[0]


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
    _check_kind(kind)
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


# ------------------------------------------------------------------------ run the probes


def _labelled(y: np.ndarray, kind: Kind) -> np.ndarray:
    """Rows with a label: NaN (and None) mark rows a task has no label for."""
    if kind == "regression" or y.dtype.kind == "f":
        return np.isfinite(y.astype(np.float64))
    if y.dtype.kind == "O":
        return np.array([not (v is None or (isinstance(v, float) and math.isnan(v))) for v in y])
    return np.ones(len(y), dtype=bool)


def _split_arrays(split: Mapping[str, Any], name: str, task: Task) -> dict[str, Any]:
    """The split's features, groups and this task's labels, restricted to labelled rows."""
    for key in ("pooled", "groups", task.name):
        if key not in split:
            raise KeyError(
                f"{name} split has no {key!r}; expected keys 'pooled', 'groups', "
                f"optionally 'tokens', and one label array per task, got {sorted(split)}"
            )
    pooled = np.asarray(split["pooled"], dtype=np.float64)
    y = np.asarray(split[task.name])
    groups = np.asarray(split["groups"])
    if pooled.ndim != 2 or not len(pooled) == len(y) == len(groups):
        raise ValueError(
            f"{name} split, task {task.name!r}: pooled {pooled.shape} must be [N, D] with "
            f"N = len(labels) = {len(y)} = len(groups) = {len(groups)}"
        )
    keep = _labelled(y, task.kind)
    tokens = split.get("tokens")
    return {
        "pooled": pooled[keep],
        "tokens": None if tokens is None else np.asarray(tokens)[keep],
        "groups": groups[keep],
        "y": y[keep],
    }


def _classes_text(classes: np.ndarray) -> str:
    """How an error names too few classes: 'no class (no labelled row)' or "one class ['a']"."""
    if len(classes) == 0:
        return "no class (no row has a label)"
    return f"{len(classes)} class{'es' if len(classes) > 1 else ''} {classes.tolist()}"


def _encode_test_labels(classes: np.ndarray, y_test: np.ndarray, task: Task) -> np.ndarray:
    codes = np.searchsorted(classes, y_test).clip(0, len(classes) - 1)
    unseen = y_test[classes[codes] != y_test]
    if len(unseen):
        raise ValueError(
            f"task {task.name!r}: test labels {sorted(set(unseen.tolist()))} never occur in "
            f"train (classes {classes.tolist()}); a probe cannot predict them. Split by "
            "participant with every class on both sides, or drop those rows."
        )
    return codes


def _run_one_probe(
    probe: str, tr: dict[str, Any], te: dict[str, Any], task: Task, seed: int, options: dict
) -> tuple[np.ndarray, dict[str, Any]]:
    if probe == "linear":
        pred, value = _fit_linear(
            tr["pooled"], tr["y"], te["pooled"], task.kind, seed, tr["groups"], None
        )
        return pred, {"C" if task.kind == "classification" else "alpha": value}
    if probe == "knn":
        return knn_probe(tr["pooled"], tr["y"], te["pooled"], task.kind, **options), {}
    # The learning rate is chosen like the linear probe's C: by the loss on a held-out,
    # participant-grouped slice of the training split. One fixed rate is not safe: features
    # with little spread (e.g. after JEPA pretraining) made 3e-3 diverge in one epoch
    # while 3e-4 trained, and random-init features showed the opposite preference.
    rates = [options["lr"]] if "lr" in options else list(ATTENTIVE_LR_GRID)
    rest = {k: v for k, v in options.items() if k != "lr"}
    start = time.perf_counter()
    fits = {
        lr: fit_attentive_probe(
            tr["tokens"], tr["y"], te["tokens"], task.kind, seed,
            train_groups=tr["groups"], lr=lr, **rest,
        )
        for lr in rates
    }  # fmt: skip
    lr, fit = min(fits.items(), key=lambda item: item[1].best_val_loss)
    info = {"lr": lr, "best_epoch": fit.best_epoch, "best_val_loss": fit.best_val_loss}
    log.info(
        "attentive probe, %s: lr %g (held-out loss %.4f, best epoch %d) in %.0f s",
        task.name, lr, fit.best_val_loss, fit.best_epoch, time.perf_counter() - start,
    )  # fmt: skip
    return fit.predictions, info


def _probe_task(
    train: Mapping[str, Any],
    test: Mapping[str, Any],
    task: Task,
    probes: Sequence[str],
    seed: int,
    n_boot: int,
    alpha: float,
    options: Mapping[str, dict],
) -> dict[str, Any]:
    tr, te = _split_arrays(train, "train", task), _split_arrays(test, "test", task)
    entry: dict[str, Any] = {"kind": task.kind, "n_train": len(tr["y"]), "n_test": len(te["y"])}
    if task.kind == "classification":
        classes = np.unique(tr["y"])
        if len(classes) < 2:
            raise ValueError(
                f"task {task.name!r}: the training rows hold {_classes_text(classes)}; a "
                "classifier needs two or more"
            )
    problem = too_few_for_interval(task.kind, te["y"], te["groups"], alpha)
    if problem:
        raise SplitTooSmallError(f"task {task.name!r}: {problem}")
    entry["n_test_participants"] = len(np.unique(te["groups"]))
    if task.kind == "classification":
        y_true = _encode_test_labels(classes, te["y"], task)
        entry["classes"] = classes.tolist()
    else:
        y_true = te["y"].astype(np.float64)
    entry["y_true"] = y_true.tolist()
    entry["test_groups"] = te["groups"].tolist()
    entry["probes"] = {}
    for probe in probes:
        if probe == "attentive" and tr["tokens"] is None:
            continue
        pred, info = _run_one_probe(probe, tr, te, task, seed, dict(options.get(probe, {})))
        metrics = {
            name: bootstrap_ci(fn, y_true, pred, te["groups"], n_boot, alpha, seed).to_dict()
            for name, fn in METRICS[task.kind].items()
        }
        entry["probes"][probe] = {"metrics": metrics, "predictions": pred.tolist(), "info": info}
    return entry


def run_probes(
    train: Mapping[str, Any],
    test: Mapping[str, Any],
    tasks: Sequence[Task],
    seed: int = 0,
    *,
    probes: Sequence[str] = PROBES,
    n_boot: int = 1000,
    alpha: float = 0.05,
    options: Mapping[str, dict] | None = None,
) -> dict[str, Any]:
    """Score one encoder's frozen features with every probe on every task.

    Args:
        train: {"pooled": [N, D], "groups": [N] participant ids, "tokens": [N, T, D]
            (optional; without it the attentive probe is skipped), task.name: [N] labels}.
            NaN (or None) labels mark rows a task has no label for.
        test: the same keys for the held-out participants.
        tasks: what to probe.
        seed: seeds the probes and the bootstrap (same resamples for every probe).
        probes: any of "linear", "knn", "attentive".
        n_boot: bootstrap resamples per interval.
        alpha: 1 - interval coverage.
        options: keyword arguments per probe, e.g. {"knn": {"k": 10},
            "attentive": {"epochs": 20}}.

    Raises:
        SplitTooSmallError: a task's labelled test participants are too few for a
            participant-level interval (`fmtrain.eval.bootstrap.too_few_for_interval`).
        ValueError: a task's training rows hold fewer than two classes, or its test rows
            hold classes training never saw.

    Returns:
        A JSON-serialisable dict (NaN may appear as a float)::

            {"seed": 0, "alpha": 0.05, "n_boot": 1000, "tasks": {
              "sex": {"kind": "classification", "n_train": 200, "n_test": 60,
                      "classes": ["F", "M"], "y_true": [0, 1, ...],
                      "test_groups": ["p07", "p07", ...],
                      "probes": {"linear": {
                          "metrics": {"auroc": {"value": 0.91, "low": 0.84, "high": 0.96,
                                                "n_boot": 1000, "n_degenerate": 0}, ...},
                          "predictions": [[0.2, 0.8], ...], "info": {"C": 0.1}},
                        "knn": {...}, "attentive": {...}}}}}
    """
    unknown = set(probes) - set(PROBES)
    if unknown:
        raise ValueError(f"unknown probes {sorted(unknown)}; choose among {PROBES}")
    if ("tokens" in train) != ("tokens" in test):
        raise ValueError("'tokens' is in only one of train and test; pass it in both or neither")
    options = dict(options or {})
    return {
        "seed": seed,
        "alpha": alpha,
        "n_boot": n_boot,
        "tasks": {
            task.name: _probe_task(train, test, task, probes, seed, n_boot, alpha, options)
            for task in tasks
        },
    }


# -------------------------------------------------------------- pretrained vs random init


def _check_same_test_set(name: str, pretrained: dict, others: Sequence[dict]) -> None:
    for i, other in enumerate(others):
        if other["y_true"] != pretrained["y_true"] or (
            other["test_groups"] != pretrained["test_groups"]
        ):
            raise ValueError(
                f"task {name!r}: random result {i} was scored on other test rows than the "
                "pretrained result; paired differences need the same test set in the same order"
            )


def _comparison_row(
    task: str, probe: str, metric: str, pre: dict, rand: Sequence[dict], boot: dict
) -> dict[str, Any]:
    kind = pre["kind"]
    metric_fn = METRICS[kind][metric]
    values = [r["probes"][probe]["metrics"][metric]["value"] for r in rand]
    diff = mean_paired_diff(
        metric_fn,
        np.asarray(pre["y_true"]),
        np.asarray(pre["probes"][probe]["predictions"]),
        [np.asarray(r["probes"][probe]["predictions"]) for r in rand],
        np.asarray(pre["test_groups"]),
        **boot,
    ).to_dict()
    higher_is_better = metric not in LOWER_IS_BETTER
    if not higher_is_better:
        # the gain is an improvement: an MAE 0.003 lower is a gain of +0.003
        diff |= {"value": -diff["value"], "low": -diff["high"], "high": -diff["low"]}
    low, high = diff["low"], diff["high"]
    return {
        "task": task,
        "probe": probe,
        "metric": metric,
        "higher_is_better": higher_is_better,
        "pretrained": pre["probes"][probe]["metrics"][metric],
        "random": {
            "mean": float(np.mean(values)),
            "sd": float(np.std(values, ddof=1)) if len(values) > 1 else math.nan,
            "values": [float(v) for v in values],
        },
        "gain": diff,
        # only a finite interval that excludes 0 counts (NaN bounds compare False)
        "significant": bool(math.isfinite(low) and math.isfinite(high) and (low > 0 or high < 0)),
    }


def compare(
    pretrained_result: Mapping[str, Any],
    random_results: Sequence[Mapping[str, Any]],
    *,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> dict[str, Any]:
    """Pretrained vs random-init encoders, per task, probe and metric.

    The gain is metric(pretrained) − mean over seeds of metric(random seed), sign-flipped
    for lower-is-better metrics (MAE) so that a positive gain always means the pretrained
    encoder is better, with a paired participant-level bootstrap interval: each resample
    scores the pretrained predictions and every seed's predictions on the same participants
    and averages the per-seed differences. We chose this over a difference against the
    seed-averaged prediction because averaging predictions builds an ensemble, which is
    usually better than any single random encoder; that would understate the gain, and the
    point would no longer equal "pretrained − the random-init mean" shown beside it. The interval
    covers test-set sampling; seed-to-seed spread is reported separately as the sd.

    Args:
        pretrained_result: :func:`run_probes` output for the pretrained encoder.
        random_results: :func:`run_probes` outputs for random-init encoders (one per seed),
            on the same test rows.
        n_boot: bootstrap resamples for the paired intervals.
        alpha: 1 - interval coverage.
        seed: resampling seed.

    Returns:
        {"n_random": S, "alpha": alpha, "rows": [{"task", "probe", "metric",
        "higher_is_better", "pretrained": {"value", "low", "high", ...},
        "random": {"mean", "sd", "values"}, "gain": {"value", "low", "high", ...},
        "significant": bool}, ...]}; "significant" is true only when the gain's interval
        is finite and excludes 0.
        Probes missing from any result (e.g. attentive without tokens) are left out.
    """
    if not random_results:
        raise ValueError("compare needs at least one random-init result")
    boot = {"n_boot": n_boot, "alpha": alpha, "seed": seed}
    rows = []
    for task, pre in pretrained_result["tasks"].items():
        rand = [r["tasks"][task] for r in random_results]
        _check_same_test_set(task, pre, rand)
        for probe, scored in pre["probes"].items():
            if not all(probe in r["probes"] for r in rand):
                continue
            for metric in scored["metrics"]:
                rows.append(_comparison_row(task, probe, metric, pre, rand, boot))
    return {"n_random": len(random_results), "alpha": alpha, "rows": rows}


def _fmt(value: float, signed: bool = False) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def _table_cells(row: Mapping[str, Any]) -> list[str]:
    pre, rand, gain = row["pretrained"], row["random"], row["gain"]
    return [
        row["task"],
        row["probe"],
        row["metric"] + ("" if row["higher_is_better"] else " (↓)"),
        f"{_fmt(pre['value'])} [{_fmt(pre['low'])}, {_fmt(pre['high'])}]",
        f"{_fmt(rand['mean'])} ± {_fmt(rand['sd'])}",
        f"{_fmt(gain['value'], True)} [{_fmt(gain['low'], True)}, {_fmt(gain['high'], True)}]"
        + (" *" if row.get("significant") else ""),
    ]


def format_table(comparison: Mapping[str, Any]) -> str:
    """Plain-text table of a :func:`compare` result, one row per task/probe/metric."""
    coverage = round(100 * (1 - comparison["alpha"]))
    header = [
        "task",
        "probe",
        "metric",
        f"pretrained [{coverage}% CI]",
        f"random init mean ± sd (n={comparison['n_random']})",
        f"gain, + = pretrained better [paired {coverage}% CI]",
    ]
    lines = [header, *(_table_cells(row) for row in comparison["rows"])]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = [
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
        for line in lines
    ]
    text.insert(1, "  ".join("-" * w for w in widths))
    text.append(
        "gain = pretrained − random-init mean, or random-init mean − pretrained for (↓) "
        "lower-is-better metrics, so + always means pretrained is better; * the paired "
        "interval excludes 0"
    )
    return "\n".join(text)
