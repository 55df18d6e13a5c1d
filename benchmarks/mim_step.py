"""MiM training-step throughput and memory per input size, SparK and ViT encoders.

    python benchmarks/mim_step.py                  # CPU sizes, batch 2
    python benchmarks/mim_step.py --batch 8        # e.g. on a GPU (bf16 autocast there)

For each (encoder, input size): the median time of a full optimizer step (forward of every
level, backward, AdamW) over --steps steps after --warmup, samples/s and voxels/s, and
memory: on a GPU the peak allocated; on a CPU the bytes of tensors saved for backward
(activations) plus parameters, gradients and AdamW state. Writes mim_step.json and prints
a markdown table.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from fmtrain.masks import HierarchicalMask
from fmtrain.masks.regions import LevelRegion
from fmtrain.methods.configs import DecoderConfig
from fmtrain.methods.mim import MiMModule
from fmtrain.nn.encoder import ViTEncoder
from fmtrain.nn.sparse_cnn import SparseCNNEncoder

OCT_STRIDES = ((1, 2, 2), (1, 2, 2), (2, 2, 2), (2, 2, 2))  # patch 4x16x16
# name -> (input size, patch size, SparK strides, levels)
SIZES = {
    "32^3": ((32, 32, 32), (8, 8, 8), ((2, 2, 2), (2, 2, 2), (2, 2, 2), (1, 1, 1)), 2),
    "64^3": ((64, 64, 64), (16, 16, 16), None, 2),
    "128^3": ((128, 128, 128), (16, 16, 16), None, 3),
    "OCT 32x128x128": ((32, 128, 128), (4, 16, 16), OCT_STRIDES, 2),
}


def _saved_bytes(step) -> int:
    """Bytes of distinct tensors autograd saves for backward during `step()`."""
    seen: dict[tuple, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        key = (t.untyped_storage().data_ptr(), t.dtype, tuple(t.shape))
        seen[key] = t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        step()
    return sum(seen.values())


def measure(encoder_name: str, size_name: str, args) -> dict:
    size, patch, strides, levels = SIZES[size_name]
    if encoder_name.startswith("spark"):
        encoder = SparseCNNEncoder(size=encoder_name.split("-")[1], strides=strides)
    else:
        encoder = ViTEncoder(size=encoder_name.split("-", 1)[1])
    module = MiMModule(
        input_size=size,
        patch_size=patch,
        num_mask_families=levels,
        encoder=encoder,
        decoder=DecoderConfig(embed_dim=128, depth=2, num_heads=4),
    )
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = module.method.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    sampler = HierarchicalMask(levels=levels)
    rng = np.random.default_rng(0)
    x = torch.randn(args.batch, 1, *size, device=device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32

    def step() -> None:
        pairs = sampler.sample(module.grid.shape, args.batch, rng)
        contexts = [p.context.to(device) for p in pairs]
        targets = [p.target.to(device) for p in pairs]
        regions = [LevelRegion(p.region.start.to(device), p.region.shape) for p in pairs]
        with torch.autocast(device.type, dtype=dtype, enabled=device.type == "cuda"):
            loss = model(x, contexts, targets, regions).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(args.warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    params = sum(p.numel() for p in model.parameters())
    state_bytes = params * 4 * 4  # weights, gradients, AdamW's two moments (fp32)
    if device.type == "cuda":
        memory = {"peak_allocated_mib": torch.cuda.max_memory_allocated() / 2**20}
    else:
        activations = _saved_bytes(step)
        memory = {
            "activations_mib": activations / 2**20,
            "with_weights_grads_adamw_mib": (activations + state_bytes) / 2**20,
        }
    median = statistics.median(times)
    return {
        "encoder": encoder_name,
        "input": size_name,
        "token_grid": list(module.grid.shape),
        "levels": levels,
        "batch": args.batch,
        "parameters": params,
        "step_seconds_median": median,
        "step_seconds_min": min(times),
        "step_seconds_max": max(times),
        "samples_per_second": args.batch / median,
        "megavoxels_per_second": args.batch * math.prod(size) / median / 1e6,
        **memory,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--encoders", nargs="+", default=["spark-tiny", "vit-vit_tiny"])
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--out", type=Path, default=Path("runs/mim_step.json"))
    args = parser.parse_args()
    torch.manual_seed(0)
    rows = [measure(e, s, args) for e in args.encoders for s in args.sizes]
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else platform.machine()
    result = {"date": time.strftime("%Y-%m-%d"), "device": device, "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    memory_key = "peak_allocated_mib" if torch.cuda.is_available() else "activations_mib"
    print(f"MiM step, {device}, batch {args.batch}, torch {torch.__version__}\n")
    print(f"| encoder | input | grid | step s (median) | samples/s | {memory_key} |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['encoder']} | {r['input']} | {'x'.join(map(str, r['token_grid']))} "
            f"| {r['step_seconds_median']:.3f} | {r['samples_per_second']:.2f} "
            f"| {r[memory_key]:.0f} |"
        )


if __name__ == "__main__":
    main()
