"""The run report: curves, masks, probe table and an embedding map, as Markdown + PNGs."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["plot_curves", "plot_pca", "write_report"]

_CURVES = (
    ("train/loss", "training loss"),
    ("val/loss", "validation loss"),
    ("collapse/train_batch_effective_rank", "effective rank (pooled targets)"),
    ("collapse/rank_vs_start", "effective rank / its value at step 0 (warn < 0.25)"),
    ("collapse/normalized_feature_std", "std of normalised target features"),
    ("collapse/prediction_target_cosine", "prediction-target cosine"),
    ("train/ema_momentum", "EMA momentum"),
)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(metrics_csv: str | Path, out_png: str | Path) -> str:
    """One panel per logged curve (loss, collapse monitors, EMA) from Lightning's CSV log."""
    with Path(metrics_csv).open() as f:
        rows = list(csv.DictReader(f))
    present = [(k, t) for k, t in _CURVES if any(r.get(k) for r in rows)]
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
        "- effective rank of the evaluation encoder's pooled features on "
        f"{summary['num_samples']} held-out "
        f"samples: pretrained {summary['effective_rank_pretrained']:.1f} vs random init "
        f"{summary['effective_rank_random_init']:.1f} (ratio {summary['rank_ratio']:.2f}; "
        "below 0.25 would mean collapse)",
    ]
    if summary.get("collapse_warnings"):
        lines.append(f"- **collapse warnings during training**: {summary['collapse_warnings']}")
    lines += [
        "",
        "## Curves",
        "",
        "![curves](curves.png)",
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
        "interval is paired. A short CPU run is not expected to beat random init: random "
        "ViT features are a strong baseline.",
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
