"""`fmtrain probe` and `fmtrain embed` end to end on a tiny pretrained checkpoint."""

import numpy as np
import pytest

from fmtrain.cli import run_cli
from fmtrain.cli.evaluate import embed as run_embed
from fmtrain.cli.evaluate import probe as run_probe
from fmtrain.data.volumes.prepared import PreparedDataset
from tests.conftest import TINY_RECIPE


@pytest.fixture(scope="module")
def tiny_checkpoint(oct_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("probe_ckpt")
    cli = run_cli(
        [
            "fit",
            "--config",
            str(TINY_RECIPE),
            f"--data.init_args.source={oct_dataset}/manifest.tsv",
            "--trainer.max_steps=2",
            "--trainer.limit_val_batches=0",
            "--trainer.logger=false",
            f"--trainer.default_root_dir={out}",
            f"--checkpoint.dirpath={out}/ckpt",
        ]
    )
    return cli.trainer.checkpoint_callback.last_model_path, cli.datamodule.prepared


def _source(oct_dataset):
    return [f"--data.init_args.source={oct_dataset}/manifest.tsv"]


@pytest.mark.slow
def test_probe_scores_pretrained_and_random_encoders_on_the_generator_labels(
    oct_dataset, tiny_checkpoint, tmp_path
):
    ckpt, _ = tiny_checkpoint
    result = run_probe(
        str(TINY_RECIPE),
        ckpt,
        out_dir=str(tmp_path),
        test_split="val",
        random_seeds=2,
        probes=("linear", "knn"),
        n_boot=50,
        overrides=_source(oct_dataset),
    )
    tasks = {t["name"]: t["kind"] for t in result["tasks"]}
    assert tasks == {"pathology": "classification", "foveal_thickness_mm": "regression"}
    assert len(result["random"]) == 2
    rows = result["comparison"]["rows"]
    assert {(r["task"], r["probe"]) for r in rows} >= {
        ("pathology", "linear"),
        ("foveal_thickness_mm", "knn"),
    }
    for row in rows:
        assert len(row["random"]["values"]) == 2
        gain = row["gain"]["value"]
        expected = row["pretrained"]["value"] - np.mean(row["random"]["values"])
        assert np.isnan(gain) or gain == pytest.approx(expected, abs=1e-9)
    assert (tmp_path / "probe.json").exists() and "gain" in (tmp_path / "probe.txt").read_text()


def test_embed_writes_one_row_per_sample_with_its_id(oct_dataset, tiny_checkpoint, tmp_path):
    ckpt, prepared = tiny_checkpoint
    path = run_embed(
        str(TINY_RECIPE), ckpt, str(tmp_path / "e.npz"), split="val", overrides=_source(oct_dataset)
    )
    saved = np.load(path)
    samples = PreparedDataset(prepared).split("val").samples
    assert list(saved["ids"]) == [s["key"] for s in samples]
    assert list(saved["participants"]) == [s["participant_id"] for s in samples]
    assert saved["embeddings"].shape == (len(samples), 64)  # vit_test width
    assert np.isfinite(saved["embeddings"]).all()
    assert np.unique(saved["embeddings"], axis=0).shape[0] == len(samples)  # not constant


def test_device_shift_is_skipped_with_a_warning_when_its_training_rows_lack_a_class(caplog):
    from fmtrain.eval.probe_command import _score
    from fmtrain.eval.probes import Task

    rng = np.random.default_rng(0)

    def split(devices, classes, prefix):
        keys = [f"{prefix}{i}" for i in range(len(devices))]
        return {
            "pooled": rng.normal(size=(len(keys), 4)),
            "keys": keys,
            "participants": keys,
            "devices": devices,
        }, {k: {"filepath": k, "grade": c} for k, c in zip(keys, classes, strict=True)}

    # the most common training device (A) never shows class "c"; device B does
    train, train_labels = split(["A"] * 8 + ["B"] * 4, ["a", "b"] * 4 + ["c"] * 4, "tr")
    test, test_labels = split(["A"] * 4 + ["B"] * 4, ["a", "b"] * 2 + ["c"] * 4, "te")
    labels = train_labels | test_labels
    with caplog.at_level("WARNING", logger="fmtrain"):
        result = _score(
            {"train": train, "test": test}, labels, [Task("grade", "classification")], 0, 20,
            ("linear",),
        )  # fmt: skip
    assert list(result["tasks"]) == ["grade"]  # the main task is scored, the shift is not
    assert "device-shift probes skipped (trained on A)" in caplog.text


def test_embed_command_takes_the_checkpoint_as_ckpt_as_the_readme_says(
    oct_dataset, tiny_checkpoint, tmp_path, capsys
):
    from fmtrain.cli.evaluate import embed_main

    ckpt, _ = tiny_checkpoint
    out = tmp_path / "e.npz"
    args = [str(TINY_RECIPE), "--ckpt", ckpt, "--out", str(out), "--split", "val"]
    overrides = [f"--overrides+={o}" for o in _source(oct_dataset)]
    assert embed_main(args + overrides) == 0
    assert np.load(out)["embeddings"].shape[1] == 64
    capsys.readouterr()  # the progress bar of the run above
    # without it: one line that names the option, no traceback
    assert embed_main([str(TINY_RECIPE), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "fmtrain embed: --ckpt is required: the checkpoint to embed with (e.g. last.ckpt)"
    ]


def test_only_the_subcommands_fmtrain_supports_are_offered(capsys):
    from fmtrain.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["test", "--config", str(TINY_RECIPE)])
    assert exit_.value.code != 0
    assert "'test'" in capsys.readouterr().err  # argparse: invalid choice, fit or validate
