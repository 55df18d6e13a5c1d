"""Frozen encoders -> per-sample embeddings, and the labels that go with them.

`fmtrain embed` writes them for users' own downstream work; `fmtrain probe` scores them.
The encoder is whatever the method's `evaluation_encoder()` gives (for JEPA the EMA
target encoder, as in V-JEPA).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from fmtrain.eval.device import encode_autocast, resolve_device
from fmtrain.nn.heads import mean_pool

__all__ = ["embed_split", "read_labels", "save_embeddings"]


@torch.no_grad()
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
    progress bar (thousands of volumes take minutes on a CPU). The encoder runs on
    `device` ("auto": the GPU when there is one, in bf16 autocast) and is put back where
    it was afterwards; the outputs are CPU arrays."""
    target = resolve_device(device)
    home = next(encoder.parameters()).device
    was_training = encoder.training
    encoder.eval().to(target)
    pooled, tokens = [], []
    starts = range(0, len(volumes), batch_size)
    try:
        for start in tqdm(starts, desc=f"{desc} ({target.type})", unit="batch", leave=False):
            stop = min(start + batch_size, len(volumes))
            x = torch.stack([volumes.load(i) for i in range(start, stop)]).to(target)
            with encode_autocast(target):
                out = encoder(x).float()
            pooled.append(mean_pool(out).cpu())
            if keep_tokens:
                tokens.append(out.half().cpu())  # half the memory; probes cast back to float
    finally:
        encoder.to(home).train(was_training)
    samples = volumes.samples
    return {
        "pooled": torch.cat(pooled).numpy(),
        "tokens": torch.cat(tokens).numpy() if keep_tokens else None,
        "keys": [s["key"] for s in samples],
        "participants": [s["participant_id"] for s in samples],
        "devices": [s["device"] for s in samples],
    }


def read_labels(path: str | Path) -> dict[str, dict[str, str]]:
    """labels.tsv (or .csv) rows by ``filepath`` (the key prepared samples carry)."""
    path = Path(path)
    delimiter = "\t" if path.suffix == ".tsv" else ","
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f, delimiter=delimiter))
    if not rows or "filepath" not in rows[0]:
        raise ValueError(f"{path}: a labels file needs a header with a 'filepath' column")
    return {r["filepath"]: r for r in rows}


def save_embeddings(path: str | Path, embedded: dict[str, Any]) -> None:
    """NPZ with ``ids`` (sample keys), ``participants``, ``devices`` and ``embeddings``."""
    np.savez_compressed(
        path,
        ids=np.asarray(embedded["keys"]),
        participants=np.asarray(embedded["participants"]),
        devices=np.asarray(embedded["devices"]),
        embeddings=embedded["pooled"].astype(np.float32),
    )
