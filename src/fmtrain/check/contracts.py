"""Class 6: an encoder returns tokens [B, N, D] (pooling is a separate head), and whatever
consumes them (predictor, decoder, head) is built for the width the encoder produces,
checked from the stage shapes of the real step `check` runs.

Classes 7 and 8 are refused where the values meet, so `check` reports them when it builds
the recipe: a pretrained time-series encoder whose patch or context length or channels
differ from the recipe (`fmtrain.nn.timeseries`), and an STFT loss whose FFT does not fit
the window (`fmtrain.losses.spectral.validate_stft_lengths`, called by the signal method).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fmtrain.check.problems import CheckReport

__all__ = ["check_token_contract"]


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
