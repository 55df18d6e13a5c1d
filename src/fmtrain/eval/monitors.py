"""Collapse monitors for joint-embedding training, cheap enough to run every N steps.

A falling JEPA loss can mean the encoder learned, or that target features collapsed to a
few directions the predictor can always hit. Three views of the same question:

- effective rank of pooled target features (`fmtrain.eval.rank`);
- per-dimension standard deviation of L2-normalised target features: about 1/sqrt(D) when
  features spread over the sphere, near 0 when they collapse to a point (as in SimSiam's
  collapse analysis);
- cosine similarity between predictions and targets at target positions: near 1 together
  with a vanishing spread means the task became trivial, not solved.
"""

from __future__ import annotations

import logging
import math

import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback

from fmtrain.eval.rank import effective_rank
from fmtrain.nn.heads import mean_pool

log = logging.getLogger("fmtrain")

__all__ = [
    "CollapseMonitor",
    "CollapseVerdict",
    "collapse_monitors",
    "collapse_reasons",
    "normalized_feature_std",
    "prediction_cosine",
]

# Thresholds, relative to what isotropic features give, below which the log warns.
_STD_FRACTION = 0.1  # per-dimension std under 10% of 1/sqrt(D)
# effective rank under 2% of the largest a batch can show, min(width, B - 1), and at least
# 2; of the width alone, a batch of 8 wide CNN features (256: floor 5.1 of at most 7) was
# called collapsed while its validation rank stayed at 38
_RANK_FRACTION = 0.02

FIXES = (
    "mix long-range blocks into data.masks (V-JEPA's 2 blocks at 70%), start the EMA higher "
    "(model.ema.momentum, e.g. 0.998), lower model.optimizer.lr or lengthen warmup_steps"
)
# for methods without an EMA target (MAE, MiM, masked signal modeling)
FIXES_WITHOUT_EMA = (
    "lower model.optimizer.lr or lengthen warmup_steps, and check that the inputs vary "
    "(normalisation of data.init_args, `fmtrain check`'s value table)"
)


@torch.no_grad()
def normalized_feature_std(features: torch.Tensor) -> float:
    """Mean over dimensions of the std across samples of L2-normalised features [N, D]."""
    normed = F.normalize(features.float().reshape(-1, features.shape[-1]), dim=-1)
    return float(normed.std(dim=0).mean())


@torch.no_grad()
def prediction_cosine(predictions: torch.Tensor, targets: torch.Tensor) -> float:
    """Mean cosine similarity between matching prediction and target tokens [..., D]."""
    return float(F.cosine_similarity(predictions.float(), targets.float(), dim=-1).mean())


class CollapseVerdict(dict):
    """Monitor values plus ``collapsed`` (bool) and ``reason`` (str)."""


def collapse_reasons(feature_std: float, rank: float, width: int, batch: int) -> list[str]:
    """Why one batch's monitors say collapse (empty: they do not), from the values alone:
    `feature_std` of normalised features `width` wide, effective `rank` of `batch` pooled
    samples. The training monitor's absolute rule, also for recounting logged values."""
    reasons = []
    isotropic = 1.0 / math.sqrt(width)
    if feature_std < _STD_FRACTION * isotropic:
        reasons.append(
            f"per-dimension std of normalised target features {feature_std:.2e} is "
            f"under {_STD_FRACTION:.0%} of the isotropic {isotropic:.2e}"
        )
    floor = max(2.0, _RANK_FRACTION * min(width, batch - 1))
    if batch > floor and not math.isnan(rank) and rank < floor:
        reasons.append(f"effective rank of pooled target features {rank:.2f} < {floor:.1f}")
    return reasons


@torch.no_grad()
def collapse_monitors(
    target_tokens: torch.Tensor, predictions: torch.Tensor | None, targets: torch.Tensor | None
) -> CollapseVerdict:
    """Monitors on one batch: target tokens [B, N, D]; predictions/targets [B, Nt, D]."""
    width = target_tokens.shape[-1]
    pooled = mean_pool(target_tokens.float())
    values = CollapseVerdict(
        feature_std=normalized_feature_std(target_tokens),
        isotropic_std=1.0 / math.sqrt(width),
        effective_rank=effective_rank(pooled) if pooled.shape[0] > 1 else float("nan"),
    )
    if predictions is not None and targets is not None:
        values["prediction_cosine"] = prediction_cosine(predictions, targets)
    reasons = collapse_reasons(
        values["feature_std"], values["effective_rank"], width, pooled.shape[0]
    )
    values["collapsed"] = bool(reasons)
    values["reason"] = "; ".join(reasons)
    return values


class CollapseMonitor(Callback):
    """Log the collapse monitors every N training steps, and the effective rank of pooled
    evaluation-encoder features on the validation set; warn (once counted per step) when
    they show collapse, naming the keys that usually fix it.

    Besides the absolute thresholds of `collapse_monitors`, the effective rank is compared
    with its first measurement, taken on the randomly initialised encoder at step 0 on a
    batch of the same size: below `min_rank_ratio` of it, the run is warned that its
    features are collapsing (the reference is kept in checkpoints, so a resumed run keeps
    comparing with the start).

    Works with any method: it asks the module for `collapse_inputs(output)` and reads
    `output.features` in validation; methods that return nothing are left alone. The
    recipe key is `monitors` (e.g. `monitors: {every_n_steps: 20}`).

    Args:
        every_n_steps: log the training monitors every this many steps (0: never).
        min_rank_ratio: warn when the effective rank falls below this fraction of its
            value at the start of training.
    """

    def __init__(self, every_n_steps: int = 50, min_rank_ratio: float = 0.25) -> None:
        self.every_n_steps = every_n_steps
        self.min_rank_ratio = min_rank_ratio
        self.reference_rank: float | None = None
        self.warnings: list[dict] = []
        self._val_features: list[torch.Tensor] = []

    def state_dict(self) -> dict:
        return {"reference_rank": self.reference_rank}

    def load_state_dict(self, state_dict: dict) -> None:
        self.reference_rank = state_dict.get("reference_rank")

    def _relative_rank(self, verdict: CollapseVerdict) -> float | None:
        rank = verdict["effective_rank"]
        if math.isnan(rank):
            return None
        if self.reference_rank is None:
            self.reference_rank = rank
        ratio = rank / self.reference_rank
        if ratio < self.min_rank_ratio:
            verdict["collapsed"] = True
            reason = (
                f"effective rank {rank:.2f} fell below {self.min_rank_ratio:.0%} of its "
                f"{self.reference_rank:.2f} at the start (random init)"
            )
            verdict["reason"] = "; ".join(r for r in (verdict["reason"], reason) if r)
        return ratio

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # type: ignore[no-untyped-def]
        every, step = self.every_n_steps, trainer.global_step
        output = outputs.get("output") if isinstance(outputs, dict) else None
        if not every or output is None or (step - 1) % every or batch.inputs.shape[0] < 2:
            return
        inputs = pl_module.collapse_inputs(output)
        if inputs is None:
            return
        verdict = collapse_monitors(*inputs)
        ratio = self._relative_rank(verdict)
        if verdict["collapsed"]:
            self.warnings.append({"step": step - 1, "reason": verdict["reason"]})
            pl_module.record_warning("collapse warning")
            log.warning(
                "step %d: features look collapsed: %s. Usual fixes: %s",
                step - 1,
                verdict["reason"],
                FIXES if "ema" in getattr(pl_module, "hparams", {}) else FIXES_WITHOUT_EMA,
            )
        # straight to the loggers: through self.log, Lightning would repeat the last value
        # at every step in between, drawing flat lines that were never measured
        metrics = {
            "collapse/train_batch_effective_rank": verdict["effective_rank"],
            "collapse/normalized_feature_std": verdict["feature_std"],
            "collapse/warning": float(verdict["collapsed"]),
        }
        if "prediction_cosine" in verdict:
            metrics["collapse/prediction_target_cosine"] = verdict["prediction_cosine"]
        if ratio is not None:
            metrics["collapse/rank_vs_start"] = ratio
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=step - 1)

    def on_validation_epoch_start(self, trainer, pl_module) -> None:  # type: ignore[no-untyped-def]
        self._val_features = []

    def on_validation_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0
    ) -> None:  # type: ignore[no-untyped-def]
        output = outputs.get("output") if isinstance(outputs, dict) else None
        if output is not None and getattr(output, "features", None) is not None:
            self._val_features.append(mean_pool(output.features).float().cpu())

    def on_validation_epoch_end(self, trainer, pl_module) -> None:  # type: ignore[no-untyped-def]
        feats = torch.cat(self._val_features) if self._val_features else None
        if trainer.world_size > 1:  # each rank validated a slice: the rank is of all of them
            feats = _gather_rows(pl_module, feats)
        if feats is not None and feats.shape[0] > 1:
            pl_module.log("val/effective_rank", effective_rank(feats), rank_zero_only=True)
        self._val_features = []


def _gather_rows(pl_module, rows: torch.Tensor | None) -> torch.Tensor | None:  # type: ignore[no-untyped-def]
    """Every rank's rows [n_r, D], concatenated in rank order on the CPU (n_r may differ
    between ranks, or be 0); None when no rank has any. Every rank must call it."""
    device = pl_module.device
    local = rows.to(device) if rows is not None else torch.zeros(0, 0, device=device)
    sizes = pl_module.all_gather(torch.tensor(local.shape, device=device))  # [world, 2]
    most, width = int(sizes[:, 0].max()), int(sizes[:, 1].max())
    if most == 0:
        return None
    padded = torch.zeros(most, width, device=device)  # all_gather needs one shape on all ranks
    if local.numel():
        padded[: local.shape[0]] = local
    gathered = pl_module.all_gather(padded)  # [world, most, width]
    return torch.cat([gathered[r, : int(n)] for r, n in enumerate(sizes[:, 0])]).cpu()
