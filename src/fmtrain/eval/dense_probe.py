"""Dense (segmentation) probes on frozen token features.

A linear head per token (upsampled to voxels, or mapping to its own patch's voxels: see
:mod:`fmtrain.eval.dense_head`) asks whether an encoder's patch tokens carry
where each structure is, not only what the volume shows. :func:`dense_probe` trains one head
per requested layer and scores it with per-volume Dice; :func:`compare_dense` sets a pretrained
encoder against random-init seeds of the same architecture with paired bootstrap intervals over
the same test volumes, and :func:`format_dense_table` prints the comparison.

Per-volume Dice is the unit of resampling: voxels of one volume are never independent.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from numpy.typing import ArrayLike

from fmtrain.eval.bootstrap import Interval, bootstrap_ci, mean_paired_diff
from fmtrain.eval.dense_head import (
    DenseProbeConfig,
    DenseProbeHead,
    TokenEncoder,
    as_volume_batch,
    predict_dense,
    token_feature_maps,
    train_dense_probe,
)

__all__ = [
    "DenseProbeConfig",
    "DenseProbeHead",
    "compare_dense",
    "dense_probe",
    "dice_per_volume",
    "format_dense_table",
    "predict_dense",
    "token_feature_maps",
    "train_dense_probe",
]


def dice_per_volume(
    pred: ArrayLike | torch.Tensor, target: ArrayLike | torch.Tensor, num_classes: int
) -> np.ndarray:
    """Dice of every class in every volume.

    Args:
        pred: [N, *S] predicted class ids.
        target: [N, *S] true class ids, same shape.
        num_classes: Number of classes C; ids must lie in [0, C).

    Returns:
        float64 [N, C]: 2|P∩T| / (|P| + |T|), NaN where the class is in neither.
    """
    p, t = (np.asarray(a.cpu() if torch.is_tensor(a) else a) for a in (pred, target))
    if p.shape != t.shape or p.ndim < 2:
        raise ValueError(
            f"dice_per_volume: pred has shape {p.shape} but target has shape {t.shape}; "
            "both must be [N, *spatial] and equal"
        )
    n = len(p)
    p, t = p.reshape(n, -1).astype(np.int64), t.reshape(n, -1).astype(np.int64)
    for name, a in (("pred", p), ("target", t)):
        if a.size and (a.min() < 0 or a.max() >= num_classes):
            raise ValueError(
                f"dice_per_volume: {name} holds ids in [{a.min()}, {a.max()}], "
                f"outside [0, {num_classes})"
            )
    # One confusion matrix per volume from a single bincount over (volume, pred, target).
    codes = (np.arange(n)[:, None] * num_classes + p) * num_classes + t
    confusion = np.bincount(codes.ravel(), minlength=n * num_classes**2)
    confusion = confusion.reshape(n, num_classes, num_classes)
    overlap = np.diagonal(confusion, axis1=1, axis2=2)
    total = confusion.sum(axis=2) + confusion.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, 2.0 * overlap / total, math.nan)


def _nanmean(_: np.ndarray, values: np.ndarray) -> float:
    """Mean over volumes of the finite entries; NaN (a degenerate resample) if there are none.

    With [N, K] values (K random seeds), the mean over seeds of each seed's mean.
    """
    values = values.reshape(len(values), -1)
    means = []
    for column in values.T:
        finite = column[np.isfinite(column)]
        if not finite.size:
            return math.nan
        means.append(float(finite.mean()))
    return float(np.mean(means))


def _nan_interval(n_boot: int) -> Interval:
    return Interval(math.nan, math.nan, math.nan, n_boot, n_boot)


def _mean_interval(
    values: np.ndarray, groups: np.ndarray, n_boot: int, alpha: float, seed: int
) -> Interval:
    """Mean over volumes of per-volume values [N] (or [N, seeds]) with a bootstrap interval.

    A class absent from every test volume and prediction has no Dice: NaN, without the
    bootstrap's warning, since an absent lesion class is an expected outcome.
    """
    if not np.isfinite(values.reshape(len(values), -1)).any(axis=0).all():
        return _nan_interval(n_boot)
    return bootstrap_ci(_nanmean, np.zeros(len(values)), values, groups, n_boot, alpha, seed)


def _rows_of(
    per_volume: np.ndarray, class_names: Sequence[str], summaries: dict[str, list[int]]
) -> dict[str, np.ndarray]:
    """Per-volume values of every class and summary, name -> [N] (NaN where undefined)."""
    rows = {name: per_volume[:, i] for i, name in enumerate(class_names)}
    for name, members in summaries.items():
        chosen = per_volume[:, members]
        finite = np.isfinite(chosen)
        with np.errstate(invalid="ignore"):
            rows[name] = np.where(
                finite.any(1), np.nansum(chosen, 1) / np.maximum(finite.sum(1), 1), math.nan
            )
    return rows


def _summaries(
    class_names: Sequence[str], lesion_classes: Sequence[str], background: Sequence[str]
) -> dict[str, list[int]]:
    unknown = [c for c in [*lesion_classes, *background] if c not in class_names]
    if unknown:
        raise ValueError(f"classes {unknown} are not in class_names {list(class_names)}")
    out = {"mean_foreground": [i for i, c in enumerate(class_names) if c not in background]}
    if lesion_classes:
        out["lesions"] = [class_names.index(c) for c in lesion_classes]
    return out


def dense_probe(
    encoder: TokenEncoder,
    train_volumes: ArrayLike | torch.Tensor,
    train_labels: ArrayLike | torch.Tensor,
    test_volumes: ArrayLike | torch.Tensor,
    test_labels: ArrayLike | torch.Tensor,
    class_names: Sequence[str],
    *,
    layers: Sequence[int] = (-1,),
    config: DenseProbeConfig | None = None,
    lesion_classes: Sequence[str] = (),
    background_classes: Sequence[str] = ("background",),
    groups: ArrayLike | None = None,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> dict[str, Any]:
    """Train a dense probe per layer on frozen features and score per-volume Dice on test.

    Args:
        encoder: Frozen encoder with ``grid`` and ``forward_intermediates``.
        train_volumes, test_volumes: [N, C, *input_size] or [N, *input_size].
        train_labels, test_labels: [N, *input_size] class ids (index into ``class_names``).
        class_names: Name of every class id.
        layers: Encoder layers to probe, one head each.
        config: Head training settings.
        lesion_classes: Classes averaged into the ``"lesions"`` summary.
        background_classes: Classes left out of the ``"mean_foreground"`` summary.
        groups: Participant id per test volume (volumes of one participant are resampled
            together); default: every volume its own participant.
        n_boot, alpha, seed: Bootstrap resamples, 1 - coverage, and resampling seed.

    Returns:
        JSON-serialisable dict: ``class_names``, ``summaries`` (name -> member classes),
        ``groups``, and ``layers``: str(layer) -> {``per_volume``: [N][C] Dice (NaN where the
        class is absent from prediction and truth), ``scores``: name -> interval dict
        (``value``, ``low``, ``high``, ...)}, for every class and summary; summaries average
        a volume's defined Dice over their classes, then over volumes.
    """
    grid = encoder.grid
    num_classes = len(class_names)
    labels = {}
    for name, vols, labs in (
        ("train", train_volumes, train_labels),
        ("test", test_volumes, test_labels),
    ):
        x = as_volume_batch(vols, grid, f"{name}_volumes")
        y = torch.as_tensor(np.asarray(labs) if not torch.is_tensor(labs) else labs).long()
        if tuple(y.shape) != (len(x), *grid.input_size):
            raise ValueError(
                f"{name}_labels has shape {tuple(y.shape)} but {name}_volumes has shape "
                f"{tuple(x.shape)}; expected labels [{len(x)}, "
                f"{', '.join(map(str, grid.input_size))}], one label map per volume"
            )
        labels[name] = y
    summaries = _summaries(class_names, lesion_classes, background_classes)
    group_ids = np.arange(len(labels["test"])) if groups is None else np.asarray(groups)
    train_maps = token_feature_maps(encoder, train_volumes, layers=layers)
    test_maps = token_feature_maps(encoder, test_volumes, layers=layers)
    result: dict[str, Any] = {
        "head": (config or DenseProbeConfig()).head,
        "class_names": list(class_names),
        "summaries": {k: [class_names[i] for i in v] for k, v in summaries.items()},
        "groups": group_ids.tolist(),
        "layers": {},
    }
    for layer, train_f, test_f in zip(layers, train_maps, test_maps, strict=True):
        head = train_dense_probe(train_f, labels["train"], num_classes, config)
        per_volume = dice_per_volume(predict_dense(head, test_f), labels["test"], num_classes)
        scores = {
            name: _mean_interval(values, group_ids, n_boot, alpha, seed).to_dict()
            for name, values in _rows_of(per_volume, class_names, summaries).items()
        }
        result["layers"][str(layer)] = {"per_volume": per_volume.tolist(), "scores": scores}
    return result


def _check_comparable(pretrained: dict[str, Any], randoms: Sequence[dict[str, Any]]) -> None:
    if not randoms:
        raise ValueError("compare_dense: randoms is empty; pass dense_probe results of >= 1 seed")
    for i, other in enumerate(randoms):
        for key in ("head", "class_names", "summaries", "groups"):
            if other.get(key) != pretrained.get(key):
                raise ValueError(
                    f"compare_dense: randoms[{i}][{key!r}] = {other[key]} differs from the "
                    f"pretrained result's {pretrained[key]}; score every encoder on the same "
                    "test volumes and classes"
                )
        missing = sorted(set(pretrained["layers"]) - set(other["layers"]))
        if missing:
            raise ValueError(
                f"compare_dense: randoms[{i}] has no layers {missing}; probe the same layers "
                f"(pretrained has {sorted(pretrained['layers'])})"
            )


def compare_dense(
    pretrained: dict[str, Any],
    randoms: Sequence[dict[str, Any]],
    *,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> dict[str, Any]:
    """Pretrained against random-init encoders, per layer and class, on the same test volumes.

    Args:
        pretrained: A :func:`dense_probe` result.
        randoms: :func:`dense_probe` results of the same architecture at random init, one per
            seed, on the same test volumes, classes and layers.
        n_boot, alpha, seed: Bootstrap resamples, 1 - coverage, and resampling seed.

    Returns:
        JSON-serialisable dict: ``alpha``, ``n_random`` and ``layers``: str(layer) -> list of
        rows, one per class then per summary, each with ``name``, ``pretrained`` and
        ``random`` (mean Dice over volumes; random averaged over seeds) and ``difference``
        (pretrained - random, paired bootstrap over the same resampled volumes) as interval
        dicts, and ``excludes_zero`` (the difference's interval lies wholly above or below 0).
    """
    _check_comparable(pretrained, randoms)
    names = pretrained["class_names"]
    summaries = {k: [names.index(c) for c in v] for k, v in pretrained["summaries"].items()}
    groups = np.asarray(pretrained["groups"])
    layers: dict[str, list[dict[str, Any]]] = {}
    for layer, scored in pretrained["layers"].items():
        rows_a = _rows_of(np.asarray(scored["per_volume"], float), names, summaries)
        rows_b = [
            _rows_of(np.asarray(r["layers"][layer]["per_volume"], float), names, summaries)
            for r in randoms
        ]
        table = []
        for name, a in rows_a.items():
            b = np.stack([rows[name] for rows in rows_b], axis=1)  # [N, seeds]
            pre = _mean_interval(a, groups, n_boot, alpha, seed)
            rnd = _mean_interval(b, groups, n_boot, alpha, seed)
            if math.isnan(pre.point) or math.isnan(rnd.point):
                diff = _nan_interval(n_boot)
            else:
                diff = mean_paired_diff(
                    _nanmean, np.zeros(len(a)), a, list(b.T), groups, n_boot, alpha, seed
                )
            table.append(
                {
                    "name": name,
                    "pretrained": pre.to_dict(),
                    "random": rnd.to_dict(),
                    "difference": diff.to_dict(),
                    "excludes_zero": bool(diff.low > 0 or diff.high < 0),
                }
            )
        layers[layer] = table
    return {
        "alpha": alpha,
        "n_random": len(randoms),
        "head": pretrained.get("head", "upsampled"),
        "layers": layers,
    }


def _fmt(interval: dict[str, Any], signed: bool = False) -> str:
    value, low, high = interval["value"], interval["low"], interval["high"]
    if not math.isfinite(value):
        return "n/a"
    spec = "+.3f" if signed else ".3f"
    bounds = f" [{low:{spec}}, {high:{spec}}]" if math.isfinite(low) else " [n/a]"
    return f"{value:{spec}}{bounds}"


def format_dense_table(comparison: dict[str, Any]) -> str:
    """Markdown table per layer: class | pretrained Dice [CI] | random Dice [CI] | difference.

    A ``*`` marks differences whose interval excludes 0.
    """
    coverage = f"{100 * (1 - comparison['alpha']):g}% CI"
    lines = []
    for layer, rows in comparison["layers"].items():
        lines += [
            f"Layer {layer}, {comparison.get('head', 'upsampled')} head "
            f"(random init: {comparison['n_random']} seed(s))",
            "",
            f"| class | pretrained Dice [{coverage}] | random Dice [{coverage}] "
            f"| difference [{coverage}] |",
            "|---|---|---|---|",
        ]
        for row in rows:
            mark = " *" if row["excludes_zero"] else ""
            lines.append(
                f"| {row['name']} | {_fmt(row['pretrained'])} | {_fmt(row['random'])} "
                f"| {_fmt(row['difference'], signed=True)}{mark} |"
            )
        lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"
