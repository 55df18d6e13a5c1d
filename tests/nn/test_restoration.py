"""VRTLite (video restoration with temporal mutual self-attention): shapes, identity at init,
gradients, input checks, stochastic depth, checkpointing, torch.compile and memory formats."""

from __future__ import annotations

import copy
import os
import shutil

import pytest
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from fmtrain.nn.restoration import (
    VRT_SIZES,
    VRTLite,
    drop_path_scales,
    window_masks,
    window_partition,
    window_reverse,
)

# The "test" size: window (2, 4, 4), two scales, so (T, H, W) must be multiples of (2, 8, 8).


def _model(*, spike_bins: int = 0, drop_path: float = 0.0, **kwargs: object) -> VRTLite:
    """A tiny model whose residual head is *not* zero, so the body's output reaches the loss."""
    torch.manual_seed(0)
    model = VRTLite.from_size("test", spike_bins=spike_bins, drop_path=drop_path, **kwargs)
    nn.init.normal_(model.head[-1].weight, std=0.05)
    return model


def _inputs(b: int = 1, t: int = 2, h: int = 8, w: int = 8, bins: int = 0, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    blur = torch.randn(b, t, 3, h, w, generator=g)
    spikes = torch.rand(b, t, bins, h, w, generator=g) if bins else None
    return blur, spikes


def _grads(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n.removeprefix("_orig_mod."): p.grad.clone() for n, p in model.named_parameters()}


# --- windows ------------------------------------------------------------------------------


def test_window_partition_round_trips_and_orders_tokens_by_frame() -> None:
    x = torch.randn(2, 4, 8, 12, 5)
    win = window_partition(x, (2, 4, 4))
    assert win.shape == (2 * 2 * 2 * 3, 32, 5)
    torch.testing.assert_close(window_reverse(win, (2, 4, 4), (2, 4, 8, 12)), x, rtol=0, atol=0)
    # Token n of the first window is frame n // 16 at (row, col) = divmod(n % 16, 4).
    torch.testing.assert_close(win[0, 16 + 5], x[0, 1, 1, 1])


def test_mutual_mask_pairs_the_two_frames_and_never_masks_a_whole_row() -> None:
    self_mask, mutual = window_masks((2, 8, 8), (2, 4, 4), (0, 0, 0), torch.device("cpu"))
    assert self_mask is None and mutual.shape == (1, 32, 32)
    frame = torch.arange(32) // 16
    assert torch.equal(mutual[0], frame[:, None] != frame[None, :])
    # Shifted in time too: the wrapped window mixes the last and first frames, which belong to
    # different regions; those queries fall back to their own frame instead of an empty row.
    self_mask, mutual = window_masks((4, 8, 8), (2, 4, 4), (1, 2, 2), torch.device("cpu"))
    assert self_mask is not None and self_mask.shape == mutual.shape == (2 * 2 * 2, 32, 32)
    assert bool(mutual.any(-1).all()) and bool((mutual <= self_mask).all())
    assert not bool(self_mask.all())


# --- the model ----------------------------------------------------------------------------


@pytest.mark.parametrize("bins", [0, 3])
@pytest.mark.parametrize("thw", [(2, 8, 8), (4, 8, 16), (6, 16, 8)])
def test_output_shape_equals_input_shape(thw: tuple[int, int, int], bins: int) -> None:
    model = _model(spike_bins=bins).eval()
    blur, spikes = _inputs(2, *thw, bins=bins)
    with torch.no_grad():
        out = model(blur, spikes)
    assert out.shape == blur.shape and out.dtype == blur.dtype
    assert bool(out.isfinite().all())


@pytest.mark.parametrize("bins", [0, 2])
def test_model_is_exactly_the_identity_at_init(bins: int) -> None:
    model = VRTLite.from_size("test", spike_bins=bins, drop_path=0.2).train()
    assert not model.head[-1].weight.any() and not model.head[-1].bias.any()
    blur, spikes = _inputs(t=4, h=16, bins=bins)
    assert torch.equal(model(blur, spikes), blur)


def test_gradient_reaches_every_parameter() -> None:
    model = _model(spike_bins=2).train()
    blur, spikes = _inputs(t=4, h=16, w=16, bins=2)
    model(blur, spikes).square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert not missing


def test_registered_sizes_build_and_small_is_a_few_million_parameters() -> None:
    assert set(VRT_SIZES) >= {"test", "small"}
    small = sum(p.numel() for p in VRTLite.from_size("small").parameters())
    assert 1_000_000 <= small <= 3_000_000
    assert VRTLite.from_size("small").input_multiple == (2, 32, 32)
    model = VRTLite.from_size("test")
    assert model.no_weight_decay() and all("pos_embed" in n for n in model.no_weight_decay())
    with pytest.raises(ValueError, match="unknown VRTLite size 'huge'"):
        VRTLite.from_size("huge")


@pytest.mark.parametrize(
    ("thw", "expected"),
    [
        ((3, 8, 8), "T=3 (nearest valid: 2 or 4)"),
        ((2, 12, 8), "H=12 (nearest valid: 8 or 16)"),
        ((2, 8, 20), "W=20 (nearest valid: 16 or 24)"),
        ((1, 8, 8), "T=1 (nearest valid: 2)"),
    ],
)
def test_bad_shapes_are_refused_with_sizes_and_nearest_valid_ones(
    thw: tuple[int, int, int], expected: str
) -> None:
    model = _model()
    # Callable on its own, e.g. when a recipe is read, before any data exists.
    with pytest.raises(ValueError, match=r"divisible by 2 .*8, 8") as info:
        model.check_input_shape(*thw)
    assert expected in str(info.value)
    with pytest.raises(ValueError, match="nearest valid"):
        model(torch.zeros(1, thw[0], 3, thw[1], thw[2]))
    model.check_input_shape(4, 16, 24)  # valid: no error


def test_spike_mismatch_is_refused_saying_which() -> None:
    blur, spikes = _inputs(bins=2)
    with pytest.raises(ValueError, match=r"has a spike branch \(spike_bins=2\) but spikes=None"):
        _model(spike_bins=2)(blur)
    with pytest.raises(ValueError, match="has no spike branch"):
        _model()(blur, spikes)
    with pytest.raises(ValueError, match=r"spikes must be .*got \(1, 2, 3, 8, 8\)"):
        _model(spike_bins=2)(blur, torch.zeros(1, 2, 3, 8, 8))
    with pytest.raises(ValueError, match=r"blur must be \[B, T, 3, H, W\]"):
        _model()(torch.zeros(1, 2, 1, 8, 8))


def test_checkpointing_gives_the_same_outputs_and_gradients() -> None:
    # Train mode with drop path on: the drop masks must match across the recompute too.
    plain = _model(spike_bins=2, drop_path=0.3).train()
    ckpt = copy.deepcopy(plain)
    ckpt.set_grad_checkpointing(True)
    blur, spikes = _inputs(2, 4, 16, 8, bins=2)
    outs = []
    for model in (plain, ckpt):
        torch.manual_seed(7)
        out = model(blur, spikes)
        out.square().mean().backward()
        outs.append(out.detach())
    torch.testing.assert_close(outs[1], outs[0])
    g_plain, g_ckpt = _grads(plain), _grads(ckpt)
    for name, g in g_plain.items():
        torch.testing.assert_close(g_ckpt[name], g, msg=name)


# --- stochastic depth ---------------------------------------------------------------------


def test_drop_path_scales_are_ones_in_eval_and_zero_or_rescaled_in_training() -> None:
    rates = torch.tensor([[0.0, 0.0], [0.5, 0.5]])
    assert torch.equal(
        drop_path_scales(rates, 64, training=False, device=rates.device), torch.ones(2, 2, 64)
    )
    torch.manual_seed(0)
    scales = drop_path_scales(rates, 64, training=True, device=rates.device)
    assert torch.equal(scales[0], torch.ones(2, 64))
    assert set(scales[1].unique().tolist()) == {0.0, 2.0}


def test_eval_is_deterministic_and_equals_drop_path_zero() -> None:
    dropping = _model(drop_path=0.5).eval()
    reference = _model(drop_path=0.0).eval()
    reference.load_state_dict(dropping.state_dict())
    blur, _ = _inputs(2, 4, 8, 8)
    with torch.no_grad():
        torch.manual_seed(1)
        a = dropping(blur)
        torch.manual_seed(2)
        b = dropping(blur)
        c = reference(blur)
    assert torch.equal(a, b) and torch.equal(a, c)


def test_train_mode_drop_path_actually_drops() -> None:
    model = _model(drop_path=0.5).train()
    blur, _ = _inputs(2, 4, 8, 8)
    with torch.no_grad():
        torch.manual_seed(1)
        a = model(blur)
        torch.manual_seed(2)
        b = model(blur)
        torch.manual_seed(1)
        again = model(blur)
        no_drop = model.eval()(blur)
    assert not torch.allclose(a, b)
    assert not torch.allclose(a, no_drop)
    assert torch.equal(a, again)


# --- torch.compile ------------------------------------------------------------------------


def test_compiled_with_checkpointing_matches_eager_forward_and_backward() -> None:
    eager = _model(spike_bins=2, checkpointing=True).train()
    compiled = torch.compile(copy.deepcopy(eager), backend="aot_eager")
    blur, spikes = _inputs(1, 4, 16, 8, bins=2)
    target = torch.randn_like(blur)
    results = []
    for model in (eager, compiled):
        out = model(blur, spikes)
        loss = (out - target).abs().mean()
        loss.backward()
        results.append((out.detach(), loss.detach(), _grads(model)))
    (out_e, loss_e, grads_e), (out_c, loss_c, grads_c) = results
    torch.testing.assert_close(out_c, out_e, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(loss_c, loss_e, rtol=1e-5, atol=1e-6)
    assert grads_c.keys() == grads_e.keys()
    for name, g in grads_e.items():
        torch.testing.assert_close(grads_c[name], g, rtol=1e-4, atol=1e-6, msg=name)


def test_compiled_train_mode_with_drop_path_runs_and_is_deterministic() -> None:
    # One scale of two blocks (plain + shifted) keeps the compile short; the whole model is
    # compiled in the test above.
    model = _model(drop_path=0.4, checkpointing=True, depths=(2,)).train()
    compiled = torch.compile(model, backend="aot_eager")
    blur, _ = _inputs(2, 2, 8, 8)
    outs = []
    for seed in (3, 3, 4):
        model.zero_grad()
        torch.manual_seed(seed)
        out = compiled(blur)
        out.square().mean().backward()
        outs.append(out.detach())
    assert bool(outs[0].isfinite().all())
    torch.testing.assert_close(outs[1], outs[0], rtol=0, atol=0)
    assert not torch.allclose(outs[2], outs[0])


@pytest.mark.slow
@pytest.mark.skipif(
    shutil.which("gcc") is None or not os.environ.get("FMTRAIN_INDUCTOR_TESTS"),
    reason="CPU inductor needs a C++ compiler and takes minutes; set FMTRAIN_INDUCTOR_TESTS=1",
)
def test_inductor_compiled_with_checkpointing_matches_eager() -> None:
    eager = _model(spike_bins=2, checkpointing=True).train()
    compiled = torch.compile(copy.deepcopy(eager))
    blur, spikes = _inputs(1, 4, 16, 8, bins=2)
    outs = []
    for model in (eager, compiled):
        out = model(blur, spikes)
        out.square().mean().backward()
        outs.append((out.detach(), _grads(model)))
    torch.testing.assert_close(outs[1][0], outs[0][0], rtol=1e-4, atol=1e-4)
    for name, g in outs[0][1].items():
        torch.testing.assert_close(outs[1][1][name], g, rtol=1e-3, atol=1e-5, msg=name)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_bf16_compiled_channels_last_train_step() -> None:
    model = _model(spike_bins=2, drop_path=0.1, checkpointing=True).cuda().train()
    for module in model.channels_last_modules():
        module.to(memory_format=torch.channels_last)
    compiled = torch.compile(model)
    blur, spikes = _inputs(2, 4, 32, 32, bins=2)
    blur, spikes = blur.cuda(), spikes.cuda()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = compiled(blur, spikes)
    loss = (out.float() - blur).square().mean()
    loss.backward()
    assert out.shape == blur.shape and bool(loss.isfinite())
    assert all(p.grad is not None and bool(p.grad.isfinite().all()) for p in model.parameters())


# --- memory formats -----------------------------------------------------------------------


class _FiveDWatcher(TorchFunctionMode):
    """Records every attempt to give a 5D tensor a channels_last layout, and every 5D result
    whose strides are channels_last_3d without being plainly contiguous."""

    def __init__(self) -> None:
        super().__init__()
        self.offences: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[override]
        kwargs = kwargs or {}
        fmt = kwargs.get("memory_format")
        first = args[0] if args else None
        if (
            fmt in (torch.channels_last, torch.channels_last_3d)
            and isinstance(first, torch.Tensor)
            and first.ndim == 5
        ):
            self.offences.append(f"{func} asked for {fmt} on 5D {tuple(first.shape)}")
        out = func(*args, **kwargs)
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if (
                isinstance(t, torch.Tensor)
                and t.ndim == 5
                and t.is_contiguous(memory_format=torch.channels_last_3d)
                and not t.is_contiguous()
            ):
                self.offences.append(f"{func} returned channels_last_3d {tuple(t.shape)}")
        return out


def test_channels_last_stays_on_4d_convs_and_no_5d_tensor_is_converted() -> None:
    reference = _model(spike_bins=2).train()
    model = copy.deepcopy(reference)
    for module in model.channels_last_modules():
        module.to(memory_format=torch.channels_last)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(
        m.weight.is_contiguous(memory_format=torch.channels_last) for m in convs
    )  # every conv is listed in channels_last_modules

    non_contiguous_5d: list[str] = []

    def hook(module: nn.Module, _inputs: object, output: object) -> None:
        if isinstance(output, torch.Tensor) and output.ndim == 5 and not output.is_contiguous():
            non_contiguous_5d.append(type(module).__name__)

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    blur, spikes = _inputs(1, 2, 16, 8, bins=2)
    watcher = _FiveDWatcher()
    with watcher:
        out = model(blur, spikes)
        out.square().mean().backward()
    for h in handles:
        h.remove()
    assert not watcher.offences
    assert not non_contiguous_5d
    assert out.is_contiguous()
    torch.testing.assert_close(out, reference(blur, spikes), rtol=1e-5, atol=1e-5)
