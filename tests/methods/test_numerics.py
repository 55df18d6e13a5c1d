"""Numerics guard: a NaN is located, its step skipped, and a persistent NaN stops the run."""

import logging

import lightning.pytorch as pl
import pytest
import torch
from torch import nn

from fmtrain.cli import run_cli
from fmtrain.methods.numerics import NonFiniteError, NumericsGuard, first_non_finite
from tests.conftest import TINY_MAE_RECIPE, TINY_RECIPE


def _nan_output_hook(module, inputs, output):
    return output * float("nan")


class _NaNGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * float("nan")


class _BadBackward(nn.Module):
    def forward(self, x):
        return _NaNGradient.apply(x)


def _model():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(4, 8), nn.Sequential(nn.ReLU(), nn.Linear(8, 8)), nn.Linear(8, 1)
    )


def test_locates_the_module_whose_output_went_non_finite():
    model = _model()
    model[1][1].register_forward_hook(_nan_output_hook)
    x = torch.randn(3, 4)
    assert first_non_finite(model, lambda: model(x).sum()).startswith(
        "forward: module 1.1 (Linear)"
    )


def test_locates_a_corrupted_parameter_and_a_backward_only_nan():
    model = _model()
    with torch.no_grad():
        model[2].bias.fill_(float("inf"))
    assert "parameter 2.bias" in first_non_finite(model, lambda: model(torch.randn(2, 4)).sum())
    model = nn.Sequential(nn.Linear(4, 4), _BadBackward(), nn.Linear(4, 1))
    where = first_non_finite(model, lambda: model(torch.randn(2, 4)).sum())
    assert where.startswith("backward: gradient into module 1 (_BadBackward)")
    assert all(p.grad is None for p in model.parameters())  # diagnosis leaves .grad alone


def test_guard_drops_gradients_of_a_bad_step_and_counts_in_a_row():
    model = _model()
    guard = NumericsGuard(max_consecutive_bad_steps=2)
    params = list(model.parameters())
    model(torch.randn(2, 4)).sum().backward()
    assert guard.check(torch.tensor(1.0), params) and guard.consecutive_bad == 0
    params[0].grad[0, 0] = float("nan")
    assert not guard.check(torch.tensor(1.0), params)
    assert all(p.grad is None for p in params) and not guard.exhausted
    assert not guard.check(torch.tensor(float("nan")), params) and guard.exhausted


class _InjectNaN(pl.Callback):
    """Makes one encoder MLP emit NaN during the chosen steps and snapshots the weights."""

    def __init__(self, steps):
        self.steps, self.handle, self.snapshots = set(steps), None, {}

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.snapshots[trainer.global_step] = {
            k: v.detach().clone() for k, v in module.method.state_dict().items()
        }
        if trainer.global_step in self.steps and self.handle is None:
            mlp = module.method.encoder.blocks[1].mlp
            # prepend: the NaN is part of the module's own output, as if its forward made it
            self.handle = mlp.register_forward_hook(_nan_output_hook, prepend=True)
        elif trainer.global_step not in self.steps and self.handle is not None:
            self.handle.remove()
            self.handle = None


def _cli(oct_dataset, tmp_path, *extra, recipe=TINY_RECIPE):
    args = ["--config", str(recipe), f"--data.init_args.source={oct_dataset}/manifest.tsv"]
    args += [f"--trainer.default_root_dir={tmp_path}", "--trainer.logger=false"]
    args += [f"--checkpoint.dirpath={tmp_path}/ckpt", "--data.init_args.num_workers=0", *extra]
    return run_cli(args, run=False)


@pytest.mark.slow
@pytest.mark.parametrize("recipe", [TINY_RECIPE, TINY_MAE_RECIPE], ids=["vjepa", "mae"])
def test_a_nan_step_is_skipped_and_its_module_named(oct_dataset, tmp_path, caplog, recipe):
    cli = _cli(oct_dataset, tmp_path, "--trainer.max_steps=4", recipe=recipe)
    inject = _InjectNaN(steps=[2])
    cli.trainer.callbacks.append(inject)
    with caplog.at_level(logging.WARNING, logger="fmtrain"):
        cli.trainer.fit(cli.model, cli.datamodule)
    assert cli.trainer.global_step == 4
    assert "step 2 skipped" in caplog.text
    assert "forward: module encoder.blocks.1.mlp" in caplog.text
    before, after = inject.snapshots[2], inject.snapshots[3]
    assert all(torch.equal(before[k], after[k]) for k in before)  # no update (and no EMA)
    assert any(not torch.equal(inject.snapshots[1][k], before[k]) for k in before)  # others do
    assert cli.model.guard.skipped_steps == [2]


@pytest.mark.slow
def test_persistent_nans_stop_the_run_with_a_checkpoint(oct_dataset, tmp_path):
    cli = _cli(
        oct_dataset,
        tmp_path,
        "--trainer.max_steps=10",
        "--model.init_args.max_consecutive_bad_steps=2",
    )
    cli.trainer.callbacks.append(_InjectNaN(steps=range(1, 10)))
    with pytest.raises(
        NonFiniteError, match=r"stopped at step 2: 2 consecutive.*encoder\.blocks\.1\.mlp"
    ):
        cli.trainer.fit(cli.model, cli.datamodule)
    saved = torch.load(tmp_path / "nonfinite-step0000002.ckpt", weights_only=False)
    assert saved["global_step"] == 2


class _OnceOnly(pl.Callback):
    """At step `step`, make one module misbehave exactly once — in the forward output, or
    only in the gradient flowing back through it — like a kernel that fails now and then.
    A replay of the batch cannot reproduce it; the guard must name it from the step itself."""

    def __init__(self, step: int, where: str) -> None:
        self.step, self.where = step, where

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if trainer.global_step != self.step:
            return
        attn = module.method.encoder.blocks[0].attn
        handle = None

        def once(mod, inputs, output):
            handle.remove()  # never again: the replay sees a healthy module
            if self.where == "forward":
                return output * float("nan")
            output.register_hook(lambda grad: grad * float("nan"))
            return output

        handle = attn.register_forward_hook(once, prepend=True)


@pytest.mark.slow
@pytest.mark.parametrize("where", ["forward", "backward"])
def test_a_fault_that_does_not_repeat_is_named_from_the_failing_step(
    oct_dataset, tmp_path, caplog, where
):
    cli = _cli(oct_dataset, tmp_path, "--trainer.max_steps=3")
    cli.trainer.callbacks.append(_OnceOnly(step=1, where=where))
    with caplog.at_level(logging.WARNING, logger="fmtrain"):
        cli.trainer.fit(cli.model, cli.datamodule)
    assert cli.model.guard.skipped_steps == [1]
    assert "not reproduced" not in caplog.text
    if where == "forward":
        # narrowed to the block from the step itself (the replay finds nothing to add)
        assert "forward: module encoder.blocks.0 (Block)" in caplog.text
        assert "in the failing step itself" in caplog.text and "replayed" not in caplog.text
    else:  # every output was finite; the gradients into the block and below were not
        assert "backward: non-finite gradients in" in caplog.text
        assert "encoder.patch_embed.proj.weight" in caplog.text or "encoder.blocks.0" in caplog.text
