"""How a labels file's ids find their samples: by path from the end, never by guesswork."""

from __future__ import annotations

import pytest

from fmtrain.eval.labels import match_labels, read_label_table


def _table(tmp_path, header, rows, name="labels.tsv"):
    sep = "\t" if name.endswith(".tsv") else ","
    path = tmp_path / name
    path.write_text("\n".join(sep.join(r) for r in [header, *rows]) + "\n")
    return read_label_table(path)


SAMPLES = [
    {"key": "site_a/p1/scan.dcm", "paths": ["/data/site_a/p1/scan.dcm"]},
    {"key": "site_b/p2/scan.dcm", "paths": ["/data/site_b/p2/scan.dcm"]},
    {"key": "site_b/p3/other.nii.gz", "paths": ["/data/site_b/p3/other.nii.gz"]},
]


def test_the_longest_agreeing_path_wins_and_a_bare_shared_name_is_ambiguous(tmp_path):
    table = _table(
        tmp_path,
        ["path", "grade"],
        [
            ["/mnt/elsewhere/site_a/p1/scan.dcm", "a"],  # another machine's root
            ["p2/scan.dcm", "b"],  # relative to some other folder
            ["other", "c"],  # bare name without its .nii.gz
            ["scan.dcm", "x"],  # fits p1 and p2 equally: labels neither
        ],
    )
    matched = match_labels(table, SAMPLES)
    assert {k: r["grade"] for k, r in matched.rows.items()} == {
        "site_a/p1/scan.dcm": "a",
        "site_b/p2/scan.dcm": "b",
        "site_b/p3/other.nii.gz": "c",
    }
    assert matched.ambiguous_ids == ["scan.dcm"]
    summary = matched.summary(table)
    assert "3 of 3 samples matched by column 'path'" in summary and "1 ids are ambiguous" in summary


def test_two_ids_for_one_sample_keep_the_closer_one_and_equal_ones_label_nothing(tmp_path):
    closer = _table(tmp_path, ["filepath", "g"], [["p1/scan.dcm", "near"], ["q/scan.dcm", "far"]])
    only = SAMPLES[:1]
    assert match_labels(closer, only).rows["site_a/p1/scan.dcm"]["g"] == "near"
    twice = _table(tmp_path, ["filepath", "g"], [["p1/scan.dcm", "a"], ["p1/scan.dcm", "b"]])
    with pytest.raises(ValueError, match="no id in column 'filepath' matches a sample"):
        match_labels(twice, only)  # a duplicated id is no label, not the first or last one


def test_a_header_without_an_id_column_names_the_accepted_ones(tmp_path):
    (tmp_path / "l.csv").write_text("subject,grade\n1,a\n")
    with pytest.raises(ValueError, match=r"l.csv: .*one of \['filepath', 'path'"):
        read_label_table(tmp_path / "l.csv")
