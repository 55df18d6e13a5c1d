"""V-JEPA: predict the EMA target encoder's features of masked regions from the context.

One clip, two roles: context and target come from the SAME augmented volume, split by
the masks (as in V-JEPA); the original OCT project fed two differently augmented views.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..nn.predictor import JEPAPredictor
from ..nn.vit import VisionTransformer, gather_tokens


@dataclass
class JEPAOutput:
    loss: torch.Tensor
    loss_per_mask: list[torch.Tensor]
    target_features: torch.Tensor  # target encoder tokens [B, N, D] (final norm, no extra LN)
    predictions: list[torch.Tensor] | None = None  # per mask family [B, Nt, D]
    regression_targets: list[torch.Tensor] | None = None  # layer-normed targets [B, Nt, D]


class VJEPA(nn.Module):
    """Context encoder + predictor trained against an EMA target encoder.

    Args:
        encoder: context encoder; its deep copy becomes the target encoder.
        predictor: narrow transformer from context tokens to target-token features.
        loss: "l1" (V-JEPA) or "l2" between predictions and layer-normed targets.
    """

    def __init__(
        self, encoder: VisionTransformer, predictor: JEPAPredictor, loss: Literal["l1", "l2"] = "l1"
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.predictor = predictor
        self.target_encoder = copy.deepcopy(encoder).requires_grad_(False)
        self.loss = loss

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
            h = F.layer_norm(target_tokens, (target_tokens.shape[-1],))
        losses, predictions, regression_targets = [], [], []
        for family, (context_idx, target_idx) in enumerate(zip(contexts, targets, strict=True)):
            # 2. Context encode only the visible tokens.
            z = self.encoder(inputs, keep=context_idx)
            # 3. Predict target-token features from context tokens and their positions.
            prediction = self.predictor(z, context_idx, target_idx, mask_index=family)
            # 4. Regress the layer-normed target features at the target positions.
            target = gather_tokens(h, target_idx)
            losses.append(self.regression_loss(prediction, target))
            predictions.append(prediction)
            regression_targets.append(target)
        return JEPAOutput(
            loss=torch.stack(losses).mean(),
            loss_per_mask=losses,
            target_features=target_tokens,
            predictions=predictions,
            regression_targets=regression_targets,
        )

    def regression_loss(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.loss == "l1":
            return F.l1_loss(prediction.float(), target.float())
        return F.mse_loss(prediction.float(), target.float())

    @torch.no_grad()
    def update_target(self, momentum: float) -> None:
        """5. EMA: target <- momentum * target + (1 - momentum) * context encoder."""
        target = list(self.target_encoder.parameters())
        online = [p.detach() for p in self.encoder.parameters()]
        torch._foreach_mul_(target, momentum)
        torch._foreach_add_(target, online, alpha=1.0 - momentum)
