"""Whole-sequence restoration scores: baselines by hand, clip tiling, padding, and the table."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fmtrain.eval.restoration import (
    evaluate_restoration,
    format_restoration_table,
    frame_average,
    restore_sequence,
    save_restoration_picture,
)
from tests.datamodules.test_restoration import _write_split


class _Recorder(nn.Module):
    """Returns call_number / 10 everywhere, and records each call's input shape: which clip
    restored which frame, and what padding the network saw, can be read off the output."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(()))
        self.shapes: list[tuple[tuple[int, ...], tuple[int, ...] | None]] = []

    def forward(self, blur, spikes=None):
        self.shapes.append((tuple(blur.shape), None if spikes is None else tuple(spikes.shape)))
        return torch.full_like(blur, len(self.shapes) / 10)


class _Identity(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(()))

    def forward(self, blur, spikes=None):
        return blur + self.weight


def test_frame_average_matches_a_hand_computed_case():
    frames = torch.tensor([0.0, 3.0, 6.0, 9.0]).view(4, 1, 1, 1).expand(4, 3, 2, 2)
    got = frame_average(frames, radius=1)[:, 0, 0, 0]
    # ends average two frames, the middle three
    assert torch.allclose(got, torch.tensor([1.5, 3.0, 6.0, 7.5]))
    assert torch.equal(frame_average(frames, radius=0), frames)
    with pytest.raises(ValueError, match="radius"):
        frame_average(frames, radius=-1)


def test_every_frame_is_restored_once_by_clips_padded_to_the_networks_multiple():
    net = _Recorder()
    blur, spikes = torch.rand(7, 3, 20, 30), torch.rand(7, 5, 20, 30)
    out = restore_sequence(net, blur, spikes, clip_length=4, multiple=(2, 16, 16))
    assert out.shape == blur.shape
    # 7 frames, clips of 4: frames 0-3, then the clip ending at the last frame (3-6)
    assert net.shapes == [((1, 4, 3, 32, 32), (1, 4, 5, 32, 32))] * 2
    first, second = out[:, 0, 0, 0].tolist(), 0.2
    assert first[:4] == pytest.approx([0.1] * 4)  # the overlapped frame keeps clip 1's output
    assert first[4:] == pytest.approx([second] * 3)


def test_sequences_shorter_than_a_clip_are_refused():
    with pytest.raises(ValueError, match="3 frames, fewer than clip_length=4"):
        restore_sequence(
            _Recorder(), torch.rand(3, 3, 8, 8), None, clip_length=4, multiple=(1, 1, 1)
        )


def test_an_identity_network_scores_exactly_as_the_blurry_input(tmp_path):
    # blur = sharp // 2 in these pairs: the frame average and the input both differ from sharp
    _write_split(tmp_path, "test", {"c": 6, "d": 5}, same=False)
    net = _Identity().train()
    result = evaluate_restoration(
        net,
        tmp_path,
        "test",
        clip_length=4,
        multiple=(2, 8, 8),
        spikes=True,
        n_boot=50,
        progress=None,
    )
    assert net.training, "the network's mode is restored after evaluation"
    assert result["frames"] == 11 and result["sequences"] == ["c", "d"]
    model, blurry = result["summary"]["model"], result["summary"]["blurry input"]
    assert model["psnr"]["value"] == pytest.approx(blurry["psnr"]["value"])
    assert result["differences"]["model - blurry input"]["ssim"]["value"] == pytest.approx(0)
    average = result["summary"]["frame average (3 frames)"]["psnr"]["value"]
    assert average != pytest.approx(model["psnr"]["value"])
    table = format_restoration_table(result)
    assert "| model - frame average (3 frames) |" in table and "Held-out frames: 11" in table
    picture = save_restoration_picture(result, tmp_path / "r.png")
    assert (tmp_path / "r.png").stat().st_size > 10_000 and picture.endswith("r.png")


def test_an_empty_split_is_refused(tmp_path):
    (tmp_path / "test" / "blur").mkdir(parents=True)
    (tmp_path / "test" / "sharp").mkdir(parents=True)
    with pytest.raises(ValueError):
        evaluate_restoration(
            _Identity(),
            tmp_path,
            "test",
            clip_length=2,
            multiple=(1, 1, 1),
            spikes=False,
            progress=None,
        )
