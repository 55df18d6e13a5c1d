"""Probe tasks and their labels: what a task is, and the labelled rows a probe sees.

A :class:`Task` names a label array in the train/test split dicts. :func:`split_arrays`
keeps the rows with a label (NaN or None mark rows a task has no label for), and
:func:`encode_test_labels` codes classification test labels to the column indices of
``np.unique(train labels)``, the column order of the probes' class probabilities.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

__all__ = [
    "Kind",
    "SplitTooSmallError",
    "Task",
    "check_kind",
    "classes_text",
    "encode_test_labels",
    "split_arrays",
]

Kind = Literal["classification", "regression"]


class SplitTooSmallError(ValueError):
    """A task's labelled test rows are too few for a participant-level interval (the
    message says how many are needed); `fmtrain probe` refuses such a task, not the run."""


@dataclass(frozen=True)
class Task:
    """A probing target: ``name`` is the label key in the train/test dicts."""

    name: str
    kind: Kind

    def __post_init__(self) -> None:
        check_kind(self.kind, f"Task {self.name!r}")


def check_kind(kind: str, where: str = "kind") -> None:
    """Raise ValueError unless ``kind`` is "classification" or "regression"; ``where``
    names the caller in the message."""
    if kind not in ("classification", "regression"):
        raise ValueError(f"{where}: kind must be 'classification' or 'regression', got {kind!r}")


def _labelled(y: np.ndarray, kind: Kind) -> np.ndarray:
    """Rows with a label: NaN (and None) mark rows a task has no label for."""
    if kind == "regression" or y.dtype.kind == "f":
        return np.isfinite(y.astype(np.float64))
    if y.dtype.kind == "O":
        return np.array([not (v is None or (isinstance(v, float) and math.isnan(v))) for v in y])
    return np.ones(len(y), dtype=bool)


def split_arrays(split: Mapping[str, Any], name: str, task: Task) -> dict[str, Any]:
    """The split's features, groups and this task's labels, restricted to labelled rows.

    Args:
        split: {"pooled": [N, D], "groups": [N], "tokens": [N, T, D] (optional),
            task.name: [N] labels}.
        name: the split's name ("train" or "test"), for error messages.
        task: whose labels to take.

    Returns:
        {"pooled", "tokens" (None without tokens), "groups", "y"}, labelled rows only.
    """
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


def classes_text(classes: np.ndarray) -> str:
    """How an error names too few classes: 'no class (no row has a label)' or "one class ['a']"."""
    if len(classes) == 0:
        return "no class (no row has a label)"
    return f"{len(classes)} class{'es' if len(classes) > 1 else ''} {classes.tolist()}"


def encode_test_labels(classes: np.ndarray, y_test: np.ndarray, task: Task) -> np.ndarray:
    """Code test labels to their indices in ``classes`` (the sorted train classes).

    Raises:
        ValueError: a test label is not among ``classes``; a probe cannot predict it.
    """
    codes = np.searchsorted(classes, y_test).clip(0, len(classes) - 1)
    unseen = y_test[classes[codes] != y_test]
    if len(unseen):
        raise ValueError(
            f"task {task.name!r}: test labels {sorted(set(unseen.tolist()))} never occur in "
            f"train (classes {classes.tolist()}); a probe cannot predict them. Split by "
            "participant with every class on both sides, or drop those rows."
        )
    return codes
