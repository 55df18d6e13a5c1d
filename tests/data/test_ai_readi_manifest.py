"""AI-READI's manifest as released: metadata columns in the release's own value forms are
hints that never cost a file, and `filepath`s that begin with "/" are relative to the
dataset's root, on local disk and in a bucket (a real S3 server on loopback)."""

import json
import logging
import shutil
from pathlib import Path

import pytest
import s3fs

from fmtrain.check.runner import run_check
from fmtrain.cli import main, run_cli
from fmtrain.data.volumes.catalog import read_catalog
from fmtrain.data.volumes.errors import PrepareFailed
from fmtrain.data.volumes.manifest import MANIFEST_COLUMNS, parse_hint, read_manifest
from fmtrain.data.volumes.prepare import prepare_dataset
from tests.conftest import TINY_RECIPE
from tests.data.buckets import upload

# how the release writes the metadata of some rows (one form per row, in turn)
RELEASE_FORMS = (
    {"pixel_spacing": "[{row}, {column}]"},
    {"pixel_spacing": "Varies by frame", "slice_thickness": "Not reported"},
    {"pixel_spacing": "{row} {column}", "height": ""},
    {"pixel_spacing": "{row}\\{column}", "number_of_frames": "Not reported"},
)


@pytest.mark.parametrize(
    "text, value",
    [
        ("0.0039,0.0113", (0.0039, 0.0113)),
        ("[0.003872, 0.01206]", (0.003872, 0.01206)),
        ("0.0039 0.0113", (0.0039, 0.0113)),
        ("0.0039\\0.0113", (0.0039, 0.0113)),
        ("(0.0039, 0.0113)", (0.0039, 0.0113)),
        ("Varies by frame", None),
        ("Not reported", None),
        ("  not  REPORTED ", None),
        ("", None),
    ],
)
def test_release_value_forms_of_pixel_spacing(text, value):
    assert parse_hint("pixel_spacing", text) == value


@pytest.mark.parametrize("text", ["abc", "0.1,0.2,0.3", "-0.1,0.2", "0.1"])
def test_a_value_that_is_no_form_at_all_is_refused_by_the_parser(text):
    with pytest.raises(ValueError, match=r"two numbers|positive number"):
        parse_hint("pixel_spacing", text)


def write_release(generated: Path, root: Path, manifest_dir: str = "") -> Path:
    """`generated` (fmtrain's synthetic OCT) laid out as AI-READI releases it: files under
    retinal_oct/structural_oct/<device>/<participant>/, a manifest whose filepaths begin
    with "/" (relative to `root`) and whose metadata use the release's value forms, one
    width that is no form at all. Returns the manifest's path."""
    lines = (generated / "manifest.tsv").read_text().splitlines()
    header = lines[0].split("\t")
    col = {name: header.index(name) for name in MANIFEST_COLUMNS}
    out = [lines[0]]
    for i, line in enumerate(lines[1:]):
        fields = line.split("\t")
        source = generated / fields[col["filepath"]]
        device, participant = source.parent.parent.name, source.parent.name
        released = Path("retinal_oct", "structural_oct", device, participant, source.name)
        (root / released).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, root / released)
        fields[col["filepath"]] = "/" + released.as_posix()
        row, column = fields[col["pixel_spacing"]].split(",")
        for name, form in RELEASE_FORMS[i % len(RELEASE_FORMS)].items():
            fields[col[name]] = form.format(row=row, column=column)
        if i == 1:
            fields[col["width"]] = "see protocol"
        out.append("\t".join(fields))
    manifest = root / manifest_dir / "manifest.tsv"
    manifest.parent.mkdir(parents=True, exist_ok=True)
    manifest.write_text("\n".join(out) + "\n")
    return manifest


def prepare_tiny(source: str, out, **kwargs):
    """`prepare_dataset` at the tiny test geometry, in this process, quietly."""
    return prepare_dataset(
        source, str(out), spacing=(0.75, 0.06, 0.19), size=(8, 32, 32), workers=1,
        progress=False, **kwargs,
    )  # fmt: skip


def test_a_release_on_local_disk_lists_every_file(oct_dataset, tmp_path, caplog):
    manifest = write_release(oct_dataset, tmp_path)
    with caplog.at_level(logging.WARNING, logger="fmtrain.data"):
        catalog = read_catalog(str(manifest))
    assert len(catalog.items) == 12 and catalog.skipped == []
    for item in catalog.items:
        assert item.key.startswith("/retinal_oct/structural_oct/")
        assert Path(item.paths[0]).is_file()
        assert item.paths[0].startswith(str(tmp_path))
    assert catalog.unread_hints == {"width": 1}
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1
    assert "column width: 1 value(s) not read" in warnings[0] and "'see protocol'" in warnings[0]


def test_the_typed_reader_keeps_the_row_of_an_unread_hint(oct_dataset, tmp_path):
    manifest = write_release(oct_dataset, tmp_path)
    rows = read_manifest(manifest)
    assert len(rows) == 12
    assert rows[0].pixel_spacing is not None and rows[1].pixel_spacing is None
    assert rows[1].width is None and rows[1].slice_thickness is None
    assert rows[2].height is None and rows[2].pixel_spacing is not None
    assert rows[3].number_of_frames is None and rows[3].pixel_spacing is not None
    assert rows[0].height is not None and rows[0].width is not None


def test_only_a_missing_participant_or_filepath_or_field_count_skips_a_row(tmp_path):
    manifest = tmp_path / "manifest.tsv"
    row = dict.fromkeys(MANIFEST_COLUMNS, "Not reported")
    row |= {"participant_id": "1001", "filepath": "/a.dcm", "pixel_spacing": "nonsense"}
    lines = ["\t".join(MANIFEST_COLUMNS), "\t".join(row[c] for c in MANIFEST_COLUMNS)]
    lines.append("\t".join({**row, "participant_id": ""}[c] for c in MANIFEST_COLUMNS))
    lines.append("\t".join({**row, "filepath": " "}[c] for c in MANIFEST_COLUMNS))
    lines.append("\t".join(row[c] for c in MANIFEST_COLUMNS[:-1]))
    manifest.write_text("\n".join(lines) + "\n")
    catalog = read_catalog(str(manifest))
    assert [i.key for i in catalog.items] == ["/a.dcm"]
    assert catalog.items[0].paths == (f"{tmp_path}/a.dcm",)
    details = [s["detail"] for s in catalog.skipped]
    assert details == ["empty participant_id", "empty filepath", "14 fields but the header has 15"]
    assert catalog.unread_hints == {"pixel_spacing": 1}


def test_root_places_the_release_when_the_manifest_sits_elsewhere(oct_dataset, tmp_path):
    manifest = write_release(oct_dataset, tmp_path, manifest_dir="retinal_oct")
    wrong = read_catalog(str(manifest))  # the manifest's folder is not the release's root
    assert not Path(wrong.items[0].paths[0]).exists()
    catalog = read_catalog(str(manifest), root=str(tmp_path))
    assert all(Path(i.paths[0]).is_file() for i in catalog.items)


def test_an_absolute_local_path_that_exists_is_taken_as_it_is(oct_dataset, tmp_path):
    file = sorted(oct_dataset.rglob("*.dcm"))[0]
    row = dict.fromkeys(MANIFEST_COLUMNS, "")
    row |= {"participant_id": "1001", "filepath": str(file)}
    manifest = tmp_path / "elsewhere" / "manifest.tsv"
    manifest.parent.mkdir()
    manifest.write_text("\t".join(MANIFEST_COLUMNS) + "\n" + "\t".join(row.values()) + "\n")
    assert read_catalog(str(manifest)).items[0].paths == (str(file),)


def test_prepare_reads_every_file_of_a_release(oct_dataset, tmp_path):
    manifest = write_release(oct_dataset, tmp_path / "release", manifest_dir="retinal_oct")
    dataset = prepare_tiny(
        str(manifest),
        tmp_path / "prepared",
        split_fractions={"train": 0.75, "val": 0.25},
        root=str(tmp_path / "release"),
    )
    counts = dataset.summary["counts"]
    assert counts["written"] == 12 and counts["skipped"] == 0
    assert dataset.summary["unread_manifest_hints"] == {"width": 1}


@pytest.mark.slow
def test_a_release_on_local_disk_goes_through_prepare_check_and_fit_with_every_file(
    oct_dataset, tmp_path
):
    manifest = write_release(oct_dataset, tmp_path / "release")
    prepared = tmp_path / "prepared"
    main(["prepare", str(manifest), str(prepared), "--size=[8,32,32]",
          "--spacing=[0.75,0.06,0.19]", '--split_fractions={"train": 0.75, "val": 0.25}',
          "--workers=1", "--progress=false"])  # fmt: skip
    summary = json.loads((prepared / "summary.json").read_text())
    assert summary["counts"]["written"] == 12 and summary["counts"]["skipped"] == 0
    assert summary["unread_manifest_hints"] == {"width": 1}
    args = [f"--data.init_args.source={manifest}", f"--data.init_args.prepared={prepared}"]
    args += [f"--trainer.default_root_dir={tmp_path}", "--data.init_args.num_workers=0"]
    args += [f"--trainer.logger.init_args.save_dir={tmp_path}"]
    report = run_check(str(TINY_RECIPE), args, str(tmp_path / "check"))
    assert not report.errors, "\n".join(str(p) for p in report.problems)
    cli = run_cli(["fit", "--config", str(TINY_RECIPE), *args, "--trainer.max_steps=3"])
    assert cli.trainer.global_step == 3
    assert len(cli.datamodule.train_set) + len(cli.datamodule.val_set) == 12  # every file


def test_a_release_in_a_bucket_resolves_inside_the_bucket(oct_dataset, s3_bucket, tmp_path):
    url, options = s3_bucket
    write_release(oct_dataset, tmp_path / "release")
    upload(tmp_path / "release", f"{url}/OCTdata", options)
    fs = s3fs.S3FileSystem(**options)
    catalog = read_catalog(f"{url}/OCTdata/manifest.tsv", options)
    assert len(catalog.items) == 12 and catalog.skipped == []
    for item in catalog.items:
        assert item.paths[0] == f"{url}/OCTdata{item.key}"
        assert fs.exists(item.paths[0])
    dataset = prepare_tiny(
        f"{url}/OCTdata/manifest.tsv",
        tmp_path / "prepared",
        split_fractions={"train": 0.75, "val": 0.25},
        storage_options=options,
        cache_dir=str(tmp_path / "cache"),
    )
    assert dataset.summary["counts"]["written"] == 12


def test_files_missing_under_the_default_root_name_the_root_setting(oct_dataset, tmp_path):
    manifest = write_release(oct_dataset, tmp_path / "release", manifest_dir="retinal_oct")
    with pytest.raises(PrepareFailed) as failed:
        prepare_tiny(str(manifest), tmp_path / "prepared")
    message = str(failed.value)
    assert "missing_file 12" in message
    assert f"{tmp_path}/release/retinal_oct/retinal_oct/structural_oct/" in message
    assert "--root" in message and "data.init_args.root" in message
