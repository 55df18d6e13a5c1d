"""The Lightning shell every method shares; a method adds only its objective.

A method subclasses `PretrainMethod`, builds its parts into `self.method` (one nn.Module
whose forward reads like the paper), and implements a few hooks:

- `forward_batch(batch) -> MethodOutput`: the step's loss, per-mask-family losses and logs;
- `evaluation_encoder()`: the encoder that probes, `embed` and `export` use;
- `after_optimizer_step(values, applied)` (optional): e.g. the EMA update of a JEPA target
  encoder, gated on the device by whether the step was applied;
- `collapse_inputs(output)` (optional): what the collapse monitors watch (default: the
  step's encoder tokens; a JEPA adds its prediction/target pair);
- `reconstruction(batch)` (optional): input and reconstruction, for report pictures;
- `recipe_links()` (optional classmethod): what the recipe copies between data and model.

Everything else is here, once: AdamW groups (fused where the device has the kernel),
warmup/cosine schedules, the numerics guard and its diagnosis, RNG state in checkpoints,
throughput counters, opt-in torch.compile of transformer blocks, the attention kernels,
the encoder's configuration in every checkpoint (for `load_encoder`), and a summary of the
run's warnings at the end of `fit`.

The training step reads nothing back from the device: the guard's verdict gates the fused
optimizer and the after-step work on the device and is read on the host once the device has
finished the step (see `fmtrain.methods.numerics`); logged host values are CPU tensors, so
logging copies nothing to the device. Lightning itself reads logged tensors when it writes
a log line or refreshes the progress bar.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.plugins.precision import MixedPrecision, Precision
from lightning.pytorch.utilities import GradClipAlgorithmType
from torch import nn

from fmtrain.core.grid import TokenGrid
from fmtrain.methods.configs import OptimizerConfig
from fmtrain.methods.links import RecipeLink
from fmtrain.methods.numerics import (
    FinitenessRecorder,
    NonFiniteError,
    NumericsGuard,
    StepVerdict,
    first_non_finite,
)
from fmtrain.methods.optim import adamw, decay_param_groups
from fmtrain.methods.schedules import cosine, warmup_cosine
from fmtrain.nn.checkpointing import Checkpointing
from fmtrain.nn.encoder import EncoderSpec, ViTEncoder, spec_to_config
from fmtrain.nn.transformer import attention_kernels

log = logging.getLogger("fmtrain")

__all__ = ["MethodOutput", "PretrainMethod"]

# Checkpoint entry that lets `fmtrain.load_encoder` rebuild the evaluation encoder alone.
ENCODER_ENTRY = "fmtrain_encoder"


@dataclass
class MethodOutput:
    """What one forward of a method returns.

    Attributes:
        loss: scalar training loss.
        loss_per_mask: one loss per mask family (empty when the method has no masks).
        logs: extra scalars to log under `train/`.
        features: [B, N, D] tokens of the evaluation encoder, when the step computed them.
    """

    loss: torch.Tensor
    loss_per_mask: list[torch.Tensor] = field(default_factory=list)
    logs: dict[str, torch.Tensor | float] = field(default_factory=dict)
    features: torch.Tensor | None = None


class PretrainMethod(pl.LightningModule):
    """Generic pretraining shell. Subclasses call `super().__init__` first, then build.

    Args:
        input_size: spatial input shape (linked from `data.input_size`).
        patch_size: patch extent per axis; input_size must be divisible by it.
        in_chans: input channels (linked from the datamodule's `channels`).
        encoder: encoder configuration (any `EncoderSpec`, chosen by `class_path`).
        optimizer: AdamW and its schedules.
        compile: compile every transformer block with torch.compile (in place, so
            checkpoints keep their keys); works with activation checkpointing. A compiler
            failure stops the run with its reason.
        compile_backend: torch.compile backend ("inductor"; "aot_eager" needs no compiler).
        max_consecutive_bad_steps: a step whose loss or gradient is non-finite is skipped
            (no update, no EMA) and the first module that went non-finite is logged; after
            this many in a row, training stops with a checkpoint and a message. On a GPU the
            verdict is read once the device has finished the step (usually a step later),
            so the log line and the stop may come a step or two after the bad step.
        attention_backend: SDPA kernels of every transformer block: "auto" (flash, then
            memory-efficient, then math, whichever runs the inputs first; cuDNN attention
            is left out, it produced non-finite steps on an H100), or exactly one of
            "flash", "efficient", "math", "cudnn" (a kernel that cannot run the inputs stops
            the first step, naming this key).
    """

    #: number of mask families the batches must carry; None for methods without masks
    num_mask_families: int | None = None

    def __init__(
        self,
        *,
        input_size: tuple[int, ...],
        patch_size: tuple[int, ...],
        in_chans: int = 1,
        encoder: EncoderSpec | None = None,
        optimizer: OptimizerConfig | None = None,
        compile: bool = False,
        compile_backend: str = "inductor",
        max_consecutive_bad_steps: int = 5,
        attention_backend: str = "auto",
    ) -> None:
        super().__init__()
        attention_kernels(attention_backend)  # a bad name fails when the recipe is read
        self.attention_backend = attention_backend
        self.grid = TokenGrid.from_sizes(input_size, patch_size)
        self.in_chans = in_chans
        self.encoder_spec = encoder if encoder is not None else ViTEncoder()
        self.optimizer_config = optimizer or OptimizerConfig()
        self.compile_backend = compile_backend if compile else None
        self._compiled = False
        self.guard = NumericsGuard(max_consecutive_bad_steps)
        self.recorder = FinitenessRecorder()
        self.warning_counts: Counter[str] = Counter()
        self._last_step_time: float | None = None
        self._last_batch: Any = None

    # --- hooks a method implements ----------------------------------------------------------
    def forward_batch(self, batch: Any) -> MethodOutput:
        """The method's forward on a batch from its datamodule."""
        raise NotImplementedError

    def evaluation_encoder(self) -> nn.Module:
        """The encoder that probes, embeddings and export use."""
        raise NotImplementedError

    def evaluates_ema_target(self) -> bool:
        """Whether `evaluation_encoder()` is an EMA copy that the `ema_momentum` schedule
        moves (then `check` says how much of its random initialisation the run leaves)."""
        return False

    def after_optimizer_step(
        self, values: dict[str, float], applied: torch.Tensor | None = None
    ) -> None:
        """Runs after every optimizer step. `applied` is a 0-dim bool on the device, False
        when the numerics guard skipped the step: the hook must then change nothing, and
        decide so on the device (`torch.where`), since reading it on the host costs a sync
        per step. None when the step is known to have been applied."""

    def collapse_inputs(self, output: MethodOutput) -> tuple | None:
        """(features [B, N, D], predictions [M, D], targets [M, D]) for the collapse
        monitors, or None when they do not apply to this method.

        By default the step's encoder tokens alone (no prediction/target pair): the rank
        and spread monitors then watch every method that returns `features`, not only
        those with a target encoder. Methods with a target override this."""
        features = output.features
        if features is None or features.ndim != 3:
            return None
        return features, None, None

    #: axis of the channels in `batch.inputs` (2 for clips of frames [B, T, C, H, W])
    channel_axis: int = 1

    def expected_input_shape(self, batch_size: int) -> tuple[int, ...]:
        """The shape of `batch.inputs` this method consumes; `check` compares batches with it."""
        return (batch_size, self.in_chans, *self.grid.input_size)

    def stage_widths(self) -> dict[str, int]:
        """Output widths of parts that do not produce encoder-width tokens (for `check`)."""
        return {}

    def reconstruction(self, batch: Any) -> dict[str, torch.Tensor] | None:
        """For methods that reconstruct their input, one batch's ``inputs``,
        ``reconstruction`` (same shape) and ``hidden`` (bool, same shape: what the model did
        not see), for report pictures; None for the others."""
        return None

    def extra_schedules(self, step: int, total: int) -> dict[str, float]:
        """Schedules beyond learning rate and weight decay (e.g. EMA momentum)."""
        return {}

    @classmethod
    def recipe_links(cls) -> list[RecipeLink]:
        """What the recipe copies between `data` and `model` when it is read."""
        return [
            # model -> data when the recipe is read (the data cuts its token grid with it);
            # then the model's input shape and channels are read off the built datamodule,
            # which decides them (a volume's crop size; a signal's channels and window)
            RecipeLink("model.init_args.patch_size", "data.init_args.patch_size"),
            RecipeLink("data", "model.init_args.input_size", "input_size"),
            RecipeLink("data", "model.init_args.in_chans", "channels"),
        ]

    # --- what evaluation, check and export ask of any method --------------------------------
    def build_encoder(self) -> nn.Module:
        """A freshly initialised encoder of this method's architecture."""
        return self.encoder_spec.build(self.grid, self.in_chans)

    def random_encoder(self, seed: int) -> nn.Module:
        """A randomly initialised encoder (seeded), for random-init baselines."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.build_encoder()

    def encoder_config(self) -> dict[str, Any]:
        """JSON description of the evaluation encoder: enough to rebuild it without this
        class (`fmtrain.load_encoder`)."""
        return {
            "encoder": spec_to_config(self.encoder_spec),
            "input_size": list(self.grid.input_size),
            "patch_size": list(self.grid.patch_size),
            "in_chans": self.in_chans,
            "embed_dim": int(getattr(self.evaluation_encoder(), "embed_dim", 0)) or None,
            "method": f"{type(self).__module__}.{type(self).__qualname__}",
        }

    def set_activation_checkpointing(self, enable: Checkpointing) -> None:
        """Set activation checkpointing on every part that supports it: every block (True),
        none (False), or n blocks / a fraction of the blocks of each stack (int / float)."""
        for module in self.method.modules():
            if hasattr(module, "set_grad_checkpointing"):
                module.set_grad_checkpointing(enable)

    @property
    def activation_checkpointing(self) -> Checkpointing:
        """The parts' checkpointing setting: False, True, or a partial setting (int, float)."""
        settings = (getattr(m, "grad_checkpointing", False) for m in self.method.modules())
        return next((s for s in settings if s is not False and s != 0), False)

    def __setattr__(self, name: str, value: Any) -> None:
        super().__setattr__(name, value)
        if name == "method" and isinstance(value, nn.Module):
            # every part a subclass builds (or rebuilds) gets the recipe's attention kernels
            for module in value.modules():
                if hasattr(module, "set_attention_backend"):
                    module.set_attention_backend(self.attention_backend)

    # --- schedules, all pure functions of the optimizer step -------------------------------
    def _total_steps(self) -> int:
        max_steps = self.trainer.max_steps if self._trainer is not None else -1
        if max_steps is None or max_steps < 1:
            raise ValueError(
                "trainer.max_steps must be set: the learning-rate and weight-decay schedules "
                "are defined over the total number of optimizer steps."
            )
        return max_steps

    def schedule_values(self, step: int, total_steps: int | None = None) -> dict[str, float]:
        """Every schedule's value at `step` of a run of `total_steps` (default: the
        trainer's max_steps); `check` walks the whole run with it before training."""
        o = self.optimizer_config
        total = total_steps if total_steps is not None else self._total_steps()
        values = {
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
        }
        return values | self.extra_schedules(step, total)

    def _loss_scaler(self) -> Any:
        """Lightning's fp16 gradient scaler, if the run has one."""
        plugin = self._trainer.precision_plugin if self._trainer is not None else None
        return getattr(plugin, "scaler", None)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        o = self.optimizer_config
        groups = decay_param_groups(self.method)
        device = next(self.method.parameters()).device
        return adamw(
            groups,
            lr=o.start_lr,
            betas=o.betas,
            weight_decay=o.weight_decay,
            device=device,
            loss_scaling=self._loss_scaler() is not None,
        )

    def configure_gradient_clipping(  # type: ignore[override]
        self,
        optimizer: torch.optim.Optimizer,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        plugin = self.trainer.precision_plugin
        if isinstance(plugin, MixedPrecision) and plugin.scaler is None and gradient_clip_val:
            # bf16 autocast has no loss scaler, so there is nothing to unscale; Lightning still
            # refuses to clip for an optimizer that could unscale inside its step (a fused
            # AdamW). Clip as its plain precision does.
            algorithm = GradClipAlgorithmType(gradient_clip_algorithm or "norm")
            Precision.clip_gradients(plugin, optimizer, gradient_clip_val, algorithm)
            return
        super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)

    def optimizer_step(self, epoch, batch_idx, optimizer, optimizer_closure=None) -> None:  # type: ignore[override]
        values = self.schedule_values(self.global_step)
        for group in optimizer.param_groups:
            group["lr"] = values["lr"]
            if group.get("apply_weight_decay"):
                group["weight_decay"] = values["weight_decay"]
        raw = getattr(optimizer, "optimizer", optimizer)  # Lightning's wrapper holds it
        # a fused step skips on the device when `found_inf` is set (unless a loss scaler,
        # which sets that attribute itself, owns the step)
        on_device = getattr(raw, "_step_supports_amp_scaling", False) and not self._loss_scaler()
        taken: dict[str, Any] = {}

        def guarded_closure():
            loss = optimizer_closure() if optimizer_closure is not None else None
            params = [p for g in raw.param_groups for p in g["params"]]
            step, flags = self.global_step, self.recorder.take()
            if on_device:
                finite, norms, with_grad = self.guard.verdict(loss, params)
                raw.found_inf = (~finite).to(torch.float32)
                taken["verdict"] = StepVerdict(
                    step, finite, norms, with_grad, params, flags, self._last_batch
                )
            else:  # read now: a bad step's gradients are dropped before the update
                finite = torch.tensor(self.guard.check(loss, params, step))
                taken["verdict"] = StepVerdict(
                    step, finite, parameters=params, flags=flags, batch=self._last_batch
                )
            return loss

        try:
            super().optimizer_step(epoch, batch_idx, optimizer, guarded_closure)
        finally:
            raw.__dict__.pop("found_inf", None)
        verdict = taken["verdict"]
        if on_device:
            self.after_optimizer_step(values, verdict.finite)
            self.guard.submit(verdict)
        elif bool(verdict.finite):
            self.after_optimizer_step(values)
        else:
            self._on_bad_step(verdict)
        for bad in self.guard.settled():
            self._on_bad_step(bad)

    # --- numerics guard ---------------------------------------------------------------------
    def _on_bad_step(self, verdict: StepVerdict, log_metric: bool = True) -> None:
        """The step was skipped (no update, no EMA); say where it began, stop if it persists."""
        step = verdict.step
        self.warning_counts["non-finite step skipped"] += 1
        origin = self._origin_of_bad_step(verdict)
        log.warning(
            "step %d skipped: non-finite loss or gradient; first non-finite: %s "
            "(%d in a row, limit model.max_consecutive_bad_steps=%d)",
            step,
            origin,
            self.guard.consecutive_bad,
            self.guard.max_consecutive_bad_steps,
        )
        if log_metric:
            self.log("numerics/skipped_steps", torch.tensor(float(len(self.guard.skipped_steps))))
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

    def _origin_of_bad_step(self, verdict: StepVerdict) -> str:
        """Where the failing step went non-finite: the flags recorded during the step itself,
        then the gradients the guard found, and only then a replay of the batch (which
        cannot see a fault that does not repeat)."""
        recorded = self.recorder.first_non_finite(verdict.flags)
        batch = verdict.batch
        if recorded and batch is not None:
            with torch.enable_grad():  # a replay may narrow it down inside the block
                replay = first_non_finite(self.method, lambda: self.forward_batch(batch).loss)
            return recorded + ("" if replay == "not reproduced" else f"; replayed: {replay}")
        if recorded:
            return recorded
        if self.guard.bad_gradients:
            names = {id(p): n for n, p in self.method.named_parameters()}
            params = verdict.parameters
            bad = [names.get(id(params[i]), "?") for i in self.guard.bad_gradients]
            return (
                f"backward: non-finite gradients in {len(bad)} parameter(s), e.g. "
                f"{', '.join(bad[:3])} (every module output of the step was finite)"
            )
        if batch is None:
            return "unknown (no batch kept)"
        with torch.enable_grad():
            return "replayed: " + first_non_finite(
                self.method, lambda: self.forward_batch(batch).loss
            )

    # --- compile: applied from outside the parts, once, before the first forward -----------
    def _compile_blocks(self) -> None:
        self._compiled = True
        try:
            for module in self.method.modules():
                for block in getattr(module, "blocks", []):
                    block.compile(backend=self.compile_backend)
        except Exception as err:  # e.g. an unknown backend: name the key
            raise ValueError(
                f"model.init_args.compile_backend={self.compile_backend!r}: {err}"
            ) from err

    def run_forward(self, batch: Any) -> MethodOutput:
        """`forward_batch`, compiled on first use if asked; a compiler failure says so."""
        if not self._compiled and self.compile_backend is not None:
            self._compile_blocks()
        try:
            return self.forward_batch(batch)
        except Exception as err:
            no_kernel = ("No available kernel", "No viable backend")  # CUDA's, the CPU's
            if self.attention_backend != "auto" and any(m in str(err) for m in no_kernel):
                raise RuntimeError(
                    f"model.init_args.attention_backend={self.attention_backend!r}: that SDPA "
                    f"kernel cannot run these inputs here ({' '.join(str(err).split())[:300]}). "
                    "Fix: attention_backend: auto, or the precision/device the kernel needs "
                    "(flash: fp16/bf16 on a GPU; efficient: a GPU)."
                ) from err
            if self.compile_backend is None or not type(err).__module__.startswith("torch._"):
                raise
            raise RuntimeError(
                f"torch.compile (backend {self.compile_backend!r}) failed: "
                f"{type(err).__name__}: {' '.join(str(err).split())[:500]}. "
                "Set model.init_args.compile=false to train without it, or try "
                "model.init_args.compile_backend=aot_eager to see whether the graph or the "
                "code generator is at fault."
            ) from err

    # --- steps ------------------------------------------------------------------------------
    def on_train_start(self) -> None:
        # per-module finiteness flags for the numerics guard; compiled blocks keep the
        # replay diagnosis instead (hooks with side effects would break their graphs)
        if self.compile_backend is None:
            self.recorder.attach(self.method)

    def on_train_end(self) -> None:
        self.recorder.detach()
        for bad in self.guard.settled(wait=True):  # the last steps' verdicts, read once
            self._on_bad_step(bad, log_metric=False)

    def training_step(self, batch: Any, batch_idx: int) -> dict[str, Any]:
        self._last_batch = batch  # a reference, kept for the numerics guard's diagnosis
        self.recorder.reset()
        self.recorder.active = True
        try:
            out = self.run_forward(batch)
        finally:
            self.recorder.active = False
        values = self.schedule_values(self.global_step)
        b = batch.inputs.shape[0]
        # host numbers as CPU tensors: Lightning would copy a Python float to the device,
        # and a copy from pageable host memory waits for the device (a sync per value)
        host: dict[str, float] = {f"train/{k}": v for k, v in values.items()}
        for i, (ctx, tgt) in enumerate(
            zip(getattr(batch, "contexts", []), getattr(batch, "targets", []), strict=True)
        ):
            host[f"masks/context_tokens_{i}"] = float(ctx.shape[1])
            host[f"masks/target_tokens_{i}"] = float(tgt.shape[1])
        now = time.perf_counter()
        if self._last_step_time is not None:
            dt = now - self._last_step_time
            host["perf/samples_per_sec"] = b / dt
            host["perf/tokens_per_sec"] = b * self.grid.num_tokens / dt
        self._last_step_time = now
        metrics: dict[str, Any] = {"train/loss": out.loss}
        metrics |= {name: torch.tensor(value) for name, value in host.items()}
        metrics |= {
            f"train/{k}": v if isinstance(v, torch.Tensor) else torch.tensor(float(v))
            for k, v in out.logs.items()
        }
        metrics |= {f"train/loss_mask{i}": v for i, v in enumerate(out.loss_per_mask)}
        self.log_dict(metrics, on_step=True, prog_bar=False, batch_size=b)
        # The progress bar reads its values as numbers after every batch (a host sync for a
        # device tensor): give it the loss only at the steps Lightning writes logs anyway
        # (those where (step + 1) is a multiple of trainer.log_every_n_steps).
        every = self.trainer.log_every_n_steps if self._trainer is not None else 1
        if (self.global_step + 1) % max(every, 1) == 0:
            self.log("loss", out.loss, prog_bar=True, logger=False, batch_size=b)
        # the output rides along to callbacks (collapse monitors), detached by Lightning
        return {"loss": out.loss, "output": out}

    def validation_step(self, batch: Any, batch_idx: int) -> dict[str, Any]:
        out = self.forward_batch(batch)
        self.log("val/loss", out.loss, batch_size=batch.inputs.shape[0], sync_dist=True)
        return {"loss": out.loss, "output": out}

    def on_fit_end(self) -> None:
        if self.warning_counts:
            summary = ", ".join(f"{n} x {what}" for what, n in self.warning_counts.items())
            # by kind; each warning itself is counted in the run's summary (warning_summary)
            log.info("warnings by kind: %s", summary)

    def record_warning(self, what: str) -> None:
        """Count a warning for the end-of-run summary (callbacks use it too)."""
        self.warning_counts[what] += 1

    # --- checkpoints: exact resume, and the encoder's description ----------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["rng_state"] = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            checkpoint["rng_state"]["cuda"] = torch.cuda.get_rng_state_all()
        encoder = self.evaluation_encoder()
        prefix = next(name for name, m in self.named_modules() if m is encoder)
        checkpoint[ENCODER_ENTRY] = {"config": self.encoder_config(), "prefix": f"{prefix}."}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint.get("rng_state")
        if state:
            torch.set_rng_state(state["torch"])
            if "cuda" in state and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(state["cuda"])
