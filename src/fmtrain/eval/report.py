"""The run report: curves, masks, probe table and an embedding map, as Markdown + PNGs.

Two effective-rank figures appear, and they measure different things on purpose:

- the training curve (``collapse/train_batch_effective_rank``) is the collapse monitor's: the
  features the method hands it (V-JEPA: the EMA target encoder's tokens), mean-pooled over
  ONE augmented training batch of B samples, every few steps while training. It can never
  exceed B - 1 (8 samples: at most 7), and is only compared with itself at step 0;
- the summary figure is the evaluation encoder's (V-JEPA: the same EMA target encoder, in
  eval mode) mean-pooled tokens of ALL N held-out validation samples after training, at most
  min(N - 1, D), set against a random-init encoder on the same samples. The validation curve
  (``val/effective_rank``) is the same measurement at each validation.

The effective rank grows with the number of samples it is computed on, so the batch curve
sits below the summary figure by construction, not because the encoder changed.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["plot_curves", "plot_pca", "write_report"]

_CURVES = (
    ("train/loss", "training loss"),
    ("val/loss", "validation loss"),
    ("collapse/train_batch_effective_rank", "effective rank, one training batch (monitor)"),
    ("val/effective_rank", "effective rank, validation samples (eval mode)"),
    ("collapse/rank_vs_start", "batch effective rank / its value at step 0 (warn < 0.25)"),
    ("collapse/normalized_feature_std", "std of normalised target features"),
    ("collapse/prediction_target_cosine", "prediction-target cosine"),
    ("train/ema_momentum", "EMA momentum"),
)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(metrics_csv: str | Path, out_png: str | Path, batch_size: int | None = None) -> str:
    """One panel per logged curve (loss, collapse monitors, EMA) from Lightning's CSV log.

    Args:
        metrics_csv: Lightning's CSVLogger ``metrics.csv``.
        out_png: the picture to write.
        batch_size: the training batch size; the batch effective-rank panel then says its
            ceiling (B - 1).
    """
    with Path(metrics_csv).open() as f:
        rows = list(csv.DictReader(f))
    titles = dict(_CURVES)
    if batch_size:
        titles["collapse/train_batch_effective_rank"] = (
            f"effective rank, one training batch of {batch_size} (at most {batch_size - 1})"
        )
    present = [(k, titles[k]) for k, _ in _CURVES if any(r.get(k) for r in rows)]
    plt = _pyplot()
    cols = min(3, len(present))
    rows_ = -(-len(present) // cols)
    fig, axes = plt.subplots(rows_, cols, figsize=(4 * cols, 2.8 * rows_), squeeze=False)
    for ax in axes.flat[len(present) :]:
        ax.axis("off")
    for ax, (key, title) in zip(axes.flat, present, strict=False):
        points = [(int(r["step"]), float(r[key])) for r in rows if r.get(key)]
        steps, values = zip(*points, strict=True)
        ax.plot(steps, values, lw=1, marker="o" if len(points) < 30 else None, ms=3)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return str(out_png)


def _pca_2d(x: np.ndarray) -> np.ndarray:
    x = x - x.mean(axis=0)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    return x @ vt[:2].T


def plot_pca(panels: dict[str, tuple[np.ndarray, list[str]]], out_png: str | Path) -> str:
    """Side-by-side 2D PCA maps of embeddings [N, D], points coloured by their label."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.8), squeeze=False)
    for ax, (title, (x, labels)) in zip(axes[0], panels.items(), strict=True):
        xy = _pca_2d(x.astype(np.float64))
        for label in sorted(set(labels)):
            rows = [i for i, lab in enumerate(labels) if lab == label]
            ax.scatter(xy[rows, 0], xy[rows, 1], s=14, label=label, alpha=0.8)
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0][-1].legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return str(out_png)


def _in_batches(summary: dict[str, Any]) -> str:
    value, batch = (
        summary.get("effective_rank_pretrained_in_batches"),
        summary.get("monitor_batch_size"),
    )
    if value is None or not batch:
        return ""
    return (
        f" The same encoder on the same samples taken {batch} at a time (the training batch "
        f"size) scores {value:.1f}: the gap to the training curve is the number of samples, "
        "not another encoder."
    )


def _rank_curve_note(summary: dict[str, Any]) -> str:
    batch = summary.get("monitor_batch_size")
    size = f"{batch} samples, so it is at most {batch - 1}" if batch else "B samples, at most B − 1"
    return (
        "The *training-batch* effective-rank panel is the collapse monitor's, drawn for "
        "methods that hand it features: those features (for V-JEPA the EMA target "
        "encoder's tokens, during training), "
        f"mean-pooled over one augmented training batch of {size}. It is compared only with "
        "its own value at step 0 (the ratio panel). The *validation* panel, where present, "
        "is the summary's measurement (evaluation encoder, eval mode, the validation "
        "samples) at each validation. Effective rank grows with the number of samples, so "
        "the batch figure sits below the summary figure by construction."
    )


def write_report(
    out_dir: str | Path, summary: dict[str, Any], probe_table: str, colour_label: str = "pathology"
) -> str:
    """report.md beside curves.png, masks.png, reconstruction.png (when drawn) and pca.png
    (paths relative to out_dir)."""
    out = Path(out_dir)
    lines = [
        "# fmtrain run report",
        "",
        f"- recipe: `{summary['recipe']}`",
        f"- steps: {summary['steps']} in {summary['fit_seconds_including_data']:.0f} s "
        "(data generation and preparation included)",
        f"- loss: {summary['loss_start_mean']:.4f} (first 10% of steps) -> "
        f"{summary['loss_end_mean']:.4f} (last 10%)",
        f"- effective rank after training: {summary['effective_rank_pretrained']:.1f} for "
        "the evaluation encoder (the encoder probes and `fmtrain embed` use; for V-JEPA the "
        f"EMA target encoder) vs {summary['effective_rank_random_init']:.1f} for a "
        f"random-init one (ratio {summary['rank_ratio']:.2f}; below 0.25 would mean "
        f"collapse), on the mean-pooled tokens of the same {summary['num_samples']} held-out "
        "validation samples in eval mode. It can be at most "
        f"{summary['num_samples'] - 1} here (samples − 1), and is not comparable with the "
        "training-batch curve below (see there)." + _in_batches(summary),
    ]
    if summary.get("collapse_warnings"):
        lines.append(f"- **collapse warnings during training**: {summary['collapse_warnings']}")
    lines += [
        "",
        "## Curves",
        "",
        "![curves](curves.png)",
        "",
        _rank_curve_note(summary),
        "",
        "## Masks over a real held-out sample",
        "",
        "![masks](masks.png)",
        "",
    ]
    if (out / "reconstruction.png").exists():
        lines += [
            "## Reconstruction of held-out windows, and their spectra",
            "",
            "![reconstruction](reconstruction.png)",
            "",
        ]
    lines += [
        "## Frozen-feature probes: pretrained vs randomly initialised encoders",
        "",
        "Probes are fitted on the training split and scored on the test split (participants "
        "disjoint); intervals are participant-level bootstrap 95% intervals, the gain "
        "interval is paired. A gain is an improvement: + means the pretrained encoder is "
        "better, for lower-is-better metrics such as MAE (↓) too. A short CPU run is not "
        "expected to beat random init: random ViT features are a strong baseline.",
        "",
        "```",
        probe_table.rstrip(),
        "```",
        "",
        f"## Embeddings of the test split (PCA), coloured by {colour_label}",
        "",
        "![pca](pca.png)",
        "",
    ]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return str(path)
