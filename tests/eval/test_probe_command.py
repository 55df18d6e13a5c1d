"""`fmtrain probe` and `fmtrain embed` end to end on a tiny pretrained checkpoint."""

import csv
import json
import warnings

import numpy as np
import pytest

from fmtrain.cli import run_cli
from fmtrain.cli.evaluate import embed as run_embed
from fmtrain.cli.evaluate import load_pretrained
from fmtrain.cli.evaluate import probe as run_probe
from fmtrain.data.volumes.prepared import PreparedDataset
from tests.conftest import TINY_RECIPE


def _exit_code(*args: str) -> int:
    """`fmtrain ARGS` in this process, as the shell runs it: errors end with an exit code."""
    from fmtrain.cli import main

    try:
        main(list(args))
    except SystemExit as exit:
        return int(exit.code or 0)
    return 0


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


# 24 participants, half of each device's in the test split: 12 test participants, enough
# for a participant-level interval on a balanced two-class task
HALVES = "--data.init_args.split_fractions={train: 0.5, test: 0.5}"


@pytest.fixture(scope="module")
def probe_dataset(tmp_path_factory):
    """24 real DICOM volumes, prepared with half the participants in the test split; returns
    (manifest folder, overrides, {split: sample records})."""
    from fmtrain.data.synthetic.generate import generate_oct_dataset

    root = tmp_path_factory.mktemp("oct24")
    generate_oct_dataset(root, num_participants=24, scale=0.1, seed=1, workers=1)
    overrides = [f"--data.init_args.source={root}/manifest.tsv", HALVES]
    _, dm = load_pretrained(str(TINY_RECIPE), None, overrides)
    dm.prepare_data()
    samples = {k: dm.evaluation_split(k).samples for k in ("train", "test")}
    return root, overrides, samples


def _write_labels(path, header, rows):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f, delimiter="\t")
        writer.writerow(header)
        writer.writerows(rows)
    return str(path)


@pytest.mark.slow
def test_probe_matches_labels_given_as_absolute_paths_and_scores_every_task(
    probe_dataset, tiny_checkpoint, tmp_path
):
    """Reported: a labels file with absolute paths matched nothing and the error said
    `train labels hold one class array([], dtype=object)`."""
    root, overrides, samples = probe_dataset
    ckpt, _ = tiny_checkpoint
    rows = []
    for split, records in samples.items():
        for i, s in enumerate(records):
            # alternating within each split: six test participants of each class
            thickness = 0.2 + 0.01 * i
            # a target that is constant on the test split: its R² is undefined there, which
            # raises a Python warning in the bootstrap (once per probe and encoder)
            constant = 1.0 if split == "test" else float(i)
            rows.append([str(root / s["key"]), "ab"[i % 2], thickness, constant])
    labels = _write_labels(
        tmp_path / "labels.tsv", ["filepath", "grade", "thickness_mm", "constant"], rows
    )
    with warnings.catch_warnings(record=True) as leaked:
        warnings.simplefilter("always")
        result = run_probe(
            str(TINY_RECIPE),
            ckpt,
            labels=labels,
            out_dir=str(tmp_path),
            random_seeds=2,
            probes=("linear", "knn"),
            n_boot=50,
            overrides=overrides,
        )
    assert "24 of 24 samples matched" in result["labels_matched"]
    tasks = {t["name"]: t["kind"] for t in result["tasks"]}
    assert tasks == {
        "grade": "classification",
        "thickness_mm": "regression",
        "constant": "regression",
    }
    assert result["refused"] == {}
    assert len(result["random"]) == 2
    entry = result["pretrained"]["tasks"]["grade"]
    assert entry["n_train"] == entry["n_test"] == 12 and entry["n_test_participants"] == 12
    rows = result["comparison"]["rows"]
    assert {(r["task"], r["probe"]) for r in rows} >= {("grade", "linear"), ("thickness_mm", "knn")}
    for row in rows:
        assert len(row["random"]["values"]) == 2
        gain = row["gain"]["value"]
        # the gain is an improvement: for MAE (lower is better) random − pretrained
        sign = 1 if row["higher_is_better"] else -1
        expected = sign * (row["pretrained"]["value"] - np.mean(row["random"]["values"]))
        assert np.isnan(gain) or gain == pytest.approx(expected, abs=1e-9)
    # Python warnings were counted and summarised, none reached the caller
    assert not [w for w in leaked if "undefined" in str(w.message)]
    counted = result["warnings"]
    assert counted["count"] > 0
    assert any(
        k.startswith("RuntimeWarning:") and "undefined on the full test set" in k
        for k in counted["kinds"]
    )
    assert json.loads((tmp_path / "probe.json").read_text())["warnings"] == counted
    assert "+ = pretrained better" in (tmp_path / "probe.txt").read_text()


@pytest.mark.slow
def test_labels_by_file_name_relative_path_or_stem_all_match(probe_dataset, tmp_path):
    from fmtrain.eval.labels import match_labels, read_label_table

    root, _, samples = probe_dataset
    records = samples["train"] + samples["test"]
    forms = {
        "bare file name": lambda k: k.rsplit("/", 1)[1],
        "file name without extension": lambda k: k.rsplit("/", 1)[1].removesuffix(".dcm"),
        "relative path": lambda k: "/".join(k.split("/")[-3:]),
        "absolute path": lambda k: str(root / k),
    }
    for name, form in forms.items():
        rows = [[form(s["key"]), str(i)] for i, s in enumerate(records)]
        table = read_label_table(_write_labels(tmp_path / "l.tsv", ["path", "n"], rows))
        matched = match_labels(table, records)
        assert len(matched.rows) == 24, name
        assert all(matched.rows[s["key"]]["n"] == str(i) for i, s in enumerate(records)), name


@pytest.mark.slow
def test_labels_that_match_nothing_are_one_error_with_examples_of_both_sides(
    probe_dataset, tiny_checkpoint, tmp_path, capsys
):

    _, overrides, samples = probe_dataset
    ckpt, _ = tiny_checkpoint
    labels = _write_labels(
        tmp_path / "labels.tsv",
        ["filepath", "grade"],
        [["/elsewhere/scan_1.nii.gz", "a"], ["/elsewhere/scan_2.nii.gz", "b"]],
    )
    args = [str(TINY_RECIPE), "--ckpt", ckpt, "--labels", labels, "--out_dir", str(tmp_path)]
    assert _exit_code("probe", *args, *[f"--overrides+={o}" for o in overrides]) == 2
    err = capsys.readouterr().err
    assert "array(" not in err and "Traceback" not in err
    assert f"{labels}: no id in column 'filepath' matches a sample" in err
    assert "'/elsewhere/scan_1.nii.gz', '/elsewhere/scan_2.nii.gz'" in err
    assert repr(samples["train"][0]["key"]) in err and repr(samples["train"][1]["key"]) in err
    assert "matched by path from the end" in err


@pytest.mark.slow
def test_a_one_class_label_column_is_refused_naming_the_file_and_column(
    probe_dataset, tiny_checkpoint, tmp_path
):
    _, overrides, samples = probe_dataset
    ckpt, _ = tiny_checkpoint
    records = samples["train"] + samples["test"]
    labels = _write_labels(
        tmp_path / "labels.tsv",
        ["filepath", "grade"],
        [[s["key"], "a"] for s in records],
    )
    with pytest.raises(ValueError) as err:
        run_probe(str(TINY_RECIPE), ckpt, labels=labels, out_dir=str(tmp_path),
                  overrides=overrides)  # fmt: skip
    text = str(err.value)
    assert f"{labels}, column 'grade'" in text and "hold 1 class ['a']" in text
    assert "array(" not in text


@pytest.mark.slow
def test_a_one_volume_test_split_is_refused_with_how_many_are_needed(
    oct_dataset, tiny_checkpoint, tmp_path, capsys
):
    """Reported: a one-volume test split still gave a table with a starred gain."""

    ckpt, _ = tiny_checkpoint
    # a file list without devices: the 12 participants form one group, 11 train / 1 test
    listing = tmp_path / "files.csv"
    with open(listing, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "participant_id"])
        for path in sorted(oct_dataset.glob("retinal_oct/*/*/*.dcm")):
            writer.writerow([str(path), path.parent.name])
    overrides = [
        f"--data.init_args.source={listing}",
        "--data.init_args.split_fractions={train: 0.92, test: 0.08}",
    ]
    args = [str(TINY_RECIPE), "--ckpt", ckpt, "--labels", str(oct_dataset / "labels.tsv")]
    args += ["--out_dir", str(tmp_path / "out"), "--n_boot", "50"]
    assert _exit_code("probe", *args, *[f"--overrides+={o}" for o in overrides]) == 2
    err = capsys.readouterr().err
    assert "no task can be probed" in err
    assert "column 'foveal_thickness_mm': the test split has 1 labelled participant" in err
    assert "needs at least 4" in err
    assert "column 'pathology': the test split's 1 labelled participant(s) hold one class" in err
    assert "5 participants of each" in err
    assert not (tmp_path / "out" / "probe.txt").exists()  # no table, so no starred gain


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
    from fmtrain.eval.probe_tasks import Task

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
    train, train_labels = split(["A"] * 20 + ["B"] * 10, ["a", "b"] * 10 + ["c"] * 10, "tr")
    test, test_labels = split(["A"] * 15 + ["B"] * 15, ["a", "b", "c"] * 10, "te")
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
    assert _exit_code("embed", str(TINY_RECIPE), "--out", str(out)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "fmtrain embed: error: --ckpt is required: the checkpoint to embed with (e.g. last.ckpt)"
    ]


def test_only_the_subcommands_fmtrain_supports_are_offered(capsys):
    from fmtrain.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["test", "--config", str(TINY_RECIPE)])
    assert exit_.value.code != 0
    assert "'test'" in capsys.readouterr().err  # argparse: invalid choice, fit or validate
