"""A supervised upper bound: the same encoder architecture trained end to end on the labels.

A probe table says whether pretraining beat random init; it does not say whether the task
could be learned at all from these inputs with this encoder. Training the architecture
directly on the labels answers that: if it scores near chance, no pretraining can win by a
margin, and the benchmark is measuring the task, not the method. Fitted on the training
split (a participant-grouped slice held out for early stopping), scored on the test split
with the probes' participant bootstrap.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from fmtrain.eval.attentive import grouped_holdout
from fmtrain.eval.bootstrap import bootstrap_ci
from fmtrain.eval.device import encode_autocast, resolve_device
from fmtrain.eval.metrics import balanced_accuracy
from fmtrain.nn.heads import mean_pool

log = logging.getLogger("fmtrain")

__all__ = ["SupervisedModel", "supervised_upper_bound"]


class SupervisedModel(nn.Module):
    """Encoder tokens -> mean pool -> LayerNorm -> linear classifier."""

    def __init__(self, encoder: nn.Module, num_classes: int) -> None:
        super().__init__()
        self.encoder = encoder
        width = int(encoder.embed_dim)
        self.head = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(mean_pool(self.encoder(x)).float())


@torch.no_grad()
def _predict(model: nn.Module, volumes, rows: np.ndarray, batch_size: int, device) -> np.ndarray:
    """Class probabilities [len(rows), C] on the CPU."""
    model.eval()
    out = []
    for first in range(0, len(rows), batch_size):
        x = torch.stack([volumes.load(int(i)) for i in rows[first : first + batch_size]])
        with encode_autocast(device):
            out.append(torch.softmax(model(x.to(device)).float(), dim=-1).cpu())
    return torch.cat(out).double().numpy()


def supervised_upper_bound(
    encoder: nn.Module,
    train_volumes,
    test_volumes,
    labels: dict[str, str],
    *,
    epochs: int = 30,
    lr: float = 3e-4,
    weight_decay: float = 0.05,
    batch_size: int = 16,
    patience: int = 6,
    val_fraction: float = 0.15,
    seed: int = 0,
    n_boot: int = 1000,
    device: str | torch.device | None = "auto",
    max_seconds: float | None = None,
) -> dict[str, Any]:
    """Train `encoder` (freshly initialised by the caller) plus a linear head on `labels`.

    Args:
        encoder: an fmtrain encoder (tokens [B, N, D] out, `embed_dim`), trained in place.
        train_volumes: prepared split to fit on (`load(i)`, `samples` with key/participant).
        test_volumes: prepared split to score on.
        labels: class label per sample key; samples without one are left out.
        epochs: maximum epochs; the weights with the lowest held-out loss are kept.
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        batch_size: volumes per step.
        patience: epochs without held-out improvement before stopping.
        val_fraction: fraction of training participants held out for early stopping.
        seed: initialisation of the head, the held-out split and the batch order.
        n_boot: participant bootstrap resamples for the interval.
        device: where to train ("auto": the GPU when there is one, bf16 autocast).
        max_seconds: wall-time cap on training; the epoch that crosses it is the last
            (a full-resolution CNN on a CPU can take hours for 30 epochs).

    Returns:
        {"balanced_accuracy": {"value", "low", "high", ...}, "classes", "epochs_run",
        "best_epoch", "stopped_by" ("epochs", "patience" or "time"), "n_train", "n_test",
        "seconds", "device"}.
    """
    start = time.perf_counter()
    target = resolve_device(device)

    def labelled(volumes):
        rows = [i for i, s in enumerate(volumes.samples) if labels.get(s["key"], "") != ""]
        return np.asarray(rows, dtype=np.int64)

    train_rows, test_rows = labelled(train_volumes), labelled(test_volumes)
    train_y = [labels[train_volumes.samples[i]["key"]] for i in train_rows]
    classes, codes = np.unique(train_y, return_inverse=True)
    unseen = {labels[test_volumes.samples[i]["key"]] for i in test_rows} - set(classes)
    if len(classes) < 2 or unseen:
        raise ValueError(
            f"supervised upper bound: training labels {list(classes)}, test labels unseen in "
            f"training {sorted(unseen)}; a classifier needs >= 2 classes covering the test set"
        )
    code_of = {c: i for i, c in enumerate(classes)}
    groups = [train_volumes.samples[i]["participant_id"] for i in train_rows]
    fit_idx, val_idx = grouped_holdout(np.asarray(groups), val_fraction, seed)
    y = torch.as_tensor(codes, dtype=torch.long)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = SupervisedModel(encoder, len(classes)).to(target)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    order_rng = np.random.default_rng(seed)
    best, best_loss, best_epoch, epoch = copy.deepcopy(model.state_dict()), math.inf, 0, 0
    stopped_by = "epochs"
    for epoch in tqdm(range(1, epochs + 1), desc=f"supervised ({target.type})", leave=False):
        model.train()
        order = fit_idx[order_rng.permutation(len(fit_idx))]  # positions in train_rows
        for first in range(0, len(order), batch_size):
            positions = order[first : first + batch_size]
            x = torch.stack([train_volumes.load(int(i)) for i in train_rows[positions]])
            with encode_autocast(target):
                logits = model(x.to(target))
            loss = F.cross_entropy(logits.float(), y[positions].to(target))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        if len(val_idx) == 0:
            best, best_epoch = copy.deepcopy(model.state_dict()), epoch
        else:
            proba = _predict(model, train_volumes, train_rows[val_idx], batch_size, target)
            val_loss = float(-np.log(proba[np.arange(len(val_idx)), codes[val_idx]] + 1e-12).mean())
            if val_loss < best_loss:
                best, best_loss, best_epoch = copy.deepcopy(model.state_dict()), val_loss, epoch
            elif epoch - best_epoch >= patience:
                stopped_by = "patience"
                break
        if max_seconds is not None and time.perf_counter() - start > max_seconds:
            stopped_by = "time" if epoch < epochs else "epochs"
            break
    model.load_state_dict(best)
    proba = _predict(model, test_volumes, test_rows, batch_size, target)
    y_test = np.asarray([code_of[labels[test_volumes.samples[i]["key"]]] for i in test_rows])
    test_groups = [test_volumes.samples[i]["participant_id"] for i in test_rows]
    score = bootstrap_ci(balanced_accuracy, y_test, proba, test_groups, n_boot=n_boot, seed=seed)
    seconds = round(time.perf_counter() - start, 1)
    log.info("supervised upper bound: %.3f after %d epochs in %s s", score.point, epoch, seconds)
    return {
        "balanced_accuracy": score.to_dict(),
        "classes": [str(c) for c in classes],
        "epochs_run": epoch,
        "best_epoch": best_epoch,
        "stopped_by": stopped_by,
        "n_train": len(train_rows),
        "n_test": len(test_rows),
        "seconds": seconds,
        "device": str(target),
    }
