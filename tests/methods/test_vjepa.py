"""V-JEPA's moving parts: frozen EMA target, loss, optimizer groups, schedules."""

import math

import pytest
import torch

from fmtrain.core import TokenGrid
from fmtrain.eval.rank import effective_rank
from fmtrain.methods import VJEPA
from fmtrain.methods.optim import decay_param_groups
from fmtrain.methods.schedules import cosine, linear, warmup_cosine
from fmtrain.nn import JEPAPredictor, VisionTransformer


def _tiny_vjepa(loss="l1"):
    grid = TokenGrid.from_sizes((4, 8, 8), (2, 4, 4))  # 2x2x2 = 8 tokens
    enc = VisionTransformer.from_size("vit_test", grid=grid)
    pred = JEPAPredictor(grid=grid, encoder_dim=64, embed_dim=32, depth=1, num_heads=2)
    return VJEPA(enc, pred, loss=loss)


def _masks():
    ctx = torch.tensor([[0, 1, 2, 3], [4, 5, 6, 7]])
    tgt = torch.tensor([[4, 5], [0, 3]])
    return [ctx], [tgt]


def test_target_encoder_gets_no_gradients_and_moves_only_by_ema():
    torch.manual_seed(0)
    m = _tiny_vjepa()
    x = torch.randn(2, 1, 4, 8, 8)
    before = [p.clone() for p in m.target_encoder.parameters()]
    out = m(x, *_masks())
    out.loss.backward()
    assert all(p.grad is None and not p.requires_grad for p in m.target_encoder.parameters())
    assert all(p.grad is not None for p in m.encoder.parameters())
    # an optimizer step on the online encoder must not touch the target
    torch.optim.SGD(m.encoder.parameters(), lr=0.1).step()
    for b, p in zip(before, m.target_encoder.parameters(), strict=True):
        assert torch.equal(b, p)
    online = [p.detach().clone() for p in m.encoder.parameters()]
    m.update_target(0.9)
    for b, o, p in zip(before, online, m.target_encoder.parameters(), strict=True):
        torch.testing.assert_close(p, 0.9 * b + 0.1 * o)
    assert any(
        not torch.equal(b, p) for b, p in zip(before, m.target_encoder.parameters(), strict=True)
    )


def test_loss_is_l1_to_layer_normed_target_features_at_target_positions():
    torch.manual_seed(0)
    m = _tiny_vjepa().eval()
    x = torch.randn(2, 1, 4, 8, 8)
    ctx, tgt = _masks()
    out = m(x, ctx, tgt)
    with torch.no_grad():
        h = torch.nn.functional.layer_norm(m.target_encoder(x), (64,))
        h = torch.stack([h[0, tgt[0][0]], h[1, tgt[0][1]]])
        pred = m.predictor(m.encoder(x, keep=ctx[0]), ctx[0], tgt[0])
    torch.testing.assert_close(out.loss, (pred - h).abs().mean())
    m.loss = "l2"
    torch.testing.assert_close(m(x, ctx, tgt).loss, (pred - h).square().mean())


def test_position_centred_targets_drop_what_every_sample_shares_at_a_position():
    torch.manual_seed(0)
    m = _tiny_vjepa().eval()
    m.target_norm = "position_centred"
    x = torch.randn(3, 1, 4, 8, 8)
    ctx = [torch.tensor([[0, 1, 2, 3]] * 3)]
    tgt = [torch.tensor([[4, 5]] * 3)]
    out = m(x, ctx, tgt)
    with torch.no_grad():
        h = torch.nn.functional.layer_norm(m.target_encoder(x), (64,))
        by_hand = torch.nn.functional.layer_norm(h - h.mean(0, keepdim=True), (64,))
        pred = m.predictor(m.encoder(x, keep=ctx[0]), ctx[0], tgt[0])
    torch.testing.assert_close(out.regression_targets[0], by_hand[:, 4:6])
    torch.testing.assert_close(out.loss, (pred - by_hand[:, 4:6]).abs().mean())
    # a token every sample shares exactly has no remainder to regress: after centring it is
    # zero (layer norm of zeros), not the shared token
    shared = h.clone()
    shared[:, 4] = h[0, 4]
    from fmtrain.losses.regression import position_centred

    assert position_centred(shared)[:, 4].abs().max() < 1e-4
    with pytest.raises(ValueError, match="B >= 2"):
        position_centred(h[:1])
    with pytest.raises(ValueError, match="target_norm"):
        VJEPA(m.encoder, m.predictor, target_norm="batch")


def test_target_encoder_stays_in_eval_mode():
    m = _tiny_vjepa().train()
    assert m.encoder.training and not m.target_encoder.training


def test_biases_norms_and_mask_tokens_get_no_weight_decay():
    m = _tiny_vjepa()
    decay, no_decay = decay_param_groups(m.encoder, m.predictor)
    decayed = {id(p) for p in decay["params"]}
    for name, p in [*m.encoder.named_parameters(), *m.predictor.named_parameters()]:
        expect_decay = p.ndim >= 2 and name != "mask_tokens"
        assert (id(p) in decayed) == expect_decay, name
    assert no_decay["weight_decay"] == 0.0


def test_schedules_hit_their_endpoints():
    kw = {"warmup_steps": 10, "total_steps": 110, "start": 0.1, "peak": 1.0, "final": 0.01}
    assert warmup_cosine(0, **kw) == pytest.approx(0.1)
    assert warmup_cosine(10, **kw) == pytest.approx(1.0)
    assert warmup_cosine(60, **kw) == pytest.approx(0.505)
    assert warmup_cosine(110, **kw) == pytest.approx(0.01)
    assert cosine(0, total_steps=100, start=0.04, end=0.4) == pytest.approx(0.04)
    assert cosine(100, total_steps=100, start=0.04, end=0.4) == pytest.approx(0.4)
    assert linear(50, total_steps=100, start=0.998, end=1.0) == pytest.approx(0.999)


def test_effective_rank_of_known_matrices():
    torch.manual_seed(0)
    rank_one = torch.randn(256, 1) @ torch.randn(1, 32) + torch.randn(1, 32)  # any offset
    assert effective_rank(rank_one) == pytest.approx(1.0, abs=1e-3)
    centred = torch.randn(256, 32)
    centred -= centred.mean(0)
    iso = torch.linalg.qr(centred)[0] * math.sqrt(256)  # centred, equal singular values
    assert effective_rank(iso) == pytest.approx(32.0, rel=1e-3)
    assert 1.0 < effective_rank(torch.randn(256, 32)) < 32.0


def test_effective_rank_ignores_a_shared_mean_direction():
    torch.manual_seed(0)
    spread = torch.randn(128, 16)
    shifted = spread + 50.0 * torch.randn(1, 16)  # a large common offset, same spread
    assert effective_rank(shifted) == pytest.approx(effective_rank(spread), rel=1e-6)
    assert effective_rank(shifted, center=False) < 2.0  # the offset swamps the uncentred value
