"""Classes 6–8: contracts between built components, checked from what was actually built.

- 6: an encoder returns tokens [B, N, D] (pooling is a separate head); whatever consumes
  them (predictor, decoder, head) is built for the width the encoder produces.
- 7: a pretrained component's real configuration (read from its checkpoint) matches the
  recipe (patch length, context length, channels, ...).
- 8: a spectral loss's FFT fits the signal it is applied to.

V-JEPA exercises 6 through the stage shapes `check` records; 7 and 8 apply to the signal
methods and are called by them when they land.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fmtrain.check.problems import CheckReport

__all__ = ["check_pretrained_config", "check_stft_sizes", "check_token_contract"]


def check_token_contract(
    report: CheckReport,
    stages: Sequence[dict[str, Any]],
    expected_widths: Mapping[str, int] | None = None,
) -> None:
    """Class 6 over recorded stages ``{"stage", "shape", ...}`` named ``*encoder*`` and
    ``*predictor*`` / ``*decoder*`` / ``*head*``. A consumer must produce the encoder's
    width unless the method declares another (`expected_widths`, e.g. an MAE decoder's
    pixels per patch)."""
    expected_widths = expected_widths or {}
    widths = []
    for s in stages:
        name, shape = s["stage"], s["shape"]
        if "encoder" in name.split(".")[-1] or name.endswith("encoder"):
            if len(shape) != 3:
                report.add(
                    "error",
                    "model.init_args.encoder",
                    f"{name} returns {list(shape)}; encoders must return tokens [B, N, D] — "
                    "a pooled [B, D] output leaves the predictor/decoder nothing per patch",
                    "return tokens from the encoder and pool in a separate head",
                    "contract",
                )
            else:
                widths.append(shape[-1])
    for s in stages:
        name, shape = s["stage"], s["shape"]
        consumer = any(k in name for k in ("predictor", "decoder", "head"))
        if not (consumer and widths and shape and len(shape) == 3):
            continue
        want = expected_widths.get(name, widths[0])
        if shape[-1] != want:
            what = "the encoder's features are" if name not in expected_widths else "it must be"
            report.add(
                "error",
                f"model.init_args.{name.split('.')[-1]}",
                f"{name} produces width {shape[-1]}, {what} {want} wide",
                "build it from the encoder's embed_dim (read off the built encoder)",
                "contract",
            )


def check_pretrained_config(
    report: CheckReport,
    component: str,
    real: Mapping[str, Any],
    recipe: Mapping[str, Any],
    keys: Mapping[str, str],
) -> None:
    """Class 7: `real` is the configuration stored with a pretrained component, `recipe`
    the values the recipe gives; `keys` maps each compared name to its recipe key."""
    for name, key in keys.items():
        if name in real and name in recipe and real[name] != recipe[name]:
            report.add(
                "error",
                key,
                f"the pretrained {component} was built with {name}={real[name]!r}, the recipe "
                f"says {recipe[name]!r}",
                f"set {key}: {real[name]!r} (the rest is built from the component)",
                "pretrained",
            )


def check_stft_sizes(
    report: CheckReport, key: str, n_ffts: Sequence[int], length: int, center: bool = True
) -> None:
    """Class 8: with ``center=True`` torch.stft pads by n_fft // 2 with reflection, which
    needs n_fft // 2 < length; without centring a frame needs n_fft <= length."""
    for n_fft in n_ffts:
        fits = (n_fft // 2 < length) if center else (n_fft <= length)
        if not fits:
            limit = 2 * length - 1 if center else length
            report.add(
                "error",
                key,
                f"n_fft={n_fft} does not fit a signal of {length} samples "
                f"({'center=True needs n_fft // 2 < length' if center else 'n_fft > length'})",
                f"use FFT sizes of at most {limit}, or longer signal windows",
                "spectral",
            )
