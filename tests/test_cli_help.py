"""`fmtrain --help` and the data tools start without Lightning; `fmtrain fit --help` ends
with the classes a recipe can name and the command that shows each one's keys, and those
commands take short names. Run in a fresh interpreter: in this one, other tests have
imported Lightning and every method already, which would hide both faults."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import REPO

SCRIPT = r"""
import contextlib, io, json, sys
from fmtrain.cli import main

def run(argv):
    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(argv)
        except SystemExit as stop:
            code = stop.code or 0
    return {"code": code, "out": out.getvalue(), "err": err.getvalue()}

results = {}
for argv in (["--help"], ["generate-oct", "--help"], ["prepare", "--help"],
             ["generate-signals", "--help"], ["prepare-signals", "--help"]):
    results[" ".join(argv)] = {**run(argv), "lightning": "lightning" in sys.modules}
for argv in (["fit", "--model.help", "VJEPAModule"], ["fit", "--data.help", "VolumeDataModule"],
             ["fit", "--help"], ["fit", "--config", sys.argv[1], "--help"]):
    results[" ".join(argv[:3])] = run(argv)
print(json.dumps(results))
"""


def test_help_pages_start_light_and_name_the_classes_and_their_keys():
    recipe = str(REPO / "recipes" / "oct_vjepa_demo.yaml")
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, recipe], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    for command in ("--help", "generate-oct --help", "prepare --help"):
        assert results[command]["code"] == 0
        assert not results[command]["lightning"], f"`fmtrain {command}` imported Lightning"
    for command in ("generate-signals --help", "prepare-signals --help"):
        assert not results[command]["lightning"], f"`fmtrain {command}` imported Lightning"
    assert "--debug" in results["--help"]["out"]

    # short names, in a process that had not imported the classes before
    model = results["fit --model.help VJEPAModule"]
    assert model["code"] == 0, model["err"][-2000:]
    assert "--model.patch_size" in model["out"] and "--model.predictor" in model["out"]
    data = results["fit --data.help VolumeDataModule"]
    assert data["code"] == 0, data["err"][-2000:]
    assert "--data.source" in data["out"] and "--data.spacing" in data["out"]

    page = results["fit --help"]["out"]
    section = page[page.index("Methods, datamodules and encoders") :]
    for name in ("VJEPAModule", "MAEModule", "VolumeDataModule", "SignalDataModule", "ViTEncoder"):
        assert name in section
    assert "fmtrain fit --model.help VJEPAModule" in section
    assert "fmtrain fit --data.help VolumeDataModule" in section

    # with a recipe: its own classes, each with its keys
    with_recipe = results["fit --config " + recipe]["out"]
    mine = with_recipe[with_recipe.index("This recipe's classes") :].split()
    assert "VJEPAModule:" in mine and "VolumeDataModule:" in mine and "ViTEncoder:" in mine
    assert "predictor.embed_dim," in mine and "prepared," in mine and "drop_path," in mine
