"""Multi-resolution STFT loss for signals: spectral convergence plus log-magnitude distance.

A masked MSE on raw samples rewards predicting the mean of an uncertain waveform, which
smooths away high-frequency content. Comparing short-time spectra at several resolutions
penalises that blur while staying insensitive to small phase shifts. The loss here is
unweighted; a method adds `weight * loss` beside its masked MSE.

Each resolution i contributes

    ‖|S(y)| - |S(ŷ)|‖_F / ‖|S(y)|‖_F  +  mean |log|S(y)| - log|S(ŷ)||

where S is the STFT with a Hann window and the norms run over the whole batch. The terms
are averaged over resolutions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = [
    "STFTLossConfig",
    "multi_resolution_stft_loss",
    "stft_loss_terms",
    "validate_stft_lengths",
]

KEY = "model.init_args.stft"
# Floor on |S|^2 before the sqrt and the log: d sqrt(p)/dp and d log(m)/dm are infinite
# at 0, and silent bins (zero padding, a flat lead) are common in physiological signals.
POWER_EPS = 1e-7


@dataclass(frozen=True, kw_only=True)
class STFTLossConfig:
    """Resolutions of the multi-resolution STFT loss (recipe key `model.init_args.stft`).

    Args:
        fft_sizes: FFT size of each resolution, in samples.
        hop_sizes: hop between frames of each resolution; <= its window length.
        win_lengths: Hann window length of each resolution (None: the FFT sizes).
        weight: weight of the STFT loss beside the masked MSE (applied by the method).
        center: pad each signal by n_fft // 2 on both sides (reflect) so frames are
            centred on their samples, as `torch.stft` does.
    """

    fft_sizes: tuple[int, ...] = (256, 512)
    hop_sizes: tuple[int, ...] = (64, 128)
    win_lengths: tuple[int, ...] | None = None
    weight: float = 0.3
    center: bool = True

    def __post_init__(self) -> None:
        # recipes hand lists; keep the dataclass hashable and comparable
        for name in ("fft_sizes", "hop_sizes", "win_lengths"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, tuple(int(v) for v in value))
        ffts, hops, wins = self.fft_sizes, self.hop_sizes, self.windows
        if not ffts:
            raise ValueError(f"{KEY}.fft_sizes is empty: give at least one FFT size, e.g. [256].")
        for name, values in (("fft_sizes", ffts), ("hop_sizes", hops), ("win_lengths", wins)):
            if len(values) != len(ffts):
                raise ValueError(
                    f"{KEY}.{name}={list(values)} has {len(values)} entries but "
                    f"{KEY}.fft_sizes={list(ffts)} has {len(ffts)}: give one per resolution."
                )
            if min(values) < 1:
                raise ValueError(f"{KEY}.{name}={list(values)} must all be >= 1.")
        for i, (n_fft, hop, win) in enumerate(zip(ffts, hops, wins, strict=True)):
            if win > n_fft:
                raise ValueError(
                    f"{KEY}.win_lengths[{i}]={win} > {KEY}.fft_sizes[{i}]={n_fft}: a window "
                    f"cannot be longer than its FFT. Use win_lengths[{i}] <= {n_fft}."
                )
            if hop > win:
                raise ValueError(
                    f"{KEY}.hop_sizes[{i}]={hop} > window length {win}: frames would skip "
                    f"samples. Use hop_sizes[{i}] <= {win} (a quarter of it is usual)."
                )
        if not self.weight >= 0.0:
            raise ValueError(f"{KEY}.weight must be >= 0, got {self.weight}.")

    @property
    def windows(self) -> tuple[int, ...]:
        """Window length of each resolution (the FFT sizes unless `win_lengths` is set)."""
        return self.fft_sizes if self.win_lengths is None else self.win_lengths


def _largest_power_of_two(limit: int) -> int:
    return 1 << (max(limit, 1).bit_length() - 1)


def validate_stft_lengths(
    config: STFTLossConfig,
    signal_length: int,
    *,
    key: str = f"{KEY}.fft_sizes",
    length_key: str = "data.init_args.window",
) -> None:
    """Refuse FFT sizes that do not fit a signal of `signal_length` samples.

    With `center=True`, torch reflect-pads by n_fft // 2, which needs n_fft // 2 <
    signal_length; we ask more, n_fft <= signal_length, because a frame longer than the
    signal measures its padding rather than the signal (n_fft <= T implies the first).

    Raises:
        ValueError: naming both recipe keys, both values and sizes that would fit.
    """
    too_long = [n for n in config.fft_sizes if n > signal_length]
    if not too_long:
        return
    fallback = _largest_power_of_two(signal_length // 2)
    example = sorted({n if n <= signal_length else fallback for n in config.fft_sizes})
    raise ValueError(
        f"{key}={list(config.fft_sizes)} has {', '.join(map(str, too_long))} > data window "
        f"{signal_length} samples ({length_key}={signal_length}): an FFT frame longer than "
        f"the signal measures padding, not signal. Fix: use FFT sizes <= {signal_length}, "
        f"e.g. {example} (with hop_sizes and win_lengths no longer than each), or a longer "
        f"{length_key}."
    )


def _magnitude(x: torch.Tensor, n_fft: int, hop: int, win: int, center: bool) -> torch.Tensor:
    """|STFT| of [N, T] signals -> [N, n_fft // 2 + 1, frames], floored at sqrt(POWER_EPS)."""
    window = torch.hann_window(win, device=x.device, dtype=x.dtype)
    spec = torch.stft(
        x,
        n_fft=n_fft,
        hop_length=hop,
        win_length=win,
        window=window,
        center=center,
        pad_mode="reflect",
        return_complex=True,
    )
    power = spec.real.square() + spec.imag.square()
    return torch.sqrt(torch.clamp(power, min=POWER_EPS))


def stft_loss_terms(
    prediction: torch.Tensor, target: torch.Tensor, config: STFTLossConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """(spectral convergence, log-magnitude L1), each averaged over resolutions, in fp32.

    Args:
        prediction: [B, C, T] predicted signals; each channel gets its own STFT.
        target: [B, C, T] true signals.
        config: the resolutions.
    """
    if prediction.shape != target.shape or prediction.dim() != 3:
        raise ValueError(
            f"STFT loss expects prediction and target of one shape [B, C, T], got "
            f"{list(prediction.shape)} and {list(target.shape)}"
        )
    validate_stft_lengths(config, prediction.shape[-1])
    # fp32 whatever the autocast dtype: cuFFT has no bf16 transform (fp16 only for powers
    # of two), bf16's 8-bit mantissa cannot resolve the ratio of two nearly equal norms
    # late in training, and the power floor 1e-7 is below fp16's smallest normal number.
    with torch.autocast(prediction.device.type, enabled=False):
        y_hat = prediction.float().reshape(-1, prediction.shape[-1])
        y = target.float().reshape(-1, target.shape[-1])
        convergence = y_hat.new_zeros(())
        log_distance = y_hat.new_zeros(())
        resolutions = zip(config.fft_sizes, config.hop_sizes, config.windows, strict=True)
        for n_fft, hop, win in resolutions:
            mag_hat = _magnitude(y_hat, n_fft, hop, win, config.center)
            mag = _magnitude(y, n_fft, hop, win, config.center)
            convergence = convergence + torch.linalg.vector_norm(mag - mag_hat) / (
                torch.linalg.vector_norm(mag)
            )
            log_distance = log_distance + F.l1_loss(torch.log(mag_hat), torch.log(mag))
        count = len(config.fft_sizes)
        return convergence / count, log_distance / count


def multi_resolution_stft_loss(
    prediction: torch.Tensor, target: torch.Tensor, config: STFTLossConfig
) -> torch.Tensor:
    """Spectral convergence + log-magnitude distance, averaged over resolutions (fp32 scalar).

    The result is unweighted: `config.weight` is for the method that adds it to its MSE.

    Raises:
        ValueError: if an FFT size is longer than the signals (see `validate_stft_lengths`).
    """
    convergence, log_distance = stft_loss_terms(prediction, target, config)
    return convergence + log_distance
