"""`fmtrain demo --modality signals` end to end on a few recordings: it trains, probes the
frozen encoder against random-init ones, and writes a report with the reconstruction and
spectra picture."""

from __future__ import annotations

import json

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
    probe = json.loads((tmp_path / "probe" / "probe.json").read_text())
    assert {"heart_rate", "rhythm", "noise"} <= set(probe["pretrained"]["tasks"])
    assert "heart_rate" in (tmp_path / "probe" / "probe.txt").read_text()
    assert json.loads((tmp_path / "results.json").read_text())["wall_seconds"] > 0
