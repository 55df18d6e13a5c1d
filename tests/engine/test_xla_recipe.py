"""Which recipes train on XLA, and the checkpoint IO they get: judged from the recipe alone,
so it holds on machines without torch-xla (the XLA runs themselves are in tests/xla)."""

import pytest
from jsonargparse import Namespace

from fmtrain.engine.checkpoint_io import default_checkpoint_io
from fmtrain.engine.xla import is_xla

XLA_IO = "fmtrain.engine.checkpoint_io.XLAAtomicCheckpointIO"
ATOMIC_IO = "fmtrain.engine.checkpoint_io.AtomicCheckpointIO"


@pytest.mark.parametrize(
    ("accelerator", "strategy"),
    [
        ("tpu", "auto"),
        ("auto", "xla"),
        ("cpu", "xla_fsdp"),
        (Namespace(class_path="fmtrain.engine.xla.PJRTAccelerator"), "auto"),
        ({"class_path": "lightning.pytorch.accelerators.XLAAccelerator"}, None),
        ("auto", Namespace(class_path="lightning.pytorch.strategies.XLAStrategy")),
    ],
)
def test_xla_recipes_get_the_atomic_io_in_the_type_xla_strategies_accept(accelerator, strategy):
    assert is_xla(accelerator, strategy)
    assert default_checkpoint_io(accelerator, strategy) == XLA_IO


@pytest.mark.parametrize(
    ("accelerator", "strategy"),
    [
        ("cpu", "auto"),
        ("gpu", "ddp"),
        ("auto", "fsdp"),
        (Namespace(class_path="lightning.pytorch.accelerators.CUDAAccelerator"), "auto"),
        (Namespace(class_path="no.such.module.Accelerator"), "auto"),  # the parser's to report
    ],
)
def test_other_recipes_get_the_plain_atomic_io(accelerator, strategy):
    assert not is_xla(accelerator, strategy)
    assert default_checkpoint_io(accelerator, strategy) == ATOMIC_IO


@pytest.mark.parametrize(("wanted", "fits"), [(2, True), (4, False)])
def test_the_global_batch_judged_inside_the_launched_processes(oct_dataset, tmp_path, wanted, fits):
    """Lightning's XLA strategy reports a world of 1 until its processes start, so on XLA the
    rule is judged in `setup`, by a callback; here in a real one-process CPU fit."""
    from fmtrain.engine.global_batch import GlobalBatchCheck
    from fmtrain.recipe import build_recipe
    from tests.conftest import TINY_RECIPE

    args = ["--config", str(TINY_RECIPE), f"--data.init_args.source={oct_dataset}/manifest.tsv"]
    args += [f"--trainer.default_root_dir={tmp_path}", "--trainer.logger=false"]
    args += ["--trainer.max_steps=1", "--data.init_args.num_workers=0"]
    cli = build_recipe(args, run=False)
    cli.trainer.callbacks.append(GlobalBatchCheck(wanted))
    if fits:
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
        assert cli.trainer.global_step == 1
        return
    with pytest.raises(ValueError, match=r"global_batch_size=4 but data.batch_size \(2\)"):
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    assert cli.trainer.global_step == 0  # refused before the first step
