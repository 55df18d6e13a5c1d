"""`fmtrain embed --files`: new volume files embed exactly as their prepared copies would."""

from __future__ import annotations

import csv
from pathlib import Path

import nilearn
import numpy as np
import pytest
import torch
from pydicom.data import get_testdata_file

from fmtrain.cli.evaluate import embed_main, load_pretrained
from tests.conftest import TINY_RECIPE

MNI = Path(nilearn.__file__).parent / "datasets" / "data"
T1, GM = (MNI / f"mni_icbm152_{k}_tal_nlin_sym_09a_converted.nii.gz" for k in ("t1", "gm"))
# the tiny recipe's 8 x 32 x 32 input over the whole 189 x 233 x 197 mm MNI head
SPACING = "--data.init_args.spacing=[24.0, 7.5, 6.5]"


@pytest.fixture(scope="module")
def fresh_checkpoint(tmp_path_factory):
    """The tiny recipe's method as built (random weights), saved as a checkpoint: embedding
    needs weights that load, not trained ones."""
    out = tmp_path_factory.mktemp("embed_files")
    module, _ = load_pretrained(str(TINY_RECIPE), None, [SPACING])
    ckpt = out / "fresh.ckpt"
    torch.save({"state_dict": module.state_dict(), "global_step": 0}, ckpt)
    return str(ckpt)


def _embed(args: list[str]) -> int:
    """`fmtrain embed` in this process, as the shell runs it: errors end with an exit code."""
    from fmtrain.cli import main

    try:
        main(["embed", str(TINY_RECIPE), *args, f"--overrides+={SPACING}"])
    except SystemExit as exit:
        return int(exit.code or 0)
    return 0


def test_files_are_embedded_with_their_paths_as_ids_and_bad_ones_skipped(
    fresh_checkpoint, tmp_path, capsys
):
    not_a_volume = tmp_path / "notes.nii.gz"
    not_a_volume.write_text("not a NIfTI file")
    mr = get_testdata_file("MR_small.dcm")
    files = [str(T1), mr, get_testdata_file("rtplan.dcm"), str(not_a_volume), str(GM)]
    files.append(str(tmp_path / "missing.dcm"))
    out = tmp_path / "emb.npz"
    assert _embed(["--ckpt", fresh_checkpoint, "--files", *files, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"3 file(s) embedded into {out}; 3 skipped (" in printed
    saved = np.load(out)
    assert list(saved["ids"]) == [str(T1), mr, str(GM)]
    assert saved["embeddings"].shape == (3, 64) and np.isfinite(saved["embeddings"]).all()
    assert np.unique(saved["embeddings"], axis=0).shape[0] == 3
    # DICOM headers name the participant and device; NIfTI has neither
    assert list(saved["participants"]) == ["", "4MR1", ""]
    assert list(saved["devices"]) == ["", "MRT50H1", ""]
    reasons = dict(zip(saved["skipped"], saved["skipped_reasons"], strict=True))
    assert set(reasons) == {files[2], files[3], files[5]}
    # an RT plan has no image (the reader names why), a missing path is missing
    assert reasons[files[2]].split(":")[0] in {"not_an_image", "no_pixel_data", "unsupported"}
    assert reasons[files[5]].startswith("missing_file: ")


def test_a_file_embeds_as_its_prepared_copy_and_a_list_file_works(
    fresh_checkpoint, tmp_path, capsys
):
    # the same two MNI templates as the recipe's data: prepared, then embedded as a split
    listing = tmp_path / "source.csv"
    with open(listing, "w", newline="") as f:
        csv.writer(f).writerows([["path", "participant_id"], [T1, "t1"], [GM, "gm"]])
    source = [f"--data.init_args.source={listing}", "--data.init_args.split_fractions={train: 1.0}"]
    prepared = tmp_path / "split.npz"
    args = ["--ckpt", fresh_checkpoint, "--split", "train", "--out", str(prepared)]
    assert _embed(args + [f"--overrides+={o}" for o in source]) == 0
    # and as new files, named in a text list with a comment and a relative path
    (tmp_path / "gm.nii.gz").symlink_to(GM)
    (tmp_path / "files.txt").write_text(f"# two templates\n{T1}\n\ngm.nii.gz\n")
    files = tmp_path / "files.npz"
    assert _embed(["--ckpt", fresh_checkpoint, "--files", str(tmp_path / "files.txt"),
                   "--out", str(files)]) == 0  # fmt: skip
    capsys.readouterr()
    by_split, by_file = np.load(prepared), np.load(files)
    assert list(by_file["ids"]) == [str(T1), "gm.nii.gz"]
    order = [list(by_split["ids"]).index(str(p)) for p in (T1, GM)]
    np.testing.assert_allclose(by_file["embeddings"], by_split["embeddings"][order], atol=1e-5)


def test_no_readable_file_is_one_line_naming_the_reasons(fresh_checkpoint, tmp_path, capsys):
    rtplan = get_testdata_file("rtplan.dcm")
    assert (
        _embed(["--ckpt", fresh_checkpoint, "--files", rtplan, "--out", str(tmp_path / "e")]) == 2
    )
    lines = capsys.readouterr().err.strip().splitlines()
    err = [line for line in lines if not line.startswith("[fmtrain] ")]  # progress messages
    assert len(err) == 1, lines
    assert err[0].startswith(
        "fmtrain embed: error: none of the 1 file(s) could be read as a volume ("
    )
    assert f"{rtplan}: " in err[0]


def test_a_file_far_finer_than_the_recipe_expects_is_skipped_not_resampled(
    fresh_checkpoint, tmp_path, capsys
):
    # the tiny OCT recipe's own spacing (0.75 x 0.06 x 0.19 mm) would make the 1 mm MNI head
    # about 10^9 voxels; the MR slice at 0.8 x 0.31 mm stays small
    out = tmp_path / "e.npz"
    mr = get_testdata_file("MR_small.dcm")
    args = [str(TINY_RECIPE), "--ckpt", fresh_checkpoint, "--files", str(T1), mr]
    assert embed_main([*args, "--out", str(out)]) == 0
    capsys.readouterr()
    saved = np.load(out)
    assert list(saved["ids"]) == [mr] and list(saved["skipped"]) == [str(T1)]
    assert saved["skipped_reasons"][0].startswith("too_large_after_resampling: 189x233x197 voxels")
