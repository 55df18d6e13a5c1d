"""Pictures of a training run, where its user looks: written beside the run's logs and sent to
every logger that shows images (TensorBoard, Weights & Biases).

- ``masks.png``: the first training batch's masks over its input (context green, target red),
  as `fmtrain check` draws them: the masks the run really trains on, not the recipe's intent.
- ``curves.png``: at the end of fit, every logged curve (loss, collapse monitors, EMA), drawn
  from the CSV log.

Drawing never stops a run: a picture that fails is a logged warning.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from lightning.pytorch import Callback
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger, WandbLogger

from fmtrain.core.storage import is_remote
from fmtrain.eval.mask_pictures import save_mask_pictures
from fmtrain.eval.report import plot_curves

__all__ = ["RunPictures", "send_picture"]

log = logging.getLogger("fmtrain")


def send_picture(trainer: Any, key: str, png: str, step: int) -> None:
    """Log the PNG file `png` under `key` to every logger of `trainer` that shows images."""
    from PIL import Image

    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            logger.log_image(key=key, images=[png], step=step)
        elif isinstance(logger, TensorBoardLogger):
            with Image.open(png) as image:
                pixels = np.asarray(image.convert("RGB"))
            logger.experiment.add_image(key, pixels, step, dataformats="HWC")


class RunPictures(Callback):
    """Draw the run's mask and curve pictures and log them (recipe key ``pictures``, e.g.
    ``pictures: {masks: false}``).

    Args:
        masks: draw the first training batch's masks (methods whose batches carry masks).
        curves: draw the logged curves when fit ends (needs a CSV logger among the loggers).
    """

    def __init__(self, masks: bool = True, curves: bool = True) -> None:
        self.masks = masks
        self.curves = curves
        self._masks_drawn = False

    def _folder(self, trainer: Any) -> str:
        # the first logger's folder, read directly: `trainer.log_dir` broadcasts from rank 0,
        # a collective that the other ranks (which draw nothing) would never join
        folder = getattr(trainer.loggers[0], "log_dir", None) if trainer.loggers else None
        if folder is None or is_remote(folder):  # the loggers get the picture; keep a copy here
            folder = tempfile.mkdtemp(prefix="fmtrain-pictures-")
        os.makedirs(folder, exist_ok=True)
        return folder

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # type: ignore[no-untyped-def]
        if not self.masks or self._masks_drawn or not trainer.is_global_zero:
            return
        self._masks_drawn = True  # the first batch only, drawn or not
        grid = getattr(pl_module, "grid", None)
        if not getattr(batch, "contexts", None) or grid is None:
            return
        try:
            (png,) = save_mask_pictures(batch, grid, self._folder(trainer))
            send_picture(trainer, "pictures/masks", png, trainer.global_step)
        except Exception as err:  # a picture is never worth a run
            log.warning("the mask picture was not drawn: %s: %s", type(err).__name__, err)

    def on_train_end(self, trainer, pl_module) -> None:  # type: ignore[no-untyped-def]
        if not self.curves or not trainer.is_global_zero:
            return
        csv = next((lg for lg in trainer.loggers if isinstance(lg, CSVLogger)), None)
        if csv is None:
            return
        try:
            csv.save()  # flush what is still buffered
            metrics = Path(csv.experiment.metrics_file_path)
            if not metrics.is_file():
                return
            batch_size = getattr(trainer.datamodule, "batch_size", None)
            png = plot_curves(metrics, Path(self._folder(trainer)) / "curves.png", batch_size)
            send_picture(trainer, "pictures/curves", png, trainer.global_step)
        except Exception as err:
            log.warning("the curves picture was not drawn: %s: %s", type(err).__name__, err)
