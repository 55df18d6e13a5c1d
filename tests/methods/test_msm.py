"""Masked signal modeling: loss on hidden patches only, a reconstruction that keeps the
visible samples, STFT sizes refused when the recipe is built, and the shape contracts an
encoder and a decoder must keep (each failing with the recipe key and both values)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch
from torch import nn

from fmtrain.core import TokenGrid
from fmtrain.losses.regression import masked_patch_mse, patchify
from fmtrain.losses.spectral import STFTLossConfig
from fmtrain.masks import RandomPatch
from fmtrain.methods import MaskedSignalModel, MaskedSignalModule
from fmtrain.nn import MAEDecoder, VisionTransformer
from fmtrain.nn.encoder import EncoderSpec, ViTEncoder

INPUT, PATCH = (2, 1024), (1, 64)  # ECG + PPG, 1024 samples, per-channel patches


def _model(stft: STFTLossConfig | None = STFTLossConfig(), decoder_patch=PATCH):  # noqa: B008
    torch.manual_seed(0)
    grid = TokenGrid.from_sizes(INPUT, PATCH)
    enc = VisionTransformer.from_size("vit_test", grid=grid, in_chans=1)
    dec_grid = TokenGrid.from_sizes((2, 1024 * decoder_patch[1] // 64), decoder_patch)
    dec = MAEDecoder(grid=dec_grid, encoder_dim=enc.embed_dim, in_chans=1, embed_dim=32, depth=1,
                     num_heads=2)  # fmt: skip
    return MaskedSignalModel(enc, dec, PATCH, input_size=INPUT, stft=stft), grid


def _masks(grid, batch, ratio=0.4):
    (pair,) = RandomPatch(ratio=ratio).sample(grid.shape, batch, np.random.default_rng(0))
    return pair.context, pair.target


def test_masked_mse_reads_hidden_patches_only():
    x = torch.randn(3, 1, *INPUT)
    grid = TokenGrid.from_sizes(INPUT, PATCH)
    visible, hidden = _masks(grid, 3)
    patches = patchify(x, PATCH)
    prediction = torch.randn(3, hidden.shape[1], 64)
    other = patches.clone()
    for b in range(3):  # change every visible patch: the loss must not move
        other[b, visible[b]] = 100.0
    assert torch.equal(
        masked_patch_mse(prediction, patches, hidden), masked_patch_mse(prediction, other, hidden)
    )
    other[0, hidden[0, 0]] += 1.0  # one hidden patch changed: it must
    assert masked_patch_mse(prediction, other, hidden) != masked_patch_mse(
        prediction, patches, hidden
    )


def test_reconstruction_keeps_visible_samples_and_places_predictions():
    model, grid = _model()
    x = torch.randn(2, 1, *INPUT)
    _, hidden = _masks(grid, 2)
    prediction = torch.full((2, hidden.shape[1], 64), 7.0)
    signal = model.reconstruct(patchify(x, PATCH), prediction, hidden)
    assert signal.shape == x.shape
    for b in range(2):
        for token in range(grid.num_tokens):
            c, p = divmod(token, grid.shape[1])
            got = signal[b, 0, c, p * 64 : (p + 1) * 64]
            want = (
                torch.full_like(got, 7.0)
                if token in hidden[b]
                else x[b, 0, c, p * 64 : (p + 1) * 64]
            )
            assert torch.equal(got, want), (b, token)


def test_a_step_adds_the_weighted_stft_term_and_trains():
    model, grid = _model()
    x = torch.randn(4, 1, *INPUT)
    visible, hidden = _masks(grid, 4)
    out = model(x, [visible], [hidden])
    assert set(out.logs) == {"mse", "stft"}
    torch.testing.assert_close(out.loss, out.logs["mse"] + 0.3 * out.logs["stft"])
    out.loss.backward()
    assert all(p.grad is not None for p in model.encoder.parameters() if p.requires_grad)
    plain, _ = _model(stft=None)
    assert set(plain(x, [visible], [hidden]).logs) == {"mse"}


def test_an_fft_longer_than_the_window_is_refused_when_the_model_is_built():
    with pytest.raises(ValueError) as err:
        MaskedSignalModule(
            input_size=INPUT,
            patch_size=PATCH,
            encoder=ViTEncoder(size="vit_test"),
            stft=STFTLossConfig(fft_sizes=(256, 2048), hop_sizes=(64, 512)),
        )
    message = str(err.value)
    assert "model.init_args.stft.fft_sizes" in message and "2048" in message
    assert "data.init_args.window" in message and "1024" in message


def test_a_decoder_built_for_another_patch_size_is_refused_naming_both():
    model, grid = _model(decoder_patch=(1, 128))  # the home-grown bug: projection for 128
    visible, hidden = _masks(grid, 2)
    with pytest.raises(ValueError) as err:
        model(torch.randn(2, 1, *INPUT), [visible], [hidden])
    message = str(err.value)
    assert "model.init_args.decoder predicts 128" in message and "holds 64" in message
    assert "model.init_args.patch_size=[1, 64]" in message


class _Pooling(nn.Module):
    """An encoder that pools its tokens: [B, N, D] -> [B, D] (the bug the contract stops)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner, self.embed_dim = inner, inner.embed_dim

    def forward(self, x, keep=None):
        return self.inner(x, keep=keep).mean(dim=1)


@dataclass(frozen=True, kw_only=True)
class PoolingEncoder(EncoderSpec):
    """A user's encoder spec whose encoder pools."""

    def build(self, grid, in_chans):
        return _Pooling(ViTEncoder(size="vit_test").build(grid, in_chans))


def test_an_encoder_that_pools_is_refused_naming_the_key():
    module = MaskedSignalModule(input_size=INPUT, patch_size=PATCH, encoder=PoolingEncoder())
    grid = module.grid
    visible, hidden = _masks(grid, 2)
    with pytest.raises(ValueError) as err:
        module.method(torch.randn(2, 1, *INPUT), [visible], [hidden])
    message = str(err.value)
    assert "model.init_args.encoder returned [2, 64]" in message and "It pools" in message
