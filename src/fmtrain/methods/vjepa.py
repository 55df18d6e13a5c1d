"""V-JEPA: predict the EMA target encoder's features of masked regions from the context.

One clip, two roles: context and target come from the SAME augmented volume, split by
the masks (as in V-JEPA); the original OCT project fed two differently augmented views.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from fmtrain.losses.regression import TARGET_NORMS, feature_regression
from fmtrain.methods.base import MethodOutput, PretrainMethod
from fmtrain.methods.configs import EMAConfig, OptimizerConfig, PredictorConfig
from fmtrain.methods.ema import ema_copy, ema_momentum, ema_update
from fmtrain.methods.links import RecipeLink
from fmtrain.nn.encoder import EncoderSpec, ViTEncoder
from fmtrain.nn.predictor import JEPAPredictor
from fmtrain.nn.tokens import expect_tokens, gather_tokens


@dataclass
class JEPAOutput(MethodOutput):
    """`features` are the target encoder's tokens [B, N, D] (final norm, no extra LN)."""

    predictions: list[torch.Tensor] = field(default_factory=list)  # per family [B, Nt, D]
    regression_targets: list[torch.Tensor] = field(default_factory=list)  # layer-normed


class VJEPA(nn.Module):
    """Context encoder + predictor trained against an EMA target encoder.

    Args:
        encoder: context encoder; its deep copy becomes the target encoder.
        predictor: narrow transformer from context tokens to target-token features.
        loss: "l1" (V-JEPA) or "l2" between predictions and normalised targets.
        target_norm: "layer" (V-JEPA: each target token layer-normed) or
            "position_centred" (then the batch's mean token at each position taken away and
            layer-normed again; see `fmtrain.losses.regression.position_centred`).
    """

    def __init__(
        self,
        encoder: nn.Module,
        predictor: JEPAPredictor,
        loss: Literal["l1", "l2"] = "l1",
        target_norm: Literal["layer", "position_centred"] = "layer",
    ) -> None:
        super().__init__()
        if target_norm not in TARGET_NORMS:
            raise ValueError(
                f"model.init_args.target_norm = {target_norm!r}: expected one of "
                f"{sorted(TARGET_NORMS)}"
            )
        self.encoder = encoder
        self.predictor = predictor
        self.target_encoder = ema_copy(encoder)
        self.loss = loss
        self.target_norm = target_norm

    def train(self, mode: bool = True) -> VJEPA:
        super().train(mode)
        self.target_encoder.eval()  # no stochastic depth in the teacher
        return self

    def forward(
        self,
        inputs: torch.Tensor,
        contexts: Sequence[torch.Tensor],
        targets: Sequence[torch.Tensor],
    ) -> JEPAOutput:
        """One JEPA step's forward: target encode, then per mask family context encode,
        predict and compare.

        Args:
            inputs: [B, C, *input_size].
            contexts: per mask family, int64 [B, Nc] context token indices.
            targets: per mask family, int64 [B, Nt] target token indices.
        """
        # 1. Target encode the whole clip, without gradients.
        with torch.no_grad():
            target_tokens = self.target_encoder(inputs)
            h = TARGET_NORMS[self.target_norm](
                expect_tokens(target_tokens, inputs.shape[0], self.predictor.num_tokens)
            )
        losses, predictions, regression_targets = [], [], []
        for family, (context_idx, target_idx) in enumerate(zip(contexts, targets, strict=True)):
            # 2. Context encode only the visible tokens.
            z = expect_tokens(self.encoder(inputs, keep=context_idx), *context_idx.shape)
            # 3. Predict target-token features from context tokens and their positions.
            prediction = self.predictor(z, context_idx, target_idx, mask_index=family)
            # 4. Regress the layer-normed target features at the target positions.
            target = gather_tokens(h, target_idx)
            losses.append(feature_regression(prediction, target, self.loss))
            predictions.append(prediction)
            regression_targets.append(target)
        return JEPAOutput(
            loss=torch.stack(losses).mean(),
            loss_per_mask=losses,
            features=target_tokens,
            predictions=predictions,
            regression_targets=regression_targets,
        )

    def update_target(self, momentum: float, applied: torch.Tensor | None = None) -> None:
        """5. EMA: target <- momentum * target + (1 - momentum) * context encoder (none
        after a skipped step: `applied` False, decided on the device)."""
        ema_update(self.target_encoder, self.encoder, momentum, applied)


class VJEPAModule(PretrainMethod):
    """V-JEPA pretraining: context encoder and predictor against an EMA target encoder.

    Args:
        input_size: spatial input shape (linked from `data.input_size`).
        patch_size: patch extent per axis; input_size must be divisible by it.
        in_chans: input channels (linked from the datamodule).
        num_mask_families: mask families per batch (linked from `data.masks`).
        encoder: encoder configuration (default: ViT-B; any `EncoderSpec` by `class_path`).
        predictor: predictor architecture.
        optimizer: AdamW and its schedules.
        ema: target-encoder momentum schedule.
        loss: "l1" (as in V-JEPA) or "l2".
        target_norm: "layer" (as in V-JEPA) or "position_centred": targets less the batch's
            mean token at each position, so that anatomy every scan shares is not what the
            predictor is scored on (see `fmtrain.losses.regression.position_centred`).
        evaluation_encoder: which encoder probes, `embed` and `export` use: "target" (the
            EMA target, as V-JEPA evaluates) or "context" (the online encoder the gradients
            train). The target holds prod(momentum) of its random initialisation: over a
            long run nothing, over 600 steps of 0.998 -> 1.0 still 55%; `fmtrain check`
            prints the share for the recipe's run.
        compile: compile every transformer block with torch.compile.
        compile_backend: torch.compile backend.
        max_consecutive_bad_steps: stop after this many skipped non-finite steps in a row.
        attention_backend: SDPA kernels: auto, flash, efficient, math or cudnn (see
            `PretrainMethod`).
    """

    def __init__(
        self,
        *,
        input_size: tuple[int, ...],
        patch_size: tuple[int, ...] = (4, 16, 16),
        in_chans: int = 1,
        num_mask_families: int = 1,
        encoder: EncoderSpec = ViTEncoder(),  # noqa: B008 (frozen: a safe default)
        predictor: PredictorConfig | None = None,
        optimizer: OptimizerConfig | None = None,
        ema: EMAConfig | None = None,
        loss: Literal["l1", "l2"] = "l1",
        target_norm: Literal["layer", "position_centred"] = "layer",
        evaluation_encoder: Literal["target", "context"] = "target",
        compile: bool = False,
        compile_backend: str = "inductor",
        max_consecutive_bad_steps: int = 5,
        attention_backend: str = "auto",
    ) -> None:
        super().__init__(
            input_size=input_size,
            patch_size=patch_size,
            in_chans=in_chans,
            encoder=encoder,
            optimizer=optimizer,
            compile=compile,
            compile_backend=compile_backend,
            max_consecutive_bad_steps=max_consecutive_bad_steps,
            attention_backend=attention_backend,
        )
        self.save_hyperparameters()
        if num_mask_families < 1:
            raise ValueError(
                "data.init_args.masks: V-JEPA predicts masked regions and needs at least one "
                "mask family; give a sampler such as fmtrain.masks.MultiBlock (the default)."
            )
        if evaluation_encoder not in ("target", "context"):
            raise ValueError(
                f"model.init_args.evaluation_encoder = {evaluation_encoder!r}: expected "
                "'target' (the EMA target, as V-JEPA) or 'context' (the online encoder)"
            )
        self.num_mask_families = num_mask_families
        self.evaluate = evaluation_encoder
        self.ema_config = ema or EMAConfig()
        p = predictor or PredictorConfig()
        enc = self.build_encoder()
        pred = JEPAPredictor(
            grid=self.grid,
            encoder_dim=enc.embed_dim,
            embed_dim=p.embed_dim,
            depth=p.depth,
            num_heads=p.num_heads,
            num_mask_tokens=num_mask_families,
        )
        pred.set_grad_checkpointing(getattr(self.encoder_spec, "activation_checkpointing", False))
        self.method = VJEPA(enc, pred, loss=loss, target_norm=target_norm)

    @classmethod
    def recipe_links(cls) -> list[RecipeLink]:
        # one learned mask token per mask family the data draws
        families = RecipeLink("data", "model.init_args.num_mask_families", "num_mask_families")
        return [*super().recipe_links(), families]

    def forward_batch(self, batch) -> JEPAOutput:
        return self.method(batch.inputs, batch.contexts, batch.targets)

    def evaluation_encoder(self) -> nn.Module:
        if self.evaluate == "context":
            return self.method.encoder
        return self.method.target_encoder  # as in V-JEPA's frozen evaluation

    def evaluates_ema_target(self) -> bool:
        return self.evaluate == "target"

    def extra_schedules(self, step: int, total: int) -> dict[str, float]:
        return {"ema_momentum": ema_momentum(self.ema_config, step, total)}

    def after_optimizer_step(
        self, values: dict[str, float], applied: torch.Tensor | None = None
    ) -> None:
        # 5. EMA, once per optimizer step and after it, as in V-JEPA (none after a skipped one).
        self.method.update_target(values["ema_momentum"], applied)

    def collapse_inputs(self, output: JEPAOutput) -> tuple:
        return (
            output.features,
            torch.cat([p.flatten(0, 1) for p in output.predictions]),
            torch.cat([t.flatten(0, 1) for t in output.regression_targets]),
        )
