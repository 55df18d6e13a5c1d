"""Probes and embeddings run where they are asked to: the GPU when there is one ("auto"),
the CPU otherwise, and an impossible request is refused with the option to change."""

import numpy as np
import pytest
import torch
from torch import nn

import fmtrain.eval.attentive as attentive
from fmtrain.eval.device import resolve_device
from fmtrain.eval.embed import embed_split


class _Volumes:
    """The part of a prepared split that `embed_split` reads: len, load, samples."""

    def __init__(self, n: int) -> None:
        gen = torch.Generator().manual_seed(0)
        self.data = [torch.randn(1, 4, 8, 8, generator=gen) for _ in range(n)]
        self.samples = [
            {"key": f"v{i}", "participant_id": f"p{i}", "device": "Spectralis"} for i in range(n)
        ]

    def __len__(self) -> int:
        return len(self.data)

    def load(self, index: int) -> torch.Tensor:
        return self.data[index]


class _RecordingEncoder(nn.Module):
    """Tokens [B, 4, 6] from [B, 1, 4, 8, 8]; remembers the device of every input."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(64, 6)
        self.seen: list[torch.device] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.device)
        return self.proj(x.reshape(x.shape[0], 4, 64))


def test_auto_is_the_cpu_without_a_gpu_and_cuda_is_refused_with_the_option():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: 'auto' is cuda here")
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device(None) == torch.device("cpu")
    with pytest.raises(ValueError, match="--device cpu"):
        resolve_device("cuda")


def test_embed_split_runs_the_encoder_on_the_requested_device_and_puts_it_back():
    encoder = _RecordingEncoder().train()
    out = embed_split(encoder, _Volumes(5), batch_size=2, device="cpu")
    assert set(encoder.seen) == {torch.device("cpu")} and len(encoder.seen) == 3
    assert out["pooled"].shape == (5, 6) and out["tokens"].shape == (5, 4, 6)
    assert encoder.training  # its mode is restored for the caller


def test_attentive_probe_trains_on_the_requested_device(monkeypatch):
    devices = []

    class Recording(attentive.AttentiveProbe):
        def forward(self, tokens):
            devices.append((tokens.device, next(self.parameters()).device))
            return super().forward(tokens)

    monkeypatch.setattr(attentive, "AttentiveProbe", Recording)
    rng = np.random.default_rng(0)
    fit = attentive.fit_attentive_probe(
        rng.normal(size=(24, 3, 8)), np.arange(24) % 2, rng.normal(size=(6, 3, 8)),
        "classification", epochs=2, device="cpu",
    )  # fmt: skip
    assert fit.predictions.shape == (6, 2)
    assert devices and set(devices) == {(torch.device("cpu"), torch.device("cpu"))}


@pytest.mark.gpu
def test_embed_split_and_the_attentive_probe_use_the_gpu_when_asked():
    encoder = _RecordingEncoder()
    on_cpu = embed_split(encoder, _Volumes(4), device="cpu")
    on_gpu = embed_split(encoder, _Volumes(4), device="auto")
    assert encoder.seen[-1].type == "cuda"
    assert next(encoder.parameters()).device.type == "cpu"  # put back where it was
    assert isinstance(on_gpu["pooled"], np.ndarray)
    np.testing.assert_allclose(on_gpu["pooled"], on_cpu["pooled"], atol=0.05)  # bf16 encode
    rng = np.random.default_rng(0)
    fit = attentive.fit_attentive_probe(
        rng.normal(size=(24, 3, 8)), np.arange(24) % 2, rng.normal(size=(6, 3, 8)),
        "classification", epochs=2, device="cuda",
    )  # fmt: skip
    assert fit.predictions.shape == (6, 2)
