"""Recipes the parser refuses: the report leads with the recipe key and the value, names the
reason in one line and, for a misspelled key, the closest valid one. Real parser, real
recipes; the broken part is an override or a copied recipe with one key changed."""

from __future__ import annotations

import pytest

from fmtrain.check.parse_errors import class_keys
from fmtrain.check.runner import main, run_check
from fmtrain.methods.configs import OptimizerConfig
from fmtrain.methods.vjepa import VJEPAModule
from tests.conftest import REPO

VJEPA = str(REPO / "recipes" / "oct_vjepa_demo.yaml")


@pytest.mark.parametrize(
    ("override", "key", "value", "suggestion"),
    [
        ("--model.init_args.optimzer.lr=0.1", "model.init_args.optimzer.lr", "0.1",
         "model.init_args.optimizer.lr"),
        ("--data.init_args.batch_sise=3", "data.init_args.batch_sise", None,
         "data.init_args.batch_size"),
        ("--model.init_args.optimizer.lrr=0.1", "model.init_args.optimizer.lrr", None,
         "model.init_args.optimizer.lr"),
        ("--model.init_args.optimizer.lr=abc", "model.init_args.optimizer.lr", "abc", None),
        ("--data.init_args.batch_size=abc", "data.init_args.batch_size", "abc", None),
    ],
)  # fmt: skip
def test_a_refused_value_or_key_is_reported_under_its_recipe_key(
    tmp_path, override, key, value, suggestion
):
    report = run_check(VJEPA, [override], str(tmp_path))
    (error,) = report.errors
    assert (error.key, error.value) == (key, value)
    assert "Union subtypes" not in error.message and "Namespace(" not in error.message
    if suggestion:
        assert f"did you mean {suggestion}" in error.message
        assert error.fix == f"rename it to {suggestion}"
    else:
        assert "expected a value of type" in error.message


@pytest.mark.parametrize(
    ("old", "new", "key", "suggestion"),
    [
        ("  max_steps: 1200", "  max_step: 1200", "trainer.max_step", "trainer.max_steps"),
        ("checkpoint:", "chekpoint:", "chekpoint.every_n_train_steps",
         "checkpoint.every_n_train_steps"),
    ],
)  # fmt: skip
def test_a_misspelled_key_in_the_yaml_names_the_closest_valid_key(
    tmp_path, old, new, key, suggestion
):
    text = (REPO / "recipes" / "oct_vjepa_demo.yaml").read_text()
    assert old in text
    broken = tmp_path / "broken.yaml"
    broken.write_text(text.replace(old, new, 1))
    (error,) = run_check(str(broken), [], str(tmp_path / "out")).errors
    assert error.key == key and suggestion in error.message


def test_the_first_line_printed_names_the_key_and_the_value(tmp_path, capsys):
    code = main([VJEPA, "--out", str(tmp_path), "--model.init_args.optimizer.lr=abc"])
    first = capsys.readouterr().out.splitlines()[0]
    assert code == 1
    assert first.startswith("[ERROR] model.init_args.optimizer.lr = abc: expected")


def test_a_validators_own_message_is_kept_whole_under_its_key(tmp_path):
    recipe = str(REPO / "tests" / "recipes" / "restore_tiny.yaml")
    report = run_check(recipe, ["--model.init_args.loss.charbonnier_eps=1e-30"], str(tmp_path))
    (error,) = report.errors
    assert (error.key, error.value) == ("model.init_args.loss.charbonnier_eps", "1e-30")
    assert error.message.startswith("its square 1e-60 underflows in torch.float32")


def test_class_keys_reach_into_dataclass_settings():
    keys = class_keys(VJEPAModule)
    assert {"optimizer", "optimizer.lr", "optimizer.warmup_steps", "compile"} <= set(keys)
    assert class_keys(OptimizerConfig)[:1] == ["lr"]


@pytest.mark.parametrize(
    ("recipe", "override", "key", "value", "expected"),
    [
        ("oct_vjepa_demo", "--model.init_args.optimizer.lr=-1", "model.init_args.optimizer.lr",
         "-1.0", "a finite rate > 0"),
        ("oct_vjepa_demo", "--model.init_args.optimizer.lr=0", "model.init_args.optimizer.lr",
         "0.0", "a finite rate > 0"),
        ("oct_vjepa_demo", "--model.init_args.optimizer.start_lr=0.01",
         "model.init_args.optimizer.start_lr", "0.01", "at most the peak"),
        ("oct_vjepa_demo", "--model.init_args.optimizer.weight_decay=-0.1",
         "model.init_args.optimizer.weight_decay", "-0.1", "finite, >= 0"),
        ("oct_vjepa_demo", "--model.init_args.predictor.depth=0",
         "model.init_args.predictor.depth", "0", "at least 1 block"),
        ("oct_vjepa_demo", "--model.init_args.predictor.num_heads=5",
         "model.init_args.predictor.num_heads", "5",
         "a divisor of model.init_args.predictor.embed_dim=64 (e.g. 4 or 8)"),
        ("oct_mae_demo", "--model.init_args.decoder.depth=0", "model.init_args.decoder.depth",
         "0", "at least 1 block"),
        ("oct_vjepa_demo", "--model.init_args.ema.final_momentum=0.9",
         "model.init_args.ema.final_momentum", "0.9", ">= model.init_args.ema.momentum"),
        ("oct_vjepa_demo", "--data.init_args.spacing=[0,0.03,0.094]", "data.init_args.spacing",
         "[0.0, 0.03, 0.094]", "finite numbers > 0"),
        ("oct_vjepa_demo", "--data.init_args.batch_size=0", "data.init_args.batch_size", "0",
         "a whole number >= 1"),
        ("oct_vjepa_demo", "--data.init_args.num_workers=-1", "data.init_args.num_workers", "-1",
         "a whole number >= 0"),
        ("oct_vjepa_demo", "--data.init_args.max_skip_fraction=2",
         "data.init_args.max_skip_fraction", "2.0", "a fraction in [0, 1]"),
        ("signals_msm_demo", "--data.init_args.prepare_workers=0",
         "data.init_args.prepare_workers", "0", "a whole number >= 1"),
        ("oct_vjepa_demo", "--model.init_args.encoder.init_args.drop_path=1.5",
         "model.init_args.encoder.init_args.drop_path", "1.5", "a stochastic-depth rate"),
        ("video_deblur_demo", "--model.init_args.network.drop_path=-0.1",
         "model.init_args.network.drop_path", "-0.1", "a stochastic-depth rate"),
    ],
)  # fmt: skip
def test_numeric_settings_are_validated_where_they_are_declared(
    tmp_path, recipe, override, key, value, expected
):
    path = str(REPO / "recipes" / f"{recipe}.yaml")
    (error,) = run_check(path, [override], str(tmp_path)).errors
    assert (error.key, error.value) == (key, value)
    assert error.message.startswith(f"expected {expected}")


def test_loader_workers_far_beyond_the_cores_warn_with_the_count(tmp_path):
    from fmtrain.check.problems import CheckReport
    from fmtrain.check.runner import _check_workers

    report = CheckReport(recipe="r")
    _check_workers(report, 1)
    assert not report.problems and "1 in the recipe" in report.performance["loader workers"]
    _check_workers(report, 10_000)
    (warning,) = report.problems
    assert (warning.key, warning.value, warning.severity) == (
        "data.init_args.num_workers",
        "10000",
        "warning",
    )
