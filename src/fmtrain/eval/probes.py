"""Run probes on frozen features, with participant-level intervals, and compare encoders.

A pretrained encoder is only worth its compute if frozen features beat those of the same
architecture at random initialisation; random-init transformers already give linear
probes far above chance on many medical tasks. :func:`run_probes` scores one encoder's
features with the linear, k-NN and attentive probes; :func:`compare` sets a pretrained
result against several random-init seeds with paired bootstrap differences on the same
test participants.

Classification predictions are class probabilities [N, C] with columns in the order of
``np.unique(train labels)``; test labels are coded to those column indices. Regression
predictions are values [N].

The other parts live beside this module: tasks and label handling in
`fmtrain.eval.probe_tasks`, the metrics in `fmtrain.eval.metrics`, the linear and k-NN
probes in `fmtrain.eval.linear_knn` (the attentive probe in `fmtrain.eval.attentive`), and
the comparison table in `fmtrain.eval.probe_table`.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from fmtrain.eval.attentive import fit_attentive_probe
from fmtrain.eval.bootstrap import bootstrap_ci, mean_paired_diff, too_few_for_interval
from fmtrain.eval.linear_knn import fit_linear, knn_probe
from fmtrain.eval.metrics import LOWER_IS_BETTER, METRICS
from fmtrain.eval.probe_tasks import (
    SplitTooSmallError,
    Task,
    classes_text,
    encode_test_labels,
    split_arrays,
)

log = logging.getLogger("fmtrain")

__all__ = ["ATTENTIVE_LR_GRID", "PROBES", "compare", "run_probes"]

PROBES = ("linear", "knn", "attentive")
ATTENTIVE_LR_GRID = (3e-4, 1e-3, 3e-3)


# ------------------------------------------------------------------------ run the probes


def _run_one_probe(
    probe: str, tr: dict[str, Any], te: dict[str, Any], task: Task, seed: int, options: dict
) -> tuple[np.ndarray, dict[str, Any]]:
    if probe == "linear":
        pred, value = fit_linear(
            tr["pooled"], tr["y"], te["pooled"], task.kind, seed, tr["groups"], None
        )
        return pred, {"C" if task.kind == "classification" else "alpha": value}
    if probe == "knn":
        return knn_probe(tr["pooled"], tr["y"], te["pooled"], task.kind, **options), {}
    # The learning rate is chosen like the linear probe's C: by the loss on a held-out,
    # participant-grouped slice of the training split. One fixed rate is not safe: features
    # with little spread (e.g. after JEPA pretraining) made 3e-3 diverge in one epoch
    # while 3e-4 trained, and random-init features showed the opposite preference.
    rates = [options["lr"]] if "lr" in options else list(ATTENTIVE_LR_GRID)
    rest = {k: v for k, v in options.items() if k != "lr"}
    start = time.perf_counter()
    fits = {
        lr: fit_attentive_probe(
            tr["tokens"], tr["y"], te["tokens"], task.kind, seed,
            train_groups=tr["groups"], lr=lr, **rest,
        )
        for lr in rates
    }  # fmt: skip
    lr, fit = min(fits.items(), key=lambda item: item[1].best_val_loss)
    info = {"lr": lr, "best_epoch": fit.best_epoch, "best_val_loss": fit.best_val_loss}
    log.info(
        "attentive probe, %s: lr %g (held-out loss %.4f, best epoch %d) in %.0f s",
        task.name, lr, fit.best_val_loss, fit.best_epoch, time.perf_counter() - start,
    )  # fmt: skip
    return fit.predictions, info


def _probe_task(
    train: Mapping[str, Any],
    test: Mapping[str, Any],
    task: Task,
    probes: Sequence[str],
    seed: int,
    n_boot: int,
    alpha: float,
    options: Mapping[str, dict],
) -> dict[str, Any]:
    tr, te = split_arrays(train, "train", task), split_arrays(test, "test", task)
    entry: dict[str, Any] = {"kind": task.kind, "n_train": len(tr["y"]), "n_test": len(te["y"])}
    if task.kind == "classification":
        classes = np.unique(tr["y"])
        if len(classes) < 2:
            raise ValueError(
                f"task {task.name!r}: the training rows hold {classes_text(classes)}; a "
                "classifier needs two or more"
            )
    problem = too_few_for_interval(task.kind, te["y"], te["groups"], alpha)
    if problem:
        raise SplitTooSmallError(f"task {task.name!r}: {problem}")
    entry["n_test_participants"] = len(np.unique(te["groups"]))
    if task.kind == "classification":
        y_true = encode_test_labels(classes, te["y"], task)
        entry["classes"] = classes.tolist()
    else:
        y_true = te["y"].astype(np.float64)
    entry["y_true"] = y_true.tolist()
    entry["test_groups"] = te["groups"].tolist()
    entry["probes"] = {}
    for probe in probes:
        if probe == "attentive" and tr["tokens"] is None:
            continue
        pred, info = _run_one_probe(probe, tr, te, task, seed, dict(options.get(probe, {})))
        metrics = {
            name: bootstrap_ci(fn, y_true, pred, te["groups"], n_boot, alpha, seed).to_dict()
            for name, fn in METRICS[task.kind].items()
        }
        entry["probes"][probe] = {"metrics": metrics, "predictions": pred.tolist(), "info": info}
    return entry


def run_probes(
    train: Mapping[str, Any],
    test: Mapping[str, Any],
    tasks: Sequence[Task],
    seed: int = 0,
    *,
    probes: Sequence[str] = PROBES,
    n_boot: int = 1000,
    alpha: float = 0.05,
    options: Mapping[str, dict] | None = None,
) -> dict[str, Any]:
    """Score one encoder's frozen features with every probe on every task.

    Args:
        train: {"pooled": [N, D], "groups": [N] participant ids, "tokens": [N, T, D]
            (optional; without it the attentive probe is skipped), task.name: [N] labels}.
            NaN (or None) labels mark rows a task has no label for.
        test: the same keys for the held-out participants.
        tasks: what to probe.
        seed: seeds the probes and the bootstrap (same resamples for every probe).
        probes: any of "linear", "knn", "attentive".
        n_boot: bootstrap resamples per interval.
        alpha: 1 - interval coverage.
        options: keyword arguments per probe, e.g. {"knn": {"k": 10},
            "attentive": {"epochs": 20}}.

    Raises:
        SplitTooSmallError: a task's labelled test participants are too few for a
            participant-level interval (`fmtrain.eval.bootstrap.too_few_for_interval`).
        ValueError: a task's training rows hold fewer than two classes, or its test rows
            hold classes training never saw.

    Returns:
        A JSON-serialisable dict (NaN may appear as a float)::

            {"seed": 0, "alpha": 0.05, "n_boot": 1000, "tasks": {
              "sex": {"kind": "classification", "n_train": 200, "n_test": 60,
                      "classes": ["F", "M"], "y_true": [0, 1, ...],
                      "test_groups": ["p07", "p07", ...],
                      "probes": {"linear": {
                          "metrics": {"auroc": {"value": 0.91, "low": 0.84, "high": 0.96,
                                                "n_boot": 1000, "n_degenerate": 0}, ...},
                          "predictions": [[0.2, 0.8], ...], "info": {"C": 0.1}},
                        "knn": {...}, "attentive": {...}}}}}
    """
    unknown = set(probes) - set(PROBES)
    if unknown:
        raise ValueError(f"unknown probes {sorted(unknown)}; choose among {PROBES}")
    if ("tokens" in train) != ("tokens" in test):
        raise ValueError("'tokens' is in only one of train and test; pass it in both or neither")
    options = dict(options or {})
    return {
        "seed": seed,
        "alpha": alpha,
        "n_boot": n_boot,
        "tasks": {
            task.name: _probe_task(train, test, task, probes, seed, n_boot, alpha, options)
            for task in tasks
        },
    }


# -------------------------------------------------------------- pretrained vs random init


def _check_same_test_set(name: str, pretrained: dict, others: Sequence[dict]) -> None:
    for i, other in enumerate(others):
        if other["y_true"] != pretrained["y_true"] or (
            other["test_groups"] != pretrained["test_groups"]
        ):
            raise ValueError(
                f"task {name!r}: random result {i} was scored on other test rows than the "
                "pretrained result; paired differences need the same test set in the same order"
            )


def _comparison_row(
    task: str, probe: str, metric: str, pre: dict, rand: Sequence[dict], boot: dict
) -> dict[str, Any]:
    kind = pre["kind"]
    metric_fn = METRICS[kind][metric]
    values = [r["probes"][probe]["metrics"][metric]["value"] for r in rand]
    diff = mean_paired_diff(
        metric_fn,
        np.asarray(pre["y_true"]),
        np.asarray(pre["probes"][probe]["predictions"]),
        [np.asarray(r["probes"][probe]["predictions"]) for r in rand],
        np.asarray(pre["test_groups"]),
        **boot,
    ).to_dict()
    higher_is_better = metric not in LOWER_IS_BETTER
    if not higher_is_better:
        # the gain is an improvement: an MAE 0.003 lower is a gain of +0.003
        diff |= {"value": -diff["value"], "low": -diff["high"], "high": -diff["low"]}
    low, high = diff["low"], diff["high"]
    return {
        "task": task,
        "probe": probe,
        "metric": metric,
        "higher_is_better": higher_is_better,
        "pretrained": pre["probes"][probe]["metrics"][metric],
        "random": {
            "mean": float(np.mean(values)),
            "sd": float(np.std(values, ddof=1)) if len(values) > 1 else math.nan,
            "values": [float(v) for v in values],
        },
        "gain": diff,
        # only a finite interval that excludes 0 counts (NaN bounds compare False)
        "significant": bool(math.isfinite(low) and math.isfinite(high) and (low > 0 or high < 0)),
    }


def compare(
    pretrained_result: Mapping[str, Any],
    random_results: Sequence[Mapping[str, Any]],
    *,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> dict[str, Any]:
    """Pretrained vs random-init encoders, per task, probe and metric.

    The gain is metric(pretrained) − mean over seeds of metric(random seed), sign-flipped
    for lower-is-better metrics (MAE) so that a positive gain always means the pretrained
    encoder is better, with a paired participant-level bootstrap interval: each resample
    scores the pretrained predictions and every seed's predictions on the same participants
    and averages the per-seed differences. We chose this over a difference against the
    seed-averaged prediction because averaging predictions builds an ensemble, which is
    usually better than any single random encoder; that would understate the gain, and the
    point would no longer equal "pretrained − the random-init mean" shown beside it. The interval
    covers test-set sampling; seed-to-seed spread is reported separately as the sd.

    Args:
        pretrained_result: :func:`run_probes` output for the pretrained encoder.
        random_results: :func:`run_probes` outputs for random-init encoders (one per seed),
            on the same test rows.
        n_boot: bootstrap resamples for the paired intervals.
        alpha: 1 - interval coverage.
        seed: resampling seed.

    Returns:
        {"n_random": S, "alpha": alpha, "rows": [{"task", "probe", "metric",
        "higher_is_better", "pretrained": {"value", "low", "high", ...},
        "random": {"mean", "sd", "values"}, "gain": {"value", "low", "high", ...},
        "significant": bool}, ...]}; "significant" is true only when the gain's interval
        is finite and excludes 0.
        Probes missing from any result (e.g. attentive without tokens) are left out.
    """
    if not random_results:
        raise ValueError("compare needs at least one random-init result")
    boot = {"n_boot": n_boot, "alpha": alpha, "seed": seed}
    rows = []
    for task, pre in pretrained_result["tasks"].items():
        rand = [r["tasks"][task] for r in random_results]
        _check_same_test_set(task, pre, rand)
        for probe, scored in pre["probes"].items():
            if not all(probe in r["probes"] for r in rand):
                continue
            for metric in scored["metrics"]:
                rows.append(_comparison_row(task, probe, metric, pre, rand, boot))
    return {"n_random": len(random_results), "alpha": alpha, "rows": rows}
