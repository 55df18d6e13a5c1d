"""Selective activation checkpointing: some blocks recompute in backward, the rest keep
their activations; the numbers are those of a pass without checkpointing."""

from __future__ import annotations

import itertools

import pytest
import torch

from fmtrain.core import TokenGrid
from fmtrain.methods import VJEPAModule
from fmtrain.methods.configs import PredictorConfig
from fmtrain.nn import VisionTransformer
from fmtrain.nn.checkpointing import checked_setting, checkpointed_blocks
from fmtrain.nn.encoder import ViTEncoder

GRID = TokenGrid.from_sizes((4, 16, 16), (2, 4, 4))  # 2x4x4 = 32 tokens
DEPTH = 6


def _vit() -> VisionTransformer:
    torch.manual_seed(0)
    return VisionTransformer(grid=GRID, embed_dim=32, depth=DEPTH, num_heads=2)


def _pass(model: VisionTransformer, setting, x: torch.Tensor):
    """Loss, gradients and the bytes autograd saved for backward (distinct storages)."""
    model.set_grad_checkpointing(setting)
    model.zero_grad(set_to_none=True)
    saved, seen = [0], set()

    def pack(t: torch.Tensor) -> torch.Tensor:
        key = (t.untyped_storage().data_ptr(), t.dtype, tuple(t.shape))
        if key not in seen:
            seen.add(key)
            saved[0] += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = model(x).square().mean()
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    return loss.detach(), grads, saved[0]


def test_partial_checkpointing_gives_the_same_numbers_and_saves_less_per_block():
    model = _vit()
    x = torch.randn(2, 1, 4, 16, 16)
    reference_loss, reference_grads, _ = _pass(model, False, x)
    saved = []
    for count in range(DEPTH + 1):  # 0, 1, ..., every block
        loss, grads, bytes_saved = _pass(model, count, x)
        torch.testing.assert_close(loss, reference_loss, rtol=0, atol=0)
        for name, grad in grads.items():
            torch.testing.assert_close(grad, reference_grads[name], rtol=1e-6, atol=1e-7)
        saved.append(bytes_saved)
    # every further checkpointed block keeps fewer activations for backward
    assert all(later < earlier for earlier, later in itertools.pairwise(saved)), saved
    # True and False are the two ends; a fraction is that share of the blocks
    assert _pass(model, True, x)[2] == saved[-1] and _pass(model, False, x)[2] == saved[0]
    assert _pass(model, 0.5, x)[2] == saved[DEPTH // 2]


def test_which_blocks_are_checkpointed():
    assert checkpointed_blocks(6, 3) == [False, True, False, True, False, True]
    assert checkpointed_blocks(6, 0.5) == checkpointed_blocks(6, 3)
    assert checkpointed_blocks(4, 10) == [True] * 4 and checkpointed_blocks(4, True) == [True] * 4
    assert not any(checkpointed_blocks(4, 0)) and not any(checkpointed_blocks(4, False))


@pytest.mark.parametrize("value", [-1, 1.5, float("nan"), "half"])
def test_a_bad_setting_names_the_recipe_key(value):
    with pytest.raises(ValueError, match=r"encoder.init_args.activation_checkpointing"):
        ViTEncoder(size="vit_test", activation_checkpointing=value)
    assert checked_setting(3, "key") == 3


def test_the_recipe_setting_reaches_encoder_and_predictor_and_is_reported():
    encoder = ViTEncoder(size="vit_micro", activation_checkpointing=2)  # 4 blocks
    module = VJEPAModule(
        input_size=(8, 32, 32),
        patch_size=(2, 8, 8),
        encoder=encoder,
        predictor=PredictorConfig(embed_dim=32, depth=4, num_heads=2),
    )
    assert module.method.encoder.grad_checkpointing == 2
    assert module.method.predictor.grad_checkpointing == 2
    assert module.activation_checkpointing == 2
    module.set_activation_checkpointing(False)
    assert module.activation_checkpointing is False
