"""Attentive probe: learned queries cross-attending over frozen token features.

Mean pooling averages an informative token with every uninformative one; when the signal
lives in a few tokens (a lesion in a few B-scans, one beat of an ECG), a linear probe on
the pooled vector sees it diluted. V-JEPA evaluates frozen encoders with an attentive
probe for that reason: a query learns where to look, and only the probe is trained.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import ArrayLike
from torch import nn

from fmtrain.eval.device import resolve_device

Kind = Literal["classification", "regression"]


class AttentiveProbe(nn.Module):
    """Standardise → query token(s) cross-attending over tokens [B, N, D] → LayerNorm →
    linear head.

    The first step subtracts a per-channel mean and divides by a per-channel spread (buffers
    `token_mean`, `token_std`; identity until `fit_attentive_probe` sets them from its
    training rows, as the linear probe's StandardScaler does). Per-token LayerNorm alone is
    not enough: features with a large offset shared by every token (a CNN's ReLU stages:
    channel means up to 20x their spread) normalise to nearly one direction, and the probe
    on MiM+SparK's pretrained tokens stayed at chance (balanced accuracy 0.500; 0.716 once
    standardised).

    Args:
        dim: token width D.
        num_outputs: classes (logits) or 1 for regression.
        num_queries: learned queries; their outputs are averaged before the head.
        num_heads: attention heads; must divide ``dim``.
    """

    def __init__(
        self, dim: int, num_outputs: int, *, num_queries: int = 1, num_heads: int = 4
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(
                f"AttentiveProbe: num_heads={num_heads} does not divide the token width "
                f"dim={dim}; pick num_heads among the divisors of {dim}"
            )
        self.num_heads = num_heads
        self.query = nn.Parameter(torch.empty(num_queries, dim))
        nn.init.trunc_normal_(self.query, std=0.02)
        self.register_buffer("token_mean", torch.zeros(dim))
        self.register_buffer("token_std", torch.ones(dim))
        # frozen features come at any scale; normalising tokens keeps lr meaningful
        self.norm_in = nn.LayerNorm(dim)
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm_out = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_outputs)

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        return x.view(b, n, self.num_heads, d // self.num_heads).transpose(1, 2)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Logits or values [B, num_outputs] from tokens [B, N, D]."""
        if tokens.ndim != 3:
            raise ValueError(
                f"AttentiveProbe expects token features [B, N, D], got {tuple(tokens.shape)}; "
                "pass the encoder's tokens, not pooled features"
            )
        b, _, d = tokens.shape
        x = self.norm_in((tokens - self.token_mean) / self.token_std)
        q = self.q(self.query).unsqueeze(0).expand(b, -1, -1)
        k, v = self.kv(x).chunk(2, dim=-1)
        out = F.scaled_dot_product_attention(
            self._split_heads(q), self._split_heads(k), self._split_heads(v)
        )
        out = out.transpose(1, 2).reshape(b, -1, d)
        out = self.proj(out) + self.query  # residual on the query, as in V-JEPA's pooler
        return self.head(self.norm_out(out).mean(dim=1))


def grouped_holdout(
    groups: ArrayLike, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (fit, val) with whole participants in val, so early stopping does not
    reward memorising a participant seen in training. Val is empty with < 2 participants."""
    groups = np.asarray(groups)
    unique = np.unique(groups)
    if len(unique) < 2 or val_fraction <= 0:
        return np.arange(len(groups)), np.arange(0)
    n_val = min(max(1, round(val_fraction * len(unique))), len(unique) - 1)
    rng = np.random.default_rng(seed)
    val_groups = rng.permutation(unique)[:n_val]
    is_val = np.isin(groups, val_groups)
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)


@dataclass(frozen=True)
class AttentiveFit:
    """Predictions and how training went (for reports)."""

    predictions: np.ndarray
    best_epoch: int
    best_val_loss: float
    epochs_run: int


class _Targets:
    """Class codes or standardized values, and the inverse for predictions."""

    def __init__(self, y: np.ndarray, kind: Kind, fit_rows: np.ndarray) -> None:
        self.kind = kind
        if kind == "classification":
            self.classes, codes = np.unique(y, return_inverse=True)
            if len(self.classes) < 2:
                raise ValueError(
                    f"attentive probe: train labels hold one class ({self.classes!r}); "
                    "a classifier needs at least two"
                )
            self.tensor = torch.as_tensor(codes, dtype=torch.long)
            self.num_outputs = len(self.classes)
        else:
            values = y.astype(np.float64)
            # standardise with the fit slice only, so val loss is an honest held-out loss
            self.mean = float(values[fit_rows].mean())
            self.std = float(values[fit_rows].std()) or 1.0
            self.tensor = torch.as_tensor((values - self.mean) / self.std, dtype=torch.float32)
            self.num_outputs = 1

    def loss(self, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.kind == "classification":
            return F.cross_entropy(out, target)
        return F.mse_loss(out.squeeze(-1), target)

    def decode(self, out: torch.Tensor) -> np.ndarray:
        if self.kind == "classification":
            return torch.softmax(out.double(), dim=-1).numpy()
        return out.squeeze(-1).double().numpy() * self.std + self.mean


def _device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def _predict(model: nn.Module, tokens: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Outputs for CPU `tokens`, moved to the model's device a batch at a time (all tokens
    of a large split would not fit on a GPU), returned on the CPU."""
    model.eval()
    device = _device_of(model)
    return torch.cat(
        [
            model(tokens[i : i + batch_size].to(device)).cpu()
            for i in range(0, len(tokens), batch_size)
        ]
    )


def _train_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    tokens: torch.Tensor,
    targets: _Targets,
    order: torch.Tensor,
    batch_size: int,
) -> None:
    model.train()
    device = _device_of(model)
    for batch in order.split(batch_size):
        out = model(tokens[batch].to(device, non_blocking=True))
        loss = targets.loss(out, targets.tensor[batch].to(device, non_blocking=True))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def _val_loss(
    model: nn.Module, tokens: torch.Tensor, targets: _Targets, rows: np.ndarray, batch_size: int
) -> float:
    if len(rows) == 0:
        return math.inf
    out = _predict(model, tokens[rows], batch_size)
    return float(targets.loss(out, targets.tensor[rows]))


def channel_stats(
    tokens: torch.Tensor, rows: np.ndarray, chunk: int = 256
) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean [D], std [D]) of `tokens[rows]` [N, T, D] over rows and tokens, accumulated in
    float64 a chunk of rows at a time (a copy of every row would double the memory of a
    large split). A channel that never varies gets std 1, not a division by zero."""
    total = torch.zeros(tokens.shape[-1], dtype=torch.float64)
    squares = torch.zeros_like(total)
    index = torch.as_tensor(rows, dtype=torch.long)
    for part in index.split(chunk):
        x = tokens[part].double().flatten(0, 1)
        total += x.sum(0)
        squares += (x * x).sum(0)
    count = max(len(index) * tokens.shape[1], 1)
    mean = total / count
    std = (squares / count - mean * mean).clamp_min(0).sqrt()
    std = torch.where(std > 1e-6 * (mean.abs() + 1), std, torch.ones_like(std))
    return mean.float(), std.float()


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """No weight decay on biases and norm gains, the usual AdamW convention."""
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def fit_attentive_probe(
    train_tokens: ArrayLike,
    train_y: ArrayLike,
    test_tokens: ArrayLike,
    kind: Kind,
    seed: int = 0,
    *,
    train_groups: ArrayLike | None = None,
    epochs: int = 50,
    lr: float = 3e-3,
    weight_decay: float = 0.05,
    batch_size: int = 64,
    val_fraction: float = 0.2,
    patience: int = 10,
    num_queries: int = 1,
    num_heads: int = 4,
    device: str | torch.device | None = "auto",
) -> AttentiveFit:
    """Train an :class:`AttentiveProbe` on frozen tokens and predict the test tokens.

    Tokens are standardised per channel with the statistics of the rows it trains on (not
    the held-out or test rows), then fed to the probe.
    AdamW on cross-entropy (classification) or MSE on standardized targets (regression).
    A participant-grouped ``val_fraction`` of train is held out; the weights with the
    lowest validation loss are kept, and training stops after ``patience`` epochs
    without improvement. Same seed, same inputs and same thread count give identical
    predictions.

    Args:
        train_tokens: [N, T, D] frozen token features.
        train_y: N labels (any sortable type) or targets.
        test_tokens: [M, T', D] token features to predict.
        kind: "classification" or "regression".
        seed: seeds initialisation, the held-out split and batch order.
        train_groups: participant id per train row; None treats every row as its own
            participant (only right if rows are independent).
        epochs: maximum training epochs.
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay on weight matrices.
        batch_size: rows per step.
        val_fraction: fraction of participants held out for early stopping.
        patience: epochs without validation improvement before stopping.
        num_queries: learned query tokens.
        num_heads: attention heads; must divide D.
        device: where the probe trains ("auto": the GPU when there is one). Tokens stay
            on the CPU and move a batch at a time.

    Returns:
        An :class:`AttentiveFit`: ``predictions`` are [M, C] class probabilities, columns in
        ``np.unique(train_y)`` order, or [M] values; plus the best epoch, its validation
        loss and the epochs run.
    """
    train_t = torch.as_tensor(np.asarray(train_tokens), dtype=torch.float32)
    test_t = torch.as_tensor(np.asarray(test_tokens), dtype=torch.float32)
    if train_t.ndim != 3 or test_t.ndim != 3 or train_t.shape[2] != test_t.shape[2]:
        raise ValueError(
            f"attentive probe needs tokens [N, T, D] with equal D, got train "
            f"{tuple(train_t.shape)} and test {tuple(test_t.shape)}"
        )
    if kind not in ("classification", "regression"):
        raise ValueError(f"kind must be 'classification' or 'regression', got {kind!r}")
    y = np.asarray(train_y)
    groups = np.arange(len(y)) if train_groups is None else np.asarray(train_groups)
    if not len(y) == len(groups) == len(train_t):
        raise ValueError(
            f"attentive probe: {len(train_t)} token rows, {len(y)} labels and "
            f"{len(groups)} groups; pass one label and one participant id per row"
        )
    fit_rows, val_rows = grouped_holdout(groups, val_fraction, seed)
    targets = _Targets(y, kind, fit_rows)
    # fork_rng: seed the probe without changing the caller's global torch RNG
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AttentiveProbe(
            train_t.shape[2], targets.num_outputs, num_queries=num_queries, num_heads=num_heads
        )
        mean, std = channel_stats(train_t, fit_rows)
        model.token_mean.copy_(mean)
        model.token_std.copy_(std)
        model.to(resolve_device(device))
        optimizer = torch.optim.AdamW(_param_groups(model, weight_decay), lr=lr)
        shuffle = torch.Generator().manual_seed(seed)
        best_epoch, best_val, epoch = 0, math.inf, 0
        best_state = copy.deepcopy(model.state_dict())
        for epoch in range(1, epochs + 1):
            order = torch.as_tensor(fit_rows)[torch.randperm(len(fit_rows), generator=shuffle)]
            _train_epoch(model, optimizer, train_t, targets, order, batch_size)
            val_loss = _val_loss(model, train_t, targets, val_rows, batch_size)
            if val_loss < best_val or len(val_rows) == 0:  # nothing held out: keep the last
                best_state = copy.deepcopy(model.state_dict())
                best_epoch, best_val = epoch, val_loss
            elif epoch - best_epoch >= patience:
                break
        model.load_state_dict(best_state)
        predictions = targets.decode(_predict(model, test_t, batch_size))
    return AttentiveFit(predictions, best_epoch, best_val, epoch)
