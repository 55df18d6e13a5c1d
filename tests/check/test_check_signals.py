"""`fmtrain check` on signal recipes: the four bugs of the home-grown ECG/PPG pipeline, and
a window longer than the recordings, are each refused before the first step, naming the
recipe key and both values; healthy signal recipes (the production one included) pass."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from torch import nn

from fmtrain.check.runner import run_check
from fmtrain.cli import run_cli
from fmtrain.methods import MaskedSignalModule
from fmtrain.nn.encoder import EncoderSpec, ViTEncoder
from tests.conftest import REPO, TINY_SIGNALS_RECIPE

PRODUCTION = REPO / "recipes" / "signals_msm_vitaldb.yaml"


def _check(signal_dataset, tmp_path, *overrides, recipe=TINY_SIGNALS_RECIPE):
    args = [f"--data.init_args.source={signal_dataset}/manifest.tsv"]
    args += [f"--trainer.default_root_dir={tmp_path}", *overrides]
    return run_check(str(recipe), args, str(tmp_path / "check"))


def _error(report, key: str, *texts: str):
    hits = [p for p in report.errors if key in p.key and all(t in p.message for t in texts)]
    assert hits, "\n".join(str(p) for p in report.problems) or "no problems reported"
    return hits[0]


@pytest.mark.parametrize("recipe", [TINY_SIGNALS_RECIPE, REPO / "recipes/signals_msm_demo.yaml"])
def test_healthy_signal_recipes_pass(signal_dataset, tmp_path, recipe):
    # the demo's windows are 1024 samples: the fixture's 20 s recordings hold 2500
    report = _check(signal_dataset, tmp_path, "--data.init_args.batch_size=4", recipe=recipe)
    assert not report.errors, [str(p) for p in report.errors]
    stages = {s["stage"]: s["shape"] for s in report.stages}
    assert stages["input"][1:] == [1, 2, stages["input"][-1]]  # [B, 1, channels, window]
    assert len(stages["encoder"]) == 3


def test_an_fft_longer_than_the_window(signal_dataset, tmp_path):
    report = _check(signal_dataset, tmp_path, "--model.init_args.stft.fft_sizes=[128, 2048]",
                    "--model.init_args.stft.hop_sizes=[32, 512]")  # fmt: skip
    problem = _error(report, "model.init_args.stft.fft_sizes", "2048", "512")
    assert "data.init_args.window" in problem.message


def test_a_window_longer_than_the_recordings(signal_dataset, tmp_path):
    report = _check(signal_dataset, tmp_path, "--data.init_args.window=4096",
                    "--model.init_args.stft.fft_sizes=[128, 256]")  # fmt: skip
    problem = _error(report, "data.init_args.window", "4096 samples", "lasts 20 s")
    assert "too_short" in problem.message


def _saved_mixer(path, patch_length: int) -> str:
    transformers = pytest.importorskip("transformers")
    config = transformers.PatchTSMixerConfig(
        context_length=512, patch_length=patch_length, patch_stride=patch_length,
        num_input_channels=2, d_model=16, num_layers=1, scaling=None,
    )  # fmt: skip
    transformers.PatchTSMixerModel(config).save_pretrained(path)
    return str(path)


def test_a_pretrained_encoder_whose_patch_length_differs_from_the_recipe(signal_dataset, tmp_path):
    saved = _saved_mixer(tmp_path / "mixer", patch_length=64)  # 8 patches of 512 samples
    encoder = (
        "--model.init_args.encoder={class_path: fmtrain.nn.timeseries.PatchTSMixerEncoder, "
        f"init_args: {{pretrained: {saved}}}}}"
    )
    # the recipe says 32-sample patches: refused, never patched mid-training
    problem = _error(_check(signal_dataset, tmp_path, encoder), "model.init_args.patch_size")
    assert "32" in problem.message and "64" in problem.message
    # with the model's own patch length the rest is built from it and the step runs
    report = _check(
        signal_dataset, tmp_path / "ok", encoder, "--model.init_args.patch_size=[1, 64]"
    )
    assert not report.errors, [str(p) for p in report.errors]
    stages = {s["stage"]: s["shape"] for s in report.stages}
    assert stages["decoder"][-1] == 64  # the decoder predicts the pretrained patch


class _Pooling(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner, self.embed_dim = inner, inner.embed_dim

    def forward(self, x, keep=None):
        return self.inner(x, keep=keep).mean(dim=1)  # [B, N, D] -> [B, D]: the bug


@dataclass(frozen=True, kw_only=True)
class PoolingEncoder(EncoderSpec):
    """A user's encoder whose forward pools the tokens."""

    def build(self, grid, in_chans):
        return _Pooling(ViTEncoder(size="vit_test").build(grid, in_chans))


def test_an_encoder_that_pools_where_tokens_are_needed(signal_dataset, tmp_path):
    report = _check(
        signal_dataset, tmp_path, f"--model.init_args.encoder={__name__}.PoolingEncoder"
    )
    _error(report, "model.init_args.encoder", "It pools")


class WrongDecoderSignalModule(MaskedSignalModule):
    """A method whose decoder projection is sized for 128-sample patches (the recipe's are
    32): positions right, output width wrong, as in the home-grown pipeline."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        wrong = nn.Linear(self.method.decoder.proj.in_features, 128)
        self.method.decoder.proj = wrong


def test_a_decoder_whose_output_does_not_match_the_patch(signal_dataset, tmp_path):
    report = _check(
        signal_dataset, tmp_path, f"--model.class_path={__name__}.WrongDecoderSignalModule"
    )
    problem = _error(report, "model.init_args.decoder", "128", "holds 32")
    assert "model.init_args.patch_size=[1, 32]" in problem.message


@pytest.mark.slow
def test_the_production_recipe_checks_and_fits_on_the_cpu(signal_dataset, tmp_path):
    reduced = ["--data.init_args.batch_size=4", "--data.init_args.num_workers=0",
               "--data.init_args.prepare_workers=1", "--trainer.accelerator=cpu"]  # fmt: skip
    report = _check(signal_dataset, tmp_path, *reduced, recipe=PRODUCTION)
    assert not report.errors, [str(p) for p in report.errors]
    assert {s["stage"]: s["shape"] for s in report.stages}["input"][1:] == [1, 2, 1024]
    cli = run_cli(
        ["fit", "--config", str(PRODUCTION), *reduced,
         f"--data.init_args.source={signal_dataset}/manifest.tsv",
         "--trainer.max_steps=2", "--trainer.val_check_interval=2", "--trainer.limit_val_batches=1",
         "--trainer.logger=false", "--trainer.enable_progress_bar=false",
         f"--trainer.default_root_dir={tmp_path}", f"--checkpoint.dirpath={tmp_path}/ckpt"]
    )  # fmt: skip
    assert cli.trainer.global_step == 2
    assert torch.isfinite(cli.trainer.callback_metrics["val/loss"])
    best = list((tmp_path / "ckpt").glob("best-step*.ckpt"))
    assert len(best) == 1  # the best validation loss is kept


def test_vjepa_on_signals_with_the_same_encoder(signal_dataset, tmp_path):
    vjepa = [
        "--model=fmtrain.methods.VJEPAModule",
        "--model.init_args.patch_size=[1, 32]",
        "--model.init_args.encoder.size=vit_test",
        "--model.init_args.predictor.embed_dim=32",
        "--model.init_args.predictor.depth=1",
        "--model.init_args.predictor.num_heads=2",
        "--data.init_args.masks=fmtrain.masks.MultiBlock",
    ]
    report = _check(signal_dataset, tmp_path, *vjepa)
    assert not report.errors, [str(p) for p in report.errors]
    cli = run_cli(
        ["fit", "--config", str(TINY_SIGNALS_RECIPE), *vjepa,
         f"--data.init_args.source={signal_dataset}/manifest.tsv", "--trainer.max_steps=2",
         "--trainer.logger=false", f"--trainer.default_root_dir={tmp_path}",
         f"--checkpoint.dirpath={tmp_path}/ckpt"]
    )  # fmt: skip
    assert cli.trainer.global_step == 2 and cli.model.grid.shape == (2, 16)
