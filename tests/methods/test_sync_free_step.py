"""A training step that never waits for the device: static shapes (so a compiled step never
recompiles), a fused AdamW that skips a non-finite step on the device, an EMA gated there,
and, on a GPU, no host sync in the step at all (`torch.cuda.set_sync_debug_mode("error")`).
"""

from __future__ import annotations

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
import torch._dynamo
from torch.utils.data import DataLoader

from fmtrain.datamodules.batch import MaskCollator
from fmtrain.masks import MultiBlock, RandomPatch
from fmtrain.methods import MAEModule, VJEPAModule
from fmtrain.methods.configs import DecoderConfig, PredictorConfig
from fmtrain.methods.numerics import NumericsGuard, StepVerdict
from fmtrain.methods.optim import adamw, decay_param_groups
from fmtrain.nn.encoder import ViTEncoder

INPUT, PATCH = (8, 32, 32), (2, 8, 8)  # the tiny V-JEPA test recipe: 4x4x4 tokens
# the tiny recipe's mask families
TINY_FAMILIES = [
    {"num_blocks": 4, "spatial_scale": [0.15, 0.15]},
    {"num_blocks": 1, "spatial_scale": [0.5, 0.5]},
]


def _module(kind: str, **kwargs):
    torch.manual_seed(0)
    common = {"input_size": INPUT, "patch_size": PATCH, "encoder": ViTEncoder(size="vit_test")}
    if kind == "vjepa":
        predictor = PredictorConfig(embed_dim=32, depth=1, num_heads=2)
        module = VJEPAModule(**common, num_mask_families=2, predictor=predictor, **kwargs)
        return module, MultiBlock(families=TINY_FAMILIES)
    decoder = DecoderConfig(embed_dim=32, depth=1, num_heads=2)
    return MAEModule(**common, decoder=decoder, **kwargs), RandomPatch(ratio=0.75)


def _loader(module, sampler, steps: int, batch_size: int = 3) -> DataLoader:
    """Random volumes, masks drawn by the recipe's sampler through the real collator."""
    collate = MaskCollator(sampler, module.grid.shape)
    rng = np.random.default_rng(0)
    volumes = [torch.randn(1, *INPUT) for _ in range(steps * batch_size)]
    return DataLoader(
        list(range(len(volumes))),
        batch_size=batch_size,
        collate_fn=lambda ids: collate([volumes[i] for i in ids], ids, rng),
    )


def _fit(module, sampler, steps: int, callbacks=(), **trainer_args) -> pl.Trainer:
    trainer = pl.Trainer(
        max_steps=steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=list(callbacks),
        **({"accelerator": "cpu", "devices": 1} | trainer_args),
    )
    trainer.fit(module, _loader(module, sampler, steps))
    return trainer


class _Shapes(pl.Callback):
    """Per step, the shape of every tensor handed to each part (encoder, predictor or
    decoder, target encoder)."""

    def __init__(self) -> None:
        self.steps: list[list] = []
        self.handles = []

    def on_train_start(self, trainer, module) -> None:
        for name, part in module.method.named_children():
            self.handles.append(part.register_forward_pre_hook(self._hook(name), with_kwargs=True))

    def _hook(self, name):
        def hook(part, args, kwargs):
            values = [*args, *kwargs.values()]
            shapes = [tuple(v.shape) for v in values if isinstance(v, torch.Tensor)]
            self.steps[-1].append((name, shapes))

        return hook

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        self.steps.append([])

    def on_train_end(self, trainer, module) -> None:
        for handle in self.handles:
            handle.remove()


@pytest.mark.parametrize("kind", ["vjepa", "mae"])
def test_every_tensor_given_to_the_parts_keeps_its_shape_over_steps(kind):
    module, sampler = _module(kind)
    shapes = _Shapes()
    _fit(module, sampler, steps=5, callbacks=[shapes])
    assert len(shapes.steps) == 5 and all(shapes.steps)
    assert all(step == shapes.steps[0] for step in shapes.steps), shapes.steps


def test_the_compiled_step_does_not_recompile_across_steps():
    module, sampler = _module("vjepa")
    collate = MaskCollator(sampler, module.grid.shape)
    rng = np.random.default_rng(0)
    torch._dynamo.reset()
    # Recompiles are decided by dynamo's shape guards, the same for every backend; "eager"
    # skips tracing the backward that "aot_eager" adds (~15 s on 2 cores, nothing to learn).
    step = torch.compile(module.method, dynamic=False, backend="eager")
    with torch._dynamo.config.patch(error_on_recompile=True):
        for _ in range(5):
            batch = collate([torch.randn(1, *INPUT) for _ in range(3)], [0, 1, 2], rng)
            step(batch.inputs, batch.contexts, batch.targets).loss.backward()
        # the check can fail: one context token fewer is a new shape, hence a recompile
        shorter = [batch.contexts[0][:, 1:], *batch.contexts[1:]]
        with pytest.raises(torch._dynamo.exc.RecompileError):
            step(batch.inputs, shorter, batch.targets)
    torch._dynamo.reset()


def test_adamw_is_fused_where_the_device_has_it_and_foreach_otherwise():
    module, _ = _module("vjepa")
    optimizer = module.configure_optimizers()
    assert optimizer.defaults["fused"] and optimizer._step_supports_amp_scaling  # on this CPU
    groups = decay_param_groups(module.method)
    kwargs = {"lr": 1e-3, "betas": (0.9, 0.999), "weight_decay": 0.04}
    scaled = adamw(groups, device=torch.device("cpu"), loss_scaling=True, **kwargs)
    assert scaled.defaults["foreach"] and not scaled.defaults["fused"]
    other = adamw(decay_param_groups(module.method), device=torch.device("mps"), **kwargs)
    assert other.defaults["foreach"] and not other.defaults["fused"]


def test_a_non_finite_step_changes_nothing_decided_on_the_device():
    module, sampler = _module("vjepa")
    optimizer = module.configure_optimizers()
    params = [p for g in optimizer.param_groups for p in g["params"]]
    batch = MaskCollator(sampler, module.grid.shape)(
        [torch.randn(1, *INPUT) for _ in range(2)], [0, 1], np.random.default_rng(0)
    )
    guard = NumericsGuard()

    def step(poison: bool) -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        loss = module.forward_batch(batch).loss
        loss.backward()
        if poison:
            params[0].grad[0] = float("nan")
        finite, _, _ = guard.verdict(loss, params)
        optimizer.found_inf = (~finite).float()
        optimizer.step()
        del optimizer.found_inf
        module.after_optimizer_step({"ema_momentum": 0.9}, finite)
        return finite

    def state():
        tensors = [t for s in optimizer.state.values() for t in s.values()]
        return [t.clone() for t in [*module.method.state_dict().values(), *tensors]]

    assert bool(step(poison=False))  # a good step first: moments and EMA exist and move
    before = state()
    assert not bool(step(poison=True))
    after = state()  # weights, EMA target, both moments and the step count: all unchanged
    assert all(torch.equal(a, b) for a, b in zip(after, before, strict=True))
    assert bool(step(poison=False))
    assert any(not torch.equal(a, b) for a, b in zip(state(), before, strict=True))


def test_verdicts_are_read_in_step_order_and_counted_at_their_own_step():
    guard = NumericsGuard(max_consecutive_bad_steps=2)
    bad, good = torch.tensor(False), torch.tensor(True)
    for step, finite in enumerate([good, bad, bad, good, bad]):
        guard.submit(StepVerdict(step, finite))
    seen = [(v.step, guard.consecutive_bad, guard.exhausted) for v in guard.settled()]
    assert seen == [(1, 1, False), (2, 2, True), (4, 1, False)]
    assert guard.skipped_steps == [1, 2, 4] and not list(guard.settled())


class _SyncFree(pl.Callback):
    """Raise on any host sync between the start and the end of each batch after the first
    (the first allocates optimizer state and warms kernels up)."""

    def __init__(self) -> None:
        self.checked = 0

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        if trainer.global_step >= 1:
            torch.cuda.set_sync_debug_mode("error")

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        if torch.cuda.get_sync_debug_mode():
            self.checked += 1
        torch.cuda.set_sync_debug_mode(0)

    def on_exception(self, trainer, module, exception) -> None:
        torch.cuda.set_sync_debug_mode(0)


@pytest.mark.gpu
@pytest.mark.parametrize("kind", ["vjepa", "mae"])
def test_training_steps_on_a_gpu_never_wait_for_it(kind):
    module, sampler = _module(kind)
    watch = _SyncFree()
    trainer = _fit(
        module,
        sampler,
        steps=6,
        callbacks=[watch],
        accelerator="gpu",
        precision="bf16-mixed",
        gradient_clip_val=1.0,  # clipping with a fused AdamW under bf16, as the recipes do
        log_every_n_steps=50,  # the steps in between write nothing
    )
    assert trainer.global_step == 6 and watch.checked == 5
    assert module.guard.skipped_steps == [] and not list(module.guard.settled())


class _NaNAt(pl.Callback):
    def __init__(self, step: int) -> None:
        self.step, self.handle, self.snapshots = step, None, {}

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        state = module.method.state_dict()
        self.snapshots[trainer.global_step] = {k: v.detach().clone() for k, v in state.items()}
        if self.handle is not None:
            self.handle.remove()
            self.handle = None
        if trainer.global_step == self.step:
            mlp = module.method.encoder.blocks[1].mlp
            self.handle = mlp.register_forward_hook(lambda m, i, o: o * float("nan"))


@pytest.mark.gpu
def test_a_gpu_step_gone_non_finite_is_skipped_on_the_device_and_reported_later(caplog):
    module, sampler = _module("vjepa")
    inject = _NaNAt(step=2)
    _fit(module, sampler, steps=5, callbacks=[inject], accelerator="gpu")
    before, after = inject.snapshots[2], inject.snapshots[3]
    assert all(torch.equal(before[k], after[k]) for k in before)  # no update, no EMA
    assert module.guard.skipped_steps == [2]
    assert "step 2 skipped" in caplog.text and "encoder.blocks.1.mlp" in caplog.text
