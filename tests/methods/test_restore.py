"""Supervised restoration through the real tools: recipe links, Lightning fit, metrics."""

from __future__ import annotations

import csv

import pytest
import torch

from fmtrain.cli import run_cli
from fmtrain.export import load_encoder
from fmtrain.methods.restore import RestorationLossConfig, RestorationModule
from fmtrain.nn.restoration import VRTNetwork
from tests.conftest import REPO
from tests.datamodules.test_restoration import _write_split

TINY = REPO / "tests" / "recipes" / "restore_tiny.yaml"


@pytest.fixture
def pairs(tmp_path):
    _write_split(tmp_path, "train", {"a": 8, "b": 8}, same=False)
    _write_split(tmp_path, "test", {"c": 8}, same=False, seed=1)
    return tmp_path


def test_fit_links_the_data_and_logs_quality_against_the_input(pairs, tmp_path):
    out = tmp_path / "run"
    args = ["fit", "--config", str(TINY), f"--data.init_args.root={pairs}"]
    args += [f"--trainer.default_root_dir={out}", f"--checkpoint.dirpath={out}/ckpt"]
    args += [f"--trainer.logger.init_args.save_dir={out}"]
    cli = run_cli(args)
    model = cli.model
    assert model.grid.input_size == (4, 16, 16) and model.in_chans == 3
    assert model.method.network.spike_bins == 3  # read off the data's spike voxels
    assert cli.trainer.global_step == 4
    with (out / "csv" / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    val = [r for r in rows if r.get("val/psnr")]
    assert val and all(r["val/ssim"] and r["val/psnr_input"] for r in val)
    # blur is sharp // 2 on disk: the input's PSNR is low and the metric sees it
    assert float(val[0]["val/psnr_input"]) < 15
    restorer = load_encoder(out / "ckpt" / "last.ckpt")
    blur = torch.rand(1, 4, 3, 16, 16)
    spikes = torch.rand(1, 4, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(
            restorer(blur, spikes), model.method.network.eval()(blur, spikes)
        )


def test_refusals_name_the_key():
    with pytest.raises(ValueError, match=r"clip_length, crop\)=\[4, 20, 16\].*use 16 or 24"):
        RestorationModule(input_size=(4, 20, 16), network=VRTNetwork(size="test"))
    with pytest.raises(ValueError, match=r"model\.init_args\.loss\.charbonnier_eps=1e-20"):
        RestorationLossConfig(charbonnier_eps=1e-20)
    with pytest.raises(ValueError, match=r"perceptual_weight"):
        RestorationLossConfig(perceptual_weight=-1.0)


def test_channels_last_touches_only_4d_convolutions():
    module = RestorationModule(
        input_size=(4, 16, 16), network=VRTNetwork(size="test"), channels_last=True
    )
    network = module.method.network
    convs = [m for m in network.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(m.weight.is_contiguous(memory_format=torch.channels_last) for m in convs)
    out = network(torch.rand(1, 4, 3, 16, 16))
    assert out.shape == (1, 4, 3, 16, 16) and out.is_contiguous()


def test_check_runs_restoration_recipes_and_names_the_cache_key(pairs, tmp_path):
    from fmtrain.check.runner import run_check

    args = [f"--data.init_args.root={pairs}", f"--trainer.default_root_dir={tmp_path}"]
    report = run_check(str(TINY), args, str(tmp_path / "check"))
    assert not report.errors, [str(p) for p in report.errors]
    stages = {s["stage"]: s["shape"] for s in report.stages}
    assert stages["input"] == stages["network"] == [2, 4, 3, 16, 16]
    # 10 training clips (two 8-frame sequences, clips of 4, stride 1) for batches of 3: the
    # warning speaks of clips and of the setting that holds them, not of volumes
    few = run_check(str(TINY), [*args, "--data.init_args.batch_size=3"], str(tmp_path / "few"))
    warned = [p for p in few.problems if p.key == "data.init_args.root"]
    assert warned and warned[0].severity == "warning", [str(p) for p in few.problems]
    assert "only 10 training clips" in warned[0].message
    report = run_check(
        str(TINY), [*args, "--data.init_args.cache_bytes=100"], str(tmp_path / "check2")
    )
    assert any(
        p.key == "data.init_args.cache_bytes" and "2304 bytes" in p.message for p in report.errors
    ), [str(p) for p in report.errors]


@pytest.mark.slow
def test_whole_network_compiles_with_checkpointing_and_trains_like_eager(pairs, tmp_path):
    """aot_eager traces the whole VRTLite (checkpointed blocks included) without a C++
    compiler; the compiled run's losses equal the eager run's."""

    def fit(name, *extra):
        out = tmp_path / name
        args = ["fit", "--config", str(TINY), f"--data.init_args.root={pairs}"]
        args += [f"--trainer.default_root_dir={out}", f"--checkpoint.dirpath={out}/ckpt"]
        args += [f"--trainer.logger.init_args.save_dir={out}", "--trainer.max_steps=3"]
        args += ["--trainer.limit_val_batches=0"]
        args += ["--model.init_args.network.activation_checkpointing=true", *extra]
        cli = run_cli(args)
        with (out / "csv" / "metrics.csv").open() as f:
            losses = [float(r["train/loss"]) for r in csv.DictReader(f) if r.get("train/loss")]
        return cli, losses

    _, eager = fit("eager")
    cli, compiled = fit(
        "compiled", "--model.init_args.compile=true", "--model.init_args.compile_backend=aot_eager"
    )
    assert cli.model.method.network._compiled_call_impl is not None  # really compiled
    assert len(eager) == len(compiled) == 3
    assert compiled == pytest.approx(eager, rel=1e-4)
    assert eager[0] != eager[-1]  # the comparison is not between constants


@pytest.mark.parametrize(
    ("override", "key", "text"),
    [
        ("--data.init_args.val_split=Test", "data.init_args.val_split", "did you mean 'test'"),
        ("--data.init_args.clip_length=12", "data.init_args.clip_length", "at most 8"),
        ("--data.init_args.spike_bins=5", "data.init_args.spike_bins", "holds 3 bins"),
        ("--model.init_args.loss.charbonnier_eps=1e-20", "charbonnier_eps", "underflows"),
    ],
)
def test_check_names_the_key_of_each_restoration_mistake(pairs, tmp_path, override, key, text):
    from fmtrain.check.runner import run_check

    args = [f"--data.init_args.root={pairs}", f"--trainer.default_root_dir={tmp_path}", override]
    report = run_check(str(TINY), args, str(tmp_path / "check"))
    hits = [p for p in report.errors if key in p.key and text in p.message]
    assert hits, [str(p) for p in report.problems]


class _Conv3dNetwork(torch.nn.Module):
    """A user's restorer that mixes frames with a 3D convolution (5D tensors)."""

    def __init__(self) -> None:
        super().__init__()
        self.mix = torch.nn.Conv3d(3, 3, 3, padding=1)

    def channels_last_modules(self) -> list[torch.nn.Module]:
        return [self.mix]

    def forward(self, blur, spikes=None):
        return blur + self.mix(blur.transpose(1, 2)).transpose(1, 2)


class Conv3dNetwork(VRTNetwork):
    """Plugged in by class_path like any network spec."""

    def build(self, grid, in_chans):
        return _Conv3dNetwork()


def test_channels_last_on_a_5d_path_is_refused_naming_the_key():
    with pytest.raises(ValueError, match=r"model\.init_args\.channels_last=true.*3D conv.*mix"):
        RestorationModule(
            input_size=(4, 32, 32), network=Conv3dNetwork(size="test"), channels_last=True
        )
    # the same network without channels_last builds and runs
    module = RestorationModule(input_size=(4, 32, 32), network=Conv3dNetwork(size="test"))
    assert module.method.network(torch.rand(1, 4, 3, 32, 32)).shape == (1, 4, 3, 32, 32)


def test_fit_ends_with_a_summary_of_the_runs_warnings(pairs, tmp_path, caplog):
    import logging

    _write_split(pairs, "train", {"short": 2}, same=False, seed=2)  # shorter than a clip
    out = tmp_path / "run"
    args = ["fit", "--config", str(TINY), f"--data.init_args.root={pairs}"]
    args += [f"--trainer.default_root_dir={out}", f"--checkpoint.dirpath={out}/ckpt"]
    args += [f"--trainer.logger.init_args.save_dir={out}", "--trainer.max_steps=1"]
    with caplog.at_level(logging.INFO, logger="fmtrain"):
        run_cli(args)
    summary = [r.message for r in caplog.records if "during this run" in r.message]
    assert summary, [r.message for r in caplog.records]
    assert "1 x split 'train': " in summary[-1] and "'short'" in summary[-1]


def test_check_skips_the_pass_without_checkpointing_when_it_would_not_fit_in_memory(
    pairs, tmp_path, monkeypatch
):
    """The bound on what checkpointing saves is made huge (the only stand-in here: a machine
    too small for the recipe cannot be built in a test); the recipe checkpoints, so check
    measures its own mode first and does not risk the pass that keeps every activation."""
    from fmtrain.check import step
    from fmtrain.check.runner import run_check

    monkeypatch.setattr(step, "_CHECKPOINT_SAVING_BOUND", 10**12)
    args = [f"--data.init_args.root={pairs}", f"--trainer.default_root_dir={tmp_path}"]
    args += ["--model.init_args.network.activation_checkpointing=true"]
    report = run_check(str(TINY), args, str(tmp_path / "check"))
    assert not report.errors, [str(p) for p in report.errors]
    perf = report.performance
    assert perf["activations without checkpointing"].startswith("not measured: up to")
    assert perf["micro-batch"] == 1 and perf["activations with checkpointing, micro-batch (MiB)"]
    assert perf["step time at data.batch_size=2 (s)"] > 0
