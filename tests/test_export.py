"""`fmtrain export` and `fmtrain.load_encoder`: the evaluation encoder out of a checkpoint,
rebuilt without Lightning, computing exactly the features the checkpoint's method does."""

import json
import subprocess
import sys
import textwrap

import pytest
import torch

import fmtrain
from fmtrain.cli import main as fmtrain_main
from fmtrain.cli import run_cli
from fmtrain.cli.evaluate import load_pretrained
from fmtrain.methods import DecoderConfig, MAEModule
from fmtrain.nn import ViTEncoder

from .conftest import TINY_RECIPE

LIGHTNING = ("lightning", "pytorch_lightning", "lightning_fabric")


def _fixed_input(shape, seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


# --- fast: a checkpoint written by the method's own hook, no training ------------------------
def _mae_checkpoint(path):
    torch.manual_seed(0)
    module = MAEModule(
        input_size=(8, 32, 32),
        patch_size=(2, 8, 8),
        encoder=ViTEncoder(size="vit_test"),
        decoder=DecoderConfig(embed_dim=32, depth=1, num_heads=2),
    )
    with torch.no_grad():  # as if trained: the weights are no longer the seed-0 init
        for p in module.parameters():
            p.add_(0.05 * torch.randn_like(p))
    checkpoint = {"state_dict": module.state_dict(), "global_step": 7}
    module.on_save_checkpoint(checkpoint)
    torch.save(checkpoint, path)
    return module


def test_export_and_load_round_trip_of_a_method_checkpoint(tmp_path):
    module = _mae_checkpoint(tmp_path / "mae.ckpt")
    out = fmtrain.export_encoder(tmp_path / "mae.ckpt", tmp_path / "encoder")
    config = json.loads((out / "config.json").read_text())
    assert config["encoder"]["class_path"] == "fmtrain.nn.encoder.ViTEncoder"
    assert config["encoder"]["init_args"]["size"] == "vit_test"
    assert (config["input_size"], config["patch_size"], config["in_chans"]) == (
        [8, 32, 32],
        [2, 8, 8],
        1,
    )
    assert config["step"] == 7
    x = _fixed_input((2, 1, 8, 32, 32))
    with torch.no_grad():
        expected = module.evaluation_encoder().eval()(x)
        for source in (out, tmp_path / "mae.ckpt"):
            encoder = fmtrain.load_encoder(source)
            assert not encoder.training
            assert torch.equal(encoder(x), expected), source
    # the checkpoint's weights were loaded, not the initialisation (seed 0 built `module`)
    with torch.no_grad():
        assert not torch.allclose(module.random_encoder(0).eval()(x), expected)


def test_checkpoint_without_the_fmtrain_entry_is_refused_clearly(tmp_path):
    _mae_checkpoint(tmp_path / "mae.ckpt")
    state = torch.load(tmp_path / "mae.ckpt", weights_only=False)
    del state["fmtrain_encoder"]
    torch.save(state, tmp_path / "plain.ckpt")
    with pytest.raises(ValueError, match=r"plain\.ckpt has no 'fmtrain_encoder' entry"):
        fmtrain.load_encoder(tmp_path / "plain.ckpt")
    with pytest.raises(ValueError, match="not written by an fmtrain method"):
        fmtrain.export_encoder(tmp_path / "plain.ckpt", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_an_export_of_an_unknown_format_is_refused(tmp_path):
    _mae_checkpoint(tmp_path / "mae.ckpt")
    out = fmtrain.export_encoder(tmp_path / "mae.ckpt", tmp_path / "encoder")
    config = json.loads((out / "config.json").read_text())
    assert config["format"] == "fmtrain-encoder/1"
    (out / "config.json").write_text(json.dumps({**config, "format": "fmtrain-encoder/99"}))
    with pytest.raises(ValueError, match="unknown encoder format"):
        fmtrain.load_encoder(out)


# --- slow: a real V-JEPA run, exported by the command, loaded in a Lightning-free process ------
@pytest.fixture(scope="module")
def vjepa_run(oct_dataset, tmp_path_factory):
    """Two real training steps of the tiny V-JEPA recipe; returns (checkpoint, overrides)."""
    out = tmp_path_factory.mktemp("vjepa_export")
    overrides = [f"--data.init_args.source={oct_dataset}/manifest.tsv"]
    run_cli(
        [
            "fit",
            "--config",
            str(TINY_RECIPE),
            *overrides,
            "--trainer.max_steps=2",
            "--trainer.val_check_interval=2",
            "--trainer.logger=false",
            f"--trainer.default_root_dir={out}",
            f"--checkpoint.dirpath={out}/ckpt",
            "--checkpoint.every_n_train_steps=2",
        ]
    )
    ckpt = out / "ckpt" / "last.ckpt"
    assert ckpt.exists(), sorted(p.name for p in (out / "ckpt").iterdir())
    return ckpt, overrides


@pytest.fixture(scope="module")
def reference(vjepa_run, tmp_path_factory):
    """A fixed input (saved for other processes) and the checkpoint's evaluation features."""
    ckpt, overrides = vjepa_run
    module, _ = load_pretrained(str(TINY_RECIPE), str(ckpt), overrides)
    x = _fixed_input((2, 1, *module.grid.input_size))
    path = tmp_path_factory.mktemp("ref") / "x.pt"
    torch.save(x, path)
    with torch.no_grad():
        features = module.evaluation_encoder().eval()(x)
    return module, path, x, features


@pytest.mark.slow
def test_export_command_writes_weights_and_config(vjepa_run, reference, tmp_path, capsys):
    ckpt, _ = vjepa_run
    module = reference[0]
    out = tmp_path / "encoder"
    fmtrain_main(["export", str(ckpt), str(out)])
    assert f"to {out}" in capsys.readouterr().out
    assert (out / "model.safetensors").is_file()
    config = json.loads((out / "config.json").read_text())
    assert config["encoder"]["class_path"] == "fmtrain.nn.encoder.ViTEncoder"
    assert config["encoder"]["init_args"]["size"] == "vit_test"
    assert config["input_size"] == [8, 32, 32] == list(module.grid.input_size)
    assert config["patch_size"] == [2, 8, 8] == list(module.grid.patch_size)
    assert config["in_chans"] == 1
    assert config["method"] == "fmtrain.methods.vjepa.VJEPAModule"
    assert config["step"] == 2
    # V-JEPA's evaluation encoder is the EMA target, and that is what was written
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    prefix = state["fmtrain_encoder"]["prefix"]
    assert dict(module.named_modules())[prefix[:-1]] is module.evaluation_encoder()
    from safetensors.torch import load_file

    weights = load_file(out / "model.safetensors")
    expected = {k: v for k, v in module.evaluation_encoder().state_dict().items() if k in weights}
    assert weights.keys() == expected.keys() and weights
    assert all(torch.equal(weights[k], expected[k]) for k in weights)


@pytest.mark.slow
def test_exported_encoder_gives_the_checkpoint_features_without_lightning(
    vjepa_run, reference, tmp_path
):
    ckpt, _ = vjepa_run
    _, x_path, _, features = reference
    out = tmp_path / "encoder"
    fmtrain_main(["export", str(ckpt), str(out)])
    script = textwrap.dedent(
        f"""
        import sys
        import torch
        import fmtrain

        enc = fmtrain.load_encoder({str(out)!r})
        x = torch.load({str(x_path)!r})
        with torch.no_grad():
            torch.save(enc(x), {str(tmp_path / "features.pt")!r})
        assert enc.fmtrain_config["patch_size"] == [2, 8, 8], enc.fmtrain_config
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in {LIGHTNING!r})
        assert not loaded, loaded
        assert "lightning" not in sys.modules and "pytorch_lightning" not in sys.modules
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert torch.equal(torch.load(tmp_path / "features.pt"), features)


@pytest.mark.slow
def test_load_encoder_reads_the_checkpoint_directly(vjepa_run, reference):
    ckpt, _ = vjepa_run
    module, _, x, features = reference
    encoder = fmtrain.load_encoder(ckpt)
    assert type(encoder) is type(module.evaluation_encoder()) and not encoder.training
    config = encoder.fmtrain_config
    assert config["input_size"] == [8, 32, 32] and config["patch_size"] == [2, 8, 8]
    assert config["in_chans"] == 1 and config["step"] == 2 and config["source"] == str(ckpt)
    assert encoder.grid == module.grid
    with torch.no_grad():
        assert torch.equal(encoder(x), features)
        # the online encoder differs from the EMA target: the export picked the right one
        assert not torch.equal(module.method.encoder.eval()(x), features)
