"""`fmtrain export CKPT OUT`: the evaluation encoder as safetensors + config.json."""

from __future__ import annotations

from jsonargparse import CLI

from fmtrain.export import export_encoder, load_encoder

__all__ = ["main"]


def export(ckpt: str, out: str) -> str:
    """Write a checkpoint's evaluation encoder as model.safetensors + config.json.

    The encoder is the one the method evaluates (the EMA target for JEPA);
    `fmtrain.load_encoder(OUT)` rebuilds it without Lightning, for fine-tuning elsewhere.

    Args:
        ckpt: checkpoint written by `fmtrain fit`.
        out: output folder (model.safetensors, config.json).
    """
    folder = export_encoder(ckpt, out)
    encoder = load_encoder(folder)  # read back once, so a broken export fails here
    params = sum(p.numel() for p in encoder.parameters())
    return f"exported {type(encoder).__name__} ({params:,} parameters) to {folder}"


def main(args: list[str]) -> None:
    print(CLI(export, args=args, prog="fmtrain export"))
