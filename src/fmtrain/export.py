"""Pretrained encoders out of fmtrain, for fine-tuning in your own code.

`export_encoder(ckpt, out)` writes `model.safetensors` (the evaluation encoder's weights:
the EMA target for JEPA) and `config.json` (how to rebuild it). `load_encoder(path)` reads
either that folder or a training checkpoint and returns a plain `nn.Module`. Neither needs
Lightning: checkpoints are read with torch, the encoder is rebuilt from its configuration.

    encoder = fmtrain.load_encoder("encoder/")     # or "run/checkpoints/last.ckpt"
    tokens = encoder(x)                            # [B, N, D]
    encoder.fmtrain_config["patch_size"]           # what it was trained with
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fmtrain.core.grid import TokenGrid
from fmtrain.nn.encoder import spec_from_config

__all__ = ["build_from_config", "export_encoder", "load_encoder"]

FORMAT = "fmtrain-encoder/1"
_WEIGHTS, _CONFIG = "model.safetensors", "config.json"
_ENTRY = "fmtrain_encoder"  # written by PretrainMethod.on_save_checkpoint


def _from_checkpoint(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    # Lightning checkpoints pickle hyper-parameters (fmtrain's config dataclasses): not
    # loadable with weights_only. Only load checkpoints you trust, as with any pickle.
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    entry = checkpoint.get(_ENTRY)
    if entry is None:
        raise ValueError(
            f"{path} has no '{_ENTRY}' entry: it was not written by an fmtrain method (or by "
            "one older than the export format). Re-save it with `fmtrain fit --ckpt_path ... "
            "--trainer.max_steps=<its step>` or load the weights by hand."
        )
    prefix = entry["prefix"]
    state = {
        k[len(prefix) :]: v for k, v in checkpoint["state_dict"].items() if k.startswith(prefix)
    }
    return dict(entry["config"], source=str(path), step=checkpoint.get("global_step")), state


def build_from_config(config: dict[str, Any]) -> nn.Module:
    """A freshly initialised encoder from its description (`encoder.fmtrain_config`)."""
    if config.get("format", FORMAT) != FORMAT:
        raise ValueError(f"unknown encoder format {config.get('format')!r}; expected {FORMAT}")
    grid = TokenGrid.from_sizes(config["input_size"], config["patch_size"])
    return spec_from_config(config["encoder"]).build(grid, int(config["in_chans"]))


def load_encoder(path: str | os.PathLike, *, map_location: str = "cpu") -> nn.Module:
    """Rebuild a pretrained encoder from an exported folder or an fmtrain checkpoint.

    Args:
        path: a folder written by `export_encoder` / `fmtrain export`, or a `.ckpt`.
        map_location: device for the weights.

    Returns:
        The encoder in eval mode, with its configuration as `encoder.fmtrain_config`.
    """
    path = Path(path)
    if path.is_dir():
        from safetensors.torch import load_file

        config = json.loads((path / _CONFIG).read_text())
        state = load_file(path / _WEIGHTS, device=map_location)
    else:
        config, state = _from_checkpoint(path)
    config.setdefault("format", FORMAT)  # checkpoints carry none; exported folders do
    encoder = build_from_config(config)
    missing, unexpected = encoder.load_state_dict(state, strict=False)
    # fixed buffers (sin-cos positions) are rebuilt, not stored; anything else must match
    missing = [k for k in missing if k not in dict(encoder.named_buffers())]
    if missing or unexpected:
        raise ValueError(
            f"{path}: the weights do not fit {config['encoder']['class_path']}: missing "
            f"{missing[:5]}, unexpected {unexpected[:5]}"
        )
    encoder.to(map_location).eval()
    encoder.fmtrain_config = config
    return encoder


def export_encoder(checkpoint: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Write `checkpoint`'s evaluation encoder as safetensors weights plus a JSON config.

    Args:
        checkpoint: a checkpoint written by `fmtrain fit`.
        out_dir: folder to create (or overwrite) with model.safetensors and config.json.

    Returns:
        The folder.
    """
    from safetensors.torch import save_file

    config, state = _from_checkpoint(checkpoint)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # safetensors refuses tensors that share memory or are views: store compact copies
    save_file({k: v.detach().contiguous().clone() for k, v in state.items()}, out / _WEIGHTS)
    (out / _CONFIG).write_text(json.dumps({"format": FORMAT, **config}, indent=2) + "\n")
    return out
