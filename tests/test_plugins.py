"""A user's own method, mask sampler and encoder, each in one file outside fmtrain.

`my_plugins.py` is written to a temporary folder and imported by `class_path` only; the
recipe that names it goes through `check`, `fit` (with resume), `probe`, `embed` and
`load_encoder` exactly as a built-in recipe does, and no fmtrain file is touched.
"""

import csv
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import fmtrain
from fmtrain.check.runner import main as check_main
from fmtrain.check.runner import run_check
from fmtrain.cli import run_cli
from fmtrain.cli.evaluate import embed as run_embed
from fmtrain.cli.evaluate import probe as run_probe

from .conftest import TINY_RECIPE
from .user_code import fmtrain_untouched, user_module

PLUGINS = textwrap.dedent(
    '''
    """A user's method, mask sampler and encoder: nothing here is part of fmtrain."""

    from __future__ import annotations

    import math
    from dataclasses import dataclass

    import numpy as np
    import torch
    import torch.nn.functional as F
    from torch import nn

    from fmtrain.masks import MaskPair, MaskSampler
    from fmtrain.methods import MethodOutput, PretrainMethod
    from fmtrain.methods.configs import OptimizerConfig
    from fmtrain.nn.encoder import EncoderSpec


    class TinyConvEncoder(nn.Module):
        """Strided-conv patches -> linear -> layer norm; `keep` drops tokens before the linear."""

        def __init__(self, grid, in_chans: int, width: int) -> None:
            super().__init__()
            self.embed_dim = width
            self.grad_checkpointing = False
            p = grid.patch_size
            self.patch = nn.Conv3d(in_chans, width, kernel_size=p, stride=p)
            self.proj = nn.Linear(width, width)
            self.norm = nn.LayerNorm(width)

        def forward_features(self, x, keep=None):
            tokens = self.patch(x).flatten(2).transpose(1, 2)  # [B, N, D], row-major grid
            if keep is not None:
                tokens = torch.gather(tokens, 1, keep[..., None].expand(-1, -1, self.embed_dim))
            return self.norm(self.proj(tokens))

        forward = forward_features

        def forward_intermediates(self, x, layers, keep=None):
            return [self.forward_features(x, keep)]

        def no_weight_decay(self) -> set[str]:
            return set()

        def set_grad_checkpointing(self, enable: bool = True) -> None:
            self.grad_checkpointing = enable


    @dataclass(frozen=True, kw_only=True)
    class TinyConvEncoderSpec(EncoderSpec):
        width: int = 32

        def build(self, grid, in_chans: int) -> nn.Module:
            return TinyConvEncoder(grid, in_chans, self.width)


    @dataclass(kw_only=True)
    class EveryOtherToken(MaskSampler):
        """Context: every other token (even or odd, drawn per batch); target: the rest."""

        min_context_tokens: int = 1

        def num_families(self) -> int:
            return 1

        def validate(self, grid) -> None:
            if math.prod(grid) < 2:
                raise ValueError(
                    f"data.init_args.masks: EveryOtherToken needs >= 2 tokens, the grid "
                    f"{tuple(grid)} has {math.prod(grid)}. Fix: a smaller model.patch_size."
                )

        def sample(self, grid, batch_size, rng):
            index = np.arange(math.prod(grid), dtype=np.int64)
            offset = int(rng.integers(2))
            rows = [index[index % 2 == offset], index[index % 2 != offset]]
            context, target = (torch.from_numpy(np.tile(r, (batch_size, 1))) for r in rows)
            return [MaskPair(context=context, target=target)]


    class PixelMean(nn.Module):
        """Predict each hidden patch's mean intensity from the pooled visible tokens."""

        def __init__(self, encoder: nn.Module, num_tokens: int, patch_size) -> None:
            super().__init__()
            self.encoder = encoder
            self.positions = nn.Embedding(num_tokens, encoder.embed_dim)
            self.head = nn.Linear(encoder.embed_dim, 1)
            self.patch_size = tuple(patch_size)

        def forward(self, inputs, contexts, targets) -> MethodOutput:
            means = F.avg_pool3d(inputs, self.patch_size, self.patch_size).mean(1).flatten(1)
            losses, features = [], None
            for visible, hidden in zip(contexts, targets, strict=True):
                z = self.encoder(inputs, keep=visible)  # [B, Nc, D]
                query = z.mean(1, keepdim=True) + self.positions(hidden)  # [B, Nt, D]
                prediction = self.head(query).squeeze(-1)  # [B, Nt]
                losses.append(F.mse_loss(prediction, torch.gather(means, 1, hidden)))
                features = z if features is None else features
            return MethodOutput(
                loss=torch.stack(losses).mean(), loss_per_mask=losses, features=features
            )


    class PixelMeanMethod(PretrainMethod):
        num_mask_families = 1

        def __init__(
            self,
            *,
            input_size: tuple[int, ...],
            patch_size: tuple[int, ...] = (2, 8, 8),
            in_chans: int = 1,
            encoder: EncoderSpec = TinyConvEncoderSpec(),
            optimizer: OptimizerConfig | None = None,
        ) -> None:
            super().__init__(
                input_size=input_size,
                patch_size=patch_size,
                in_chans=in_chans,
                encoder=encoder,
                optimizer=optimizer,
            )
            self.save_hyperparameters()
            encoder_module = self.build_encoder()
            self.method = PixelMean(encoder_module, self.grid.num_tokens, self.grid.patch_size)

        def forward_batch(self, batch) -> MethodOutput:
            return self.method(batch.inputs, batch.contexts, batch.targets)

        def evaluation_encoder(self) -> nn.Module:
            return self.method.encoder

        def stage_widths(self) -> dict[str, int]:
            return {"head": 1}  # one mean per hidden patch, not an encoder-width token
    '''
)

WIDTH = 16


@pytest.fixture(scope="module")
def plugin_dir(tmp_path_factory):
    """`my_plugins.py` in a folder on sys.path (and PYTHONPATH), removed afterwards."""
    with user_module(tmp_path_factory.mktemp("user_code"), "my_plugins", PLUGINS) as folder:
        yield folder


@pytest.fixture(scope="module")
def recipe(plugin_dir, oct_dataset) -> str:
    """The user's recipe: their method, encoder and sampler, fmtrain's volume data."""
    tiny = yaml.safe_load(TINY_RECIPE.read_text())
    data = dict(tiny["data"]["init_args"])
    data |= {
        "source": f"{oct_dataset}/manifest.tsv",
        "num_workers": 0,
        "masks": {"class_path": "my_plugins.EveryOtherToken"},
    }
    trainer = dict(tiny["trainer"])
    trainer["logger"]["init_args"]["save_dir"] = str(plugin_dir / "runs")  # not the cwd
    config = {
        "seed_everything": 0,
        "trainer": trainer | {"max_steps": 6},
        "checkpoint": {"every_n_train_steps": 2},
        "monitors": {"every_n_steps": 2},
        "model": {
            "class_path": "my_plugins.PixelMeanMethod",
            "init_args": {
                "patch_size": [2, 8, 8],
                "encoder": {
                    "class_path": "my_plugins.TinyConvEncoderSpec",
                    "init_args": {"width": WIDTH},
                },
                # a constant schedule: a 4-step run resumed to 6 steps is then the same run
                # as 6 steps in one go (warmup/cosine are defined over trainer.max_steps)
                "optimizer": {
                    "lr": 1e-3,
                    "start_lr": 1e-3,
                    "final_lr": 1e-3,
                    "warmup_steps": 0,
                    "weight_decay": 0.04,
                    "final_weight_decay": 0.04,
                },
            },
        },
        "data": {"class_path": "fmtrain.datamodules.VolumeDataModule", "init_args": data},
    }
    path = plugin_dir / "my_recipe.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return str(path)


@pytest.fixture(scope="module", autouse=True)
def untouched():
    with fmtrain_untouched():
        yield


def _fit(recipe: str, out: Path, *extra: str):
    return run_cli(
        [
            "fit",
            "--config",
            recipe,
            f"--trainer.default_root_dir={out}",
            f"--checkpoint.dirpath={out}/ckpt",
            f"--trainer.logger.init_args.save_dir={out}",
            *extra,
        ]
    )


def _losses(out: Path) -> dict[int, float]:
    with (out / "csv" / "metrics.csv").open() as f:
        rows = csv.DictReader(f)
        return {int(r["step"]): float(r["train/loss"]) for r in rows if r.get("train/loss")}


@pytest.fixture(scope="module")
def short_run(recipe, tmp_path_factory):
    """4 steps of the user's method: (output folder, last.ckpt, the trained module)."""
    out = tmp_path_factory.mktemp("short")
    cli = _fit(recipe, out, "--trainer.max_steps=4")
    return out, out / "ckpt" / "last.ckpt", cli.model


def test_check_runs_the_user_method_encoder_and_sampler(recipe, tmp_path, capsys):
    report = run_check(recipe, [f"--trainer.default_root_dir={tmp_path}"], str(tmp_path / "c"))
    assert not report.errors, [str(p) for p in report.errors]
    stages = {s["stage"]: s["shape"] for s in report.stages}
    num_tokens = 4 * 4 * 4
    assert stages["context indices [0]"] == [2, num_tokens // 2]
    assert stages["target indices [0]"] == [2, num_tokens // 2]
    assert stages["encoder"] == [2, num_tokens // 2, WIDTH]  # tokens, at the user's width
    assert stages["head"] == [2, num_tokens // 2, 1]  # declared by stage_widths()
    assert report.parameters["encoder"] > 0 and report.parameters["head"] == WIDTH + 1
    assert report.masks[0]["context_fraction"][1] == pytest.approx(0.5)
    assert report.pictures  # the user's masks are drawn like the built-in ones
    args = [recipe, "--out", str(tmp_path / "c2"), f"--trainer.default_root_dir={tmp_path}"]
    assert check_main(args) == 0
    assert "OK: 0 error(s)" in capsys.readouterr().out


def test_user_sampler_refuses_an_impossible_grid_when_the_recipe_is_read(recipe, tmp_path):
    # one token per volume: the sampler's own validate() names the recipe key
    args = ["--model.init_args.patch_size=[8,32,32]", f"--trainer.default_root_dir={tmp_path}"]
    report = run_check(recipe, args, str(tmp_path / "c"))
    assert any(
        p.key == "data.init_args.masks" and "EveryOtherToken" in p.message for p in report.errors
    ), [str(p) for p in report.problems]


@pytest.mark.slow
def test_fmtrain_check_command_from_a_shell(recipe, tmp_path):
    # the user's code reaches a fresh interpreter through PYTHONPATH alone
    cmd = [sys.executable, "-m", "fmtrain", "check", recipe, "--out", str(tmp_path / "c")]
    cmd += [f"--trainer.default_root_dir={tmp_path}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "OK: 0 error(s)" in proc.stdout


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:The dirpath has changed")  # resumed into a new folder
def test_fit_and_resume_give_the_uninterrupted_losses(recipe, short_run, tmp_path):
    short, last, _ = short_run
    state = torch.load(last, weights_only=False)
    assert state["global_step"] == 4
    assert state["fmtrain_encoder"]["config"]["encoder"] == {
        "class_path": "my_plugins.TinyConvEncoderSpec",
        "init_args": {"width": WIDTH},
    }
    cli = _fit(recipe, tmp_path / "resumed", f"--ckpt_path={last}")
    assert cli.trainer.global_step == 6
    _fit(recipe, tmp_path / "full")
    full, resumed = _losses(tmp_path / "full"), _losses(tmp_path / "resumed")
    assert sorted(full) == [0, 1, 2, 3, 4, 5] and sorted(resumed) == [4, 5]
    assert _losses(short) == {s: full[s] for s in range(4)}  # same run up to the cut
    for step in (4, 5):
        assert resumed[step] == full[step], (step, resumed[step], full[step])
    assert full[5] != full[4]  # the losses move: the comparison is not between constants


@pytest.mark.slow
def test_probe_and_embed_use_the_user_encoder(recipe, short_run, tmp_path):
    _, last, _ = short_run
    result = run_probe(
        recipe,
        str(last),
        out_dir=str(tmp_path),
        test_split="val",
        random_seeds=2,
        probes=("linear", "knn"),
        n_boot=50,
        # half of the 12 participants held out: enough for an interval on the regression
        # task (3 would be refused as too few)
        overrides=["--data.init_args.split_fractions={train: 0.5, val: 0.5}"],
    )
    assert {t["name"] for t in result["tasks"]} == {"pathology", "foveal_thickness_mm"}
    assert "foveal_thickness_mm" in result["pretrained"]["tasks"]
    assert len(result["random"]) == 2 and "gain" in result["table"]
    assert (tmp_path / "probe.json").exists()
    path = run_embed(recipe, str(last), str(tmp_path / "e.npz"), split="val")
    saved = np.load(path)
    assert saved["embeddings"].shape == (len(saved["ids"]), WIDTH)
    assert np.isfinite(saved["embeddings"]).all()


@pytest.mark.slow
def test_load_encoder_rebuilds_the_user_encoder(short_run):
    _, last, module = short_run
    encoder = fmtrain.load_encoder(last)
    assert type(encoder).__module__ == "my_plugins" and type(encoder).__name__ == "TinyConvEncoder"
    assert encoder.embed_dim == WIDTH
    x = torch.randn(2, 1, 8, 32, 32)
    trained = module.evaluation_encoder().eval()
    with torch.no_grad():
        torch.testing.assert_close(encoder(x), trained(x))
        keep = torch.tensor([[0, 5, 9], [1, 2, 63]])
        torch.testing.assert_close(
            encoder(x, keep=keep), trained(x)[torch.arange(2)[:, None], keep]
        )


def test_builtin_vjepa_runs_with_the_user_encoder_and_sampler(plugin_dir, oct_dataset, tmp_path):
    args = [
        f"--data.init_args.source={oct_dataset}/manifest.tsv",
        f"--trainer.default_root_dir={tmp_path}",
        "--data.init_args.num_workers=0",
        "--model.init_args.encoder="
        f'{{"class_path": "my_plugins.TinyConvEncoderSpec", "init_args": {{"width": {WIDTH}}}}}',
        '--data.init_args.masks={"class_path": "my_plugins.EveryOtherToken"}',
    ]
    report = run_check(str(TINY_RECIPE), args, str(tmp_path / "check"))
    assert not report.errors, [str(p) for p in report.errors]
    stages = {s["stage"]: s["shape"] for s in report.stages}
    assert stages["target_encoder"] == [2, 64, WIDTH]
    assert stages["encoder"] == [2, 32, WIDTH]
    assert stages["predictor"] == [2, 32, WIDTH]  # built from the user encoder's width
    assert len(report.masks) == 1  # num_mask_families linked from the user's sampler
