"""`fmtrain check` reports a partial activation-checkpointing setting beside both ends."""

from fmtrain.check.runner import run_check
from tests.conftest import TINY_RECIPE


def test_partial_checkpointing_is_measured_between_none_and_all(oct_dataset, tmp_path):
    args = [f"--data.init_args.source={oct_dataset}/manifest.tsv"]
    args += [f"--trainer.default_root_dir={tmp_path}"]
    args += ["--model.init_args.encoder.activation_checkpointing=1"]  # one block per stack
    report = run_check(str(TINY_RECIPE), args, str(tmp_path / "check"))
    assert not report.errors, [str(p) for p in report.errors]
    perf = report.performance
    assert perf["activation checkpointing in recipe"] == 1
    rows = [f"activations {label} checkpointing, micro-batch (MiB)" for label in (
        "without", "with partial (1 block(s) per stack)", "with")]  # fmt: skip
    none, partial, every = (perf[row] for row in rows)
    assert none > partial > every > 0
    estimate = "estimated memory with partial (1 block(s) per stack) checkpointing at batch 2 (MiB)"
    assert perf[estimate] > 0
