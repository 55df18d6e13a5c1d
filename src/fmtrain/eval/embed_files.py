"""`fmtrain embed --files`: embed new volume files, not only a prepared split.

Each file goes through what `fmtrain prepare` does to the recipe's training data (the same
reader, the recipe's ``data.spacing`` and ``data.input_size``, per-volume normalisation, the
float16 it is stored in), so a file embeds as it would have after `prepare`. Files that
cannot be read are skipped, counted by reason, and named in the output; none is fatal
unless no file at all could be read.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from fmtrain.data.volumes.errors import VolumeReadError
from fmtrain.data.volumes.read import read_volume
from fmtrain.data.volumes.storable import to_stored
from fmtrain.datamodules.volumes import VolumeDataModule
from fmtrain.eval.embed import embed_batches, save_embeddings

log = logging.getLogger("fmtrain")

__all__ = ["FileEmbedding", "embed_files", "expand_file_list"]

#: names that are lists of paths, one per line, rather than volumes
LIST_SUFFIXES = (".txt", ".lst", ".list")


def expand_file_list(entries: Sequence[str]) -> list[tuple[str, str]]:
    """(id, path) per volume: entries as given, and the lines of any ``.txt``/``.lst`` list.

    In a list, blank lines and lines starting with ``#`` are ignored, and a relative path
    is relative to the list's folder (as a manifest's are); its id is the line as written.

    Raises:
        ValueError: a list that does not exist, or no path at all.
    """
    out: list[tuple[str, str]] = []
    for entry in entries:
        if not entry.lower().endswith(LIST_SUFFIXES):
            out.append((entry, entry))
            continue
        listing = Path(entry)
        if not listing.is_file():
            raise ValueError(f"--files {entry}: no such list of paths")
        for line in listing.read_text().splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                is_url = "://" in line
                out.append((line, line if is_url else str(listing.parent / line)))
    if not out:
        raise ValueError("--files: no path given (paths of volumes, or a .txt list of them)")
    return out


@dataclass
class FileEmbedding:
    """What `embed_files` wrote: how many files, and the skipped ones with reasons."""

    out: str
    embedded: int
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (id, "reason: detail")

    def summary(self) -> str:
        text = f"{self.embedded} file(s) embedded into {self.out}"
        if self.skipped:
            reasons = Counter(reason.split(":", 1)[0] for _, reason in self.skipped)
            counted = ", ".join(f"{n} {r}" for r, n in reasons.most_common())
            text += f"; {len(self.skipped)} skipped ({counted}; listed in the .npz as skipped)"
        return text


def _model_input(path: str, dm: VolumeDataModule) -> tuple[torch.Tensor, dict[str, Any]]:
    """One file -> the model input [C, *input_size] that `prepare` + loading would give."""
    volume = read_volume(
        path, storage_options=dm.storage_options, allow_missing_spacing=dm.allow_missing_spacing
    )
    # through the float16 `prepare` stores, so a file embeds as its prepared copy would
    stored = to_stored(volume, path, dm.spacing, dm.input_size)
    x = torch.from_numpy(stored.array.astype(np.float32))[None]
    transform = dm.input_transform()
    return (x if transform is None else transform(x)), volume.metadata


def _batches(
    files: list[tuple[str, str]],
    dm: VolumeDataModule,
    batch_size: int,
    kept: list[tuple[str, dict]],
    skipped: list[tuple[str, str]],
) -> Iterator[torch.Tensor]:
    batch: list[torch.Tensor] = []
    for name, path in tqdm(files, desc="embedding files", unit="file", leave=False, disable=None):
        try:
            x, metadata = _model_input(path, dm)
        except VolumeReadError as err:
            skipped.append((name, f"{err.reason}: {err.detail}"))
            log.warning("skipping %s: %s: %s", name, err.reason, err.detail)
            continue
        except Exception as err:  # an unforeseen file is counted and named, not fatal
            skipped.append((name, f"unexpected_error: {type(err).__name__}: {err}"))
            log.warning("skipping %s: unexpected_error: %s: %s", name, type(err).__name__, err)
            continue
        kept.append((name, metadata))
        batch.append(x)
        if len(batch) == batch_size:
            yield torch.stack(batch)
            batch = []
    if batch:
        yield torch.stack(batch)


def embed_files(
    module: Any,
    datamodule: Any,
    files: Sequence[str],
    out: str = "embeddings.npz",
    *,
    batch_size: int = 8,
    device: str = "auto",
) -> FileEmbedding:
    """Embed volume files with the method's evaluation encoder; write them as `fmtrain embed`
    writes a split (``ids`` are the paths as given).

    Args:
        module: the built method with its checkpoint loaded.
        datamodule: the recipe's datamodule; its spacing and input size preprocess the files.
        files: volume paths or URLs (NIfTI, DICOM files, DICOM series folders), and/or
            ``.txt`` lists of them (see :func:`expand_file_list`).
        out: the .npz to write: ``ids``, ``participants`` and ``devices`` (from DICOM
            headers; empty for NIfTI), ``embeddings`` [N, D], and ``skipped`` /
            ``skipped_reasons`` for the files that could not be read.
        batch_size: files per encoder call.
        device: where the encoder runs ("auto": the GPU when there is one).

    Raises:
        ValueError: the recipe's data is not volumes, or no file could be read.
    """
    if not isinstance(datamodule, VolumeDataModule):
        raise ValueError(
            f"embed --files reads volume files (NIfTI, DICOM) for recipes whose data is a "
            f"VolumeDataModule; this recipe's data is {type(datamodule).__name__}: prepare "
            "the files as its data and embed a split with --split"
        )
    listed = expand_file_list(files)
    kept: list[tuple[str, dict]] = []
    skipped: list[tuple[str, str]] = []
    batches = _batches(listed, datamodule, batch_size, kept, skipped)
    try:
        pooled, _ = embed_batches(module.evaluation_encoder(), batches, device=device)
    except ValueError:
        if kept:
            raise
        reasons = "; ".join(f"{name}: {why}" for name, why in skipped[:3])
        raise ValueError(
            f"none of the {len(listed)} file(s) could be read as a volume ({reasons}"
            f"{' ...' if len(skipped) > 3 else ''})"
        ) from None
    embedded = {
        "pooled": pooled,
        "keys": [name for name, _ in kept],
        "participants": [str(m.get("patient_id") or "") for _, m in kept],
        "devices": [str(m.get("model_name") or "") for _, m in kept],
    }
    save_embeddings(
        out,
        embedded,
        skipped=np.asarray([name for name, _ in skipped], dtype=str),
        skipped_reasons=np.asarray([why for _, why in skipped], dtype=str),
    )
    return FileEmbedding(out, len(kept), skipped)  # `fmtrain embed` prints its summary
