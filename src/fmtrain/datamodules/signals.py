"""Physiological signals (ECG, PPG, ...) as masked pretraining batches.

Two ways to cut a window of C channels x T samples into tokens (`tokens`):

- ``per_channel`` (default): every channel is cut into its own patches. The model input is
  [1, C, T] with a token grid of (C, T / L) and patches (1, L): token index c * P + p,
  channel-major. Masks can hide each channel's patches independently (`per_channel: true`
  in `RandomPatch` / `SpanMask`), and pretrained time-series encoders (PatchTST,
  PatchTSMixer, TTM), which patch each channel separately, fit this layout.
- ``across_channels``: a patch holds all channels over L samples. The input is [C, T] with
  a 1D grid of T / L tokens and patches (L,).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from typing import Literal

import torch

from fmtrain.core.grid import TokenGrid
from fmtrain.core.storage import is_remote, join, read_bytes
from fmtrain.data.signals.prepare import prepare_signals
from fmtrain.data.signals.prepared import PreparedSignals
from fmtrain.data.signals.windows import WindowConfig
from fmtrain.data.splits import DEFAULT_FRACTIONS
from fmtrain.datamodules.base import PreparedDataModule
from fmtrain.datamodules.settings import require_preparation
from fmtrain.datamodules.synthetic import synthetic_signals
from fmtrain.masks import MaskSampler

log = logging.getLogger("fmtrain.data")

__all__ = ["SignalDataModule"]


def _one_row_per_input(window: torch.Tensor) -> torch.Tensor:
    """[C, T] -> [1, C, T]: channels become the first axis of a 2D token grid."""
    return window[None]


class SignalDataModule(PreparedDataModule):
    """Recordings (manifest, file list or folder) -> windows in zarr -> masked batches.

    Args:
        source: raw recordings: a TSV/CSV manifest with ``filepath`` (and ``participant_id``,
            ``device``; ``sampling_rate`` and ``channel_names`` for CSV/NPZ) or a folder.
        prepared: prepared dataset location (default: beside a local source, keyed by the
            settings below).
        storage_options: fsspec options for URLs.
        channels: channels to train on, by name; aliases match (``ECG_II`` finds "II",
            "Lead II", "MLII"; ``PPG`` finds "PLETH"). Their order is the input's order.
        rate: sampling rate every recording is resampled to (polyphase), in Hz.
        window: window length in samples at `rate` (1024 at 125 Hz = 8.192 s).
        hop: samples between window starts (default: half a window, i.e. 50% overlap).
        bands: band-pass per channel type, e.g. {ecg: [0.5, 40], ppg: [0.5, 8]}; a type
            left out keeps the defaults.
        tokens: ``per_channel`` or ``across_channels`` (see the module docstring).
        patch_size: token patch size (linked from `model.patch_size`): [1, L] per channel,
            [L] across channels.
        masks: mask sampler by `class_path` (`fmtrain.masks.RandomPatch`,
            `fmtrain.masks.SpanMask`, `fmtrain.masks.MultiBlock` for V-JEPA) or `none`.
        batch_size: per-device batch size.
        val_batch_size: validation batch size (defaults to `batch_size`).
        num_workers: loader worker processes.
        split_fractions: participant fractions per split, used when preparing.
        train_split: split to train on.
        val_split: split to validate on.
        seed: seed of the split, sample order and masks.
        prepare_workers: processes that prepare recordings.
        max_skip_fraction: fail when more than this fraction of recordings is refused.
        readers: readers of formats fmtrain does not read, file suffix -> "module:function",
            e.g. {".xyz": "mylab.readers:read_xyz"} (`fmtrain.data.signals.registry`).
    """

    # a few generated samples in the recipe's geometry (`fmtrain check --synthetic`)
    write_synthetic = classmethod(synthetic_signals)

    sample_noun = "windows"

    def __init__(
        self,
        *,
        source: str | None = None,
        prepared: str | None = None,
        storage_options: dict | None = None,
        channels: list[str] = ["ECG_II", "PPG"],  # noqa: B006 (jsonargparse copies it)
        rate: float = 125.0,
        window: int = 1024,
        hop: int | None = None,
        bands: dict[str, tuple[float, float] | None] | None = None,
        tokens: Literal["per_channel", "across_channels"] = "per_channel",
        patch_size: tuple[int, ...] = (1, 64),
        masks: MaskSampler | Literal["none"] | None = None,
        batch_size: int = 64,
        val_batch_size: int | None = None,
        num_workers: int = 2,
        split_fractions: dict[str, float] | None = None,
        train_split: str = "train",
        val_split: str = "val",
        seed: int = 0,
        prepare_workers: int = 2,
        max_skip_fraction: float = 0.05,
        readers: dict[str, str] | None = None,
    ) -> None:
        if source is None and prepared is None:
            raise ValueError(
                "data.init_args.source or data.init_args.prepared must be set: a manifest or "
                "folder of recordings to prepare, or a prepared signal dataset"
            )
        if not channels:
            raise ValueError("data.init_args.channels is empty: name at least one channel")
        self.tokens = tokens
        patch = tuple(int(p) for p in patch_size)
        input_size = (len(channels), window) if tokens == "per_channel" else (window,)
        if tokens == "per_channel" and (len(patch) != 2 or patch[0] != 1):
            raise ValueError(
                f"data.init_args.tokens=per_channel cuts every channel into its own patches: "
                f"model.init_args.patch_size must be [1, L] (e.g. [1, 64]), got {list(patch)}. "
                "Or set data.init_args.tokens=across_channels with patch_size [L]."
            )
        if tokens == "across_channels" and len(patch) != 1:
            raise ValueError(
                f"data.init_args.tokens=across_channels makes a 1D token grid: "
                f"model.init_args.patch_size must be [L] (e.g. [64]), got {list(patch)}"
            )
        grid = TokenGrid.from_sizes(
            input_size,
            patch,
            input_key="data.init_args.window" if tokens == "across_channels" else
            "[len(data.init_args.channels), data.init_args.window]",
            patch_key="model.init_args.patch_size",
        )  # fmt: skip
        super().__init__(
            grid=grid,
            masks=masks,
            batch_size=batch_size,
            val_batch_size=val_batch_size,
            num_workers=num_workers,
            train_split=train_split,
            val_split=val_split,
            seed=seed,
        )
        self.source = source
        self.storage_options = storage_options
        self.window_config = WindowConfig(
            channels=tuple(channels),
            rate=float(rate),
            window=int(window),
            hop=int(hop) if hop else max(int(window) // 2, 1),
            **({"bands": _merged_bands(bands)} if bands else {}),
        )
        self.split_fractions = dict(split_fractions or DEFAULT_FRACTIONS)
        require_preparation(prepare_workers, max_skip_fraction)
        self.prepare_workers = prepare_workers
        self.max_skip_fraction = max_skip_fraction
        self.readers = readers
        self.prepared = prepared or self.default_prepared_location(
            {
                "windows": repr(self.window_config),
                "split_fractions": self.split_fractions,
                "seed": self.seed,
                # only when set, so that datasets prepared before readers existed are found
                **({"readers": dict(readers)} if readers else {}),
            },
            kind="signals",
        )
        self.prepare_data_per_node = not is_remote(self.prepared)

    # --- what the base asks of a data wing -------------------------------------------------
    def prepare_from_source(self) -> None:
        assert self.source is not None
        try:
            prepare_signals(
                self.source,
                self.prepared,
                self.window_config,
                split_fractions=self.split_fractions,
                seed=self.seed,
                workers=self.prepare_workers,
                max_skip_fraction=self.max_skip_fraction,
                storage_options=self.storage_options,
                readers=self.readers,
            )
        except RuntimeError as err:
            hint = self._hint(join(self.prepared, "summary.json"))
            raise RuntimeError(f"{hint}. {err}" if hint else str(err)) from err

    def _hint(self, summary_url: str) -> str:
        """The recipe key behind the commonest refusal, when it is a recipe setting (first,
        so that `check` files the problem under that key)."""
        summary = json.loads(read_bytes(summary_url, self.storage_options))
        reasons = summary["counts"]["skipped_by_reason"]
        c = self.window_config
        if reasons.get("too_short"):
            lengths = [
                s["seconds"]
                for s in summary["skipped"]
                if s["reason"] == "too_short" and s.get("seconds")
            ]
            longest = max(lengths, default=None)
            lasting = f" (the longest of them lasts {longest:g} s)" if longest else ""
            return (
                f"data.init_args.window={c.window} samples ({c.window / c.rate:g} s at "
                f"data.init_args.rate={c.rate:g} Hz) is longer than {reasons['too_short']} "
                f"recording(s){lasting}: use a shorter window"
            )
        if reasons.get("missing_channel"):
            return (
                f"data.init_args.channels={list(c.channels)}: {reasons['missing_channel']} "
                "recording(s) lack one of them (the skipped details list what they have)"
            )
        return ""

    def open_prepared(self) -> PreparedSignals:
        dataset = PreparedSignals(self.prepared, self.storage_options)
        wanted = {
            **{
                f"windows.{k}": v for k, v in _plain(dataclasses.asdict(self.window_config)).items()
            },
            "split_fractions": self.split_fractions,
            "seed": self.seed,
        }
        made = {
            **{f"windows.{k}": v for k, v in dataset.params.get("windows", {}).items()},
            "split_fractions": dataset.params.get("split_fractions"),
            "seed": dataset.params.get("seed"),
        }
        differ = [k for k in wanted if made.get(k) != wanted[k]]
        if differ:
            shown = "; ".join(
                f"data.init_args.{k.removeprefix('windows.')}: recipe {wanted[k]!r}, prepared "
                f"{made.get(k)!r}"
                for k in differ
            )
            raise ValueError(
                f"the prepared signals at {self.prepared} were made with other settings ({shown}); "
                "prepare again (a new data.init_args.prepared, or leave it unset) or point "
                "data.init_args.prepared at a matching dataset"
            )
        return dataset

    def input_transform(self):  # type: ignore[no-untyped-def]
        return _one_row_per_input if self.tokens == "per_channel" else None

    @property
    def channels(self) -> int:
        """Input channels of the model: 1 per channel-row grid, else the signal channels."""
        return 1 if self.tokens == "per_channel" else len(self.window_config.channels)

    def describe(self) -> dict:
        return super().describe() | {
            "channels": list(self.window_config.channels),
            "rate": self.window_config.rate,
            "window": self.window_config.window,
            "tokens": self.tokens,
        }


def _plain(value):  # type: ignore[no-untyped-def]
    """Tuples as lists, as the JSON record of a preparation holds them."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _merged_bands(bands: dict) -> dict:
    defaults = dict(WindowConfig.__dataclass_fields__["bands"].default_factory())
    return defaults | {k: (tuple(v) if v is not None else None) for k, v in bands.items()}
