"""The report says which encoder, which features and which samples each effective rank is."""

from __future__ import annotations

import csv

import torch
from torch import nn

from fmtrain.eval.collapse import rank_against_random_init
from fmtrain.eval.rank import effective_rank
from fmtrain.eval.report import plot_curves, write_report


class _Tokens(nn.Module):
    """[B, 1, 8, 8] -> [B, 4, 16] tokens: a stand-in encoder with real, distinct features."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.proj = nn.Linear(16, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x.reshape(x.shape[0], 4, 16))


def test_the_rank_of_the_same_samples_in_training_batch_groups_is_reported():
    torch.manual_seed(0)
    inputs = [torch.randn(12, 1, 8, 8), torch.randn(12, 1, 8, 8)]
    ranks = rank_against_random_init(_Tokens(0), _Tokens(1), inputs, batch_size=8)
    assert ranks["num_samples"] == 24
    pooled = torch.cat([_Tokens(0)(x).mean(1) for x in inputs]).detach()
    groups = [effective_rank(pooled[i : i + 8]) for i in (0, 8, 16)]
    assert abs(ranks["effective_rank_pretrained_in_batches"] - sum(groups) / 3) < 1e-6
    # fewer samples, lower rank: the reason the two figures of the report differ
    assert ranks["effective_rank_pretrained_in_batches"] < ranks["effective_rank_pretrained"]


def test_the_report_says_which_encoder_features_and_samples_each_rank_is(tmp_path):
    """Reported: "effective rank" 4.5 on the curve and 11.1 in the summary, unexplained."""
    with open(tmp_path / "metrics.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["step", "train/loss", "collapse/train_batch_effective_rank",
                         "val/effective_rank"])  # fmt: skip
        writer.writerows([[0, 1.0, 4.6, ""], [20, 0.8, 4.9, ""], [39, 0.7, "", 11.7]])
    plot_curves(tmp_path / "metrics.csv", tmp_path / "curves.png", batch_size=8)
    assert (tmp_path / "curves.png").stat().st_size > 10_000
    summary = {
        "recipe": "recipes/oct_vjepa_demo.yaml",
        "steps": 40,
        "fit_seconds_including_data": 100.0,
        "loss_start_mean": 1.0,
        "loss_end_mean": 0.6,
        "effective_rank_pretrained": 11.7,
        "effective_rank_random_init": 12.0,
        "rank_ratio": 0.98,
        "num_samples": 36,
        "effective_rank_pretrained_in_batches": 4.3,
        "monitor_batch_size": 8,
    }
    with open(write_report(tmp_path, summary, "table")) as f:
        report = f.read()
    summary_line = next(line for line in report.splitlines() if "11.7" in line)
    said = ("evaluation encoder", "EMA target encoder", "same 36 held-out validation",
            "at most 35", "taken 8 at a time", "scores 4.3", "not another encoder")  # fmt: skip
    for words in said:
        assert words in summary_line, words
    curve_note = next(line for line in report.splitlines() if "panel" in line)
    said = ("collapse monitor", "one augmented training batch of 8 samples", "at most 7",
            "grows with the number of samples")  # fmt: skip
    for words in said:
        assert words in curve_note, words
    assert "+ means the pretrained encoder is better" in report
