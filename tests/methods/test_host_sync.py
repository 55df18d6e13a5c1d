"""A method's training step (forward and backward) reads nothing on the host: no `item`,
`bool`, `tolist` or copy to the CPU of a tensor, and no op whose output size depends on
tensor values. Counted on the CPU, so every machine runs it (on a GPU each would be a sync
that stalls the step)."""

from __future__ import annotations

import pytest
import torch

from fmtrain.recipe import build_recipe
from tests.conftest import TINY_MAE_RECIPE, TINY_RECIPE, TINY_SIGNALS_RECIPE
from tests.methods.host_syncs import count_host_syncs

RECIPES = {
    "vjepa": TINY_RECIPE,
    "mae": TINY_MAE_RECIPE,
    "msm": TINY_SIGNALS_RECIPE,
    "mim": TINY_RECIPE.with_name("oct_mim_tiny.yaml"),
}


def _module_and_batch(recipe, source, tmp_path):
    args = ["--config", str(recipe), f"--data.init_args.source={source}/manifest.tsv"]
    args += [f"--trainer.default_root_dir={tmp_path}", "--trainer.logger=false"]
    args += ["--data.init_args.num_workers=0"]
    cli = build_recipe(args, run=False)
    dm = cli.datamodule
    dm.prepare_data()
    dm.setup("fit")
    return cli.model, next(iter(dm.train_dataloader()))


def test_the_counter_sees_host_reads_and_data_sized_ops():
    x = torch.arange(6.0)
    with count_host_syncs() as hits:
        x.sum().item()
        bool(x.max() > 2)
        x.tolist()
        x.nonzero()
        (x * 2).cpu()  # a copy to the host (from a device)
        y = x * 2 + 1  # device work only
    assert len(hits) >= 5, hits
    with count_host_syncs() as quiet:
        y = torch.where(y > 3, y, 0.0).cumsum(0)
    assert quiet == []


@pytest.mark.parametrize("method", list(RECIPES))
def test_a_training_step_reads_nothing_on_the_host(method, oct_dataset, signal_dataset, tmp_path):
    source = signal_dataset if method == "msm" else oct_dataset
    module, batch = _module_and_batch(RECIPES[method], source, tmp_path)
    module.train()
    module.run_forward(batch).loss.backward()  # first use: lazy init, compile decisions
    module.zero_grad(set_to_none=True)
    with count_host_syncs() as hits:
        module.run_forward(batch).loss.backward()
    assert hits == [], f"{method}: {len(hits)} host read(s): {sorted(set(hits))}"
