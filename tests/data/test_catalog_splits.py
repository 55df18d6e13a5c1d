"""Manifests, file lists and folders -> items; participant-level, device-stratified splits."""

import shutil
from collections import Counter, defaultdict

import pytest

from fmtrain.data.splits import assign_splits
from fmtrain.data.volumes.catalog import CatalogItem, read_catalog
from fmtrain.data.volumes.errors import VolumeReadError
from fmtrain.data.volumes.manifest import MANIFEST_COLUMNS


def _manifest_line(participant: str, device: str, path: str, spacing: str = "0.004,0.011"):
    values = {c: "" for c in MANIFEST_COLUMNS}
    values.update(
        participant_id=participant,
        manufacturer="Maker",
        manufacturers_model_name=device,
        anatomic_region="macula",
        imaging="oct",
        laterality="R",
        height="496",
        width="768",
        number_of_frames="61",
        pixel_spacing=spacing,
        slice_thickness="0.12",
        sop_instance_uid="1.2.3",
        filepath=path,
    )
    return "\t".join(values[c] for c in MANIFEST_COLUMNS)


def test_manifest_rows_become_items_and_bad_rows_are_counted(tmp_path):
    # a metadata value that does not parse is a hint lost, not a file lost: the row is kept
    lines = [
        "\t".join(MANIFEST_COLUMNS),
        _manifest_line("1001", "Spectralis", "a/1.dcm"),
        "",  # an empty row
        _manifest_line("1002", "Maestro2", "b/2.dcm", spacing="not-a-number"),
        _manifest_line("", "Maestro2", "b/3.dcm"),  # no participant
        _manifest_line("1003", "Maestro2", "s3://bucket/4.dcm"),
    ]
    (tmp_path / "manifest.tsv").write_text("\n".join(lines) + "\n")
    catalog = read_catalog(str(tmp_path / "manifest.tsv"))
    assert [i.key for i in catalog.items] == ["a/1.dcm", "b/2.dcm", "s3://bucket/4.dcm"]
    assert catalog.items[0].paths == (f"{tmp_path}/a/1.dcm",)
    assert catalog.items[2].paths == ("s3://bucket/4.dcm",)  # URLs are kept as they are
    assert catalog.items[0].device == "Spectralis"
    assert catalog.items[0].attributes["laterality"] == "R"
    assert [s["reason"] for s in catalog.skipped] == ["bad_manifest_row"] * 2
    details = " | ".join(s["detail"] for s in catalog.skipped)
    assert "empty participant_id" in details
    assert catalog.unread_hints == {"pixel_spacing": 1}


def test_csv_file_list_and_plain_list(tmp_path):
    (tmp_path / "list.csv").write_text("path,participant_id,label\nx.nii.gz,p1,3\ny.dcm,,\n")
    items = read_catalog(str(tmp_path / "list.csv")).items
    assert [(i.key, i.participant_id) for i in items] == [("x.nii.gz", "p1"), ("y.dcm", "y.dcm")]
    assert items[0].attributes == {"label": "3"}
    (tmp_path / "list.txt").write_text("/data/one.nii\n\nrel/two,with,commas.dcm\n")
    items = read_catalog(str(tmp_path / "list.txt")).items
    assert [i.paths[0] for i in items] == ["/data/one.nii", f"{tmp_path}/rel/two,with,commas.dcm"]


def test_folder_scan_groups_single_frame_dicoms_into_a_series(tmp_path):
    import numpy as np
    from pydicom.data import get_testdata_file

    (tmp_path / "nifti").mkdir()
    (tmp_path / "nifti" / "a.nii.gz").write_bytes(b"")
    series = tmp_path / "ct_series"
    series.mkdir()
    one_frame = get_testdata_file("CT_small.dcm")
    for k in range(3):
        shutil.copy(one_frame, series / f"slice{k}.dcm")
    (tmp_path / "mr").mkdir()
    multi = get_testdata_file("emri_small.dcm")
    shutil.copy(multi, tmp_path / "mr" / "mr.dcm")
    (tmp_path / "notes.txt").write_text("not a volume")
    items = {i.key: i for i in read_catalog(str(tmp_path)).items}
    assert sorted(items) == ["ct_series", "mr/mr.dcm", "nifti/a.nii.gz"]
    assert len(items["ct_series"].paths) == 3
    assert np.all([p.endswith(".dcm") for p in items["ct_series"].paths])


def test_missing_source_and_empty_list_say_what_was_searched(tmp_path):
    with pytest.raises(VolumeReadError) as err:
        read_catalog(str(tmp_path / "nope.tsv"))
    assert err.value.reason == "missing_file"
    (tmp_path / "empty.csv").write_text("path,participant_id\n,p1\n")
    with pytest.raises(ValueError, match="no usable rows"):
        read_catalog(str(tmp_path / "empty.csv"))
    (tmp_path / "folder").mkdir()
    with pytest.raises(ValueError, match=r"no \*\.nii"):
        read_catalog(str(tmp_path / "folder"))


def test_filters_and_a_filter_that_matches_nothing(tmp_path):
    lines = ["\t".join(MANIFEST_COLUMNS)]
    lines += [
        _manifest_line(f"{i}", ["Spectralis", "Maestro2"][i % 2], f"{i}.dcm") for i in range(6)
    ]
    (tmp_path / "manifest.tsv").write_text("\n".join(lines) + "\n")
    catalog = read_catalog(str(tmp_path / "manifest.tsv"))
    assert len(catalog.filter(devices=["spectralis"]).items) == 3
    with pytest.raises(ValueError, match=r"Maestro2.*Spectralis"):
        catalog.filter(devices=["Cirrus"])


def _items(num_participants: int, devices: list[str], scans_per_participant: int = 2):
    return [
        CatalogItem(f"{p}-{s}", (f"{p}-{s}.dcm",), f"p{p}", devices[p % len(devices)])
        for p in range(num_participants)
        for s in range(scans_per_participant)
    ]


def test_splits_are_participant_disjoint_stratified_and_deterministic():
    devices = ["Spectralis", "Maestro2", "Triton", "Cirrus"]
    items = _items(400, devices)
    fractions = {"train": 0.8, "val": 0.1, "test": 0.1}
    first = assign_splits(items, fractions, seed=3)
    assert first == assign_splits(items, fractions, seed=3)
    assert first != assign_splits(items, fractions, seed=4)
    assert set(first) == {i.participant_id for i in items}  # one split per participant
    per_device = defaultdict(Counter)
    for participant, split in first.items():
        per_device[devices[int(participant[1:]) % 4]][split] += 1
    for counts in per_device.values():  # 100 participants per device -> 80/10/10 each
        assert counts == {"train": 80, "val": 10, "test": 10}


def test_adding_a_device_does_not_reshuffle_the_others():
    base = _items(40, ["Spectralis"])
    grown = [*base, CatalogItem("new", ("new.dcm",), "q1", "Cirrus")]
    before = assign_splits(base, {"train": 0.5, "val": 0.5}, seed=0)
    after = assign_splits(grown, {"train": 0.5, "val": 0.5}, seed=0)
    assert all(after[p] == s for p, s in before.items())


def test_bad_fractions_are_refused():
    with pytest.raises(ValueError, match="sum to 1"):
        assign_splits(_items(4, ["a"]), {"train": 0.5, "val": 0.4})
