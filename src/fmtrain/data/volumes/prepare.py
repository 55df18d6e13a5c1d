"""`fmtrain prepare`: raw volumes -> resampled, cropped, normalized float16 zarr, once.

Runs in parallel processes with a progress bar; every finished volume leaves a record, so an
interrupted run resumes where it stopped. Bad files are skipped and counted by reason; the
run fails only when more than `max_skip_fraction` of them were bad, or none was good. The
layout is described in `fmtrain.data.volumes.prepared`.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fmtrain.core.storage import join, write_bytes
from fmtrain.data.preparation import (
    finished_records,
    progress_url,
    run_tasks,
    write_or_match_json,
)
from fmtrain.data.splits import DEFAULT_FRACTIONS, assign_splits, split_counts
from fmtrain.data.volumes.catalog import CatalogItem, read_catalog
from fmtrain.data.volumes.errors import SET_ASIDE, PrepareFailed, VolumeReadError
from fmtrain.data.volumes.geometry import (
    derive_geometry,
    refuse_oversized_resample,
    survey_geometry,
)
from fmtrain.data.volumes.prepared import PreparedDataset, open_zarr_group
from fmtrain.data.volumes.storable import to_stored

log = logging.getLogger("fmtrain.data")

__all__ = ["prepare_dataset", "prepare_params_match"]

# 2: one pool array of every volume read, split afterwards (samples.json gives the indices)
FORMAT_VERSION = 2
POOL = "pool"


@dataclass(frozen=True)
class _Task:
    out: str
    split: str
    index: int
    item: CatalogItem
    spacing: tuple[float, ...]
    size: tuple[int, ...]
    storage_options: dict | None
    allow_missing_spacing: bool
    cache_dir: str | None


_ARRAYS: dict[tuple[str, str], Any] = {}  # per worker process: (out, split) -> zarr array


def _array(task: _Task):
    key = (task.out, task.split)
    if key not in _ARRAYS:
        _ARRAYS[key] = open_zarr_group(task.out, task.storage_options, "r+")[task.split]
    return _ARRAYS[key]


def _read(
    item: CatalogItem,
    storage_options: dict | None,
    cache_dir: str | None,
    allow_missing_spacing: bool,
):  # -> Volume
    from fmtrain.data.volumes.read import read_volume

    return read_volume(
        item.paths[0] if len(item.paths) == 1 else list(item.paths),
        storage_options=storage_options,
        cache_dir=cache_dir,
        allow_missing_spacing=allow_missing_spacing,
    )


def _process(task: _Task) -> dict:
    """Read, preprocess and store one volume; return (and persist) its record."""
    item = task.item
    record: dict[str, Any] = {
        "split": task.split,
        "index": task.index,
        "key": item.key,
        "participant_id": item.participant_id,
        "device": item.device,
        "paths": list(item.paths),
        "attributes": item.attributes,
    }
    try:
        volume = _read(item, task.storage_options, task.cache_dir, task.allow_missing_spacing)
        stored = to_stored(volume, item.key, task.spacing, task.size)
        if stored.geometry_warning:
            record["geometry_warning"] = stored.geometry_warning
            log.warning("%s: %s", item.key, stored.geometry_warning)
        _array(task)[task.index] = stored.array
        record.update(
            status="ok",
            stats=stored.stats,
            raw_shape=list(volume.shape),
            raw_spacing=[round(float(s), 6) for s in volume.spacing],
            fallbacks=list(volume.metadata.get("fallbacks", [])),
        )
    except VolumeReadError as err:
        record.update(status="skipped", reason=err.reason, detail=err.detail)
    except Exception as err:  # a bug or an unforeseen file: counted and reported, not fatal
        log.exception("unexpected error on %s", item.key)
        record.update(
            status="skipped", reason="unexpected_error", detail=f"{type(err).__name__}: {err}"
        )
    if record["status"] == "skipped":
        log.warning("skipping %s: %s: %s", item.key, record["reason"], record["detail"])
    write_bytes(
        progress_url(task.out, task.split, task.index),
        json.dumps(record).encode(),
        task.storage_options,
    )
    return record


def _check_geometry(spacing: Sequence[float] | None, size: Sequence[int] | None) -> None:
    """Refuse a target geometry before any worker starts: a zero spacing or size otherwise
    fails once per file, deep in the resampling. None (to be derived) passes."""
    if spacing is not None and (
        len(spacing) != 3
        or not all(isinstance(v, (int, float)) and math.isfinite(v) and v > 0 for v in spacing)
    ):
        raise ValueError(f"spacing={list(spacing)}: expected three finite numbers > 0 (mm, z y x)")
    if size is not None and (
        len(size) != 3 or not all(isinstance(v, int) and v >= 1 for v in size)
    ):
        raise ValueError(f"size={list(size)}: expected three whole numbers >= 1 (voxels, z y x)")


def _target_geometry(
    items: list[CatalogItem],
    spacing: Sequence[float] | None,
    size: Sequence[int] | None,
    storage_options: dict | None,
    cache_dir: str | None,
    allow_missing_spacing: bool,
) -> tuple[tuple[float, ...], tuple[int, ...]]:
    """The geometry to prepare at: as given, or derived from a few volumes (printed); and
    refused before any worker starts when it cannot fit the data at all."""
    given = spacing is not None and size is not None
    survey = survey_geometry(
        [i.key for i in items],
        lambda i: _read(items[i], storage_options, cache_dir, allow_missing_spacing),
        limit=4 if given else 16,
    )
    if not given:
        derived_spacing, derived_size, text = derive_geometry(survey, spacing)
        spacing, size = derived_spacing, size or derived_size
        log.info("%s", text)
    assert spacing is not None and size is not None
    too_large = []
    for shape, raw in zip(survey.shapes, survey.spacings, strict=True):
        try:
            refuse_oversized_resample("", shape, raw, spacing)
        except VolumeReadError as err:
            too_large.append(err.detail)
    if survey.read and len(too_large) == survey.read:  # every volume looked at: hopeless
        raise ValueError(f"spacing={list(spacing)} does not fit this data: {too_large[0]}")
    return tuple(float(s) for s in spacing), tuple(int(n) for n in size)


def _warn_empty_splits(samples: dict[str, list], fractions: dict[str, float], people: int) -> None:
    for split, members in samples.items():
        if not members and fractions[split] > 0:
            log.warning(
                "split %r is empty: %d participants with readable volumes are too few for "
                "fractions %s; a recipe that trains, validates or probes on it will refuse",
                split,
                people,
                fractions,
            )


def _create_arrays(
    out: str, counts: Mapping[str, int], size: Sequence[int], storage_options: dict | None
) -> None:
    group = open_zarr_group(out, storage_options, "a")
    for split, n in counts.items():
        shape = (n, *size)
        if split in group:
            if tuple(group[split].shape) != shape:
                raise ValueError(
                    f"{out}: split {split!r} holds {group[split].shape}, this run needs {shape}; "
                    "the source changed since this preparation began: use another --out"
                )
            continue
        group.create_array(split, shape=shape, chunks=(1, *size), dtype="float16", fill_value=0.0)


def _where_paths_point(items: list, source: str, root: str | None) -> str:
    """For a run whose files are mostly missing: where the first listed path was looked for,
    and the setting that moves it."""
    if not items:
        return ""
    first = items[0]
    base = root if root is not None else "the folder of " + source
    return (
        f". Most files are missing: the first, {first.key!r}, was looked for at "
        f"{first.paths[0]} (relative paths, and a manifest's paths that begin with '/', start "
        f"from {base}); if the files sit under another folder, set it as the dataset root: "
        "`--root` (fmtrain prepare) or `data.init_args.root` (recipes)"
    )


def _summary(
    records: list[dict], catalog_skipped: list[dict], assignment: dict, items: list, **extra
) -> dict:
    ok = [r for r in records if r["status"] == "ok"]
    skipped = [
        {"path": r["key"], "reason": r["reason"], "detail": r["detail"]}
        for r in records
        if r["status"] == "skipped"
    ] + catalog_skipped
    per_device: dict[str, dict] = defaultdict(
        lambda: {"volumes": 0, "raw_shape": Counter(), "raw_spacing_mm": Counter()}
    )
    for r in ok:
        entry = per_device[r["device"]]
        entry["volumes"] += 1
        entry["raw_shape"]["x".join(map(str, r["raw_shape"]))] += 1
        entry["raw_spacing_mm"]["x".join(f"{s:g}" for s in r["raw_spacing"])] += 1
    by_split: dict[str, Counter] = defaultdict(Counter)
    for r in ok:  # skipped items belong to no split: they were read before splitting
        by_split[r["split"]]["written"] += 1
    return {
        **extra,
        "counts": {
            "listed": len(items) + len(catalog_skipped),
            "written": len(ok),
            "skipped": len(skipped),
            "skipped_by_reason": dict(Counter(s["reason"] for s in skipped)),
            "mostly_padding_or_cropped": sum(1 for r in ok if r.get("geometry_warning")),
            "by_split": {k: dict(v) for k, v in sorted(by_split.items())},
            "items_per_split_and_device": split_counts(
                [i for i in items if i.key in {r["key"] for r in ok}], assignment
            ),
        },
        "skipped": skipped,
        "fallbacks": [{"key": r["key"], "fallbacks": r["fallbacks"]} for r in ok if r["fallbacks"]],
        "per_device": {
            d: {k: dict(v) if isinstance(v, Counter) else v for k, v in e.items()}
            for d, e in sorted(per_device.items())
        },
    }


def prepare_dataset(
    source: str,
    out: str,
    *,
    spacing: tuple[float, float, float] | None = None,
    size: tuple[int, int, int] | None = None,
    split_fractions: dict[str, float] | None = None,
    seed: int = 0,
    devices: list[str] | None = None,
    anatomic_regions: list[str] | None = None,
    lateralities: list[str] | None = None,
    workers: int = 2,
    max_skip_fraction: float = 0.05,
    allow_missing_spacing: bool = False,
    storage_options: dict[str, Any] | None = None,
    cache_dir: str | None = None,
    progress: bool = True,
    root: str | None = None,
) -> PreparedDataset:
    """Prepare the volumes of `source` into `out` (local folder or URL) once.

    Args:
        source: manifest.tsv, CSV/TSV file list, text list, or folder (path or URL).
        out: where the prepared dataset goes (path or URL, e.g. ``s3://bucket/prepared``).
        spacing: target voxel spacing in mm, (z, y, x); default: the median of the data's
            (a few volumes are read to choose it, and the choice is printed).
        size: volume size after centre crop/pad, (z, y, x); default: the median field of
            view at `spacing`, rounded up to multiples of 16 voxels (8 below 64).
        split_fractions: participant fractions per split (default train/val/test 0.8/0.1/0.1).
        seed: seed of the split.
        devices: keep only these device models (manifest manufacturers_model_name).
        anatomic_regions: keep only these regions (manifest anatomic_region).
        lateralities: keep only these eyes or sides (manifest laterality), e.g. ["R"].
        workers: parallel processes (1: in this process).
        max_skip_fraction: fail when more than this fraction of listed items was bad
            (objects that are not images, such as DICOM segmentations, are not counted).
        allow_missing_spacing: fill missing spacing with 1 mm (warned, counted) instead of
            skipping the file.
        storage_options: fsspec options for `source` and `out` (e.g. an S3 endpoint).
        cache_dir: local cache of remote raw files (a temporary folder when None).
        progress: show a progress bar.
        root: the dataset root that a list's relative paths start from, and a manifest's
            paths that begin with "/" (AI-READI writes ``/retinal_oct/...``); default: the
            folder of `source`.

    Returns:
        The prepared dataset, opened.

    Raises:
        PrepareFailed: when too many items were skipped or none was written; ``summary.json``
            is written first (with ``complete: false``) so the reasons can be read.
    """
    _check_geometry(spacing, size)
    start = time.perf_counter()
    fractions = dict(split_fractions or DEFAULT_FRACTIONS)
    catalog = read_catalog(source, storage_options, root).filter(
        devices=devices, anatomic_regions=anatomic_regions, lateralities=lateralities
    )
    spacing, size = _target_geometry(
        catalog.items, spacing, size, storage_options, cache_dir, allow_missing_spacing
    )
    params = {
        "format_version": FORMAT_VERSION,
        "source": source,
        "spacing": [float(s) for s in spacing],
        "size": [int(s) for s in size],
        "dtype": "float16",
        "split_fractions": fractions,
        "seed": seed,
        "filters": {
            "devices": devices,
            "anatomic_regions": anatomic_regions,
            "lateralities": lateralities,
        },
        "allow_missing_spacing": allow_missing_spacing,
    }
    if root is not None:  # only when given: stores prepared before it existed still match
        params["root"] = root
    write_or_match_json(join(out, "prepare.json"), params, storage_options, "parameters")

    # Every volume is read into one pool first; the splits are cut afterwards among the
    # participants that have a readable volume, so unreadable files cannot empty a split.
    _create_arrays(out, {POOL: len(catalog.items)}, size, storage_options)
    done = finished_records(out, storage_options)
    tasks = [
        _Task(out, POOL, i, item, tuple(spacing), tuple(size), storage_options,
              allow_missing_spacing, cache_dir)
        for i, item in enumerate(catalog.items)
        if (POOL, i) not in done
    ]  # fmt: skip
    if done:
        log.info("resuming %s: %d volumes already done, %d to go", out, len(done), len(tasks))
    records = list(done.values()) + run_tasks(
        _process, tasks, workers, progress=progress, desc="preparing volumes", unit="vol"
    )
    readable = [catalog.items[r["index"]] for r in records if r["status"] == "ok"]
    assignment = assign_splits(readable, fractions, seed)
    write_or_match_json(join(out, "splits.json"), assignment, storage_options, "splits")
    for record in records:  # in memory only: the stored record keeps the pool it was read into
        if record["status"] == "ok":
            record["split"] = assignment[record["participant_id"]]

    samples = {
        split: sorted(
            (
                {k: r.get(k) for k in ("index", "key", "participant_id", "device",
                                       "attributes", "raw_shape", "raw_spacing", "stats")}
                for r in records
                if r["split"] == split and r["status"] == "ok"
            ),
            key=lambda s: s["index"],
        )
        for split in fractions
    }  # fmt: skip
    _warn_empty_splits(samples, fractions, len(assignment))
    summary = _summary(
        records,
        catalog.skipped,
        assignment,
        catalog.items,
        source=source,
        out=out,
        seconds=round(time.perf_counter() - start, 1),
        unread_manifest_hints=catalog.unread_hints,
    )
    listed, reasons = summary["counts"]["listed"], summary["counts"]["skipped_by_reason"]
    # objects that are not images (SEG, reports...) are counted but not held against the limit
    set_aside = sum(n for reason, n in reasons.items() if reason in SET_ASIDE)
    bad, images = summary["counts"]["skipped"] - set_aside, listed - set_aside
    fraction = bad / max(images, 1)
    by_reason = ", ".join(
        f"{reason} {n}" + (" (not counted: no image)" if reason in SET_ASIDE else "")
        for reason, n in sorted(reasons.items())
    )
    failure = None
    if summary["counts"]["written"] == 0:
        failure = (
            f"no volume could be prepared from {source} ({listed} listed; skipped by "
            f"reason: {by_reason})"
        )
    elif fraction > max_skip_fraction:
        failure = (
            f"{bad} of {images} items skipped ({fraction:.1%}), over the limit "
            f"max_skip_fraction={max_skip_fraction}; skipped by reason: {by_reason}"
        )
    if failure and reasons.get("missing_file", 0) > bad / 2:
        failure += _where_paths_point(catalog.items, source, root)
    summary = {"complete": failure is None, "failure": failure, **summary}
    write_bytes(join(out, "samples.json"), json.dumps(samples).encode(), storage_options)
    write_bytes(join(out, "summary.json"), json.dumps(summary, indent=1).encode(), storage_options)
    if failure:
        written = summary["counts"]["written"]
        raise PrepareFailed(failure, join(out, "summary.json"), over_limit=written > 0)
    log.info(
        "prepared %d volumes into %s in %.1f s (%d skipped: %s)",
        summary["counts"]["written"],
        out,
        summary["seconds"],
        summary["counts"]["skipped"],
        summary["counts"]["skipped_by_reason"],
    )
    return PreparedDataset(out, storage_options)


def prepare_params_match(dataset: PreparedDataset, spacing: Sequence, size: Sequence) -> None:
    """Raise when a prepared dataset was made for another spacing or size than a recipe's."""
    if list(dataset.size) != list(size) or not np.allclose(dataset.spacing, spacing):
        raise ValueError(
            f"the prepared dataset at {dataset.url} has size {list(dataset.size)} and spacing "
            f"{list(dataset.spacing)}, the recipe wants data.input_size={list(size)} and "
            f"data.spacing={list(spacing)}; prepare it again with those, or point "
            "data.prepared at a matching one"
        )
