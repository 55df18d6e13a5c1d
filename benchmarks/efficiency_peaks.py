"""The peak `step_efficiency.py` takes MFU against (--peak_tflops, or the highest of several
large-matmul measurements in the run, per compute dtype), and the MFU of every measured step
against it."""

from __future__ import annotations

import argparse
from typing import Any

import torch
from efficiency_tools import matmul_peak


def measure_peak(peak: dict, device: torch.device, seconds: float = 1.0) -> None:
    """One more matmul measurement into `peak` (unless --peak_tflops gave it); the peak is the
    highest seen: other processes on the machine only ever lower a measurement."""
    if peak["source"] == "--peak_tflops":
        return
    rate = matmul_peak(device, getattr(torch, peak["dtype"]), seconds)
    peak["measured_tflops"].append(round(rate / 1e12, 4))
    peak["tflops"] = max(peak["measured_tflops"])


def new_peak(args: argparse.Namespace, device: torch.device, dtype: str) -> dict[str, Any]:
    """The peak MFU is taken against for steps computing in `dtype`, and where it came from."""
    if args.peak_tflops:
        return {"tflops": args.peak_tflops, "dtype": dtype, "source": "--peak_tflops"}
    n = 8192 if device.type == "cuda" else 2048
    source = (
        f"measured in this run: {n}x{n} {dtype} matmul, the highest of the measurements taken "
        "at the start, before each recipe and before the sweep"
    )
    peak = {"tflops": 0.0, "dtype": dtype, "source": source, "measured_tflops": []}
    measure_peak(peak, device)
    return peak


def peaks_for(args: argparse.Namespace, device: torch.device) -> dict[str, dict]:
    """bf16-mixed recipes on a GPU are measured against a bf16 peak, everything else
    (fp32 recipes on a GPU, every run on a CPU) against an fp32 one."""
    dtypes = ["bfloat16", "float32"] if device.type == "cuda" else ["float32"]
    return {dtype: new_peak(args, device, dtype) for dtype in dtypes}


def peak_of(report: dict, precision: str) -> dict:
    bf16 = "bf16" in precision and "bfloat16" in report["peaks"]
    return report["peaks"]["bfloat16" if bf16 else "float32"]


def set_mfu(report: dict) -> None:
    """MFU of every measured step against the run's final peak for its precision."""
    for r in report["recipes"]:
        peak = peak_of(report, r.get("precision", "32-true"))["tflops"] * 1e12
        for part in ("bare", "lightning"):
            if r.get(part, {}).get("samples_per_s"):
                r[part]["mfu"] = round(r["flops_per_sample"] * r[part]["samples_per_s"] / peak, 4)
        if "bare" in r:
            r["mfu_peak_dtype"] = peak_of(report, r["precision"])["dtype"]
    sweep_peak = peak_of(report, report["sweep_precision"])["tflops"] * 1e12
    for s in report["sweep"]:
        if "samples_per_s" in s:
            s["mfu"] = round(s["flops_per_sample"] * s["samples_per_s"] / sweep_peak, 4)
