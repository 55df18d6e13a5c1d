"""`fmtrain probe` and `fmtrain embed`: frozen-encoder evaluation from a recipe and checkpoint.

Probe tasks come from a labels file whose ids are matched to the samples by path or file
name (`fmtrain.eval.labels`): every column other than ids becomes a task (numeric ->
regression, text -> classification), plus a device-shift version of each classification
task: trained on the training split's most common device, tested on the test split's other
devices. Every probe also scores randomly initialised encoders of the same architecture
(several seeds) on the same split, so the gain from pretraining is printed beside its
paired interval.

A task is refused, with the reason, before any encoder runs when its labelled training rows
hold fewer than two classes (or two values), or its labelled test participants are too few
for a participant-level interval (`fmtrain.eval.bootstrap.too_few_for_interval` says how
many are needed); the run fails only when every task is refused. Python warnings raised
while probing are counted and summarised in one line, not printed.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from fmtrain.eval.bootstrap import too_few_for_interval
from fmtrain.eval.embed import embed_split, save_embeddings
from fmtrain.eval.labels import LabelTable, match_labels, read_label_table
from fmtrain.eval.probe_table import format_table
from fmtrain.eval.probe_tasks import Task
from fmtrain.eval.probes import compare, run_probes
from fmtrain.eval.quiet import WarningLog, captured_warnings

log = logging.getLogger("fmtrain")

__all__ = ["run_embed", "run_probe"]

_ID_COLUMNS = {"participant_id", "sop_instance_uid", "filepath", "device", "key"}


def _tasks(table: LabelTable) -> list[Task]:
    tasks = []
    for column in table.columns:
        if column in _ID_COLUMNS or column == table.id_column:
            continue
        values = [r[column] for r in table.rows if r.get(column, "") != ""]
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


def _label_values(samples: list[dict], labels: dict, task: Task) -> tuple[np.ndarray, np.ndarray]:
    """(labels, participants) of the samples that have a label for `task`."""
    pairs = [
        (labels[s["key"]][task.name], s["participant_id"])
        for s in samples
        if labels.get(s["key"], {}).get(task.name, "") != ""
    ]
    if task.kind == "regression":
        return np.asarray([float(v) for v, _ in pairs]), np.asarray([g for _, g in pairs])
    return np.asarray([v for v, _ in pairs], dtype=object), np.asarray([g for _, g in pairs])


def _refusal(task: Task, train: list[dict], test: list[dict], labels: dict, where: str) -> str:
    """Why `task` cannot be probed on these samples ("" when it can)."""
    y_train, _ = _label_values(train, labels, task)
    distinct = sorted(set(y_train.tolist()))
    if len(distinct) < 2:
        what = "class" if task.kind == "classification" else "distinct value"
        what += "" if len(distinct) == 1 else ("es" if what == "class" else "s")
        return (
            f"{where}, column {task.name!r}: the {len(y_train)} training samples with a label "
            f"hold {len(distinct)} {what} {distinct[:3]}; a probe needs two or more"
        )
    y_test, groups = _label_values(test, labels, task)
    if not len(y_test):
        return f"{where}, column {task.name!r}: no test sample has a label"
    unseen = sorted(set(y_test.tolist()) - set(distinct)) if task.kind == "classification" else []
    if unseen:
        return (
            f"{where}, column {task.name!r}: test classes {unseen[:3]} never occur in the "
            f"training samples (classes {distinct[:5]}); a probe cannot predict them"
        )
    problem = too_few_for_interval(task.kind, y_test, groups)
    return f"{where}, column {task.name!r}: {problem}" if problem else ""


def _device_shift(train: dict, test: dict) -> tuple[str, list[int], list[int]] | None:
    source = Counter(train["devices"]).most_common(1)[0][0]
    train_rows = [i for i, d in enumerate(train["devices"]) if d == source]
    test_rows = [i for i, d in enumerate(test["devices"]) if d != source]
    if len(train_rows) < 4 or not test_rows:
        return None
    return source, train_rows, test_rows


def _score(
    embeddings: dict,
    labels,
    tasks,
    seed,
    n_boot,
    probes,
    device: str = "cpu",
    notes: list[str] | None = None,
) -> dict[str, Any]:
    """Probe one encoder's embeddings; device-shift tasks that cannot be probed on these
    samples are left out, each with a line in `notes` (logged when no list is given)."""
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
    if not (shift and classification):
        return result
    source, train_rows, test_rows = shift
    for task in classification:  # one at a time: one task's refusal is not another's
        try:
            shifted = run_probes(
                _with_labels(train, labels, [task], train_rows),
                _with_labels(test, labels, [task], test_rows),
                [task],
                seed,
                probes=probes,
                n_boot=n_boot,
                options=options,
            )
        except ValueError as err:
            # an extra view: one device's rows may lack a class, or be too few, on small data
            note = f"device-shift probes skipped (trained on {source}): {err}"
            if notes is None:
                log.warning("%s", note)
            else:
                notes.append(note)
            continue
        name = f"{task.name} (trained on {source}, tested on other devices)"
        result["tasks"][name] = shifted["tasks"][task.name]
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
        labels: labels file (TSV/CSV with an id column: ``filepath``, ``path``, ``file``, ...,
            holding paths or file names, matched as `fmtrain.eval.labels` says); default: the
            datamodule's `default_labels()` (labels.tsv beside the recipe's data.source).
        out_dir: where probe.json and probe.txt go.
        train_split: split the probes are fitted on.
        test_split: split they are scored on (participants disjoint from train_split).
        random_seeds: randomly initialised encoders to compare with (at least 3 advised).
        probes: any of "linear", "knn", "attentive".
        n_boot: bootstrap resamples for every interval.
        device: where encoders embed (bf16 autocast on a GPU) and the attentive probe
            trains: "auto" (the GPU when there is one), "cpu", "cuda", "cuda:1", ...

    Returns:
        {"pretrained": run_probes result, "random": [...], "comparison": ..., "table": str,
        "refused": {task: reason}, "warnings": {"count", "kinds"}, "notes": [...]}

    Raises:
        ValueError: no label id matches a sample, or every task is refused (the message
            gives each task's reason).
    """
    start = time.perf_counter()
    dm = datamodule
    dm.prepare_data()
    splits = {"train": dm.evaluation_split(train_split), "test": dm.evaluation_split(test_split)}
    labels_path = labels or dm.default_labels()
    if labels_path is None:
        raise FileNotFoundError(
            "no labels: pass --labels FILE (TSV/CSV with an id column such as 'filepath' "
            "holding the samples' paths or file names, plus one column per task)"
        )
    table = read_label_table(labels_path)
    matched = match_labels(table, [s for v in splits.values() for s in v.samples])
    log.info("%s", matched.summary(table))
    all_tasks = _tasks(table)
    refused = {
        t.name: why
        for t in all_tasks
        if (why := _refusal(t, splits["train"].samples, splits["test"].samples,
                            matched.rows, labels_path))
    }  # fmt: skip
    tasks = [t for t in all_tasks if t.name not in refused]
    for why in refused.values():
        log.warning("task refused: %s", why)
    if not tasks:
        raise ValueError(
            f"no task can be probed with {labels_path} on splits {train_split!r} / "
            f"{test_split!r}:\n  " + "\n  ".join(refused.values())
        )
    keep_tokens = "attentive" in probes
    encoders = {"pretrained": module.evaluation_encoder()} if ckpt else {}
    encoders |= {f"random-{s}": module.random_encoder(seed=1000 + s) for s in range(random_seeds)}
    results, notes, caught = {}, [], WarningLog()
    with captured_warnings(caught):
        for name, encoder in encoders.items():
            log.info("probing %s", name)
            embeddings = {
                k: embed_split(
                    encoder, v, keep_tokens=keep_tokens, desc=f"{name}: {k}", device=device
                )
                for k, v in splits.items()
            }
            results[name] = _score(
                embeddings, matched.rows, tasks, 0, n_boot, probes, str(device), notes
            )
        random = [v for k, v in results.items() if k.startswith("random")]
        comparison = (
            compare(results["pretrained"], random, n_boot=n_boot) if ckpt and random else None
        )
    for note in dict.fromkeys(notes):  # once, not once per encoder
        log.warning("%s", note)
    if caught.count:
        log.warning("%s", caught.summary())
    output: dict[str, Any] = {
        "recipe": recipe,
        "checkpoint": ckpt,
        "labels": labels_path,
        "labels_matched": matched.summary(table),
        "splits": {k: len(v) for k, v in splits.items()},
        "tasks": [t.__dict__ for t in all_tasks],
        "refused": refused,
        "notes": list(dict.fromkeys(notes)),
        "warnings": caught.to_dict(),
        "pretrained": results.get("pretrained"),
        "random": random,
    }
    if comparison:
        output["comparison"] = comparison
        output["table"] = format_table(comparison) + "".join(
            f"\nnot probed: {why}" for why in refused.values()
        )
    output["seconds"] = round(time.perf_counter() - start, 1)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    output["written_to"] = str(out / "probe.json")
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
