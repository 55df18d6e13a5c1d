"""`fmtrain check`: each class of broken recipe is caught, named by its key; healthy passes."""

import json
import os
import shutil

import numpy as np
import pytest
import torch
import zarr

from fmtrain.check.contracts import check_token_contract
from fmtrain.check.problems import CheckReport
from fmtrain.check.runner import main, run_check
from fmtrain.datamodules import VolumeDataModule
from tests.conftest import REPO, TINY_MAE_RECIPE, TINY_RECIPE


def _check(oct_dataset, tmp_path, *overrides):
    args = [f"--data.init_args.source={oct_dataset}/manifest.tsv"]
    args += [f"--trainer.default_root_dir={tmp_path}", *overrides]
    return run_check(str(TINY_RECIPE), args, str(tmp_path / "check"))


def _error(report, key_part: str, text: str = ""):
    hits = [p for p in report.errors if key_part in p.key and text in p.message]
    assert hits, "\n".join(str(p) for p in report.problems) or "no problems reported"
    return hits[0]


@pytest.mark.parametrize(
    "recipe",
    [
        TINY_RECIPE,
        TINY_MAE_RECIPE,
        REPO / "recipes" / "oct_vjepa_demo.yaml",
        REPO / "recipes" / "oct_mae_demo.yaml",
    ],
    ids=lambda p: p.name,
)
def test_healthy_recipes_pass_with_tables_and_a_picture(oct_dataset, tmp_path, recipe):
    args = [f"--data.init_args.source={oct_dataset}/manifest.tsv"]
    args += [f"--trainer.default_root_dir={tmp_path}"]
    report = run_check(str(recipe), args, str(tmp_path / "check"))
    assert not report.errors, [str(p) for p in report.errors]
    stages = {s["stage"]: s["shape"] for s in report.stages}
    assert len(stages["encoder"]) == 3  # tokens, not pooled
    # the context encoder sees the context tokens only (one row per mask family)
    seen = {tuple(s["shape"][:2]) for s in report.stages if s["stage"] == "encoder"}
    contexts = {tuple(s["shape"]) for s in report.stages if s["stage"].startswith("context ")}
    assert seen == contexts
    if "target_encoder" in stages:  # V-JEPA: the EMA twin encodes the whole grid
        assert stages["target_encoder"][1] == report.masks[0]["num_tokens"]
        assert report.parameters["encoder"] == report.parameters["target_encoder"] > 0
    else:  # MAE: the decoder predicts every hidden patch's voxels
        assert stages["decoder"][1] == stages["target indices [0]"][1]
        assert report.parameters["decoder"] > 0
    assert report.performance["train step per micro-batch (s)"] > 0
    with_ac = next(v for k, v in report.performance.items() if k.startswith("activations with "))
    without = next(v for k, v in report.performance.items() if k.startswith("activations without"))
    assert 0 < with_ac < without  # checkpointing saves activation memory
    assert os.path.getsize(report.pictures[0]) > 10_000
    assert (
        (tmp_path / "check" / "check.txt")
        .read_text()
        .rstrip()
        .endswith(f"in {report.seconds:.1f} s")
    )


def test_class1_input_not_divisible_by_patch(oct_dataset, tmp_path):
    report = _check(oct_dataset, tmp_path, "--data.init_args.input_size=[8,32,30]")
    problem = _error(report, "", "input_size")
    assert "patch_size" in problem.message


def test_class1_blocks_too_large_for_the_grid(oct_dataset, tmp_path):
    report = _check(
        oct_dataset,
        tmp_path,
        "--data.init_args.masks=[{num_blocks: 8, spatial_scale: [0.9, 0.9]}]",
        "--data.init_args.min_context_tokens=60",
    )
    assert report.errors and "min_context_tokens" in report.errors[0].message


class ClaimsThreeChannels(VolumeDataModule):
    """A datamodule whose `channels` disagrees with the batches it makes."""

    @property
    def channels(self) -> int:
        return 3


def test_class2_channels_the_data_does_not_have(oct_dataset, tmp_path):
    # the channels are linked from the datamodule: a recipe cannot set them apart ...
    report = _check(oct_dataset, tmp_path, "--model.init_args.in_chans=3")
    assert "filled from the data" in _error(report, "model.init_args.in_chans").message
    # ... so the remaining way to get them wrong is a datamodule that misreports them
    report = _check(oct_dataset, tmp_path, f"--data.class_path={__name__}.ClaimsThreeChannels")
    assert _error(report, "data.init_args", "channel").category == "shape"


def test_class3_global_batch_and_batch_larger_than_dataset(oct_dataset, tmp_path):
    report = _check(oct_dataset, tmp_path, "--global_batch_size=64")
    assert "accumulate_grad_batches=32" in _error(report, "accumulate_grad_batches").fix
    report = _check(oct_dataset, tmp_path, "--data.init_args.batch_size=64")
    assert "fewer than one global batch" in _error(report, "data.init_args.batch_size").message


def test_class4_unwritable_locations(oct_dataset, tmp_path, s3_server, monkeypatch):
    report = _check(oct_dataset, tmp_path, "--checkpoint.dirpath=nosuchscheme://bucket/ckpt")
    assert "nosuchscheme" in _error(report, "checkpoint.dirpath").message
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    report = _check(oct_dataset, tmp_path, f"--checkpoint.dirpath={a_file}/ckpt")
    _error(report, "checkpoint.dirpath", "cannot write")
    # a bucket that does not exist, on a real S3 server (botocore reads the endpoint from env)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server["client_kwargs"]["endpoint_url"])
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    report = _check(oct_dataset, tmp_path, "--checkpoint.dirpath=s3://no-such-bucket/ckpt")
    _error(report, "checkpoint.dirpath", "no-such-bucket")


def test_class5_missing_data_and_wrong_split(oct_dataset, tmp_path):
    report = run_check(
        str(TINY_RECIPE),
        [f"--data.init_args.source={tmp_path}/nope/manifest.tsv"],
        str(tmp_path / "check"),
    )
    assert f"{tmp_path}/nope/manifest.tsv" in _error(report, "data.init_args.source").message
    report = _check(oct_dataset, tmp_path, "--data.init_args.train_split=training")
    problem = _error(report, "train_split", "'training'")
    assert "'train'" in problem.message  # names the splits that exist


def test_class6_token_contracts():
    report = CheckReport(recipe="r")
    check_token_contract(
        report,
        [
            {"stage": "encoder", "shape": [2, 768]},  # pooled: nothing per patch
            {"stage": "decoder", "shape": [2, 196, 512]},
        ],
    )
    assert report.errors[0].key == "model.init_args.encoder"
    report = CheckReport(recipe="r")
    check_token_contract(
        report,
        [
            {"stage": "encoder", "shape": [2, 196, 768]},
            {"stage": "decoder", "shape": [2, 196, 512]},
        ],
    )
    assert report.errors[0].key == "model.init_args.decoder" and "768" in report.errors[0].message


def test_class9_non_finite_values_in_stored_data(oct_dataset, tmp_path):
    ok = _check(oct_dataset, tmp_path / "first")
    assert not ok.errors
    prepared = [
        p
        for p in (oct_dataset / ".fmtrain_prepared").iterdir()
        if json.loads((p / "prepare.json").read_text())["size"] == [8, 32, 32]
    ]
    damaged = tmp_path / "damaged"
    shutil.copytree(prepared[0], damaged)
    pool = zarr.open_group(str(damaged / "volumes.zarr"), mode="r+")["pool"]
    train = json.loads((damaged / "samples.json").read_text())["train"]
    last = train[-1]["index"]  # one damaged volume: most batches, the first included, are clean
    volume = np.asarray(pool[last])
    volume[0, 0, :4] = np.nan
    pool[last] = volume
    report = _check(
        oct_dataset,
        tmp_path,
        "--data.init_args.source=null",
        f"--data.init_args.prepared={damaged}",
        "--data.init_args.batch_size=1",
    )
    error = _error(report, "data.init_args.prepared", "contain NaN")
    key = train[-1]["key"]
    assert key in error.message and "non-finite values" in error.message


def _copy_prepared(oct_dataset, tmp_path, edit):
    prepared = next(
        p
        for p in (oct_dataset / ".fmtrain_prepared").iterdir()
        if json.loads((p / "prepare.json").read_text())["size"] == [8, 32, 32]
    )
    copy = tmp_path / "copy"
    shutil.copytree(prepared, copy)
    samples = json.loads((copy / "samples.json").read_text())
    edit(samples)
    (copy / "samples.json").write_text(json.dumps(samples))
    return ["--data.init_args.source=null", f"--data.init_args.prepared={copy}"]


def test_prepare_records_every_samples_values_and_check_reads_all_of_them(oct_dataset, tmp_path):
    report = _check(oct_dataset, tmp_path / "ok")
    assert not report.errors
    low, high = report.performance["stored values, every sample (min / max)"].split(" / ")
    assert float(low) < 0 < float(high)  # normalised per volume
    total = report.performance["samples with finite values on record"]
    assert total.split(" of ")[0] == total.split(" of ")[1]

    def mark_last_val_sample(samples):  # what prepare records for a sample it found damaged
        samples["val"][-1]["stats"] = {"finite": False, "non_finite": 3}

    args = _copy_prepared(oct_dataset, tmp_path / "bad", mark_last_val_sample)
    report = _check(oct_dataset, tmp_path / "bad", *args)
    assert "stored samples hold NaN/Inf" in _error(report, "data.init_args.prepared").message

    def forget_stats(samples):  # a dataset prepared before fmtrain recorded values
        for split in samples.values():
            for sample in split:
                sample.pop("stats", None)

    args = _copy_prepared(oct_dataset, tmp_path / "old", forget_stats)
    report = _check(oct_dataset, tmp_path / "old", *args)
    assert not report.errors
    assert any("have no value record" in p.message for p in report.problems)


def test_class10_precision_the_device_cannot_run(oct_dataset, tmp_path):
    report = _check(oct_dataset, tmp_path, "--trainer.precision=16-mixed")
    assert _error(report, "trainer.precision").category == "device"


def test_command_exit_codes(oct_dataset, tmp_path, capsys):
    base = [str(TINY_RECIPE), "--out", str(tmp_path / "c")]
    base += [f"--data.init_args.source={oct_dataset}/manifest.tsv"]
    base += [f"--trainer.default_root_dir={tmp_path}"]
    assert main(base) == 0
    assert "OK: 0 error(s)" in capsys.readouterr().out
    assert main([*base, "--data.init_args.batch_size=64"]) == 1
    assert "FAILED" in capsys.readouterr().out


def test_class10_a_compiler_that_fails_is_reported_not_skipped(oct_dataset, tmp_path):
    report = _check(
        oct_dataset,
        tmp_path,
        "--model.init_args.compile=true",
        "--model.init_args.compile_backend=no_such_backend",
    )
    assert "no_such_backend" in _error(report, "model.init_args.compile").message


def test_a_warmup_that_fills_the_shortened_run_is_flagged_with_a_value(oct_dataset, tmp_path):
    # the tiny recipe warms up for 2 steps: fine over 20 steps, most of a 3-step run
    report = _check(oct_dataset, tmp_path, "--trainer.max_steps=20")
    assert not [p for p in report.problems if "warmup" in p.key]
    # what 20 steps do leave: an EMA target that is still almost all initialisation
    (ema,) = [p for p in report.problems if p.key == "model.init_args.ema"]
    assert ema.severity == "warning" and "random initialisation" in ema.message
    report = _check(oct_dataset, tmp_path, "--trainer.max_steps=3")
    warning = next(p for p in report.problems if "warmup" in p.key)
    assert warning.severity == "warning" and "67%" in warning.message
    assert warning.key == "model.init_args.optimizer.warmup_steps" and "about 1" in warning.fix
    report = _check(oct_dataset, tmp_path, "--trainer.max_steps=2")
    assert "never reaches its peak" in _error(report, "warmup_steps").message
    report = _check(oct_dataset, tmp_path, "--trainer.max_steps=-1")
    assert _error(report, "trainer.max_steps").category == "schedule"


def test_step_time_is_measured_at_the_recipes_batch_and_compile_is_reported_apart(
    oct_dataset, tmp_path
):
    plain = _check(oct_dataset, tmp_path / "plain")
    batch = 2  # tests/recipes/oct_vjepa_tiny.yaml: small enough to time at its own batch
    method = plain.performance["step time method"]
    assert method.startswith(f"measured at batch {batch}: forward, backward, optimizer update")
    assert plain.performance[f"step time at data.batch_size={batch} (s)"] > 0
    assert "compile warm-up, first passes (s)" not in plain.performance
    compiled = _check(
        oct_dataset,
        tmp_path / "compiled",
        "--model.init_args.compile=true",
        "--model.init_args.compile_backend=aot_eager",
    )
    assert not compiled.errors, [str(p) for p in compiled.errors]
    assert compiled.performance["compile warm-up, first passes (s)"] > 0
    assert compiled.performance["step time method"].startswith("measured at batch")


def test_step_time_between_two_measured_sizes_is_a_line_through_them():
    from fmtrain.check.step import _predict

    seconds, method = _predict({1: 0.30, 2: 0.50}, 8)
    assert seconds == pytest.approx(0.10 + 0.20 * 8)  # t = 0.1 s + 0.2 s x batch
    assert "through batches 1 and 2" in method
    seconds, method = _predict({2: 0.4}, 8)
    assert seconds == pytest.approx(1.6) and "one size" in method


def test_a_recipe_too_big_to_run_here_is_measured_on_fake_tensors(
    oct_dataset, tmp_path, monkeypatch
):
    """The real-pass budget is set to zero (a machine too small for the recipe cannot be built
    in a test): the stages, activation memory and FLOPs then come from fake tensors and must
    be those of the real pass."""
    from fmtrain.check import step

    real = _check(oct_dataset, tmp_path / "real")
    monkeypatch.setattr(step, "_REAL_PASS_BUDGET_S", 0.0)
    fake = _check(oct_dataset, tmp_path / "fake")
    assert not fake.errors, [str(p) for p in fake.errors]
    assert fake.stages == real.stages
    assert fake.performance["step time method"].startswith("predicted, not run")
    assert float(fake.performance["forward+backward FLOPs per sample"]) > 0
    assert (
        fake.performance["forward+backward FLOPs per sample"]
        == (real.performance["forward+backward FLOPs per sample"])
    )
    key = "activations with checkpointing, micro-batch (MiB)"
    assert fake.performance[key] >= real.performance[key] > 0  # views counted apart: >=
    (warning,) = [p for p in fake.problems if "fake-tensor pass" in p.message]
    assert warning.severity == "warning" and "not computed" in warning.message
    # the real step the full size could not afford ran at half the tokens: grid 4x4x4 -> 2x4x4
    reduced = fake.performance["real step at reduced size"]
    assert reduced.startswith("input [4, 32, 32]: loss ") and ", finite, " in reduced


def test_reduced_sizes_halve_the_largest_axis_in_whole_patches():
    from fmtrain.check.reduced_step import reduced_sizes

    sizes = reduced_sizes((64, 384, 384), (4, 16, 16), keep_fraction=0.1)
    assert sizes == [(32, 96, 192), (32, 192, 192), (64, 192, 192), (64, 192, 384)]
    assert reduced_sizes((4, 16, 16), (4, 16, 16), keep_fraction=0.1) == []  # one patch


XLA_RECIPE = REPO / "tests" / "xla" / "recipe_xla.yaml"


# "gpu" as an id would mark the case GPU-only; the XLA class is fmtrain's PJRTAccelerator
@pytest.mark.parametrize(
    "recipe_args",
    [["--trainer.accelerator=tpu"], ["--trainer.accelerator=cuda"], ["--config", str(XLA_RECIPE)]],
    ids=["tpu", "cuda", "xla-class"],
)
def test_an_accelerator_this_machine_lacks_is_refused_unless_the_recipe_trains_elsewhere(
    oct_dataset, tmp_path, recipe_args
):
    from fmtrain.engine.xla import PJRTAccelerator

    here = torch.cuda.is_available() if "cuda" in recipe_args[0] else PJRTAccelerator.is_available()
    if here:
        pytest.skip(f"this machine has {recipe_args}")
    report = _check(oct_dataset, tmp_path, *recipe_args)
    problem = _error(report, "trainer.accelerator", "fit would stop here")
    assert "--elsewhere" in problem.fix
    if "cuda" not in recipe_args[0]:
        assert "torch-xla" in problem.message  # what is missing, said
    args = [f"--data.init_args.source={oct_dataset}/manifest.tsv"]
    args += [f"--trainer.default_root_dir={tmp_path}", *recipe_args]
    report = run_check(str(TINY_RECIPE), args, str(tmp_path / "check2"), elsewhere=True)
    assert not report.errors, [str(p) for p in report.errors]
    assert any(p.key == "trainer.accelerator" and p.severity == "warning" for p in report.problems)
    assert report.stages  # the step still ran, here on the CPU


@pytest.mark.parametrize(
    ("name", "fix"),
    [("TPU", "use one of auto, cpu, cuda, gpu, mps, tpu"), ("gpus", "use one of"),
     ("fmtrain.engine.xla.PJRTAccelerator", "{class_path: fmtrain.engine.xla.PJRTAccelerator}")],
)  # fmt: skip
def test_an_accelerator_name_lightning_does_not_know_is_refused_with_how_to_write_it(
    oct_dataset, tmp_path, name, fix
):
    report = _check(oct_dataset, tmp_path, f"--trainer.accelerator={name}")
    problem = _error(report, "trainer.accelerator", "not an accelerator Lightning knows")
    assert fix in problem.fix, problem.fix


def test_a_gpu_precision_on_xla_is_refused_with_the_one_xla_takes(oct_dataset, tmp_path):
    args = [f"--data.init_args.source={oct_dataset}/manifest.tsv"]
    args += [f"--trainer.default_root_dir={tmp_path}", "--trainer.accelerator=tpu"]
    mixed = run_check(str(TINY_RECIPE), [*args, "--trainer.precision=bf16-mixed"],
                      str(tmp_path / "a"), elsewhere=True)  # fmt: skip
    problem = _error(mixed, "trainer.precision", "bf16-mixed on XLA")
    assert "bf16-true" in problem.fix
    true = run_check(str(TINY_RECIPE), [*args, "--trainer.precision=bf16-true"],
                     str(tmp_path / "b"), elsewhere=True)  # fmt: skip
    assert not true.errors, [str(p) for p in true.errors]
