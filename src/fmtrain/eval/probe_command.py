"""`fmtrain probe` and `fmtrain embed`: frozen-encoder evaluation from a recipe and checkpoint.

Probe tasks come from a labels file joined on the sample key (the manifest ``filepath``):
every column other than ids becomes a task (numeric -> regression, text -> classification),
plus a device-shift version of each classification task: trained on the training split's
most common device, tested on the test split's other devices. Every probe also scores
randomly initialised encoders of the same architecture (several seeds) on the same split,
so the gain from pretraining is printed beside its paired interval.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from fmtrain.eval.embed import embed_split, read_labels, save_embeddings
from fmtrain.eval.probes import Task, compare, format_table, run_probes

log = logging.getLogger("fmtrain")

__all__ = ["run_embed", "run_probe"]

_ID_COLUMNS = {"participant_id", "sop_instance_uid", "filepath", "device", "key"}


def _tasks(labels: dict[str, dict[str, str]]) -> list[Task]:
    first = next(iter(labels.values()))
    tasks = []
    for column in first:
        if column in _ID_COLUMNS:
            continue
        values = [r[column] for r in labels.values() if r[column] != ""]
        try:
            [float(v) for v in values]
            kind = "regression"
        except ValueError:
            kind = "classification"
        tasks.append(Task(column, kind))
    return tasks


def _with_labels(embedded: dict, labels: dict, tasks: list[Task], rows=None) -> dict[str, Any]:
    rows = range(len(embedded["keys"])) if rows is None else rows
    out: dict[str, Any] = {
        "pooled": embedded["pooled"][rows],
        "groups": np.asarray(embedded["participants"])[rows],
    }
    if embedded.get("tokens") is not None:
        out["tokens"] = embedded["tokens"][rows].astype(np.float32)
    for task in tasks:
        values = [labels.get(embedded["keys"][i], {}).get(task.name, "") for i in rows]
        if task.kind == "regression":
            out[task.name] = np.asarray([float(v) if v != "" else np.nan for v in values])
        else:
            out[task.name] = np.asarray([v if v != "" else None for v in values], dtype=object)
    return out


def _device_shift(train: dict, test: dict) -> tuple[str, list[int], list[int]] | None:
    source = Counter(train["devices"]).most_common(1)[0][0]
    train_rows = [i for i, d in enumerate(train["devices"]) if d == source]
    test_rows = [i for i, d in enumerate(test["devices"]) if d != source]
    if len(train_rows) < 4 or not test_rows:
        return None
    return source, train_rows, test_rows


def _score(
    embeddings: dict, labels, tasks, seed, n_boot, probes, device: str = "cpu"
) -> dict[str, Any]:
    options = {"attentive": {"device": device}}
    train, test = embeddings["train"], embeddings["test"]
    result = run_probes(
        _with_labels(train, labels, tasks),
        _with_labels(test, labels, tasks),
        tasks,
        seed,
        probes=probes,
        n_boot=n_boot,
        options=options,
    )
    shift = _device_shift(train, test)
    classification = [t for t in tasks if t.kind == "classification"]
    if shift and classification:
        source, train_rows, test_rows = shift
        try:
            shifted = run_probes(
                _with_labels(train, labels, classification, train_rows),
                _with_labels(test, labels, classification, test_rows),
                classification,
                seed,
                probes=probes,
                n_boot=n_boot,
                options=options,
            )
        except ValueError as err:
            # an extra view: one device's training rows may lack a class on small data
            log.warning("device-shift probes skipped (trained on %s): %s", source, err)
            return result
        for name, value in shifted["tasks"].items():
            result["tasks"][f"{name} (trained on {source}, tested on other devices)"] = value
    return result


def run_probe(
    module: Any,
    datamodule: Any,
    *,
    recipe: str = "",
    ckpt: str | None = None,
    labels: str | None = None,
    out_dir: str = "probe_output",
    train_split: str = "train",
    test_split: str = "test",
    random_seeds: int = 3,
    probes: tuple[str, ...] = ("linear", "knn", "attentive"),
    n_boot: int = 1000,
    device: str = "auto",
) -> dict[str, Any]:
    """Probe the pretrained (EMA target) encoder and `random_seeds` random-init encoders.

    Args:
        module: the built method (any `PretrainMethod`), with the checkpoint loaded.
        datamodule: the recipe's datamodule (it says where the prepared data is).
        recipe: the recipe's path, recorded in probe.json.
        ckpt: the checkpoint loaded into `module`; None: only random-init encoders.
        labels: labels file (TSV/CSV with a ``filepath`` column); default: the datamodule's
            `default_labels()` (labels.tsv beside the recipe's data.source).
        out_dir: where probe.json and probe.txt go.
        train_split: split the probes are fitted on.
        test_split: split they are scored on (participants disjoint from train_split).
        random_seeds: randomly initialised encoders to compare with (at least 3 advised).
        probes: any of "linear", "knn", "attentive".
        n_boot: bootstrap resamples for every interval.
        device: where encoders embed (bf16 autocast on a GPU) and the attentive probe
            trains: "auto" (the GPU when there is one), "cpu", "cuda", "cuda:1", ...

    Returns:
        {"pretrained": run_probes result, "random": [...], "comparison": ..., "table": str}
    """
    start = time.perf_counter()
    dm = datamodule
    dm.prepare_data()
    splits = {"train": dm.evaluation_split(train_split), "test": dm.evaluation_split(test_split)}
    labels_path = labels or dm.default_labels()
    if labels_path is None:
        raise FileNotFoundError(
            "no labels: pass --labels FILE (TSV/CSV with a 'filepath' column matching the "
            "manifest, plus one column per task)"
        )
    table = read_labels(labels_path)
    tasks = _tasks(table)
    keep_tokens = "attentive" in probes
    encoders = {"pretrained": module.evaluation_encoder()} if ckpt else {}
    encoders |= {f"random-{s}": module.random_encoder(seed=1000 + s) for s in range(random_seeds)}
    results = {}
    for name, encoder in encoders.items():
        log.info("probing %s", name)
        embeddings = {
            k: embed_split(encoder, v, keep_tokens=keep_tokens, desc=f"{name}: {k}", device=device)
            for k, v in splits.items()
        }
        results[name] = _score(embeddings, table, tasks, 0, n_boot, probes, str(device))
    random = [v for k, v in results.items() if k.startswith("random")]
    output: dict[str, Any] = {
        "recipe": recipe,
        "checkpoint": ckpt,
        "labels": labels_path,
        "splits": {k: len(v) for k, v in splits.items()},
        "tasks": [t.__dict__ for t in tasks],
        "pretrained": results.get("pretrained"),
        "random": random,
    }
    if ckpt and random:
        output["comparison"] = compare(results["pretrained"], random, n_boot=n_boot)
        output["table"] = format_table(output["comparison"])
    output["seconds"] = round(time.perf_counter() - start, 1)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "probe.json").write_text(json.dumps(output))
    if "table" in output:
        (out / "probe.txt").write_text(output["table"] + "\n")
    return output


def run_embed(
    module: Any,
    datamodule: Any,
    out: str = "embeddings.npz",
    split: str = "test",
    device: str = "auto",
) -> str:
    """Write the evaluation encoder's mean-pooled embeddings of one split, with sample ids.

    Args:
        module: the built method with its checkpoint loaded.
        datamodule: the recipe's datamodule.
        out: output .npz (arrays ``ids``, ``participants``, ``devices``, ``embeddings``).
        split: which prepared split to embed.
        device: where the encoder runs ("auto": the GPU when there is one).
    """
    datamodule.prepare_data()
    samples = datamodule.evaluation_split(split)
    embedded = embed_split(module.evaluation_encoder(), samples, keep_tokens=False, device=device)
    save_embeddings(out, embedded)
    return out
