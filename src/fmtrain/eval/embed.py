"""Frozen encoders -> per-sample embeddings, and the labels that go with them.

`fmtrain embed` writes them for users' own downstream work; `fmtrain probe` scores them.
The encoder is whatever the method's `evaluation_encoder()` gives (for JEPA the EMA
target encoder, as in V-JEPA).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from fmtrain.eval.device import encode_autocast, resolve_device
from fmtrain.eval.labels import read_label_table
from fmtrain.nn.heads import mean_pool

__all__ = ["embed_batches", "embed_split", "read_labels", "save_embeddings"]


@torch.no_grad()
def embed_batches(
    encoder: nn.Module,
    batches: Iterable[torch.Tensor],
    *,
    keep_tokens: bool = False,
    device: str | torch.device | None = "auto",
) -> tuple[np.ndarray, np.ndarray | None]:
    """Pooled [N, D] (and tokens [N, T, D] in float16, or None) of input batches [B, C, ...].

    The encoder runs on `device` ("auto": the GPU when there is one, in bf16 autocast) in
    eval mode and is put back where and as it was afterwards; the outputs are CPU arrays.
    """
    target = resolve_device(device)
    home = next(encoder.parameters()).device
    was_training = encoder.training
    encoder.eval().to(target)
    pooled, tokens = [], []
    try:
        for x in batches:
            with encode_autocast(target):
                out = encoder(x.to(target)).float()
            pooled.append(mean_pool(out).cpu())
            if keep_tokens:
                tokens.append(out.half().cpu())  # half the memory; probes cast back to float
    finally:
        encoder.to(home).train(was_training)
    if not pooled:
        raise ValueError("nothing to embed: no input batch")
    return torch.cat(pooled).numpy(), torch.cat(tokens).numpy() if keep_tokens else None


def embed_split(
    encoder: nn.Module,
    volumes,
    *,
    batch_size: int = 16,
    keep_tokens: bool = True,
    desc: str = "embedding",
    device: str | torch.device | None = "auto",
) -> dict[str, Any]:
    """Encode every volume of a prepared split: pooled [N, D], tokens [N, T, D] (optional),
    and the sample keys, participants and devices, in split order. `desc` labels the
    progress bar (thousands of volumes take minutes on a CPU), shown on a terminal only.
    Where it runs: see :func:`embed_batches`."""
    target = resolve_device(device)
    starts = range(0, len(volumes), batch_size)
    # disable=None: a bar on a terminal only, not in logs and captured output
    bar = tqdm(starts, desc=f"{desc} ({target.type})", unit="batch", leave=False, disable=None)
    batches = (
        torch.stack([volumes.load(i) for i in range(start, min(start + batch_size, len(volumes)))])
        for start in bar
    )
    pooled, tokens = embed_batches(encoder, batches, keep_tokens=keep_tokens, device=target)
    samples = volumes.samples
    return {
        "pooled": pooled,
        "tokens": tokens,
        "keys": [s["key"] for s in samples],
        "participants": [s["participant_id"] for s in samples],
        "devices": [s["device"] for s in samples],
    }


def read_labels(path: str | Path) -> dict[str, dict[str, str]]:
    """labels.tsv (or .csv) rows by their id, as written (`fmtrain probe` matches ids to
    samples more leniently: `fmtrain.eval.labels.match_labels`)."""
    table = read_label_table(path)
    return {r[table.id_column]: r for r in table.rows}


def save_embeddings(path: str | Path, embedded: dict[str, Any], **extra: np.ndarray) -> None:
    """NPZ with ``ids`` (sample keys), ``participants``, ``devices`` and ``embeddings``,
    plus any `extra` arrays."""
    np.savez_compressed(
        path,
        ids=np.asarray(embedded["keys"]),
        participants=np.asarray(embedded["participants"]),
        devices=np.asarray(embedded["devices"]),
        embeddings=embedded["pooled"].astype(np.float32),
        **extra,
    )
