"""Weights & Biases, with the real `wandb` package offline (no network: the run is written to
disk for `wandb sync`): a short fit logs its scalars, its mask and curve pictures, its recipe
(credentials redacted) and, with `log_model`, its checkpoints as artifacts. What wandb wrote
is read back from its own files."""

import json
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

from fmtrain.cli import run_cli
from fmtrain.engine.secrets import REDACTED
from tests.conftest import TINY_RECIPE
from tests.eval.wandb_records import read_records

wandb = pytest.importorskip("wandb")

SECRET = "fmtrain-test-secret-4f1c9a"


def _offline(monkeypatch, tmp_path: Path) -> None:
    # WANDB_MODE=offline (not the logger's `offline: true`, which Lightning refuses beside
    # `log_model`): the run and its artifacts are kept on disk for a later `wandb sync`.
    for name, value in {
        "WANDB_MODE": "offline",
        "WANDB_DIR": tmp_path,
        "WANDB_CACHE_DIR": tmp_path / "wandb-cache",
        "WANDB_DATA_DIR": tmp_path / "wandb-data",
        "WANDB_CONFIG_DIR": tmp_path / "wandb-config",
        "WANDB_SILENT": "true",
        "WANDB_DISABLE_GIT": "true",
    }.items():
        monkeypatch.setenv(name, str(value))


def _key(item) -> str:
    return item.key or "/".join(item.nested_key)


@pytest.mark.slow
def test_an_offline_wandb_run_holds_scalars_pictures_recipe_and_checkpoints(
    oct_dataset, tmp_path, monkeypatch
):
    _offline(monkeypatch, tmp_path)
    loggers = [
        {
            "class_path": "lightning.pytorch.loggers.WandbLogger",
            "init_args": {"project": "fmtrain-test", "save_dir": str(tmp_path), "log_model": "all"},
        },
        {
            "class_path": "fmtrain.engine.run_log.RunCSVLogger",
            "init_args": {"save_dir": str(tmp_path), "name": "csv", "version": ""},
        },
    ]
    cli = run_cli(
        [
            "fit",
            "--config",
            str(TINY_RECIPE),
            f"--data.init_args.source={oct_dataset}/manifest.tsv",
            f"--data.init_args.storage_options={json.dumps({'token': SECRET})}",
            "--data.init_args.num_workers=0",
            f"--trainer.logger={json.dumps(loggers)}",
            f"--trainer.default_root_dir={tmp_path}",
            f"--checkpoint.dirpath={tmp_path}/ckpt",
        ]
    )
    assert cli.trainer.global_step == 6
    run = cli.trainer.loggers[0].experiment
    run_id = run.id
    run.finish()  # a `fmtrain fit` process does this at exit

    (run_dir,) = (tmp_path / "wandb").glob(f"offline-run-*-{run_id}")
    # finish() can return before wandb's service has written the whole log: wait for its
    # exit record (seen on a loaded 2-core machine: every history record still missing)
    deadline = time.monotonic() + 60
    records = read_records(run_dir / f"run-{run_id}.wandb")
    while not any(r.HasField("exit") for r in records):
        assert time.monotonic() < deadline, "wandb wrote no exit record within 60 s"
        time.sleep(0.2)
        records = read_records(run_dir / f"run-{run_id}.wandb")

    # scalars: the training loss at every logged step, finite
    history = [r.history for r in records if r.HasField("history")]
    losses = {
        int(json.loads(i.value_json))
        for h in history
        for i in h.item
        if _key(i) == "trainer/global_step" and any(_key(j) == "train/loss" for j in h.item)
    }
    assert losses == set(range(6)), losses
    for h in history:
        for item in h.item:
            if _key(item) == "train/loss":
                assert torch.isfinite(torch.tensor(json.loads(item.value_json)))

    # pictures: the first batch's masks and the end-of-fit curves, as PNG files in the run
    pictures: dict[str, dict] = {}  # an image is logged as nested items: key -> field -> value
    for h in history:
        for item in h.item:
            name = "/".join(item.nested_key[:-1])
            if len(item.nested_key) > 1 and name.startswith("pictures/"):
                pictures.setdefault(name, {})[item.nested_key[-1]] = json.loads(item.value_json)
    assert set(pictures) == {"pictures/masks", "pictures/curves"}, set(pictures)
    for value in pictures.values():
        assert value["_type"] == "images/separated" and value["count"] == 1, value
        (name,) = value["filenames"]
        with Image.open(run_dir / "files" / name) as png:
            assert png.format == "PNG" and (png.width, png.height) == (
                value["width"],
                value["height"],
            )
            assert png.width > 200 and png.height > 100

    # the recipe as the run's config, its credential redacted
    config = {
        _key(i): json.loads(i.value_json)
        for r in records
        if r.HasField("config")
        for i in r.config.update
    }
    recipe = config["recipe"]
    assert recipe["data"]["init_args"]["storage_options"] == {"token": REDACTED}
    assert recipe["trainer"]["max_steps"] == 6

    # checkpoints as `model` artifacts, one per save, each holding a loadable model.ckpt
    artifacts = [r.artifact for r in records if r.HasField("artifact")]
    assert len(artifacts) >= 2 and {a.type for a in artifacts} == {"model"}
    steps = set()
    for artifact in artifacts:
        (entry,) = artifact.manifest.contents
        assert entry.path == "model.ckpt" and entry.size > 0
        state = torch.load(entry.local_path, map_location="cpu", weights_only=False)
        steps.add(state["global_step"])
    assert {3, 6} <= steps, steps

    # the secret is in no file the run wrote (wandb's, the loggers', the config, checkpoints)
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path
