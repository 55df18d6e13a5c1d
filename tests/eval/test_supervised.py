"""The supervised upper bound trains the encoder architecture on the labels and scores it
with the probes' participant bootstrap: it learns what is in the inputs, not what is not."""

import numpy as np
import pytest
import torch

from fmtrain.core import TokenGrid
from fmtrain.eval.supervised import supervised_upper_bound
from fmtrain.nn import ViTEncoder


class _Volumes:
    def __init__(self, classes: list[str], prefix: str, seed: int) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.data, self.samples = [], []
        for i, c in enumerate(classes):
            x = torch.randn(1, 4, 16, 16, generator=gen)
            if c == "lesion":  # a bright patch in one corner: learnable from the input
                x[:, :2, :8, :8] += 3.0
            self.data.append(x)
            self.samples.append({"key": f"{prefix}{i}", "participant_id": f"{prefix}p{i}"})

    def __len__(self) -> int:
        return len(self.data)

    def load(self, index: int) -> torch.Tensor:
        return self.data[index]


def _encoder():
    torch.manual_seed(0)
    return ViTEncoder(size="vit_test").build(TokenGrid.from_sizes((4, 16, 16), (2, 8, 8)), 1)


def _splits(n_train=48, n_test=24):
    train_classes = ["lesion", "normal"] * (n_train // 2)
    test_classes = ["lesion", "normal"] * (n_test // 2)
    return _Volumes(train_classes, "tr", 0), _Volumes(test_classes, "te", 1)


def test_a_learnable_task_is_learned_on_the_requested_device():
    train, test = _splits()
    labels = {s["key"]: c for v in (train, test) for s, c in zip(
        v.samples, ["lesion", "normal"] * len(v), strict=False)}  # fmt: skip
    result = supervised_upper_bound(
        _encoder(), train, test, labels, epochs=15, patience=15, n_boot=200, device="cpu"
    )
    score = result["balanced_accuracy"]
    assert score["value"] >= 0.9 and score["low"] <= score["value"] <= score["high"]
    assert result["device"] == "cpu" and result["n_test"] == 24
    assert result["classes"] == ["lesion", "normal"]


def test_labels_unrelated_to_the_inputs_stay_near_chance():
    train, test = _splits()
    rng = np.random.default_rng(3)
    labels = {s["key"]: str(rng.choice(["a", "b"])) for v in (train, test) for s in v.samples}
    result = supervised_upper_bound(
        _encoder(), train, test, labels, epochs=8, n_boot=200, device="cpu"
    )
    assert result["balanced_accuracy"]["value"] < 0.75


def test_test_classes_never_seen_in_training_are_refused():
    train, test = _splits(8, 4)
    labels = {s["key"]: "normal" if i % 2 else "lesion" for i, s in enumerate(train.samples)}
    labels |= {s["key"]: "fluid" for s in test.samples}
    with pytest.raises(ValueError, match="unseen in training"):
        supervised_upper_bound(_encoder(), train, test, labels, epochs=1, device="cpu")


def test_a_time_cap_ends_training_after_the_epoch_that_crosses_it():
    train, test = _splits()
    labels = {s["key"]: c for v in (train, test) for s, c in zip(
        v.samples, ["lesion", "normal"] * len(v), strict=False)}  # fmt: skip
    capped = supervised_upper_bound(
        _encoder(), train, test, labels, epochs=15, patience=15, n_boot=50, device="cpu",
        max_seconds=0.0,
    )  # fmt: skip
    assert capped["epochs_run"] == 1 and capped["stopped_by"] == "time"
    full = supervised_upper_bound(
        _encoder(), train, test, labels, epochs=3, patience=15, n_boot=50, device="cpu"
    )
    assert full["epochs_run"] == 3 and full["stopped_by"] == "epochs"
