"""MAE's contract: the encoder sees visible tokens only, the loss reads hidden patches only,
targets are per-patch normalised voxels, on 1D/2D/3D grids; and a real recipe run."""

import csv
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from fmtrain.cli import run_cli
from fmtrain.core import TokenGrid
from fmtrain.losses.regression import masked_patch_mse, patchify
from fmtrain.masks import RandomPatch
from fmtrain.methods import MAE, DecoderConfig, MAEModule
from fmtrain.nn import MAEDecoder, VisionTransformer, ViTEncoder

from ..conftest import REPO

GRIDS = {
    "1d-1ch": ((64,), (8,), 1),
    "1d-3ch": ((64,), (8,), 3),
    "2d": ((32, 32), (8, 8), 1),
    "3d": ((8, 16, 16), (2, 4, 4), 1),
}


def _mae(input_size, patch_size, in_chans=1, normalize_targets=True, seed=0):
    torch.manual_seed(seed)
    grid = TokenGrid.from_sizes(input_size, patch_size)
    enc = VisionTransformer.from_size("vit_test", grid=grid, in_chans=in_chans)
    dec = MAEDecoder(
        grid=grid, encoder_dim=enc.embed_dim, in_chans=in_chans, embed_dim=32, depth=1, num_heads=2
    )
    return MAE(enc, dec, patch_size, normalize_targets=normalize_targets), grid


def _masks(grid, batch_size, seed=0):
    (pair,) = RandomPatch(ratio=0.75).sample(grid.shape, batch_size, np.random.default_rng(seed))
    return pair.context, pair.target


def _patch_slices(grid, token):
    """The voxel slices (spatial axes) of flattened token `token`, in row-major grid order."""
    pos = np.unravel_index(int(token), grid.shape)
    return tuple(
        slice(int(i) * p, (int(i) + 1) * p) for i, p in zip(pos, grid.patch_size, strict=True)
    )


def _perturbed(x, grid, tokens_per_sample, scale=10.0, seed=1):
    """A copy of x with fresh noise in the patches of the given tokens (per sample)."""
    g = torch.Generator().manual_seed(seed)
    y = x.clone()
    for b, tokens in enumerate(tokens_per_sample):
        for t in tokens:
            region = (b, slice(None), *_patch_slices(grid, t))
            y[region] = scale * torch.randn(y[region].shape, generator=g)
    return y


def _patchify_by_hand(x, grid):
    """[B, C, *spatial] -> [B, N, prod(patch) * C] with explicit loops: channels last."""
    rows = []
    for b in range(x.shape[0]):
        tokens = []
        for t in range(grid.num_tokens):
            patch = x[(b, slice(None), *_patch_slices(grid, t))]  # [C, *patch]
            tokens.append(patch.permute(*range(1, patch.ndim), 0).reshape(-1))
        rows.append(torch.stack(tokens))
    return torch.stack(rows)


# --- the encoder never sees masked tokens ---------------------------------------------------
@pytest.mark.parametrize("name", ["1d-3ch", "2d", "3d"])
def test_encoder_blocks_receive_only_the_visible_tokens(name):
    input_size, patch_size, c = GRIDS[name]
    model, grid = _mae(input_size, patch_size, c)
    x = torch.randn(2, c, *input_size)
    ctx, tgt = _masks(grid, 2)
    seen = []
    hook = model.encoder.blocks[0].register_forward_pre_hook(
        lambda _m, args: seen.append(tuple(args[0].shape))
    )
    try:
        out = model(x, [ctx], [tgt])
    finally:
        hook.remove()
    assert seen == [(2, ctx.shape[1], model.encoder.embed_dim)]
    assert ctx.shape[1] < grid.num_tokens
    assert out.features.shape == (2, ctx.shape[1], model.encoder.embed_dim)


@pytest.mark.parametrize("name", ["1d-3ch", "2d", "3d"])
def test_encoder_output_ignores_hidden_voxels_and_follows_visible_ones(name):
    input_size, patch_size, c = GRIDS[name]
    model, grid = _mae(input_size, patch_size, c)
    model.eval()
    x = torch.randn(2, c, *input_size)
    ctx, tgt = _masks(grid, 2)
    with torch.no_grad():
        out = model(x, [ctx], [tgt])
        hidden_changed = model(_perturbed(x, grid, tgt.tolist()), [ctx], [tgt])
        visible_changed = model(_perturbed(x, grid, [[ctx[0, 0]], []]), [ctx], [tgt])
    z = out.features
    assert z.shape == (2, ctx.shape[1], model.encoder.embed_dim)
    # hidden voxels reach neither the encoder nor the decoder: only the targets read them
    assert torch.equal(hidden_changed.features, z)
    assert torch.equal(hidden_changed.predictions[0], out.predictions[0])
    assert hidden_changed.loss != out.loss
    # one visible patch of sample 0 changes its encoding, and nothing of sample 1
    assert not torch.allclose(visible_changed.features[0], z[0])
    assert torch.equal(visible_changed.features[1], z[1])


# --- the loss ignores visible patches -------------------------------------------------------
def test_masked_patch_mse_ignores_the_visible_patches():
    grid = TokenGrid.from_sizes((8, 16, 16), (2, 4, 4))
    torch.manual_seed(0)
    x = torch.randn(2, 1, *grid.input_size)
    ctx, tgt = _masks(grid, 2)
    prediction = torch.randn(2, tgt.shape[1], math.prod(grid.patch_size))
    loss = masked_patch_mse(prediction, patchify(x, grid.patch_size), tgt)
    visible_changed = _perturbed(x, grid, ctx.tolist())
    assert not torch.equal(visible_changed, x)
    assert torch.equal(
        masked_patch_mse(prediction, patchify(visible_changed, grid.patch_size), tgt), loss
    )
    hidden_changed = _perturbed(x, grid, [[tgt[0, 0]], []])
    assert masked_patch_mse(prediction, patchify(hidden_changed, grid.patch_size), tgt) != loss
    # and it is the plain mean squared error against the hidden patches, in target order
    target = torch.stack([patchify(x, grid.patch_size)[b, tgt[b]] for b in range(2)])
    torch.testing.assert_close(loss, (prediction - target).square().mean())


@pytest.mark.parametrize("normalize_targets", [True, False])
def test_model_loss_has_no_gradient_at_visible_target_patches(monkeypatch, normalize_targets):
    import fmtrain.methods.mae as mae_module

    recorded = []

    def recording_patchify(x, patch_size):
        patches = patchify(x, patch_size).detach().requires_grad_(True)
        recorded.append(patches)
        return patches

    monkeypatch.setattr(mae_module, "patchify", recording_patchify)
    model, grid = _mae((8, 16, 16), (2, 4, 4), normalize_targets=normalize_targets)
    x = torch.randn(2, 1, *grid.input_size)
    ctx, tgt = _masks(grid, 2)
    model(x, [ctx], [tgt]).loss.backward()
    (patches,) = recorded
    grad_norm = patches.grad.abs().sum(-1)  # [B, N]
    for b in range(2):
        assert torch.all(grad_norm[b, ctx[b]] == 0), "the loss read a visible patch"
        assert torch.all(grad_norm[b, tgt[b]] > 0), "the loss missed a hidden patch"


# --- per-patch normalised targets -----------------------------------------------------------
@pytest.mark.parametrize("name", ["1d-3ch", "2d", "3d"])
def test_loss_matches_a_hand_computation(name):
    input_size, patch_size, c = GRIDS[name]
    x = 3.0 + 2.0 * torch.randn(2, c, *input_size)  # a non-zero mean and scale per patch
    for normalize in (True, False):
        model, grid = _mae(input_size, patch_size, c, normalize_targets=normalize)
        ctx, tgt = _masks(grid, 2)
        out = model(x, [ctx], [tgt])
        (pred,) = out.predictions
        patches = _patchify_by_hand(x, grid)
        if normalize:
            mean = patches.mean(-1, keepdim=True)
            var = patches.var(-1, keepdim=True, unbiased=False)
            patches = (patches - mean) / torch.sqrt(var + 1e-6)
        errors = [
            (pred[b, j] - patches[b, tgt[b, j]]).square().mean()
            for b in range(2)
            for j in range(tgt.shape[1])
        ]
        expected = torch.stack(errors).mean()
        torch.testing.assert_close(out.loss, expected.detach(), rtol=1e-5, atol=1e-6)
        assert out.loss_per_mask[0] is not None and len(out.loss_per_mask) == 1


def test_patchify_matches_the_hand_patchify_and_the_token_order():
    grid = TokenGrid.from_sizes((4, 8, 12), (2, 4, 3))
    x = torch.randn(2, 3, *grid.input_size)
    torch.testing.assert_close(
        patchify(x, grid.patch_size), _patchify_by_hand(x, grid), rtol=0, atol=0
    )


# --- shapes on 1D, 2D and 3D grids ------------------------------------------------------------
@pytest.mark.parametrize("name", list(GRIDS))
def test_shapes_loss_and_gradients_on_every_grid(name):
    input_size, patch_size, c = GRIDS[name]
    model, grid = _mae(input_size, patch_size, c)
    b = 3
    x = torch.randn(b, c, *input_size)
    (pair,) = RandomPatch(ratio=0.75).sample(grid.shape, b, np.random.default_rng(0))
    out = model(x, [pair.context], [pair.target])
    (pred,) = out.predictions
    nt = round(0.75 * grid.num_tokens)
    assert pair.target.shape == (b, nt)
    assert pred.shape == (b, nt, math.prod(patch_size) * c)
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    out.loss.backward()
    for part in (model.encoder, model.decoder):
        for pname, p in part.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all(), pname
        assert sum(p.grad.abs().sum() for p in part.parameters()) > 0


# --- the Lightning shell ----------------------------------------------------------------------
def _module():
    return MAEModule(
        input_size=(8, 32, 32),
        patch_size=(2, 8, 8),
        encoder=ViTEncoder(size="vit_test"),
        decoder=DecoderConfig(embed_dim=32, depth=1, num_heads=2),
    )


def test_module_evaluation_encoder_and_random_encoders():
    torch.manual_seed(123)
    module = _module()
    assert module.evaluation_encoder() is module.method.encoder
    assert module.stage_widths() == {"decoder": 2 * 8 * 8}
    trained = module.evaluation_encoder().state_dict()
    rng_before = torch.get_rng_state()
    r0, r0_again, r1 = (module.random_encoder(s).state_dict() for s in (0, 0, 1))
    assert torch.equal(torch.get_rng_state(), rng_before)  # the global stream is untouched
    for other in (r0, r1):
        assert other.keys() == trained.keys()
        assert all(other[k].shape == v.shape for k, v in trained.items())
    weights = [k for k, v in trained.items() if v.ndim >= 2 and "pos_embed" not in k]
    assert weights
    for k in weights:
        assert torch.equal(r0[k], r0_again[k]), k
        assert not torch.equal(r0[k], r1[k]), k
        assert not torch.equal(r0[k], trained[k]), k


def test_module_forward_batch_asks_for_masks():
    batch = SimpleNamespace(inputs=torch.zeros(1, 1, 8, 32, 32), contexts=[], targets=[])
    with pytest.raises(ValueError, match="MAE needs masks"):
        _module().forward_batch(batch)


# --- a real recipe run ------------------------------------------------------------------------
def _fit_mae_demo(oct_dataset, out, *extra):
    args = [
        "fit",
        "--config",
        str(REPO / "recipes" / "oct_mae_demo.yaml"),
        f"--data.init_args.source={oct_dataset}/manifest.tsv",
        "--data.init_args.input_size=[8,32,32]",
        "--data.init_args.spacing=[0.75,0.06,0.19]",
        "--model.init_args.patch_size=[2,8,8]",
        "--model.init_args.encoder.size=vit_test",
        "--model.init_args.decoder.embed_dim=32",
        "--model.init_args.decoder.depth=1",
        "--model.init_args.decoder.num_heads=2",
        "--trainer.max_steps=4",
        "--trainer.val_check_interval=2",
        "--trainer.limit_val_batches=1",
        "--trainer.log_every_n_steps=1",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        "--data.init_args.batch_size=2",
        "--data.init_args.val_batch_size=2",
        "--data.init_args.num_workers=0",
        "--data.init_args.split_fractions={train: 0.75, val: 0.25}",
        f"--trainer.default_root_dir={out}",
        "--trainer.logger=lightning.pytorch.loggers.CSVLogger",
        f"--trainer.logger.init_args.save_dir={out}",
        "--trainer.logger.init_args.name=csv",
        f"--checkpoint.dirpath={out}/ckpt",
        *extra,
    ]
    return run_cli(args)


def _logged_losses(out):
    (path,) = out.glob("csv/**/metrics.csv")
    with path.open() as f:
        return {
            int(r["step"]): float(r["train/loss"]) for r in csv.DictReader(f) if r["train/loss"]
        }


@pytest.mark.slow
def test_mae_demo_recipe_trains_checkpoints_and_resumes(oct_dataset, tmp_path):
    cli = _fit_mae_demo(oct_dataset, tmp_path / "run")
    assert isinstance(cli.model, MAEModule)
    assert cli.trainer.global_step == 4
    losses = _logged_losses(tmp_path / "run")
    assert sorted(losses) == [0, 1, 2, 3]
    assert all(math.isfinite(v) for v in losses.values()), losses
    assert math.isfinite(float(cli.trainer.callback_metrics["val/loss"]))
    last = tmp_path / "run" / "ckpt" / "last.ckpt"
    assert last.exists(), sorted(p.name for p in (tmp_path / "run" / "ckpt").iterdir())
    state = torch.load(last, map_location="cpu", weights_only=False)
    assert state["global_step"] == 4
    assert state["fmtrain_encoder"]["prefix"] == "method.encoder."

    resumed = _fit_mae_demo(
        oct_dataset, tmp_path / "resumed", f"--ckpt_path={last}", "--trainer.max_steps=6"
    )
    assert resumed.trainer.global_step == 6
    # two more optimizer steps, logged and finite. (Their logger step labels are 5 and 6, not
    # 4 and 5: Lightning 2.6 saved this last.ckpt in on_train_end, after its logger counter
    # moved on, and counts one more on restart; global_step, which the schedules use, is exact.)
    resumed_losses = _logged_losses(tmp_path / "resumed")
    assert len(resumed_losses) == 2 and min(resumed_losses) >= 4, resumed_losses
    assert all(math.isfinite(v) for v in resumed_losses.values()), resumed_losses
    state = torch.load(tmp_path / "resumed" / "ckpt" / "last.ckpt", weights_only=False)
    assert state["global_step"] == 6
