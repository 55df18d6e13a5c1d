"""Mask pictures over a real input: context in green, target in red, per mask family.

3D grids show the middle slice along the first axis (a B-scan for OCT) and the en-face
view (mean over the second axis) with the mask of the middle token row; 2D grids show the
image, or, when each patch is one row high (a signal cut per channel), one trace per
channel; 1D grids show the trace; traces have their tokens' spans coloured.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

__all__ = ["save_mask_pictures"]

_CONTEXT, _TARGET = (0.1, 0.8, 0.2), (0.9, 0.15, 0.1)


def _token_mask(grid: tuple[int, ...], ctx: torch.Tensor, tgt: torch.Tensor) -> np.ndarray:
    """0 = dropped, 1 = context, 2 = target, on the token grid."""
    mask = np.zeros(int(np.prod(grid)), dtype=np.int8)
    mask[ctx.cpu().numpy()] = 1
    mask[tgt.cpu().numpy()] = 2
    return mask.reshape(grid)


def _overlay(ax, image: np.ndarray, tokens: np.ndarray, title: str) -> None:
    ax.imshow(image, cmap="gray", aspect="auto", interpolation="nearest")
    reps = (image.shape[0] // tokens.shape[0], image.shape[1] // tokens.shape[1])
    big = np.kron(tokens, np.ones(reps, dtype=np.int8))
    rgba = np.zeros((*big.shape, 4))
    rgba[big == 1] = (*_CONTEXT, 0.35)
    rgba[big == 2] = (*_TARGET, 0.45)
    ax.imshow(rgba, aspect="auto", interpolation="nearest")
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])


def _traces(ax, rows: np.ndarray, tokens: np.ndarray, title: str) -> None:
    """One trace per row (a signal's channels, stacked), its tokens' spans coloured."""
    width = rows.shape[1] // tokens.shape[1]
    for r, (trace, kinds) in enumerate(zip(rows, tokens, strict=True)):
        span = float(np.ptp(trace)) or 1.0
        base = -2.5 * r
        ax.plot(base + (trace - trace.mean()) / span * 2, lw=0.6, color="black")
        for t, kind in enumerate(kinds):
            if kind:
                color = _CONTEXT if kind == 1 else _TARGET
                ax.fill_between([t * width, (t + 1) * width], base - 1.1, base + 1.1,
                                color=color, alpha=0.3, lw=0)  # fmt: skip
    ax.set_yticks([-2.5 * r for r in range(len(rows))], [f"row {r}" for r in range(len(rows))])
    ax.set_title(title, fontsize=9)


def save_mask_pictures(batch, grid, out_dir: str | Path, sample: int = 0) -> list[str]:
    """Write ``masks.png`` for one sample of `batch`; returns the paths written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    volume = batch.inputs[sample, 0].detach().float().cpu().numpy()
    families = len(batch.contexts)
    shape = tuple(grid.shape)
    cols = 2 if len(shape) == 3 else 1
    wide = 12 if len(shape) < 3 else 5 * cols  # signals are long and flat
    fig, axes = plt.subplots(families, cols, figsize=(wide, 3 * families), squeeze=False)
    for f, (ctx, tgt) in enumerate(zip(batch.contexts, batch.targets, strict=True)):
        tokens = _token_mask(shape, ctx[sample], tgt[sample])
        ratio = f"context {ctx.shape[1]}, target {tgt.shape[1]} of {tokens.size} tokens"
        if len(shape) == 3:
            mid = volume.shape[0] // 2
            token_z = mid // (volume.shape[0] // shape[0])
            _overlay(axes[f, 0], volume[mid], tokens[token_z],
                     f"family {f}: slice {mid} of axis 0 — {ratio}")  # fmt: skip
            _overlay(axes[f, 1], volume.mean(axis=1), tokens[:, shape[1] // 2],
                     f"family {f}: en face (mean over axis 1), middle token row")  # fmt: skip
        elif len(shape) == 2 and grid.patch_size[0] == 1:  # channel rows of a signal
            _traces(axes[f, 0], volume, tokens, f"family {f}: {ratio}")
        elif len(shape) == 2:
            _overlay(axes[f, 0], volume, tokens, f"family {f}: {ratio}")
        else:
            _traces(axes[f, 0], volume[None], tokens[None], f"family {f}: {ratio}")
    fig.suptitle(
        "masks over a real input: green = context, red = target, unmarked = neither "
        "(cut so that every sample of the batch has one length)",
        fontsize=10,
    )
    fig.tight_layout()
    path = Path(out_dir) / "masks.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [str(path)]
