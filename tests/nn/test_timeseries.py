"""Hugging Face time-series encoders behind fmtrain's Encoder interface, offline."""

from __future__ import annotations

import copy
import importlib.util
import logging

import pytest
import torch

from fmtrain.core.grid import TokenGrid
from fmtrain.nn.encoder import Encoder, spec_from_config, spec_to_config
from fmtrain.nn.timeseries import PatchTSMixerEncoder, PatchTSTEncoder, TTMEncoder

transformers = pytest.importorskip("transformers")

C, T, L = 3, 64, 16
P = T // L
GRID = TokenGrid.from_sizes((C, T), (1, L))
SPECS = {
    "mixer": PatchTSMixerEncoder(d_model=16, num_layers=2),
    "patchtst": PatchTSTEncoder(d_model=16, num_layers=2, num_heads=2),
}


@pytest.fixture(params=sorted(SPECS))
def encoder(request) -> torch.nn.Module:
    torch.manual_seed(0)
    return SPECS[request.param].build(GRID, 1).eval()


def save_patchtst(path, *, channels=C, context=T, patch=L, stride=None, **kwargs) -> str:
    config = transformers.PatchTSTConfig(
        num_input_channels=channels,
        context_length=context,
        patch_length=patch,
        patch_stride=stride or patch,
        d_model=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        ffn_dim=32,
        **kwargs,
    )
    transformers.PatchTSTModel(config).save_pretrained(path)
    return str(path)


def test_shapes_and_protocol(encoder):
    assert isinstance(encoder, Encoder)
    assert encoder.embed_dim == 16 and encoder.no_weight_decay() == set()
    x = torch.randn(2, 1, C, T)
    assert encoder(x).shape == (2, C * P, 16)
    assert torch.equal(encoder.forward_features(x), encoder(x))


@pytest.mark.parametrize(("channel", "patch"), [(0, 0), (1, 2), (2, 3)])
def test_tokens_are_channel_major(encoder, channel, patch):
    x = torch.randn(2, 1, C, T)
    y = x.clone()
    y[:, 0, channel, patch * L : (patch + 1) * L] += 3.0
    with torch.no_grad():
        change = (encoder(y) - encoder(x)).norm(dim=-1)  # [B, C * P]
    assert (change.argmax(dim=1) == channel * P + patch).all()
    # channel-independent models: the other channels' tokens do not move at all
    others = [i for i in range(C * P) if i // P != channel]
    assert change[:, others].max() < 1e-5


def test_keep_gathers_and_hidden_samples_never_reach_the_model(encoder):
    x = torch.randn(2, 1, C, T)
    keep = torch.tensor([[0, 3, 5, 10], [1, 2, 7, 11]])
    with torch.no_grad():
        out = encoder(x, keep)
        assert out.shape == (2, 4, 16)
        # patch 4 = (channel 1, patch 0) is hidden in both samples: even NaN cannot leak
        y = x.clone()
        y[:, 0, 1, 0:L] = float("nan")
        assert torch.equal(encoder(y, keep), out)
        # the same as encoding the zero-filled input and gathering
        zeroed = x.clone().reshape(2, C * P, L)
        hidden = torch.ones(2, C * P, dtype=torch.bool).scatter_(1, keep, False)
        zeroed[hidden] = 0
        full = encoder(zeroed.reshape(2, 1, C, T))
        torch.testing.assert_close(out, torch.gather(full, 1, keep[..., None].expand(-1, -1, 16)))


def test_intermediates_per_layer(encoder):
    x = torch.randn(2, 1, C, T)
    keep = torch.tensor([[0, 5], [3, 11]])
    with torch.no_grad():
        first, last = encoder.forward_intermediates(x, [0, -1])
        assert first.shape == last.shape == (2, C * P, 16)
        torch.testing.assert_close(last, encoder(x))  # the last layer's output is the output
        assert not torch.allclose(first, last)
        (kept,) = encoder.forward_intermediates(x, [1], keep=keep)
        torch.testing.assert_close(kept, encoder(x, keep))


def test_activation_checkpointing_same_gradients_and_keys(encoder):
    encoder.train()
    x = torch.randn(2, 1, C, T)
    keys = sorted(encoder.state_dict())
    encoder(x).square().sum().backward()
    plain = [p.grad.clone() for p in encoder.parameters() if p.grad is not None]
    encoder.zero_grad()
    encoder.set_grad_checkpointing(True)
    assert encoder.grad_checkpointing
    encoder(x).square().sum().backward()
    again = [p.grad.clone() for p in encoder.parameters() if p.grad is not None]
    for a, b in zip(plain, again, strict=True):
        torch.testing.assert_close(a, b)
    assert sorted(encoder.state_dict()) == keys
    # a deep copy (an EMA teacher) checkpoints its own layers, not the original's
    twin = copy.deepcopy(encoder)
    layer = twin.layers[0][0]
    assert layer.forward.args[0] is layer
    torch.testing.assert_close(twin(x), encoder(x))
    encoder.set_grad_checkpointing(False)
    assert "forward" not in vars(encoder.layers[0][0])


def test_save_then_load_offline_reads_the_saved_geometry(tmp_path, caplog, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    path = save_patchtst(tmp_path / "tst", scaling="std")
    source = transformers.PatchTSTModel.from_pretrained(path).eval()
    with caplog.at_level(logging.INFO, logger="fmtrain"):
        encoder = PatchTSTEncoder(pretrained=path).build(GRID, 1).eval()
    assert encoder.geometry.patch_length == L and encoder.geometry.num_patches == P
    assert "patch_length=16" in caplog.text and "scaling=std" in caplog.text
    x = torch.randn(2, 1, C, T)
    with torch.no_grad():
        expected = source(past_values=x[:, 0].transpose(1, 2)).last_hidden_state
    torch.testing.assert_close(encoder(x), expected.reshape(2, C * P, 16))


def test_loads_a_pretraining_checkpoint(tmp_path):
    config = transformers.PatchTSTConfig(
        num_input_channels=C, context_length=T, patch_length=L, patch_stride=L, d_model=16,
        num_hidden_layers=1, num_attention_heads=2, ffn_dim=32,
    )  # fmt: skip
    transformers.PatchTSTForPretraining(config).save_pretrained(tmp_path)
    encoder = PatchTSTEncoder(pretrained=str(tmp_path)).build(GRID, 1)
    assert encoder(torch.randn(1, 1, C, T)).shape == (1, C * P, 16)


def test_mixer_save_and_load(tmp_path):
    torch.manual_seed(0)
    built = SPECS["mixer"].build(GRID, 1).eval()
    built.model.save_pretrained(tmp_path)
    loaded = PatchTSMixerEncoder(pretrained=str(tmp_path)).build(GRID, 1).eval()
    x = torch.randn(2, 1, C, T)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), built(x))
    assert loaded.model.config.scaling is None  # fmtrain normalises windows itself


def test_refuses_a_patch_length_that_differs_from_the_recipe(tmp_path):
    path = save_patchtst(tmp_path / "p64", channels=2, context=1024, patch=64)
    grid = TokenGrid.from_sizes((2, 1024), (1, 128))
    with pytest.raises(ValueError) as err:
        PatchTSTEncoder(pretrained=path).build(grid, 1)
    message = str(err.value)
    assert "model.init_args.patch_size=[1, 128]" in message
    assert f"pretrained encoder at {path} has patch_length=64 (16 patches of 1024" in message
    assert "set model.init_args.patch_size=[1, 64]" in message


def test_refuses_a_window_or_channels_that_differ(tmp_path):
    path = save_patchtst(tmp_path / "c2", channels=2)
    with pytest.raises(ValueError, match=r"data\.init_args\.window=128 .*context_length=64"):
        PatchTSTEncoder(pretrained=path).build(TokenGrid.from_sizes((2, 128), (1, L)), 1)
    with pytest.raises(ValueError, match=r"data\.init_args\.channels gives 3 .*input_channels=2"):
        PatchTSTEncoder(pretrained=path).build(GRID, 1)


def test_refuses_overlapping_patches(tmp_path):
    path = save_patchtst(tmp_path / "overlap", stride=8)
    with pytest.raises(ValueError, match=r"patch_stride=8 != patch_length=16"):
        PatchTSTEncoder(pretrained=path).build(GRID, 1)


def test_refuses_a_config_that_disagrees_with_the_grid():
    with pytest.raises(ValueError, match=r"encoder of model\.init_args\.encoder\.init_args has pa"):
        PatchTSMixerEncoder(patch_length=8, d_model=8).build(GRID, 1)


@pytest.mark.parametrize(
    ("grid", "in_chans"),
    [(TokenGrid.from_sizes((T,), (L,)), 1), (TokenGrid.from_sizes((C, T), (3, L)), 1), (GRID, 2)],
)
def test_refuses_grids_that_are_not_per_channel(grid, in_chans):
    with pytest.raises(ValueError, match=r"model\.init_args\.patch_size=.*patch \[1, L\]"):
        PatchTSTEncoder(d_model=8, num_heads=2).build(grid, in_chans)


def test_missing_folder_is_refused_without_a_download(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"encoder\.init_args\.pretrained=.*not a folder"):
        PatchTSTEncoder(pretrained=str(tmp_path / "absent")).build(GRID, 1)


@pytest.mark.parametrize("spec", [*SPECS.values(), TTMEncoder(pretrained="/models/ttm")])
def test_specs_round_trip_through_recipe_config(spec):
    config = spec_to_config(spec)
    assert "_classes" not in config["init_args"]
    assert spec_from_config(config) == spec


HAS_TSFM = importlib.util.find_spec("tsfm_public") is not None


@pytest.mark.skipif(HAS_TSFM, reason="tsfm_public is installed: the install hint is not shown")
def test_ttm_without_granite_tsfm_says_how_to_install():
    with pytest.raises(ImportError, match=r"pip install fmtrain\[ttm\].*older torch"):
        TTMEncoder(d_model=16, num_layers=1).build(GRID, 1)


@pytest.mark.skipif(not HAS_TSFM, reason="granite-tsfm (tsfm_public) is not installed")
def test_ttm_builds_from_a_config():
    encoder = TTMEncoder(d_model=16, num_layers=2).build(GRID, 1).eval()
    with torch.no_grad():
        assert encoder(torch.randn(2, 1, C, T)).shape == (2, C * P, 16)


def _one_channel_model(kind: str, path, **kwargs) -> str:
    sizes = dict(context_length=T, patch_length=L, patch_stride=L, d_model=16, scaling=None)
    if kind == "mixer":
        config = transformers.PatchTSMixerConfig(
            num_input_channels=1, num_layers=1, **sizes, **kwargs
        )
        transformers.PatchTSMixerModel(config).save_pretrained(path)
    else:
        config = transformers.PatchTSTConfig(
            num_input_channels=1, num_hidden_layers=1, num_attention_heads=2, ffn_dim=32,
            **sizes, **kwargs,
        )  # fmt: skip
        transformers.PatchTSTModel(config).save_pretrained(path)
    return str(path)


@pytest.mark.parametrize("kind", ["mixer", "patchtst"])
def test_a_channel_independent_one_channel_model_reads_each_channel_with_its_weights(
    kind, tmp_path
):
    # TTM's published configs have num_input_channels=1 and mode common_channel
    torch.manual_seed(0)
    path = _one_channel_model(kind, tmp_path / kind)
    spec = PatchTSMixerEncoder if kind == "mixer" else PatchTSTEncoder
    encoder = spec(pretrained=path).build(GRID, 1).eval()  # GRID has C = 3 channels
    source = encoder.model
    x = torch.randn(2, 1, C, T)
    with torch.no_grad():
        tokens = encoder(x)
        assert tokens.shape == (2, C * P, 16)
        for c in range(C):  # channel c alone through the same model: tokens c*P .. c*P+P-1
            alone = source(past_values=x[:, 0, c : c + 1].transpose(1, 2)).last_hidden_state
            torch.testing.assert_close(tokens[:, c * P : (c + 1) * P], alone[:, 0])
        keep = torch.tensor([[0, 5, 11], [1, 4, 8]])
        kept = encoder(x, keep)
        hidden = x.clone().reshape(2, C * P, L)
        hidden[torch.ones(2, C * P, dtype=torch.bool).scatter_(1, keep, False)] = 0
        torch.testing.assert_close(kept, gather(encoder(hidden.reshape(2, 1, C, T)), keep))
        layers = encoder.forward_intermediates(x, [-1])
        assert layers[0].shape == (2, C * P, 16)


def gather(tokens: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    return torch.gather(tokens, 1, keep[..., None].expand(-1, -1, tokens.shape[-1]))


@pytest.mark.parametrize(
    "kind, mixing", [("mixer", {"mode": "mix_channel"}), ("patchtst", {"channel_attention": True})]
)
def test_a_channel_mixing_model_of_another_channel_count_is_refused(kind, mixing, tmp_path):
    path = _one_channel_model(kind, tmp_path / kind, **mixing)
    spec = PatchTSMixerEncoder if kind == "mixer" else PatchTSTEncoder
    with pytest.raises(ValueError) as err:
        spec(pretrained=path).build(GRID, 1)
    message = str(err.value)
    assert "data.init_args.channels gives 3 channel(s)" in message
    assert "num_input_channels=1, and mixes its channels" in message
