"""Collapse monitors on matrices with known answers, and in a real training log."""

import csv
import math

import pytest
import torch

from fmtrain.cli import run_cli
from fmtrain.eval.monitors import collapse_monitors, normalized_feature_std, prediction_cosine
from fmtrain.eval.rank import effective_rank
from tests.conftest import TINY_MAE_RECIPE, TINY_RECIPE


def test_rank_one_features_are_flagged_and_isotropic_ones_are_not():
    g = torch.Generator().manual_seed(0)
    direction = torch.randn(64, generator=g)
    scales = torch.randn(256, 1, 1, generator=g)
    rank_one = scales * direction + 1e-4 * torch.randn(256, 4, 64, generator=g)
    isotropic = torch.randn(256, 4, 64, generator=g)
    assert effective_rank(rank_one.mean(1)) < 1.5
    assert effective_rank(isotropic.mean(1)) > 40
    flagged = collapse_monitors(rank_one, None, None)
    healthy = collapse_monitors(isotropic, None, None)
    assert flagged["collapsed"] and "effective rank" in flagged["reason"]
    assert not healthy["collapsed"], healthy["reason"]
    # isotropic features spread over the sphere: per-dimension std close to 1/sqrt(D)
    assert healthy["feature_std"] == pytest.approx(1 / math.sqrt(64), rel=0.1)


def test_the_rank_floor_is_judged_against_what_a_small_batch_can_show():
    # 8 healthy samples of 256-wide features: rank at most 7, here about 5 (the MiM+SparK
    # CPU run's values), which the width alone (2% of 256 = 5.1) called collapsed
    g = torch.Generator().manual_seed(1)
    basis = torch.randn(5, 256, generator=g)
    healthy = (torch.randn(8, 5, generator=g) @ basis)[:, None] + 0.05 * torch.randn(8, 3, 256)
    verdict = collapse_monitors(healthy, None, None)
    assert 3.5 < verdict["effective_rank"] < 7 and not verdict["collapsed"], verdict
    # the same batch gone to one direction is still caught
    direction = torch.randn(256, generator=g)
    one = torch.randn(8, 1, 1, generator=g) * direction + 1e-4 * torch.randn(8, 3, 256)
    assert collapse_monitors(one, None, None)["collapsed"]


def test_features_collapsed_to_a_point_have_no_spread():
    point = torch.randn(1, 1, 32).expand(100, 8, 32) + 1e-6 * torch.randn(100, 8, 32)
    assert normalized_feature_std(point) < 1e-4
    verdict = collapse_monitors(point, None, None)
    assert verdict["collapsed"] and "std" in verdict["reason"]


def test_prediction_cosine_known_values():
    x = torch.randn(4, 10, 16)
    assert prediction_cosine(x, x) == pytest.approx(1.0)
    assert prediction_cosine(x, -x) == pytest.approx(-1.0)
    assert abs(prediction_cosine(x, torch.randn(4, 10, 16))) < 0.2


@pytest.mark.slow
@pytest.mark.parametrize(
    "recipe, paired", [(TINY_RECIPE, True), (TINY_MAE_RECIPE, False)], ids=["vjepa", "mae"]
)
def test_training_logs_the_collapse_monitors(oct_dataset, tmp_path, recipe, paired):
    # V-JEPA gives features plus its prediction/target pair; MAE has no target encoder and
    # is watched on its encoder tokens alone (rank and spread, no cosine).
    run_cli(
        [
            "fit",
            "--config",
            str(recipe),
            f"--data.init_args.source={oct_dataset}/manifest.tsv",
            "--trainer.max_steps=3",
            "--trainer.limit_val_batches=0",
            "--monitors.every_n_steps=2",
            f"--trainer.default_root_dir={tmp_path}",
            f"--checkpoint.dirpath={tmp_path}/ckpt",
            f"--trainer.logger.init_args.save_dir={tmp_path}",
        ]
    )
    with (tmp_path / "csv" / "metrics.csv").open() as f:
        rows = [r for r in csv.DictReader(f) if r.get("collapse/normalized_feature_std")]
    assert [int(r["step"]) for r in rows] == [0, 2]  # every monitors.every_n_steps=2
    for r in rows:
        assert 0 < float(r["collapse/normalized_feature_std"]) < 1
        assert float(r["collapse/train_batch_effective_rank"]) >= 1
        assert float(r["collapse/warning"]) == 0
        if paired:
            assert -1 <= float(r["collapse/prediction_target_cosine"]) <= 1
        else:
            assert not r.get("collapse/prediction_target_cosine")


def test_non_finite_features_have_no_rank_instead_of_crashing_the_run():
    feats = torch.randn(16, 8)
    feats[3, 2] = float("nan")
    assert math.isnan(effective_rank(feats))


class _Logger:
    def __init__(self):
        self.rows = []

    def log_metrics(self, metrics, step):
        self.rows.append((step, metrics))


class _Method:
    """Target features that span `width` directions around a common mean, for a monitor."""

    def __init__(self):
        self.width, self.counted = 16, []

    def collapse_inputs(self, output):
        gen = torch.Generator().manual_seed(self.width)
        basis = torch.randn(self.width, 32, generator=gen)
        coefficients = torch.randn(24, 5, self.width, generator=gen)
        tokens = coefficients @ basis + 3.0  # [B, N, D], rank about `width`
        return tokens, tokens.flatten(0, 1), tokens.flatten(0, 1)

    def record_warning(self, what):
        self.counted.append(what)


def test_the_rank_is_compared_with_its_start_and_the_reference_survives_a_resume(caplog):
    from types import SimpleNamespace

    from fmtrain.eval.monitors import CollapseMonitor

    logger, method = _Logger(), _Method()
    monitor = CollapseMonitor(every_n_steps=1)
    batch = SimpleNamespace(inputs=torch.zeros(24, 1))

    def step(n):
        trainer = SimpleNamespace(global_step=n + 1, loggers=[logger])
        monitor.on_train_batch_end(trainer, method, {"output": object()}, batch, n)

    step(0)
    start = logger.rows[-1][1]["collapse/train_batch_effective_rank"]
    assert logger.rows[-1][1]["collapse/rank_vs_start"] == 1.0 and start > 8
    method.width = 2  # the features now span two directions: well under a quarter
    with caplog.at_level("WARNING", logger="fmtrain"):
        step(1)
    assert logger.rows[-1][1]["collapse/rank_vs_start"] < 0.25
    assert "below 25% of its" in caplog.text and method.counted == ["collapse warning"]
    resumed = CollapseMonitor(every_n_steps=1)
    resumed.load_state_dict(monitor.state_dict())
    assert resumed.reference_rank == monitor.reference_rank == start
