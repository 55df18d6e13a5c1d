"""Participant-level (cluster) bootstrap confidence intervals.

Rows of one participant are not independent: both eyes, repeated visits, the B-scans of
one volume or the windows of one ECG share anatomy, device and noise. Resampling rows
treats them as independent and gives intervals too narrow by up to sqrt(rows per
participant). Every interval here therefore resamples participants (groups) with
replacement and keeps all rows of a drawn participant together.

Resamples on which a metric is undefined (AUROC with one class only, R² of a constant
target) are skipped and counted; when more than half are, the bounds are NaN with a
warning, because the surviving resamples no longer describe the test set.

Before any of that, :func:`too_few_for_interval` refuses test sets too small for an interval
at all. The rule: fewer than α/2 of the participant resamples may be degenerate, so that the
dropped resamples are fewer than one tail of the interval holds. A resample lacks a class
held by n of G participants with probability ((G - n) / G)^G < e^-n, so with C classes
⌈ln(2C/α)⌉ participants of each class always suffice (5 for two or three classes at 95%);
a regression resample draws one participant only with probability G^(1 - G), which needs
G >= 4 at 95%. A one-volume test split fails both: every resample is that volume, and its
zero-width "interval" would call any difference significant.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

MetricFn = Callable[[np.ndarray, np.ndarray], float]


@dataclass(frozen=True)
class Interval:
    """A point estimate with a percentile bootstrap interval.

    Unpacks as ``point, low, high``; ``n_degenerate`` of ``n_boot`` resamples were skipped
    because the metric was undefined on them.
    """

    point: float
    low: float
    high: float
    n_boot: int
    n_degenerate: int

    def __iter__(self) -> Iterator[float]:
        return iter((self.point, self.low, self.high))

    def to_dict(self) -> dict[str, float | int]:
        """Plain, JSON-serialisable form (NaN stays a float NaN)."""
        return {
            "value": self.point,
            "low": self.low,
            "high": self.high,
            "n_boot": self.n_boot,
            "n_degenerate": self.n_degenerate,
        }


class GroupIndex:
    """Row indices of each group, laid out so that a resample of groups maps to rows fast."""

    def __init__(self, groups: ArrayLike) -> None:
        groups = np.asarray(groups)
        if groups.ndim != 1 or groups.size == 0:
            raise ValueError(
                f"groups must be a non-empty 1D array of participant ids, got shape {groups.shape}"
            )
        _, inverse = np.unique(groups, return_inverse=True)
        self.order = np.argsort(inverse, kind="stable")
        self.counts = np.bincount(inverse)
        self.starts = np.concatenate([[0], np.cumsum(self.counts)[:-1]])

    @property
    def num_groups(self) -> int:
        return len(self.counts)

    def rows(self, chosen: np.ndarray) -> np.ndarray:
        """All row indices of the chosen groups (repeats allowed), group after group."""
        lengths = self.counts[chosen]
        block_offsets = np.cumsum(lengths) - lengths
        shift = np.repeat(self.starts[chosen] - block_offsets, lengths)
        return self.order[shift + np.arange(lengths.sum())]


def _safe_metric(metric_fn: MetricFn, y_true: np.ndarray, pred: np.ndarray) -> float:
    """The metric, or NaN where it is undefined (sklearn-style metrics raise ValueError)."""
    try:
        value = float(metric_fn(y_true, pred))
    except ValueError:
        return math.nan
    return value if math.isfinite(value) else math.nan


def _check_lengths(y_true: np.ndarray, preds: Sequence[np.ndarray], groups: np.ndarray) -> None:
    for i, pred in enumerate(preds):
        if len(pred) != len(y_true):
            raise ValueError(
                f"prediction {i} has {len(pred)} rows but y_true has {len(y_true)}; "
                "pass predictions for exactly the rows of y_true"
            )
    if len(groups) != len(y_true):
        raise ValueError(
            f"groups has {len(groups)} entries but y_true has {len(y_true)}; "
            "pass one participant id per row"
        )


def bootstrap_distribution(
    metric_fn: MetricFn,
    y_true: ArrayLike,
    preds: Sequence[ArrayLike],
    groups: ArrayLike,
    n_boot: int = 1000,
    seed: int = 0,
) -> np.ndarray:
    """Metric values of every prediction on the same group resamples.

    Args:
        metric_fn: ``metric_fn(y_true, pred) -> float``; may raise ValueError or return NaN
            where undefined.
        y_true: targets, one per row.
        preds: predictions or scores, each with one entry (or row) per row of y_true.
        groups: participant id of each row; groups are drawn with replacement.
        n_boot: number of resamples.
        seed: seed of the resampling; equal seeds and groups give equal resamples, so
            separate calls stay paired.

    Returns:
        [n_boot, len(preds)] float array, NaN where the metric was undefined.
    """
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    y = np.asarray(y_true)
    arrays = [np.asarray(p) for p in preds]
    group_ids = np.asarray(groups)
    _check_lengths(y, arrays, group_ids)
    index = GroupIndex(group_ids)
    rng = np.random.default_rng(seed)
    out = np.full((n_boot, len(arrays)), math.nan)
    for b in range(n_boot):
        rows = index.rows(rng.integers(0, index.num_groups, index.num_groups))
        y_b = y[rows]
        for j, pred in enumerate(arrays):
            out[b, j] = _safe_metric(metric_fn, y_b, pred[rows])
    return out


def _interval(point: float, samples: np.ndarray, alpha: float, what: str) -> Interval:
    """Percentile interval of the finite samples, NaN bounds if most were degenerate."""
    n_boot = len(samples)
    valid = samples[np.isfinite(samples)]
    n_degenerate = n_boot - len(valid)
    if not math.isfinite(point):
        warnings.warn(
            f"{what}: the metric is undefined on the full test set (e.g. only one class "
            "present); returning NaN for the value and its interval",
            RuntimeWarning,
            stacklevel=3,
        )
        return Interval(math.nan, math.nan, math.nan, n_boot, n_degenerate)
    if n_degenerate > n_boot / 2:
        warnings.warn(
            f"{what}: {n_degenerate} of {n_boot} bootstrap resamples were degenerate (metric "
            "undefined, e.g. one class only for AUROC); returning NaN bounds. Use a test "
            "split with more participants per class, or a metric defined on small samples.",
            RuntimeWarning,
            stacklevel=3,
        )
        return Interval(point, math.nan, math.nan, n_boot, n_degenerate)
    low, high = np.quantile(valid, [alpha / 2, 1 - alpha / 2])
    return Interval(point, float(low), float(high), n_boot, n_degenerate)


def participants_per_class_needed(num_classes: int, alpha: float = 0.05) -> int:
    """Participants of each class that keep the resamples lacking a class under alpha / 2,
    whatever the split's size: ⌈ln(2 C / alpha)⌉ (a class of n participants is missed by a
    resample with probability below e^-n)."""
    return math.ceil(math.log(2 * num_classes / alpha))


def participants_needed(alpha: float = 0.05) -> int:
    """The fewest participants G whose single-participant resamples, G^(1 - G), stay under
    alpha / 2 (4 at alpha = 0.05)."""
    g = 2
    while g ** (1 - g) >= alpha / 2:
        g += 1
    return g


def too_few_for_interval(
    kind: str, y: ArrayLike, groups: ArrayLike, alpha: float = 0.05
) -> str | None:
    """Why a test set is too small for a participant-level bootstrap interval, or None.

    Classification: the share of resamples that lack one of the classes present,
    sum_c ((G - n_c) / G)^G with n_c the participants holding class c, must stay under
    alpha / 2, and at least two classes must be present. Regression: the share of
    single-participant resamples, G^(1 - G), must. See the module docstring.

    Args:
        kind: "classification" or "regression".
        y: the labelled test rows' labels.
        groups: their participant ids.
        alpha: 1 - interval coverage.
    """
    _check_alpha(alpha)
    y, groups = np.asarray(y), np.asarray(groups)
    num_groups = len(np.unique(groups))
    coverage = f"{100 * (1 - alpha):g}%"
    if kind != "classification":
        needed = participants_needed(alpha)
        if num_groups >= needed:
            return None
        return (
            f"the test split has {num_groups} labelled participant(s); a {coverage} "
            f"participant-level bootstrap interval needs at least {needed} (with G "
            f"participants a share G^(1-G) of the resamples hold one participant only, and "
            f"it must stay under alpha/2 = {alpha / 2:g})"
        )
    holders = {c: len(np.unique(groups[y == c])) for c in np.unique(y).tolist()}
    needed = participants_per_class_needed(max(len(holders), 2), alpha)
    counts = ", ".join(f"{c}: {n}" for c, n in holders.items()) or "none"
    if len(holders) < 2:
        return (
            f"the test split's {num_groups} labelled participant(s) hold one class or none "
            f"({counts}); an interval for AUROC or balanced accuracy needs at least two "
            f"classes, {needed} participants of each"
        )
    missing = sum(((num_groups - n) / num_groups) ** num_groups for n in holders.values())
    if missing < alpha / 2:
        return None
    return (
        f"the test split's {num_groups} labelled participants hold {counts}; "
        f"{missing:.1%} of participant-level bootstrap resamples would lack a class, more "
        f"than the alpha/2 = {alpha / 2:g} a {coverage} interval can drop. Add test "
        f"participants: {needed} of each class always suffice (⌈ln(2·C/alpha)⌉ with C = "
        f"{len(holders)})"
    )


def _check_alpha(alpha: float) -> None:
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha} (0.05 gives a 95% interval)")


def bootstrap_ci(
    metric_fn: MetricFn,
    y_true: ArrayLike,
    y_pred_or_score: ArrayLike,
    groups: ArrayLike,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> Interval:
    """Metric on the full data with a participant-level percentile bootstrap interval.

    Args:
        metric_fn: ``metric_fn(y_true, pred) -> float``.
        y_true: targets, one per row.
        y_pred_or_score: predictions, scores or class probabilities, one row per target.
        groups: participant id of each row; participants, not rows, are resampled.
        n_boot: number of resamples.
        alpha: 1 - coverage; 0.05 gives a 95% interval.
        seed: resampling seed.

    Returns:
        An :class:`Interval` that unpacks as ``(point, low, high)``.
    """
    _check_alpha(alpha)
    point = _safe_metric(metric_fn, np.asarray(y_true), np.asarray(y_pred_or_score))
    samples = bootstrap_distribution(metric_fn, y_true, [y_pred_or_score], groups, n_boot, seed)
    return _interval(point, samples[:, 0], alpha, "bootstrap_ci")


def mean_paired_diff(
    metric_fn: MetricFn,
    y_true: ArrayLike,
    pred_a: ArrayLike,
    preds_b: Sequence[ArrayLike],
    groups: ArrayLike,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> Interval:
    """metric(a) - mean_i metric(b_i), each resample scoring a and every b_i on the same rows.

    Pairing removes the test-set variation that a and b share (hard participants are hard
    for both), so the interval measures only how the two differ. Averaging the metric over
    several b (e.g. random-init seeds) inside each resample compares against the expected
    baseline rather than one seed.

    Returns:
        An :class:`Interval` that unpacks as ``(diff, low, high)``.
    """
    _check_alpha(alpha)
    if len(preds_b) == 0:
        raise ValueError("preds_b is empty; pass at least one prediction to compare against")
    y = np.asarray(y_true)
    values = [_safe_metric(metric_fn, y, np.asarray(p)) for p in [pred_a, *preds_b]]
    point = values[0] - float(np.mean(values[1:]))
    samples = bootstrap_distribution(metric_fn, y, [pred_a, *preds_b], groups, n_boot, seed)
    # a resample where any predictor is undefined has no difference: NaN propagates
    diffs = samples[:, 0] - samples[:, 1:].mean(axis=1)
    return _interval(point, diffs, alpha, "paired_bootstrap_diff")


def paired_bootstrap_diff(
    metric_fn: MetricFn,
    y_true: ArrayLike,
    pred_a: ArrayLike,
    pred_b: ArrayLike,
    groups: ArrayLike,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> Interval:
    """metric(a) - metric(b) with a paired participant-level bootstrap interval.

    Both predictions are scored on the same resampled participants, so errors they share
    cancel and the interval is that of the difference, not of either metric.

    Returns:
        An :class:`Interval` that unpacks as ``(diff, low, high)``.
    """
    return mean_paired_diff(metric_fn, y_true, pred_a, [pred_b], groups, n_boot, alpha, seed)
