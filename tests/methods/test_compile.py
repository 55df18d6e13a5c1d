"""torch.compile is opt-in, composes with activation checkpointing, and fails loudly."""

import pytest
import torch
import torch._dynamo

from fmtrain.cli import run_cli
from tests.conftest import TINY_RECIPE


def _fit(oct_dataset, tmp_path, *extra):
    args = ["fit", "--config", str(TINY_RECIPE)]
    args += [f"--data.init_args.source={oct_dataset}/manifest.tsv", "--trainer.max_steps=3"]
    args += ["--trainer.logger=false", f"--checkpoint.dirpath={tmp_path}/ckpt"]
    args += [f"--trainer.default_root_dir={tmp_path}"]
    args += [
        "--trainer.limit_val_batches=0",
        "--model.init_args.encoder.activation_checkpointing=true",
    ]
    return run_cli([*args, *extra])


@pytest.mark.slow
def test_compiled_blocks_with_checkpointing_train_like_eager(oct_dataset, tmp_path):
    eager = _fit(oct_dataset, tmp_path / "eager")
    # aot_eager captures and replays the graph without generating C++, so CI needs no compiler
    compiled = _fit(
        oct_dataset,
        tmp_path / "compiled",
        "--model.init_args.compile=true",
        "--model.init_args.compile_backend=aot_eager",
    )
    loss = lambda cli: float(cli.trainer.callback_metrics["train/loss"])  # noqa: E731
    assert compiled.trainer.global_step == 3
    assert loss(compiled) == pytest.approx(loss(eager), rel=1e-4)
    block = compiled.model.method.encoder.blocks[0]
    assert block._compiled_call_impl is not None  # really compiled
    assert "blocks.0.attn.qkv.weight" in compiled.model.method.encoder.state_dict()  # same keys


def _crashing_backend(graph_module, example_inputs):
    raise RuntimeError("simulated code-generator crash")


def test_a_failing_compiler_stops_the_run_with_its_reason(oct_dataset, tmp_path):
    # A registered backend that raises stands in for a compiler crash (none can be provoked
    # on purpose with the real ones); dynamo's own error path is exercised unchanged.
    torch._dynamo.reset()
    if "fmtrain_test_crash" not in torch._dynamo.list_backends():
        torch._dynamo.register_backend(_crashing_backend, name="fmtrain_test_crash")
    with pytest.raises(RuntimeError, match=r"backend 'fmtrain_test_crash'\) failed.*simulated"):
        _fit(
            oct_dataset,
            tmp_path,
            "--model.init_args.compile=true",
            "--model.init_args.compile_backend=fmtrain_test_crash",
        )
    torch._dynamo.reset()


def test_an_unknown_backend_is_refused_when_the_recipe_is_read(oct_dataset, tmp_path):
    with pytest.raises((ValueError, SystemExit)):
        _fit(oct_dataset, tmp_path, "--model.init_args.compile=true",
             "--model.init_args.compile_backend=no_such_backend")  # fmt: skip
