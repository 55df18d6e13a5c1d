"""The tables `step_efficiency.py` prints from its report: one row per recipe, one per sweep
point."""

from __future__ import annotations

from typing import Any

from efficiency_sweep import SWEEP_PATCH


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


RECIPE_COLUMNS = [
    "recipe", "batch", "tokens", "bare step s (median / min)", "bare samples/s", "bare tokens/s",
    "Lightning samples/s", "overhead", "drift", "memory MiB", "GFLOP/sample", "MFU bare",
    "MFU Lightning", "load 1 min",
]  # fmt: skip
SWEEP_COLUMNS = [
    "tokens", "grid", "step s (median)", "step s (min)", "samples/s", "tokens/s",
    "GFLOP/sample", "MFU", "memory MiB",
]  # fmt: skip


def recipe_row(r: dict, workers: list[int]) -> str:
    if "bare" not in r:
        why = f"skipped: {r['skipped']}" if "skipped" in r else f"failed: {r.get('error', '')}"
        return _row([r["recipe"], why[:200]])
    bare, light = r["bare"], r.get("lightning", {})
    loaders = {x["workers"]: x["samples_per_s"] for x in r.get("loader", [])}
    cells = [
        r["recipe"] + (" (quick)" if "quick" in r else ""),
        str(r["batch_size"]),
        str(r["tokens_per_sample"]),
        f"{bare['step_s_median']:.3f} / {bare['step_s_min']:.3f}",
        _fmt(bare["samples_per_s"], ".1f"),
        _fmt(bare["tokens_per_s"], ",.0f"),
        _fmt(light.get("samples_per_s"), ".1f"),
        _fmt(light.get("overhead_vs_bare"), ".2f"),
        _fmt(bare.get("drift_after_vs_before"), ".2f"),
        _fmt(r["memory"]["peak_mib"], ",.0f"),
        _fmt(r["flops_per_sample"] / 1e9, ".2f"),
        _fmt(bare["mfu"], ".1%"),
        _fmt(light.get("mfu"), ".1%"),
        f"{r['load_average_before'][0]} -> {r['load_average_after'][0]}",
    ]
    return _row(cells + [_fmt(loaders.get(w), ".1f") for w in workers])


def sweep_row(s: dict) -> str:
    grid = "x".join(map(str, s["grid"]))
    if "skipped" in s:
        return _row([f"{s['tokens']:,}", grid, f"skipped: {s['skipped']}"])
    return _row([
        f"{s['tokens']:,}", grid, f"{s['step_s_median']:.4f}", f"{s['step_s_min']:.4f}",
        f"{s['samples_per_s']:.1f}", f"{s['tokens_per_s']:,.0f}",
        f"{s['flops_per_sample'] / 1e9:.1f}", f"{s['mfu']:.1%}", f"{s['memory_mib']:,.0f}",
    ])  # fmt: skip


def print_tables(report: dict) -> None:
    peaks = "; ".join(
        f"{p['dtype']} {p['tflops']} TFLOP/s ({p['source']})" for p in report["peaks"].values()
    )
    print(
        f"\n{report['device']}, torch {report['torch']}, Lightning {report['lightning']}, "
        f"commit {report['commit']}\npeak: {peaks}\n"
        f"load average {report['load_average_start']} -> {report['load_average_end']}\n"
    )
    workers = report["settings"]["workers"]
    if report["recipes"]:
        head = RECIPE_COLUMNS + [f"loader w{w} samples/s" for w in workers]
        print(_row(head) + "\n|" + "---|" * len(head))
        for r in report["recipes"]:
            print(recipe_row(r, workers))
        for r in report["recipes"]:
            if "quick" in r:
                print(f"quick, {r['recipe']}: {r['quick']}")
        for kind in {r["memory"]["kind"] for r in report["recipes"] if "memory" in r}:
            print(f"memory: {kind}")
        print(
            "tokens: cells of the recipe's token grid (input / patch; for VRT restoration, "
            "input / the network's input multiple)"
        )
    if report["sweep"]:
        s = report["sweep"][0]
        print(
            f"\nscaling: V-JEPA {s['encoder']}, predictor {s['predictor']}, batch {s['batch']}, "
            f"patch {list(SWEEP_PATCH)}, bare step\n"
        )
        print(_row(SWEEP_COLUMNS) + "\n|" + "---|" * len(SWEEP_COLUMNS))
        for s in report["sweep"]:
            print(sweep_row(s))
