"""Links between data and model are declared by the method: a method without masks reads no
mask settings, and values the data decides cannot be set apart from it."""

from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from fmtrain.check.runner import run_check
from fmtrain.cli import run_cli
from fmtrain.methods import MethodOutput, PretrainMethod
from fmtrain.methods.configs import OptimizerConfig
from fmtrain.nn.encoder import EncoderSpec, ViTEncoder
from fmtrain.nn.heads import mean_pool
from fmtrain.recipe import _model_class_path, recipe_options
from tests.conftest import TINY_RECIPE

CPU = ["--trainer.logger=false", "--trainer.enable_progress_bar=false"]


class MeanIntensity(PretrainMethod):
    """A method that needs no masks: regress each volume's mean intensity from its tokens.

    Args:
        input_size: spatial input shape.
        patch_size: patch extent per axis.
        in_chans: input channels.
        encoder: encoder configuration.
        optimizer: AdamW and its schedules.
    """

    def __init__(
        self,
        *,
        input_size: tuple[int, ...],
        patch_size: tuple[int, ...] = (2, 8, 8),
        in_chans: int = 1,
        encoder: EncoderSpec = ViTEncoder(size="vit_test"),  # noqa: B008
        optimizer: OptimizerConfig | None = None,
    ) -> None:
        super().__init__(
            input_size=input_size,
            patch_size=patch_size,
            in_chans=in_chans,
            encoder=encoder,
            optimizer=optimizer,
        )
        self.save_hyperparameters()
        encoder_module = self.build_encoder()
        self.method = nn.ModuleDict(
            {"encoder": encoder_module, "head": nn.Linear(encoder_module.embed_dim, 1)}
        )

    def forward_batch(self, batch) -> MethodOutput:
        tokens = self.method["encoder"](batch.inputs)
        guess = self.method["head"](mean_pool(tokens)).squeeze(-1)
        target = batch.inputs.flatten(1).mean(dim=1)
        return MethodOutput(loss=torch.nn.functional.mse_loss(guess, target), features=tokens)

    def evaluation_encoder(self) -> nn.Module:
        return self.method["encoder"]

    def stage_widths(self) -> dict[str, int]:
        return {}


def _no_mask_recipe(tmp_path: Path, oct_dataset: Path) -> Path:
    recipe = yaml.safe_load(TINY_RECIPE.read_text())
    recipe["model"] = {
        "class_path": f"{__name__}.MeanIntensity",
        "init_args": {"patch_size": [2, 8, 8], "optimizer": {"warmup_steps": 1}},
    }
    recipe["data"]["init_args"] |= {
        "source": str(oct_dataset / "manifest.tsv"),
        "masks": "none",
        "num_workers": 0,
    }
    recipe["trainer"]["logger"] = False
    path = tmp_path / "no_masks.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_a_method_without_masks_parses_checks_and_trains(oct_dataset, tmp_path):
    recipe = _no_mask_recipe(tmp_path, oct_dataset)
    cli = run_cli(["--config", str(recipe), *CPU], run=False)
    assert cli.datamodule.num_mask_families == 0 and cli.model.num_mask_families is None
    assert cli.model.grid.input_size == cli.datamodule.input_size  # the links it declares
    report = run_check(str(recipe), [f"--trainer.default_root_dir={tmp_path}"], str(tmp_path))
    assert not report.errors, [str(p) for p in report.errors]
    assert not report.masks and not report.pictures  # nothing to show about masks
    out = [f"--trainer.default_root_dir={tmp_path}", f"--checkpoint.dirpath={tmp_path}/ckpt"]
    cli = run_cli(["fit", "--config", str(recipe), *CPU, "--trainer.max_steps=2", *out])
    assert cli.trainer.global_step == 2


def test_vjepa_without_masks_is_refused_by_check_naming_the_key(oct_dataset, tmp_path):
    report = run_check(
        str(TINY_RECIPE),
        [
            f"--data.init_args.source={oct_dataset}/manifest.tsv",
            "--data.init_args.masks=none",
            f"--trainer.default_root_dir={tmp_path}",
        ],
        str(tmp_path),
    )
    # V-JEPA reads its mask families off the data: zero families cannot feed its predictor
    assert any("data.init_args.masks" in p.key for p in report.errors), report.render()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--config", str(TINY_RECIPE)], "fmtrain.methods.VJEPAModule"),
        (["fit", "--config", str(TINY_RECIPE), "--model=my.Method"], "my.Method"),
        (["--config", str(TINY_RECIPE), "--model.class_path", "my.Other"], "my.Other"),
        (
            ["--model.class_path=my.First", "--config", str(TINY_RECIPE)],
            "fmtrain.methods.VJEPAModule",
        ),
        (["--trainer.max_steps=3"], None),
    ],
)
def test_the_model_class_is_found_before_parsing_as_the_parser_would(args, expected):
    assert _model_class_path(recipe_options(args)) == expected


def test_a_recipe_written_for_the_old_keys_is_told_the_new_ones(tmp_path):
    old = yaml.safe_load(TINY_RECIPE.read_text())
    old["model"]["init_args"]["monitor_every_n_steps"] = 2
    old["data"]["class_path"] = "fmtrain.data.VolumeDataModule"
    path = tmp_path / "old.yaml"
    path.write_text(yaml.safe_dump(old))
    with pytest.raises(SystemExit) as stopped:
        run_cli(["--config", str(path)], run=False)
    message = str(stopped.value)
    assert "model.init_args.monitor_every_n_steps -> monitors.every_n_steps" in message
    assert "fmtrain.datamodules.VolumeDataModule" in message
    with pytest.raises(SystemExit, match="the channels come from"):
        run_cli(["--config", str(TINY_RECIPE), "--model.init_args.encoder.in_chans=3"], run=False)
    report = run_check(str(path), [], str(tmp_path / "check"))  # check says it too
    assert "monitors.every_n_steps" in report.render()


def test_an_input_size_set_by_hand_that_disagrees_with_the_data_is_refused(oct_dataset):
    source = f"--data.init_args.source={oct_dataset}/manifest.tsv"
    args = ["--config", str(TINY_RECIPE), source, *CPU]
    with pytest.raises(ValueError, match=r"model.init_args.input_size=.*'input_size' is"):
        run_cli([*args, "--model.init_args.input_size=[8, 32, 64]"], run=False)
    cli = run_cli([*args, "--model.init_args.input_size=[8, 32, 32]"], run=False)  # agrees
    assert cli.model.grid.input_size == (8, 32, 32)
