"""Pretrained time-series encoders (Hugging Face PatchTSMixer / PatchTST, IBM TTM) for fmtrain.

These models patch each channel themselves, so their grid is per-channel: input (C, T),
patch (1, L), one input channel, one token per (channel, patch) in channel-major order
(token = c * P + p). Input [B, 1, C, T] goes in as `past_values` [B, T, C]; the base model's
`last_hidden_state` [B, C, P, D] comes out as [B, C * P, D]. Nothing is downloaded. The
geometry a model really uses is read off the built model and must equal the recipe's grid:
a mismatch is refused when the recipe is read, never adapted mid-training. One exception, by
design of these models: a channel-independent config (PatchTSMixer/TTM ``mode:
common_channel``, PatchTST without channel attention) built for one channel, as TTM's
published ones are, reads a C-channel recipe one channel at a time with the same weights
(the channels are folded into the batch); a channel-mixing one must match C exactly.
"""

from __future__ import annotations

import functools
import importlib
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from fmtrain.core.grid import TokenGrid
from fmtrain.nn.encoder import EncoderSpec
from fmtrain.nn.tokens import gather_tokens

__all__ = [
    "HFTimeSeriesEncoder",
    "PatchTSMixerEncoder",
    "PatchTSTEncoder",
    "TTMEncoder",
    "channel_independent",
]

log = logging.getLogger("fmtrain")
PATCH_KEY, WINDOW_KEY = "model.init_args.patch_size", "data.init_args.window"
CHANNELS_KEY = "data.init_args.channels"
SPEC_KEY = "model.init_args.encoder.init_args"


@dataclass(frozen=True)
class Geometry:
    """Patching of a built model: P patches of L samples from a window of T per channel."""

    patch_length: int
    patch_stride: int
    context_length: int
    num_patches: int
    channels: int


def _checkpointed_forward(layer: nn.Module, *args: Any, **kwargs: Any) -> Any:
    """The class's own forward of `layer`, its activations recomputed in backward."""
    return checkpoint(type(layer).forward, layer, *args, use_reentrant=False, **kwargs)


class HFTimeSeriesEncoder(nn.Module):
    """A Hugging Face base time-series model behind fmtrain's `Encoder` interface.

    `keep` is SimMIM-style: the models cannot drop tokens, so the samples of every patch
    not kept are replaced by zeros before the model sees them (hidden samples never reach
    it), all C * P tokens are encoded, and the kept ones are gathered.
    """

    def __init__(
        self,
        model: nn.Module,
        geometry: Geometry,
        layers: nn.ModuleList,
        *,
        states_before: bool,
        channels: int | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.geometry = geometry
        # the recipe's channels; more than the model's one: each channel a sample of its own
        self.channels = channels or geometry.channels
        self.fold = self.channels if self.channels != geometry.channels else 1
        self.embed_dim = int(model.config.d_model)
        self.layers = [layers]  # a list, so the layers are not registered twice
        self.states_before = states_before  # PatchTST: hidden_states are layer inputs
        self.cls_token = bool(getattr(model.config, "use_cls_token", False))
        self.grad_checkpointing = False

    def _run(self, x: torch.Tensor, keep: torch.Tensor | None, states: bool) -> Any:
        g, c, (b, *shape) = self.geometry, self.channels, x.shape
        if shape != [1, c, g.context_length]:
            raise ValueError(f"input {list(x.shape)} != [B, 1, {c}, {g.context_length}]")
        signal = x[:, 0]
        if keep is not None:
            kept = torch.zeros(b, c * g.num_patches, dtype=torch.bool, device=x.device)
            kept.scatter_(1, keep, True)
            patches = signal.reshape(b, c, g.num_patches, g.patch_length)
            # where, not a product: NaN * 0 would still leak a hidden sample
            patches = torch.where(kept.reshape(*patches.shape[:3], 1), patches, 0)
            signal = patches.reshape(b, c, g.context_length)
        if self.fold > 1:  # [B, C, T] -> [B * C, 1, T]: the same weights on every channel
            signal = signal.reshape(b * c, 1, g.context_length)
        return self.model(
            past_values=signal.transpose(1, 2), output_hidden_states=states, return_dict=True
        )

    def _tokens(self, hidden: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
        if self.cls_token:
            hidden = hidden[:, :, 1:]
        # [B, C, P, D], or [B * C, 1, P, D] folded: both flatten to c * P + p per sample
        tokens = hidden.reshape(hidden.shape[0] // self.fold, -1, hidden.shape[-1])
        return tokens if keep is None else gather_tokens(tokens, keep)

    def forward_features(self, x: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """Encode `x` [B, 1, C, T] into tokens [B, C * P, D] (or [B, K, D] with `keep`)."""
        return self._tokens(self._run(x, keep, False).last_hidden_state, keep)

    def forward_intermediates(
        self, x: torch.Tensor, layers: list[int], keep: torch.Tensor | None = None
    ) -> list[torch.Tensor]:
        """Tokens after each layer index in `layers` (negative allowed), in layer order."""
        depth = len(self.layers[0])
        out = self._run(x, keep, True)
        states = list(out.hidden_states)
        if self.states_before:
            states = [*states[1:], out.last_hidden_state]
        if len(states) != depth or any(s.shape != out.last_hidden_state.shape for s in states):
            raise NotImplementedError(f"{type(self.model).__name__}: hidden states not per layer")
        return [self._tokens(states[i], keep) for i in sorted({i % depth for i in layers})]

    def no_weight_decay(self) -> set[str]:
        return set()

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute layer activations in backward. These models declare
        `supports_gradient_checkpointing = False`, so each layer's instance `forward` goes
        through `torch.utils.checkpoint` instead (parameter names stay the same)."""
        if getattr(self.model, "supports_gradient_checkpointing", False):
            if enable:
                self.model.gradient_checkpointing_enable({"use_reentrant": False})
            else:
                self.model.gradient_checkpointing_disable()
        else:
            for layer in self.layers[0]:
                if enable:
                    layer.forward = functools.partial(_checkpointed_forward, layer)
                else:
                    layer.__dict__.pop("forward", None)
        self.grad_checkpointing = enable

    forward = forward_features


def channel_independent(config: Any) -> bool:
    """Whether a model applies the same weights to each channel with no mixing between
    channels: PatchTSMixer/TTM in ``common_channel`` mode, PatchTST without channel
    attention. Such a model built for one channel reads any number of channels."""
    if getattr(config, "mode", "common_channel") != "common_channel":
        return False
    return not getattr(config, "channel_attention", False)


def _check_geometry(g: Geometry, grid: TokenGrid, source: str, config: Any) -> None:
    """Refuse, naming the recipe keys and both values, a model that does not fit `grid`."""
    (channels, window), (_, patch) = grid.input_size, grid.patch_size
    if g.patch_stride != g.patch_length:
        raise ValueError(
            f"{source} has patch_stride={g.patch_stride} != patch_length={g.patch_length}: "
            "fmtrain's token grid needs non-overlapping, gapless patches (stride == length)."
        )
    if g.patch_length != patch:
        raise ValueError(
            f"{PATCH_KEY}={list(grid.patch_size)} but {source} has patch_length="
            f"{g.patch_length} ({g.num_patches} patches of {g.context_length} samples): set "
            f"{PATCH_KEY}=[1, {g.patch_length}]."
        )
    if g.context_length != window:
        raise ValueError(
            f"{WINDOW_KEY}={window} samples but {source} has context_length="
            f"{g.context_length}: set {WINDOW_KEY}={g.context_length}."
        )
    if g.channels != channels and not (g.channels == 1 and channel_independent(config)):
        mixing = "" if channel_independent(config) else ", and mixes its channels"
        raise ValueError(
            f"{CHANNELS_KEY} gives {channels} channel(s) but {source} has num_input_channels="
            f"{g.channels}{mixing}: select exactly {g.channels} channel(s) in {CHANNELS_KEY}."
        )


@dataclass(frozen=True, kw_only=True)
class _HFTimeSeriesSpec(EncoderSpec):
    """Fields shared by the time-series specs; all but `pretrained` and
    `activation_checkpointing` apply only when building from a config."""

    pretrained: str | None = None
    patch_length: int | None = None  # None: the grid's patch length
    context_length: int | None = None  # None: the grid's window
    d_model: int = 64
    num_layers: int = 3
    dropout: float = 0.0
    activation_checkpointing: bool = False
    _classes: ClassVar[tuple[str, str, str]] = ("", "", "")  # module, config, base model

    def _import(self) -> Any:
        return importlib.import_module(self._classes[0])

    def _extra(self) -> dict[str, Any]:
        return {"num_layers": self.num_layers, "dropout": self.dropout}

    def _new(self, grid: TokenGrid) -> nn.Module:
        module, (_, config_cls, model_cls) = self._import(), self._classes
        patch = self.patch_length or grid.patch_size[1]
        # fmtrain normalises each window itself: a second, in-model scaling (HF's default
        # "std") would undo what the data pipeline chose to keep, e.g. amplitude.
        sizes = {"patch_length": patch, "patch_stride": patch, "d_model": self.d_model}
        window = {"context_length": self.context_length or grid.input_size[1]}
        config = getattr(module, config_cls)(
            **sizes, **window, num_input_channels=grid.input_size[0], scaling=None, **self._extra()
        )
        return getattr(module, model_cls)(config)

    def _load(self, path: str) -> nn.Module:
        model_cls = getattr(self._import(), self._classes[2])
        return model_cls.from_pretrained(path, local_files_only=True)

    def _parts(self, model: nn.Module) -> tuple[nn.Module, nn.ModuleList, bool]:
        """(patchify module, layer stack, whether hidden states are the layers' inputs)."""
        return model.patching, model.encoder.mlp_mixer_encoder.mixers, False

    def build(self, grid: TokenGrid, in_chans: int) -> nn.Module:
        if grid.ndim != 2 or grid.patch_size[0] != 1 or in_chans != 1:
            raise ValueError(
                f"{PATCH_KEY}={list(grid.patch_size)} on input {list(grid.input_size)} with "
                f"{in_chans} channel(s): time-series encoders need input (C, T), patch [1, L], 1."
            )
        path = self.pretrained
        if path is not None and not Path(path).is_dir():
            raise FileNotFoundError(
                f"{SPEC_KEY}.pretrained={path!r} is not a folder: give a local folder "
                "written by save_pretrained (nothing is downloaded)."
            )
        model = self._new(grid) if path is None else self._load(path)
        source = f"the pretrained encoder at {path}" if path else f"the encoder of {SPEC_KEY}"
        patcher, layers, states_before = self._parts(model)
        # what the model really does to a window, read from its own patchify module
        names = ("patch_length", "patch_stride", "sequence_length", "num_patches")
        g = Geometry(*(int(getattr(patcher, n)) for n in names), model.config.num_input_channels)
        facts = " ".join(f"{k}={v}" for k, v in asdict(g).items())
        config = model.config
        log.info(
            f"{type(model).__name__} from {path or 'config'}: {facts} d_model="
            f"{config.d_model} layers={len(layers)} scaling={config.scaling}"
        )
        _check_geometry(g, grid, source, config)
        channels = grid.input_size[0]
        if channels != g.channels:
            log.info(
                f"{type(model).__name__} is channel-independent and built for 1 channel: it "
                f"reads each of the {channels} channels with the same weights"
            )
        encoder = HFTimeSeriesEncoder(
            model, g, layers, states_before=states_before, channels=channels
        )
        encoder.set_grad_checkpointing(self.activation_checkpointing)
        return encoder


@dataclass(frozen=True, kw_only=True)
class PatchTSMixerEncoder(_HFTimeSeriesSpec):
    """`transformers.PatchTSMixerModel`, an MLP-Mixer over each channel's patches.

    `pretrained`: a local `save_pretrained` folder (PatchTSMixerModel or ...ForPretraining);
    otherwise a fresh model of `d_model`, `num_layers`, `expansion_factor` and `dropout`,
    with patch and context lengths from the grid unless given.
    """

    expansion_factor: int = 2
    _classes = ("transformers", "PatchTSMixerConfig", "PatchTSMixerModel")

    def _extra(self) -> dict[str, Any]:
        return {**super()._extra(), "expansion_factor": self.expansion_factor}


@dataclass(frozen=True, kw_only=True)
class PatchTSTEncoder(_HFTimeSeriesSpec):
    """`transformers.PatchTSTModel`, a Transformer over each channel's patches.

    `pretrained`: a local `save_pretrained` folder (PatchTSTModel or ...ForPretraining);
    otherwise a fresh model of `d_model`, `num_layers`, `num_heads` (MLP 4 * d_model) and
    `dropout`, with LayerNorm rather than PatchTST's default BatchNorm, which would couple
    the samples of a batch and count the zeroed hidden patches in its statistics.
    """

    num_heads: int = 4
    _classes = ("transformers", "PatchTSTConfig", "PatchTSTModel")

    def _extra(self) -> dict[str, Any]:
        sizes = {"num_hidden_layers": self.num_layers, "num_attention_heads": self.num_heads}
        drop = {"attention_dropout": self.dropout, "ff_dropout": self.dropout}
        return {**sizes, **drop, "ffn_dim": 4 * self.d_model, "norm_type": "layernorm"}

    def _parts(self, model: nn.Module) -> tuple[nn.Module, nn.ModuleList, bool]:
        return model.patchifier, model.encoder.layers, True


@dataclass(frozen=True, kw_only=True)
class TTMEncoder(PatchTSMixerEncoder):
    """IBM granite-tsfm's TinyTimeMixer backbone (`tsfm_public`; `pip install fmtrain[ttm]`).

    Same fields as `PatchTSMixerEncoder`. `pretrained` is a local TinyTimeMixerForPrediction
    folder (the published form), whose `backbone` is the encoder. Models with resolution
    prefix tuning are refused: they need a frequency token per sample.
    """

    _classes = ("tsfm_public.models.tinytimemixer", "TinyTimeMixerConfig", "TinyTimeMixerModel")

    def _import(self) -> Any:
        try:
            return super()._import()
        except ImportError as err:
            raise ImportError(
                "TTMEncoder needs IBM's granite-tsfm (the tsfm_public package): pip install "
                "fmtrain[ttm]. granite-tsfm pins an older torch than fmtrain's, so install it "
                "in its own environment if pip would replace your torch."
            ) from err

    def _load(self, path: str) -> nn.Module:
        model = self._import().TinyTimeMixerForPrediction.from_pretrained(
            path, local_files_only=True
        )
        if getattr(model.config, "resolution_prefix_tuning", False):
            raise ValueError(
                f"{SPEC_KEY}.pretrained={path!r} uses resolution prefix tuning (a frequency "
                "token per sample), which fmtrain does not feed. Fix: a TTM without it."
            )
        return model.backbone
