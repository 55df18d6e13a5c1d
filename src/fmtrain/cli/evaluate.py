"""`fmtrain probe` and `fmtrain embed`: a recipe and a checkpoint in, evaluations out.

The recipe is built exactly as `fit` built it; the checkpoint's weights are loaded into
the method, and the method says which encoder is evaluated (`evaluation_encoder()`).
"""

from __future__ import annotations

import logging

import torch
from jsonargparse import CLI

from fmtrain.eval.embed_files import embed_files
from fmtrain.eval.probe_command import run_embed, run_probe
from fmtrain.eval.quiet import quiet_lightning
from fmtrain.recipe import build_recipe

log = logging.getLogger("fmtrain")

__all__ = ["embed_main", "load_pretrained", "probe", "probe_main"]


def load_pretrained(recipe: str, ckpt: str | None, overrides: list[str]):
    """Build the recipe's method and datamodule (no training) and load `ckpt` into it."""
    args = ["--config", recipe, *overrides, "--trainer.logger=false"]
    # the recipe is built only to hold the weights: Lightning's trainer set-up lines
    # (accelerators, tips) are noise here
    with quiet_lightning():
        cli = build_recipe(args, run=False)
    if ckpt:
        state = torch.load(ckpt, map_location="cpu", weights_only=False)
        missing, unexpected = cli.model.load_state_dict(state["state_dict"], strict=False)
        if missing or unexpected:
            raise ValueError(
                f"{ckpt} does not fit the recipe {recipe}: missing {missing[:5]}, unexpected "
                f"{unexpected[:5]} — was it trained with another model.encoder or method?"
            )
        log.info("loaded %s (global_step %s)", ckpt, state.get("global_step"))
    return cli.model, cli.datamodule


def probe(
    recipe: str,
    ckpt: str | None = None,
    labels: str | None = None,
    out_dir: str = "probe_output",
    train_split: str = "train",
    test_split: str = "test",
    random_seeds: int = 3,
    probes: tuple[str, ...] = ("linear", "knn", "attentive"),
    n_boot: int = 1000,
    device: str = "auto",
    overrides: list[str] | None = None,
) -> dict:
    """Probe a checkpoint's frozen encoder against `random_seeds` random-init encoders.

    Args:
        recipe: the recipe the checkpoint was trained with (its data section says where the
            prepared data is).
        ckpt: checkpoint to evaluate (None: only random-init encoders, for a baseline).
        labels: labels file (TSV/CSV with a ``filepath`` column); default: labels.tsv beside
            the recipe's data.source.
        out_dir: where probe.json and probe.txt go.
        train_split: split the probes are fitted on.
        test_split: split they are scored on (participants disjoint from train_split).
        random_seeds: randomly initialised encoders to compare with (at least 3 advised).
        probes: any of "linear", "knn", "attentive".
        n_boot: bootstrap resamples for every interval.
        device: where encoders embed (bf16 on a GPU) and the attentive probe trains:
            "auto" (the GPU when there is one), "cpu", "cuda", "cuda:1", ...
        overrides: extra recipe overrides, e.g. ["--data.init_args.source=..."].
    """
    module, dm = load_pretrained(recipe, ckpt, list(overrides or []))
    return run_probe(
        module,
        dm,
        recipe=recipe,
        ckpt=ckpt,
        labels=labels,
        out_dir=out_dir,
        train_split=train_split,
        test_split=test_split,
        random_seeds=random_seeds,
        probes=probes,
        n_boot=n_boot,
        device=device,
    )


def embed(
    recipe: str,
    ckpt: str | None = None,
    out: str = "embeddings.npz",
    split: str = "test",
    files: list[str] | None = None,
    device: str = "auto",
    overrides: list[str] | None = None,
) -> str:
    """Write a checkpoint's mean-pooled embeddings of one split, or of files, with ids.

    Args:
        recipe: the recipe the checkpoint was trained with.
        ckpt: the checkpoint (`--ckpt`, required), e.g. RUN/checkpoints/last.ckpt.
        out: output .npz (arrays ``ids``, ``participants``, ``devices``, ``embeddings``).
        split: which prepared split to embed (when no --files are given).
        files: volume files to embed instead of a split (`--files a.nii.gz b.dcm ...`, or
            a .txt list of paths, one per line): each is read and preprocessed as `prepare`
            does for the recipe (its data.spacing and data.input_size); ``ids`` are the
            paths as given; unreadable files are skipped, counted and listed in the .npz.
        device: where the encoder runs ("auto": the GPU when there is one).
        overrides: extra recipe overrides.
    """
    if ckpt is None:
        raise ValueError("--ckpt is required: the checkpoint to embed with (e.g. last.ckpt)")
    module, dm = load_pretrained(recipe, ckpt, list(overrides or []))
    if files:
        written = embed_files(module, dm, files, out, device=device)
        print(written.summary())
        return written.out
    return run_embed(module, dm, out=out, split=split, device=device)


def _files_as_items(args: list[str]) -> list[str]:
    """`--files a b c` as jsonargparse reads a list (`--files+=a --files+=b ...`): the
    paths after --files, up to the next option, are its items."""
    out, in_files = [], False
    for arg in args:
        if arg == "--files":
            in_files = True
        elif arg.startswith("--files="):
            out.append(f"--files+={arg.removeprefix('--files=')}")
        elif arg.startswith("--"):
            in_files = False
            out.append(arg)
        elif in_files:
            out.append(f"--files+={arg}")
        else:
            out.append(arg)
    return out


def probe_main(args: list[str]) -> int:
    result = CLI(probe, args=args, prog="fmtrain probe")  # errors: `fmtrain.cli.errors`
    print(result.get("table", "no checkpoint given: random-init baselines only (probe.json)"))
    print(f"probe results: {result['seconds']} s; details in {result['written_to']}")
    return 0


def embed_main(args: list[str]) -> int:
    path = CLI(embed, args=_files_as_items(args), prog="fmtrain embed")
    print(f"embeddings written to {path}")
    return 0
