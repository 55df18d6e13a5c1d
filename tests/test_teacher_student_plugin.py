"""A teacher-student objective written in one file outside fmtrain (data2vec-style: the EMA
teacher's averaged top-K layer outputs, each layer-normed, regressed from the student's
masked tokens), built on fmtrain's shared EMA teacher piece. Its recipe goes through
`check`, `fit` with resume, `probe` and `embed`, and no fmtrain file is touched.
"""

import textwrap

import numpy as np
import pytest
import torch
import yaml

from fmtrain.check.runner import run_check
from fmtrain.cli import run_cli
from fmtrain.cli.evaluate import embed as run_embed
from fmtrain.cli.evaluate import probe as run_probe

from .conftest import TINY_RECIPE
from .user_code import fmtrain_untouched, user_module

DATA2VEC = textwrap.dedent(
    '''
    """data2vec-style pretraining: nothing here is part of fmtrain but what it imports."""

    from __future__ import annotations

    import torch
    import torch.nn.functional as F
    from torch import nn

    from fmtrain.methods import (
        EMAConfig,
        MethodOutput,
        PretrainMethod,
        RecipeLink,
        ema_copy,
        ema_momentum,
        ema_update,
    )
    from fmtrain.methods.configs import OptimizerConfig
    from fmtrain.nn.encoder import EncoderSpec, ViTEncoder


    class Data2Vec(nn.Module):
        """Student on the visible tokens; targets from the EMA teacher on the whole input."""

        def __init__(self, student: nn.Module, num_tokens: int, top_k: int) -> None:
            super().__init__()
            width = student.embed_dim
            self.student = student
            self.teacher = ema_copy(student)
            self.positions = nn.Embedding(num_tokens, width)
            self.regressor = nn.Sequential(
                nn.Linear(width, width), nn.GELU(), nn.Linear(width, width)
            )
            self.top_k = top_k

        def train(self, mode: bool = True) -> Data2Vec:
            super().train(mode)
            self.teacher.eval()
            return self

        def targets(self, inputs: torch.Tensor) -> torch.Tensor:
            """The average of the teacher's top-K layer outputs, each layer-normed: [B, N, D]."""
            with torch.no_grad():
                layers = self.teacher.forward_intermediates(inputs, list(range(-self.top_k, 0)))
                normed = [F.layer_norm(h.float(), h.shape[-1:]) for h in layers]
                return torch.stack(normed).mean(0)

        def forward(self, inputs, contexts, targets) -> MethodOutput:
            goal = self.targets(inputs)
            losses, features = [], None
            for visible, hidden in zip(contexts, targets, strict=True):
                z = self.student(inputs, keep=visible)  # [B, Nc, D]
                query = z.mean(1, keepdim=True) + self.positions(hidden)  # [B, Nt, D]
                wanted = torch.gather(goal, 1, hidden[..., None].expand(-1, -1, goal.shape[-1]))
                losses.append(F.smooth_l1_loss(self.regressor(query), wanted))
                features = z if features is None else features
            return MethodOutput(
                loss=torch.stack(losses).mean(), loss_per_mask=losses, features=features
            )


    class Data2VecMethod(PretrainMethod):
        def __init__(
            self,
            *,
            input_size: tuple[int, ...],
            patch_size: tuple[int, ...] = (2, 8, 8),
            in_chans: int = 1,
            num_mask_families: int = 1,
            encoder: EncoderSpec = ViTEncoder(size="vit_test"),
            top_k: int = 2,
            ema: EMAConfig | None = None,
            optimizer: OptimizerConfig | None = None,
        ) -> None:
            super().__init__(
                input_size=input_size, patch_size=patch_size, in_chans=in_chans,
                encoder=encoder, optimizer=optimizer,
            )
            self.save_hyperparameters()
            self.num_mask_families = num_mask_families
            self.ema_config = ema or EMAConfig()
            self.method = Data2Vec(self.build_encoder(), self.grid.num_tokens, top_k)

        @classmethod
        def recipe_links(cls) -> list[RecipeLink]:
            # as many mask families as the data draws (the predictor is shared by all)
            families = RecipeLink("data", "model.init_args.num_mask_families", "num_mask_families")
            return [*super().recipe_links(), families]

        def forward_batch(self, batch) -> MethodOutput:
            return self.method(batch.inputs, batch.contexts, batch.targets)

        def evaluation_encoder(self) -> nn.Module:
            return self.method.student

        def extra_schedules(self, step: int, total: int) -> dict[str, float]:
            return {"ema_momentum": ema_momentum(self.ema_config, step, total)}

        def after_optimizer_step(self, values, applied=None) -> None:
            ema_update(self.method.teacher, self.method.student, values["ema_momentum"], applied)
    '''
)


@pytest.fixture(scope="module")
def plugin_dir(tmp_path_factory):
    """`my_data2vec.py` in a folder on sys.path (and PYTHONPATH), removed afterwards."""
    with user_module(tmp_path_factory.mktemp("user_code"), "my_data2vec", DATA2VEC) as folder:
        yield folder


@pytest.fixture(scope="module")
def recipe(plugin_dir, oct_dataset) -> str:
    """The tiny V-JEPA recipe's data and trainer, with the user's method as the model."""
    config = yaml.safe_load(TINY_RECIPE.read_text())
    config["data"]["init_args"] |= {"source": f"{oct_dataset}/manifest.tsv", "num_workers": 0}
    config["trainer"]["logger"]["init_args"]["save_dir"] = str(plugin_dir / "runs")
    config["model"] = {
        "class_path": "my_data2vec.Data2VecMethod",
        "init_args": {
            "patch_size": [2, 8, 8],
            "top_k": 2,
            "ema": {"momentum": 0.9, "final_momentum": 0.99},
            "optimizer": {"lr": 1e-3, "warmup_steps": 1},
        },
    }
    path = plugin_dir / "data2vec_recipe.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return str(path)


@pytest.fixture(scope="module", autouse=True)
def untouched():
    with fmtrain_untouched():
        yield


def test_check_runs_the_teacher_student_objective(recipe, tmp_path):
    report = run_check(recipe, [f"--trainer.default_root_dir={tmp_path}"], str(tmp_path / "c"))
    assert not report.errors, [str(p) for p in report.errors]
    stages = [(s["stage"], s["shape"]) for s in report.stages]
    contexts = [shape[1] for stage, shape in stages if stage.startswith("context indices")]
    # the student encodes each family's visible tokens only, at the ViT's width
    assert [shape for stage, shape in stages if stage == "student"] == [
        [2, n, 64] for n in contexts
    ]
    assert any(stage == "regressor" for stage, _ in stages)


@pytest.mark.slow
def test_fit_with_resume_moves_the_ema_teacher_then_probe_and_embed(recipe, tmp_path):
    out = tmp_path / "run"
    common = [f"--trainer.default_root_dir={out}", f"--checkpoint.dirpath={out}/ckpt"]
    common += [f"--trainer.logger.init_args.save_dir={out}", "--trainer.max_steps=6"]
    first = run_cli(["fit", "--config", recipe, *common, "--checkpoint.every_n_train_steps=3"])
    model = first.model.method
    start = {k: v.clone() for k, v in model.teacher.state_dict().items()}
    resumed = run_cli(
        ["fit", "--config", recipe, *common, "--trainer.max_steps=8", "--resume=true"]
    )
    assert resumed.trainer.global_step == 8
    teacher, student = resumed.model.method.teacher, resumed.model.method.student
    # the shared EMA piece moved the teacher on resume, toward the student but not onto it
    assert any(not torch.equal(v, start[k]) for k, v in teacher.state_dict().items())
    assert any(
        not torch.equal(a, b)
        for a, b in zip(teacher.parameters(), student.parameters(), strict=True)
    )
    assert not any(p.requires_grad for p in teacher.parameters())
    last = out / "ckpt" / "last.ckpt"
    state = torch.load(last, weights_only=False)
    assert state["global_step"] == 8 and any(
        k.startswith("method.teacher.") for k in state["state_dict"]
    )

    result = run_probe(
        recipe, str(last), out_dir=str(tmp_path / "probe"), test_split="val", random_seeds=2,
        probes=("linear",), n_boot=50,
        overrides=["--data.init_args.split_fractions={train: 0.5, val: 0.5}"],
    )  # fmt: skip
    assert "foveal_thickness_mm" in result["pretrained"]["tasks"] and len(result["random"]) == 2
    saved = run_embed(recipe, str(last), str(tmp_path / "e.npz"), split="val")
    embeddings = np.load(saved)["embeddings"]
    assert embeddings.shape[1] == 64 and np.isfinite(embeddings).all()
