"""`fmtrain check RECIPE --synthetic`: every shipped recipe checks before its data exists, on
a few samples its own datamodule generates in the recipe's modality and geometry."""

from __future__ import annotations

import time

import pytest

from fmtrain.check.runner import main, run_check
from fmtrain.check.synthetic import recipe_data_settings
from tests.conftest import REPO

RECIPES = sorted((REPO / "recipes").glob("*.yaml"))


@pytest.mark.slow
@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_every_shipped_recipe_checks_on_synthetic_data(recipe, tmp_path):
    started = time.perf_counter()
    # GPU recipes train elsewhere: checked here on the CPU, the missing GPU a warning
    report = run_check(str(recipe), [], str(tmp_path / "check"), synthetic=True, elsewhere=True)
    seconds = time.perf_counter() - started  # reported, not asserted: benchmarks time things
    assert not report.errors, [str(p) for p in report.errors]
    _, settings = recipe_data_settings(str(recipe), [])
    batch = report.stages[0]
    assert batch["stage"] == "input"
    geometry = settings.get("input_size") or settings.get("crop") or [settings.get("window")]
    assert batch["shape"][-len(geometry) :] == list(geometry), (batch, geometry)
    assert report.performance["synthetic data written (s)"] >= 0
    print(f"{recipe.stem}: check --synthetic {seconds:.1f} s")


def test_synthetic_takes_command_line_overrides_of_the_data(tmp_path, capsys):
    recipe = REPO / "recipes" / "video_deblur_demo.yaml"
    _, settings = recipe_data_settings(str(recipe), ["--data.init_args.crop=[32,32]"])
    assert settings["crop"] == [32, 32]
    code = main(
        [str(recipe), "--synthetic", "--out", str(tmp_path), "--data.init_args.crop=[32,32]"]
    )
    out = capsys.readouterr().out
    assert code == 0 and "(synthetic data)" in out and "4, 3, 32, 32]" in out  # [m, T, C, H, W]
