"""What every data wing's `prepare` shares: parameter records that must match on a rerun,
per-item progress records (the resume points), and a process pool with a progress bar."""

from __future__ import annotations

import json
import multiprocessing
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any

from tqdm.auto import tqdm

from fmtrain.core.storage import exists, filesystem, join, read_bytes, write_bytes

__all__ = [
    "NON_FINITE_STORED",
    "finished_records",
    "is_complete",
    "progress_url",
    "run_tasks",
    "stored_value_stats",
    "write_or_match_json",
]

# the skip reason of an item whose stored (float16) values are not all finite
NON_FINITE_STORED = "non_finite_stored"


def stored_value_stats(stored: Any) -> dict[str, Any]:
    """What `check` reads instead of the data: whether the values as stored are all finite,
    and their range, mean and spread (over the finite ones, in float32)."""
    import numpy as np

    values = np.asarray(stored, dtype=np.float32)
    finite = np.isfinite(values)
    kept = values[finite]
    summary: dict[str, Any] = {"finite": bool(finite.all()), "non_finite": int((~finite).sum())}
    if kept.size:
        summary.update(
            min=round(float(kept.min()), 4),
            max=round(float(kept.max()), 4),
            mean=round(float(kept.mean()), 4),
            std=round(float(kept.std()), 4),
        )
    return summary


def write_or_match_json(url: str, value: Any, storage_options: dict | None, what: str) -> None:
    """Write `value` to `url`, or, when a record is already there, insist that it matches:
    resuming a preparation made with other parameters would mix two datasets in one."""
    if exists(url, storage_options):
        found = json.loads(read_bytes(url, storage_options))
        if found != value:
            changed = _differences(found, value)
            raise ValueError(
                f"{url} was written by a preparation with different {what} ("
                + "; ".join(f"{k}: {a!r} then, {b!r} now" for k, a, b in changed[:5])
                + "); use another --out, or delete it to start over"
            )
        return
    write_bytes(url, json.dumps(value, indent=1).encode(), storage_options)


def is_complete(out: str, storage_options: dict | None = None) -> bool:
    """Whether `out` holds a finished preparation (its ``summary.json`` says complete; an
    interrupted or failed one is prepared again, resuming)."""
    summary = join(out, "summary.json")
    if not exists(summary, storage_options):
        return False
    return bool(json.loads(read_bytes(summary, storage_options)).get("complete"))


def _differences(found: Any, value: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """(dotted key, old, new) for every leaf that differs between two JSON records."""
    if isinstance(found, dict) and isinstance(value, dict):
        return [
            d
            for k in sorted(set(found) | set(value), key=str)
            for d in _differences(found.get(k), value.get(k), f"{prefix}{k}.")
        ]
    return [] if found == value else [(prefix.rstrip(".") or "value", found, value)]


def finished_records(out: str, storage_options: dict | None) -> dict[tuple[str, int], dict]:
    """(split, index) -> record of every item an earlier run finished (``progress/``)."""
    fs, root = filesystem(join(out, "progress"), storage_options)
    if not fs.exists(root):
        return {}
    paths = [p for p in fs.find(root) if p.endswith(".json")]
    records = [json.loads(blob) for blob in fs.cat(paths).values()] if paths else []
    return {(r["split"], r["index"]): r for r in records}


def progress_url(out: str, split: str, index: int) -> str:
    """Where the record of item `index` of `split` goes once its data is written."""
    return join(out, "progress", split, f"{index:07d}.json")


def _worker_init() -> None:
    import torch

    torch.set_num_threads(1)  # the processes are the parallelism


def run_tasks(
    process: Callable[[Any], Any],
    tasks: Sequence[Any],
    workers: int,
    *,
    progress: bool = True,
    desc: str = "preparing",
    unit: str = "item",
    limit_torch_threads: bool = True,
) -> list[Any]:
    """`process(task)` for every task, in `workers` processes (1: here), with a progress bar;
    the results come back in the order of `tasks`.

    `process` must be a module-level function (it is pickled into spawned workers).
    `limit_torch_threads` gives each worker one torch thread (the processes are the
    parallelism); work that never touches torch skips the import it costs.
    """
    bar = tqdm(total=len(tasks), desc=desc, unit=unit, disable=not progress)
    if workers <= 1 or len(tasks) <= 1:
        results = []
        for task in tasks:
            results.append(process(task))
            bar.update()
        bar.close()
        return results
    # spawn, not fork: a forked child of a process that already ran OpenMP code can hang.
    context = multiprocessing.get_context("spawn")
    init = _worker_init if limit_torch_threads else None
    with ProcessPoolExecutor(workers, mp_context=context, initializer=init) as pool:
        futures = [pool.submit(process, t) for t in tasks]
        try:
            for future in as_completed(futures):
                future.result()  # raises here, as soon as any task fails
                bar.update()
        except BaseException:
            pool.shutdown(cancel_futures=True)
            raise
        finally:
            bar.close()
    return [future.result() for future in futures]
