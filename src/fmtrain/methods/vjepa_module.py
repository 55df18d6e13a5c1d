"""Lightning shell around `VJEPA`: schedules, logging, EMA after each optimizer step."""

from __future__ import annotations

import logging
import time
from typing import Literal

import lightning.pytorch as pl
import torch

from ..data.batch import MaskedBatch
from ..eval.monitors import FIXES as COLLAPSE_FIXES
from ..eval.monitors import collapse_monitors
from ..eval.rank import effective_rank
from ..nn.grid import TokenGrid
from ..nn.predictor import JEPAPredictor
from ..nn.vit import VisionTransformer
from .configs import EMAConfig, EncoderConfig, OptimizerConfig, PredictorConfig
from .numerics import NonFiniteError, NumericsGuard, first_non_finite
from .optim import decay_param_groups
from .schedules import cosine, linear, warmup_cosine
from .vjepa import VJEPA

log = logging.getLogger("fmtrain")


class VJEPAModule(pl.LightningModule):
    """V-JEPA pretraining.

    Args:
        input_size: spatial input shape (linked from `data.input_size`).
        num_mask_families: number of mask families (linked from `data.masks`).
        patch_size: patch extent per axis; input_size must be divisible by it.
        encoder: encoder architecture.
        predictor: predictor architecture.
        optimizer: AdamW and its schedules.
        ema: target-encoder momentum schedule.
        loss: "l1" (as in V-JEPA) or "l2".
        monitor_every_n_steps: every N steps, log collapse monitors on the batch (effective
            rank of pooled target features, per-dimension std of normalised target
            features, prediction-target cosine) and warn when they show collapse.
        compile: compile every transformer block with torch.compile (in place, so
            checkpoints keep their keys); works with activation checkpointing, which is
            always the non-reentrant kind. A compiler failure stops the run with its reason.
        compile_backend: torch.compile backend ("inductor"; "aot_eager" needs no compiler).
        max_consecutive_bad_steps: a step whose loss or gradient is non-finite is skipped
            (no update, no EMA) and the first module that went non-finite is logged; after
            this many in a row, training stops with a checkpoint and a message.
    """

    def __init__(
        self,
        *,
        input_size: tuple[int, ...],
        num_mask_families: int = 1,
        patch_size: tuple[int, ...] = (4, 16, 16),
        encoder: EncoderConfig | None = None,
        predictor: PredictorConfig | None = None,
        optimizer: OptimizerConfig | None = None,
        ema: EMAConfig | None = None,
        loss: Literal["l1", "l2"] = "l1",
        monitor_every_n_steps: int = 50,
        compile: bool = False,
        compile_backend: str = "inductor",
        max_consecutive_bad_steps: int = 5,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.encoder_config = encoder or EncoderConfig()
        self.predictor_config = predictor or PredictorConfig()
        self.optimizer_config = optimizer or OptimizerConfig()
        self.ema_config = ema or EMAConfig()
        self.monitor_every_n_steps = monitor_every_n_steps
        self.grid = TokenGrid.from_sizes(input_size, patch_size)
        enc = VisionTransformer.from_size(
            self.encoder_config.size,
            grid=self.grid,
            in_chans=self.encoder_config.in_chans,
            drop_path=self.encoder_config.drop_path,
        )
        pred = JEPAPredictor(
            grid=self.grid,
            encoder_dim=enc.embed_dim,
            embed_dim=self.predictor_config.embed_dim,
            depth=self.predictor_config.depth,
            num_heads=self.predictor_config.num_heads,
            num_mask_tokens=num_mask_families,
        )
        if self.encoder_config.activation_checkpointing:
            enc.set_grad_checkpointing(True)
            pred.set_grad_checkpointing(True)
        self.method = VJEPA(enc, pred, loss=loss)
        self.compile_backend = compile_backend if compile else None
        if compile:
            try:
                for part in (
                    self.method.encoder,
                    self.method.target_encoder,
                    self.method.predictor,
                ):
                    for block in part.blocks:
                        block.compile(backend=compile_backend)
            except Exception as err:  # e.g. an unknown backend: name the key
                raise ValueError(
                    f"model.init_args.compile_backend={compile_backend!r}: {err}"
                ) from err
        self._last_step_time: float | None = None
        self.guard = NumericsGuard(max_consecutive_bad_steps)
        self.collapse_warnings: list[dict] = []
        self._last_batch: MaskedBatch | None = None

    # --- schedules, all pure functions of the optimizer step -------------------------------
    def _total_steps(self) -> int:
        max_steps = self.trainer.max_steps if self._trainer is not None else -1
        if max_steps is None or max_steps < 1:
            raise ValueError(
                "trainer.max_steps must be set: V-JEPA's learning-rate, weight-decay and EMA "
                "schedules are defined over the total number of optimizer steps."
            )
        return max_steps

    def schedule_values(self, step: int) -> dict[str, float]:
        o, total = self.optimizer_config, self._total_steps()
        return {
            "lr": warmup_cosine(
                step,
                warmup_steps=o.warmup_steps,
                total_steps=total,
                start=o.start_lr,
                peak=o.lr,
                final=o.final_lr,
            ),
            "weight_decay": cosine(
                step, total_steps=total, start=o.weight_decay, end=o.final_weight_decay
            ),
            "ema_momentum": linear(
                step,
                total_steps=total,
                start=self.ema_config.momentum,
                end=self.ema_config.final_momentum,
            ),
        }

    def configure_optimizers(self) -> torch.optim.Optimizer:
        o = self.optimizer_config
        groups = decay_param_groups(self.method.encoder, self.method.predictor)
        return torch.optim.AdamW(groups, lr=o.start_lr, betas=o.betas, weight_decay=o.weight_decay)

    def optimizer_step(self, epoch, batch_idx, optimizer, optimizer_closure=None) -> None:  # type: ignore[override]
        values = self.schedule_values(self.global_step)
        for group in optimizer.param_groups:
            group["lr"] = values["lr"]
            if group.get("apply_weight_decay"):
                group["weight_decay"] = values["weight_decay"]
        verdict = {"ok": True}

        def guarded_closure():
            loss = optimizer_closure() if optimizer_closure is not None else None
            params = [p for g in optimizer.param_groups for p in g["params"]]
            verdict["ok"] = self.guard.check(loss, params)
            return loss

        super().optimizer_step(epoch, batch_idx, optimizer, guarded_closure)
        if not verdict["ok"]:
            self._on_bad_step()
            return
        # 5. EMA, once per optimizer step and after it, as in V-JEPA.
        self.method.update_target(values["ema_momentum"])

    def _on_bad_step(self) -> None:
        """The step was skipped (gradients dropped); say where it began, stop if it persists."""
        step = self.global_step
        self.guard.skipped_steps.append(step)
        batch = self._last_batch
        origin = "unknown (no batch kept)"
        if batch is not None:
            with torch.enable_grad():
                origin = first_non_finite(
                    self.method,
                    lambda: self.method(batch.inputs, batch.contexts, batch.targets).loss,
                )
        log.warning(
            "step %d skipped: non-finite loss or gradient; first non-finite: %s "
            "(%d in a row, limit model.max_consecutive_bad_steps=%d)",
            step,
            origin,
            self.guard.consecutive_bad,
            self.guard.max_consecutive_bad_steps,
        )
        self.log("numerics/skipped_steps", float(len(self.guard.skipped_steps)))
        if self.guard.exhausted:
            path = None
            if self._trainer is not None and self.trainer.default_root_dir:
                path = f"{self.trainer.default_root_dir}/nonfinite-step{step:07d}.ckpt"
                self.trainer.save_checkpoint(path)
            raise NonFiniteError(
                f"stopped at step {step}: {self.guard.consecutive_bad} consecutive steps with a "
                f"non-finite loss or gradient. It began in {origin}. Last state saved to "
                f"{path}. Usual fixes: lower model.optimizer.lr or lengthen "
                "model.optimizer.warmup_steps, set trainer.gradient_clip_val, use "
                "trainer.precision=bf16-mixed instead of 16-mixed, and check the data "
                "(`fmtrain check` looks for non-finite inputs)."
            )

    # --- steps ------------------------------------------------------------------------------
    def training_step(self, batch: MaskedBatch, batch_idx: int) -> torch.Tensor:
        self._last_batch = batch  # a reference, kept for the numerics guard's diagnosis
        out = self._forward_or_explain(batch)
        values = self.schedule_values(self.global_step)
        b = batch.inputs.shape[0]
        metrics = {
            "train/loss": out.loss,
            "train/lr": values["lr"],
            "train/weight_decay": values["weight_decay"],
            "train/ema_momentum": values["ema_momentum"],
        }
        for i, (loss_i, ctx, tgt) in enumerate(
            zip(out.loss_per_mask, batch.contexts, batch.targets, strict=True)
        ):
            metrics[f"train/loss_mask{i}"] = loss_i
            metrics[f"masks/context_tokens_{i}"] = float(ctx.shape[1])
            metrics[f"masks/target_tokens_{i}"] = float(tgt.shape[1])
        now = time.perf_counter()
        if self._last_step_time is not None:
            dt = now - self._last_step_time
            metrics["perf/samples_per_sec"] = b / dt
            metrics["perf/tokens_per_sec"] = b * self.grid.num_tokens / dt
        self._last_step_time = now
        every = self.monitor_every_n_steps
        if every and self.global_step % every == 0 and b > 1:
            # straight to the loggers: through self.log, Lightning would repeat the last
            # value at every step in between, drawing flat lines that were never measured
            monitors = self._collapse_metrics(out)
            for logger in self.loggers:
                logger.log_metrics(monitors, step=self.global_step)
        self.log_dict(metrics, on_step=True, prog_bar=False, batch_size=b)
        self.log("loss", out.loss, prog_bar=True, logger=False, batch_size=b)
        return out.loss

    def _collapse_metrics(self, out) -> dict[str, float]:
        verdict = collapse_monitors(
            out.target_features,
            torch.cat([p.flatten(0, 1) for p in out.predictions]),
            torch.cat([t.flatten(0, 1) for t in out.regression_targets]),
        )
        if verdict["collapsed"]:
            self.collapse_warnings.append({"step": self.global_step, "reason": verdict["reason"]})
            log.warning(
                "step %d: features look collapsed: %s. Usual fixes: %s",
                self.global_step,
                verdict["reason"],
                COLLAPSE_FIXES,
            )
        return {
            "collapse/train_batch_effective_rank": verdict["effective_rank"],
            "collapse/normalized_feature_std": verdict["feature_std"],
            "collapse/prediction_target_cosine": verdict["prediction_cosine"],
            "collapse/warning": float(verdict["collapsed"]),
        }

    def _forward_or_explain(self, batch: MaskedBatch):
        """The method's forward; a torch.compile failure becomes an error that says so."""
        if self.compile_backend is None:
            return self.method(batch.inputs, batch.contexts, batch.targets)
        try:
            return self.method(batch.inputs, batch.contexts, batch.targets)
        except Exception as err:
            if not type(err).__module__.startswith("torch._"):
                raise
            raise RuntimeError(
                f"torch.compile (backend {self.compile_backend!r}) failed: "
                f"{type(err).__name__}: {' '.join(str(err).split())[:500]}. "
                "Set model.init_args.compile=false to train without it, or try "
                "model.init_args.compile_backend=aot_eager to see whether the graph or the "
                "code generator is at fault."
            ) from err

    def on_validation_epoch_start(self) -> None:
        self._val_features: list[torch.Tensor] = []

    def validation_step(self, batch: MaskedBatch, batch_idx: int) -> torch.Tensor:
        out = self.method(batch.inputs, batch.contexts, batch.targets)
        self._val_features.append(out.target_features.mean(dim=1).float().cpu())
        self.log("val/loss", out.loss, batch_size=batch.inputs.shape[0], sync_dist=True)
        return out.loss

    def on_validation_epoch_end(self) -> None:
        feats = torch.cat(self._val_features) if self._val_features else None
        if feats is not None and feats.shape[0] > 1:
            self.log("val/effective_rank", effective_rank(feats), rank_zero_only=True)
        self._val_features = []

    # --- exact resume: the only randomness outside the data stream lives here ---------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["rng_state"] = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            checkpoint["rng_state"]["cuda"] = torch.cuda.get_rng_state_all()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint.get("rng_state")
        if state:
            torch.set_rng_state(state["torch"])
            if "cuda" in state and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(state["cuda"])
