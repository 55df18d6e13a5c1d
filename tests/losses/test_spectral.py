"""Multi-resolution STFT loss against a numpy hand computation, and its recipe checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fmtrain.losses.spectral import (
    POWER_EPS,
    STFTLossConfig,
    multi_resolution_stft_loss,
    stft_loss_terms,
    validate_stft_lengths,
)


def magnitudes_by_hand(x: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """|rfft| of Hann-windowed frames of a reflect-padded 1D signal -> [frames, bins]."""
    padded = np.pad(x.astype(np.float64), n_fft // 2, mode="reflect")
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)  # periodic Hann
    frames = [padded[s : s + n_fft] * window for s in range(0, len(padded) - n_fft + 1, hop)]
    power = np.abs(np.fft.rfft(np.stack(frames), axis=-1)) ** 2
    return np.sqrt(np.maximum(power, POWER_EPS))


def loss_by_hand(pred: np.ndarray, target: np.ndarray, config: STFTLossConfig) -> float:
    total = 0.0
    for n_fft, hop in zip(config.fft_sizes, config.hop_sizes, strict=True):
        mag_hat = np.stack([magnitudes_by_hand(s, n_fft, hop) for s in pred.reshape(-1, 256)])
        mag = np.stack([magnitudes_by_hand(s, n_fft, hop) for s in target.reshape(-1, 256)])
        sc = np.linalg.norm(mag - mag_hat) / np.linalg.norm(mag)
        total += sc + np.mean(np.abs(np.log(mag) - np.log(mag_hat)))
    return total / len(config.fft_sizes)


SMALL = STFTLossConfig(fft_sizes=(32, 64), hop_sizes=(8, 16))


def sine(amplitude: float, bin_index: int, n_fft: int = 64, length: int = 256) -> np.ndarray:
    """A sinusoid exactly on FFT bin `bin_index` of an `n_fft`-point transform."""
    return amplitude * np.sin(2 * np.pi * bin_index * np.arange(length) / n_fft)


def test_loss_of_a_signal_with_itself_is_zero():
    x = torch.randn(2, 3, 256)
    assert multi_resolution_stft_loss(x, x.clone(), SMALL).item() == pytest.approx(0.0, abs=1e-7)


def test_matches_a_numpy_hand_computation_on_sinusoids():
    pred = np.stack([sine(1.0, 4), sine(0.5, 8)])[:, None]  # [2, 1, 256]
    target = np.stack([sine(2.0, 4), sine(1.5, 8) + 0.1 * sine(1.0, 3)])[:, None]
    expected = loss_by_hand(pred, target, SMALL)
    got = multi_resolution_stft_loss(
        torch.tensor(pred, dtype=torch.float32), torch.tensor(target, dtype=torch.float32), SMALL
    )
    assert got.item() == pytest.approx(expected, rel=1e-5, abs=1e-5)


def test_scaling_by_two_gives_log_two_and_unit_convergence():
    # broadband noise keeps every bin far above the power floor, so the ratio is exact
    x = torch.randn(2, 2, 256, generator=torch.Generator().manual_seed(0))
    convergence, log_distance = stft_loss_terms(2 * x, x, SMALL)
    assert log_distance.item() == pytest.approx(math.log(2), rel=1e-4)
    assert convergence.item() == pytest.approx(1.0, rel=1e-4)


@pytest.mark.parametrize("target_zero", [True, False])
def test_gradient_is_finite_for_zero_input(target_zero):
    pred = torch.zeros(2, 2, 256, requires_grad=True)
    target = torch.zeros(2, 2, 256) if target_zero else torch.randn(2, 2, 256)
    loss = multi_resolution_stft_loss(pred, target, SMALL)
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(pred.grad).all()


def test_computed_in_float32_under_bf16_autocast():
    x = torch.randn(2, 1, 256)
    y = torch.randn(2, 1, 256)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = multi_resolution_stft_loss(x.bfloat16(), y.bfloat16(), SMALL)
    assert loss.dtype == torch.float32
    expected = multi_resolution_stft_loss(x.bfloat16().float(), y.bfloat16().float(), SMALL)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_refuses_fft_longer_than_the_window_naming_both_values():
    config = STFTLossConfig(fft_sizes=(256, 2048), hop_sizes=(64, 512))
    with pytest.raises(ValueError) as err:
        validate_stft_lengths(config, 1024)
    message = str(err.value)
    for part in ("model.init_args.stft.fft_sizes", "[256, 2048]", "2048", "1024"):
        assert part in message
    assert "data.init_args.window" in message
    assert "[256, 512]" in message  # the suggested fix fits
    validate_stft_lengths(STFTLossConfig(fft_sizes=(256, 512), hop_sizes=(64, 128)), 1024)


def test_loss_itself_refuses_a_short_signal():
    with pytest.raises(ValueError, match=r"fft_sizes=\[256, 512\].*512 > data window 300"):
        multi_resolution_stft_loss(torch.zeros(1, 1, 300), torch.zeros(1, 1, 300), STFTLossConfig())


def test_default_config_fits_a_1024_sample_window():
    config = STFTLossConfig()
    assert config.windows == config.fft_sizes == (256, 512)
    validate_stft_lengths(config, 1024)


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"fft_sizes": (256, 512), "hop_sizes": (64,)}, r"stft\.hop_sizes=\[64\] has 1 entries"),
        (
            {"fft_sizes": (256,), "hop_sizes": (64,), "win_lengths": (128, 256)},
            r"stft\.win_lengths=\[128, 256\] has 2 entries",
        ),
        ({"fft_sizes": (256,), "hop_sizes": (0,)}, r"stft\.hop_sizes=\[0\] must all be >= 1"),
        (
            {"fft_sizes": (256,), "hop_sizes": (64,), "win_lengths": (512,)},
            r"stft\.win_lengths\[0\]=512 > model\.init_args\.stft\.fft_sizes\[0\]=256",
        ),
        ({"fft_sizes": (256,), "hop_sizes": (300,)}, r"stft\.hop_sizes\[0\]=300 > window"),
        ({"fft_sizes": (), "hop_sizes": ()}, r"stft\.fft_sizes is empty"),
        ({"weight": -1.0}, r"stft\.weight must be >= 0"),
    ],
)
def test_config_validation_names_the_recipe_key(kwargs, pattern):
    with pytest.raises(ValueError, match=r"model\.init_args\." + pattern):
        STFTLossConfig(**kwargs)


def test_config_accepts_lists_from_a_recipe():
    config = STFTLossConfig(fft_sizes=[64], hop_sizes=[16], win_lengths=[48])  # type: ignore[arg-type]
    assert config.fft_sizes == (64,) and config.windows == (48,)
    assert hash(config) == hash(STFTLossConfig(fft_sizes=(64,), hop_sizes=(16,), win_lengths=(48,)))
