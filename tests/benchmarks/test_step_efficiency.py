"""benchmarks/step_efficiency.py end to end on the tiny V-JEPA recipe (a real process: it
writes generated data, times bare and Lightning steps and the loader, and writes its JSON),
and a recipe over its time budget is skipped with the reason in the JSON, not dropped."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, TINY_RECIPE

pytestmark = pytest.mark.slow

SMALL = ["--steps=2", "--warmup=1", "--lightning_steps=2", "--lightning_warmup=1"]
SMALL += ["--workers", "0", "1", "--loader_batches=2", "--no_sweep"]


def _run(tmp_path: Path, *args: str) -> dict:
    out = tmp_path / "efficiency.json"
    cmd = [sys.executable, str(REPO / "benchmarks" / "step_efficiency.py"), *args, f"--out={out}"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"JSON: {out}" in proc.stdout
    return json.loads(out.read_text())


def test_tiny_recipe_is_measured_bare_in_lightning_and_loading(tmp_path):
    report = _run(tmp_path, "--recipes", str(TINY_RECIPE), *SMALL)
    peak = report["peaks"]["float32"]  # a CPU run: fp32 steps, an fp32 matmul peak
    assert peak["tflops"] > 0 and "measured" in peak["source"]
    (r,) = report["recipes"]
    assert "error" not in r, r.get("traceback")
    assert r["batch_size"] == 2 and r["tokens_per_sample"] == 64  # the recipe's 4x4x4 grid
    assert r["flops_per_sample"] > 0 and r["flops_counted_on"] == "fake tensors"
    assert r["bare"]["steps_timed"] == 2 and r["bare"]["samples_per_s"] > 0
    assert r["lightning"]["steps_timed"] == 2  # steady state: after the warm-up step
    assert r["lightning"]["overhead_vs_bare"] > 0 and r["bare"]["mfu"] > 0
    assert r["bare"]["drift_after_vs_before"] > 0  # bare steps again after the fit
    assert r["mfu_peak_dtype"] == "float32"
    assert r["memory"]["activations_mib"] > 0 and "not RSS" in r["memory"]["kind"]
    assert [x["workers"] for x in r["loader"]] == [0, 1]
    assert all(x["samples_per_s"] > 0 and x["batches_timed"] == 2 for x in r["loader"])


def test_a_recipe_over_its_budget_is_skipped_with_the_reason(tmp_path):
    report = _run(tmp_path, "--recipes", str(TINY_RECIPE), *SMALL, "--budget_s=0.5")
    (r,) = report["recipes"]
    assert "bare" not in r
    assert "exceed" in r["skipped"] and "--budget_s=0.5" in r["skipped"]
    assert r["flops_per_sample"] > 0  # what was measured before the budget ran out is kept
