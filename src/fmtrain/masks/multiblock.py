"""V-JEPA multiblock masks over a 1D, 2D or 3D token grid, returned as index tensors.

Per mask family (`MultiBlockSpec`) and batch, one block size is drawn (scale and aspect
shared by every sample, as in V-JEPA, so that lengths are similar); each sample then
places `num_blocks` blocks at independent uniform positions. The target is the union of
the blocks, the context its complement. Indices address the grid flattened in row-major
(C) order. Sampling is pure numpy because it runs on loader workers for every batch.

Static lengths: every batch of a family has the same context and target lengths, fixed when
the sampler is built from the grid and the spec alone, so the model sees one shape on every
step (a compiled step never recompiles; the allocator reuses its blocks). The rule: draw
`_LENGTH_BATCHES` x `_LENGTH_BATCH_SIZE` samples with a fixed seed (`_LENGTH_SEED`), exactly
as `sample` draws them, and take the 10th percentile (lower) of the per-sample context
counts as the context length and of the per-sample target counts as the target length.
Most samples then lose a uniformly random part of their context and target (as batch-minimum
equalisation did, which for a batch of 8 cut to about the 11th percentile); the ~10% of
samples with fewer visible tokens get the missing context tokens from their blocks, and the
~10% with fewer hidden tokens get their missing target tokens from the visible ones the
context did not take (`fixed_length_pair`), chosen uniformly, so no position is favoured.
Every context keeps >= `min_context_tokens` (every sample does, so its percentile does).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from fmtrain.masks.base import MaskPair, MaskSampler
from fmtrain.masks.equal_length import fixed_length_pair

logger = logging.getLogger("fmtrain.masks")

# Placements tried at the drawn size before blocks start shrinking: one unlucky overlap
# pattern should not change the block size.
_PLACEMENTS_BEFORE_SHRINK = 3
_SHRINK_PER_AXIS = 0.8
# Batches drawn by `describe()`; a fixed seed keeps log lines reproducible.
_DESCRIBE_BATCHES = 16
_DESCRIBE_BATCH_SIZE = 8
# The simulation that fixes each family's lengths (see the module docstring): 256 samples in
# batches of 8 (the block size is drawn per batch), a fixed seed, the 10th percentile.
_LENGTH_BATCHES = 32
_LENGTH_BATCH_SIZE = 8
_LENGTH_SEED = 0
_LENGTH_QUANTILE = 0.1


def _as_range(
    name: str, value: Sequence[float], *, upper: float | None, example: str
) -> tuple[float, float]:
    """Check a `(min, max)` pair and return it as a tuple of floats."""
    bound = f"0 < min <= max <= {upper:g}" if upper is not None else "0 < min <= max"
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        lo = hi = math.nan
    if not (0.0 < lo <= hi < math.inf and (upper is None or hi <= upper)):
        raise ValueError(
            f"MultiBlockSpec.{name} must be a (min, max) pair with {bound}, got {value!r}. "
            f"Fix: set {name} to e.g. {example}."
        )
    return lo, hi


@dataclass(frozen=True, kw_only=True)
class MultiBlockSpec:
    """One family of block masks (e.g. V-JEPA's short-range or long-range masks).

    Attributes:
        num_blocks: blocks placed per sample; the target is their union.
        spatial_scale: (min, max) fraction of the spatial extent covered by ONE block:
            the area of the last two grid axes, or the length of the axis of a 1D grid.
        temporal_scale: (min, max) fraction of the leading axis covered by a block. Only
            meaningful for 3D grids; must stay (1.0, 1.0) for 1D and 2D grids.
        aspect_ratio: (min, max) height/width of a block over the last two axes, drawn
            log-uniformly. Ignored for 1D grids.
    """

    num_blocks: int = 8
    spatial_scale: tuple[float, float] = (0.15, 0.15)
    temporal_scale: tuple[float, float] = (1.0, 1.0)
    aspect_ratio: tuple[float, float] = (0.75, 1.5)

    def __post_init__(self) -> None:
        if isinstance(self.num_blocks, bool) or not isinstance(self.num_blocks, int | np.integer):
            raise ValueError(
                f"MultiBlockSpec.num_blocks must be an integer >= 1, got {self.num_blocks!r}."
            )
        if self.num_blocks < 1:
            raise ValueError(
                f"MultiBlockSpec.num_blocks must be >= 1, got {self.num_blocks}. "
                "Fix: set num_blocks to 1 or more."
            )
        # Recipes may hand lists; store tuples so the spec stays hashable and comparable.
        object.__setattr__(self, "num_blocks", int(self.num_blocks))
        for name, upper, example in (
            ("spatial_scale", 1.0, "(0.15, 0.15)"),
            ("temporal_scale", 1.0, "(1.0, 1.0)"),
            ("aspect_ratio", None, "(0.75, 1.5)"),
        ):
            value = _as_range(name, getattr(self, name), upper=upper, example=example)
            object.__setattr__(self, name, value)


def _validate_grid(grid: Sequence[int]) -> tuple[int, ...]:
    try:
        axes = tuple(grid)
    except TypeError:
        raise ValueError(
            f"grid must be a sequence of 1 to 3 positive axis sizes, got {grid!r}."
        ) from None
    if not 1 <= len(axes) <= 3 or any(
        isinstance(a, bool) or not isinstance(a, int | np.integer) or a < 1 for a in axes
    ):
        raise ValueError(
            f"grid must hold 1 to 3 integer axis sizes, each >= 1 ((L,), (H, W) or (T, H, W) "
            f"tokens), got {grid!r}. Fix: pass input_size // patch_size per axis."
        )
    return tuple(int(a) for a in axes)


class MultiBlockMaskSampler:
    """Samples V-JEPA multiblock (context, target) index pairs over a token grid.

    Every sample keeps at least `min_context_tokens` context tokens. When a placement
    hides too much, the blocks of that sample are re-placed, then shrunk by
    `_SHRINK_PER_AXIS` per axis per try; after `max_tries` attempts the sample falls
    back to 1-token blocks, which the constructor has proven feasible. Every batch of a
    family has the same context and target lengths (`lengths`), fixed at construction from
    the grid and the spec (module docstring); each row keeps a uniformly random subset, so no
    position loses tokens more often than another.

    Args:
        grid: token grid shape, (L,), (H, W) or (T, H, W).
        specs: mask families; `sample` returns one `MaskPair` per spec, in order.
        min_context_tokens: minimum number of context tokens in every sample.
        max_tries: placement attempts per sample (the first included) before falling
            back to 1-token blocks.

    Raises:
        ValueError: on a malformed grid or spec, or when even 1-token blocks cannot leave
            `min_context_tokens` context tokens; the message names the key and the fix.
    """

    def __init__(
        self,
        grid: Sequence[int],
        specs: Sequence[MultiBlockSpec],
        *,
        min_context_tokens: int = 10,
        max_tries: int = 20,
    ) -> None:
        self._grid = _validate_grid(grid)
        self._specs = tuple(specs)
        if not self._specs:
            raise ValueError("specs must hold at least one MultiBlockSpec, got none.")
        for i, spec in enumerate(self._specs):
            if not isinstance(spec, MultiBlockSpec):
                raise ValueError(f"specs[{i}] must be a MultiBlockSpec, got {type(spec).__name__}.")
        for name, value in (("min_context_tokens", min_context_tokens), ("max_tries", max_tries)):
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}.")
        self._min_context = int(min_context_tokens)
        self._max_tries = int(max_tries)
        self._num_tokens = math.prod(self._grid)
        self._grid_arr = np.asarray(self._grid, dtype=np.int64)
        self._adaptation_logged = False

        for i, spec in enumerate(self._specs):
            if len(self._grid) < 3 and spec.temporal_scale != (1.0, 1.0):
                raise ValueError(
                    f"specs[{i}].temporal_scale={spec.temporal_scale} only applies to 3D "
                    f"(T, H, W) grids, but the grid is {self._grid}. Fix: drop temporal_scale "
                    "from this spec or use a 3D grid."
                )
            # Blocks overlap at most fully, so 1-token blocks hide <= num_blocks tokens:
            # this is exactly the case that shrinking can always reach.
            if self._num_tokens - spec.num_blocks < self._min_context:
                raise ValueError(
                    f"min_context_tokens={self._min_context} cannot be met on grid "
                    f"{self._grid} ({self._num_tokens} tokens) with specs[{i}]={spec}: even "
                    f"1-token blocks leave only {self._num_tokens - spec.num_blocks} context "
                    f"tokens. Fix: lower specs[{i}].num_blocks or min_context_tokens, or use a "
                    "larger token grid (larger input or smaller patch size)."
                )
            smallest = self._smallest_block_tokens(spec)
            if self._num_tokens - smallest < self._min_context:
                logger.warning(
                    "specs[%d]=%s: a single block at the smallest scale already hides %d of "
                    "%d tokens, leaving fewer than min_context_tokens=%d; every sample will "
                    "shrink its blocks. Fix: lower specs[%d].spatial_scale/temporal_scale, or "
                    "use a larger token grid (larger input or smaller patch size).",
                    i,
                    spec,
                    smallest,
                    self._num_tokens,
                    self._min_context,
                    i,
                )
        self._lengths = [self._fixed_lengths(spec) for spec in self._specs]

    @property
    def num_tokens(self) -> int:
        """Number of tokens in the grid; every index is in [0, num_tokens)."""
        return self._num_tokens

    @property
    def grid(self) -> tuple[int, ...]:
        """The token grid shape."""
        return self._grid

    @property
    def min_context_tokens(self) -> int:
        """Every sample keeps at least this many context tokens."""
        return self._min_context

    @property
    def specs(self) -> tuple[MultiBlockSpec, ...]:
        """The mask families, in the order `sample` returns them."""
        return self._specs

    @property
    def lengths(self) -> list[tuple[int, int]]:
        """(context, target) tokens per sample of each family: the same in every batch."""
        return list(self._lengths)

    def block_masks(self, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
        """Per family, bool [B, N]: the union of each sample's blocks, before the lengths are
        fixed (what `sample` cuts its target and context from)."""
        return [self._block_masks(spec, batch_size, rng)[0] for spec in self._specs]

    def sample(self, batch_size: int, rng: np.random.Generator) -> list[MaskPair]:
        """Sample one (context, target) pair per spec for a batch.

        Args:
            batch_size: number of samples B.
            rng: numpy generator; the same generator state gives the same masks.

        Returns:
            One `MaskPair` per spec, in spec order, each with [B, N] int64 tensors.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer):
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}.")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        if not isinstance(rng, np.random.Generator):
            raise TypeError(
                f"rng must be a numpy.random.Generator, got {type(rng).__name__}. "
                "Fix: pass np.random.default_rng(seed)."
            )
        pairs = []
        for i in range(len(self._specs)):
            pair, _, adaptation = self._sample_spec(i, int(batch_size), rng)
            if adaptation is not None and not self._adaptation_logged:
                # Once per sampler: the event is expected on small grids and would
                # otherwise repeat every batch on every worker.
                self._adaptation_logged = True
                logger.warning(
                    "specs[%d] on grid %s: a sample kept fewer than min_context_tokens=%d "
                    "context tokens, so its blocks were %s. Logged once per sampler. Fix if "
                    "frequent: lower specs[%d].num_blocks or spatial_scale, or use a larger "
                    "token grid (larger input or smaller patch size).",
                    i,
                    self._grid,
                    self._min_context,
                    adaptation,
                    i,
                )
            pairs.append(pair)
        return pairs

    def describe(self) -> str:
        """Summarize each spec in one line, for logs.

        The expected block size and the fraction of batches that had to adapt are
        Monte-Carlo estimates from a fixed seed (so the text is reproducible); the context
        and target lengths are the fixed ones every batch has.

        Returns:
            One line per spec, joined by newlines.
        """
        rng = np.random.default_rng(0)
        lines = []
        for i, spec in enumerate(self._specs):
            extents, adapted = [], 0
            for _ in range(_DESCRIBE_BATCHES):
                _, ext, adaptation = self._block_masks(spec, _DESCRIBE_BATCH_SIZE, rng)
                extents.append(ext)
                adapted += adaptation is not None
            mean_ext = np.mean(extents, axis=0)
            block = float(np.mean([math.prod(e) for e in extents]))
            n = self._num_tokens
            ctx, tgt = self._lengths[i]
            lines.append(
                f"specs[{i}]: {spec.num_blocks} blocks of ~{'x'.join(f'{e:.1f}' for e in mean_ext)}"
                f" = {block:.0f} tokens ({block / n:.1%} of {n}); target {tgt} ({tgt / n:.2f}),"
                f" context {ctx} ({ctx / n:.2f}) tokens per sample in every batch;"
                f" {adapted}/{_DESCRIBE_BATCHES} batches adapted"
            )
        return "\n".join(lines)

    # ---------------------------------------------------------------- internals

    def _draw_extents(self, spec: MultiBlockSpec, rng: np.random.Generator) -> np.ndarray:
        """Draw one block extent per grid axis, shared by the whole batch."""
        grid = self._grid
        scale = rng.uniform(*spec.spatial_scale)
        if len(grid) == 1:
            return np.array([min(max(round(scale * grid[0]), 1), grid[0])], dtype=np.int64)
        height, width = grid[-2:]
        log_lo, log_hi = math.log(spec.aspect_ratio[0]), math.log(spec.aspect_ratio[1])
        aspect = math.exp(rng.uniform(log_lo, log_hi))
        area = scale * height * width
        ext = [
            min(max(round(math.sqrt(area * aspect)), 1), height),
            min(max(round(math.sqrt(area / aspect)), 1), width),
        ]
        if len(grid) == 3:
            t_scale = rng.uniform(*spec.temporal_scale)
            ext.insert(0, min(max(round(t_scale * grid[0]), 1), grid[0]))
        return np.array(ext, dtype=np.int64)

    def _smallest_block_tokens(self, spec: MultiBlockSpec) -> int:
        """Tokens in one block at the smallest scales (aspect 1), for construction checks."""
        grid = self._grid
        scale = spec.spatial_scale[0]
        if len(grid) == 1:
            return min(max(round(scale * grid[0]), 1), grid[0])
        side = math.sqrt(scale * grid[-2] * grid[-1])
        tokens = min(max(round(side), 1), grid[-2]) * min(max(round(side), 1), grid[-1])
        if len(grid) == 3:
            tokens *= min(max(round(spec.temporal_scale[0] * grid[0]), 1), grid[0])
        return tokens

    @staticmethod
    def _paint(mask: np.ndarray, extents: list[int], starts: list[list[int]]) -> None:
        """Set `mask` (grid-shaped view) to the union of blocks at `starts`."""
        mask[...] = False
        for start in starts:
            mask[tuple([slice(s, s + e) for s, e in zip(start, extents, strict=True)])] = True

    def _place(self, extents: np.ndarray, num: int, rng: np.random.Generator) -> np.ndarray:
        # Inclusive upper bound: a block may end on the last row/column/frame, so every
        # position can be covered (some reference versions drew from [0, axis - extent)).
        return rng.integers(0, self._grid_arr - extents + 1, size=(num, len(self._grid)))

    def _adapt(
        self, mask: np.ndarray, extents: np.ndarray, spec: MultiBlockSpec, rng: np.random.Generator
    ) -> str:
        """Re-place, then shrink, one sample's blocks until enough context is left."""
        current = extents
        for attempt in range(1, self._max_tries):
            if attempt >= _PLACEMENTS_BEFORE_SHRINK:
                current = np.maximum(np.floor(current * _SHRINK_PER_AXIS).astype(np.int64), 1)
            starts = self._place(current, spec.num_blocks, rng)
            self._paint(mask, current.tolist(), starts.tolist())
            if self._num_tokens - np.count_nonzero(mask) >= self._min_context:
                break
        else:
            # Feasible by the constructor's check: 1-token blocks hide <= num_blocks tokens.
            current = np.ones_like(extents)
            starts = self._place(current, spec.num_blocks, rng)
            self._paint(mask, current.tolist(), starts.tolist())
        if np.array_equal(current, extents):
            return "re-placed"
        return f"shrunk from {tuple(extents.tolist())} to {tuple(current.tolist())}"

    def _fixed_lengths(self, spec: MultiBlockSpec) -> tuple[int, int]:
        """(context, target) lengths of a family: the lower 10th percentiles of a fixed-seed
        simulation of `sample` (module docstring). A pure function of grid and spec."""
        rng = np.random.default_rng(_LENGTH_SEED)
        hidden = np.concatenate(
            [
                np.count_nonzero(self._block_masks(spec, _LENGTH_BATCH_SIZE, rng)[0], axis=1)
                for _ in range(_LENGTH_BATCHES)
            ]
        )
        rank = int(_LENGTH_QUANTILE * (hidden.size - 1))
        context = int(np.sort(self._num_tokens - hidden)[rank])
        target = int(np.sort(hidden)[rank])
        return context, target

    def _sample_spec(
        self, index: int, batch_size: int, rng: np.random.Generator
    ) -> tuple[MaskPair, np.ndarray, str | None]:
        """Sample family `index` for a batch; returns the pair, drawn extents, adaptation note."""
        flat, extents, adaptation = self._block_masks(self._specs[index], batch_size, rng)
        context, target = fixed_length_pair(flat, *self._lengths[index], rng)
        pair = MaskPair(context=torch.from_numpy(context), target=torch.from_numpy(target))
        return pair, extents, adaptation

    def _block_masks(
        self, spec: MultiBlockSpec, batch_size: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray, str | None]:
        """Place one spec's blocks for a batch: (hidden bool [B, N], extents, adaptation)."""
        extents = self._draw_extents(spec, rng)
        starts = self._place(extents, batch_size * spec.num_blocks, rng).reshape(
            batch_size, spec.num_blocks, -1
        )
        masks = np.empty((batch_size, *self._grid), dtype=bool)
        ext_list = extents.tolist()
        for b in range(batch_size):
            self._paint(masks[b], ext_list, starts[b].tolist())
        flat = masks.reshape(batch_size, -1)

        adaptation = None
        hidden = np.count_nonzero(flat, axis=1)
        for b in np.flatnonzero(self._num_tokens - hidden < self._min_context).tolist():
            adaptation = self._adapt(masks[b], extents, spec, rng)
        return flat, extents, adaptation


def default_families() -> list[MultiBlockSpec]:
    """V-JEPA's mix: 8 short-range blocks at 15% and 2 long-range blocks at 70% of the area."""
    return [
        MultiBlockSpec(num_blocks=8, spatial_scale=(0.15, 0.15)),
        MultiBlockSpec(num_blocks=2, spatial_scale=(0.7, 0.7)),
    ]


@dataclass(kw_only=True)
class MultiBlock(MaskSampler):
    """V-JEPA multiblock masks, as a recipe names them (`class_path: fmtrain.masks.MultiBlock`).

    Args:
        families: mask families; each batch gets one (context, target) pair per family.
            Default: 8 blocks at 15% and 2 blocks at 70% of the spatial area.
        min_context_tokens: every sample keeps at least this many context tokens.
        max_tries: placement attempts per sample before falling back to 1-token blocks.
    """

    families: list[MultiBlockSpec] = field(default_factory=default_families)
    min_context_tokens: int = 10
    max_tries: int = 20

    def __post_init__(self) -> None:
        self.families = [
            f if isinstance(f, MultiBlockSpec) else MultiBlockSpec(**f) for f in self.families
        ]
        self._samplers: dict[tuple[int, ...], MultiBlockMaskSampler] = {}

    def num_families(self) -> int:
        return len(self.families)

    def _sampler(self, grid: Sequence[int]) -> MultiBlockMaskSampler:
        key = tuple(int(g) for g in grid)
        if key not in self._samplers:
            try:
                self._samplers[key] = MultiBlockMaskSampler(
                    key,
                    self.families,
                    min_context_tokens=self.min_context_tokens,
                    max_tries=self.max_tries,
                )
            except ValueError as err:
                raise ValueError(f"data.init_args.masks: {err}") from None
        return self._samplers[key]

    def validate(self, grid: Sequence[int]) -> None:
        self._sampler(grid)

    def sample(
        self, grid: Sequence[int], batch_size: int, rng: np.random.Generator
    ) -> list[MaskPair]:
        return self._sampler(grid).sample(batch_size, rng)

    def describe(self, grid: Sequence[int], batch_size: int = 8, batches: int = 16) -> str:
        # the multiblock sampler's own summary also reports block sizes and adaptations
        return self._sampler(grid).describe()

    def __getstate__(self) -> dict:
        # loader workers rebuild the per-grid samplers; they are caches, not configuration
        return {**self.__dict__, "_samplers": {}}
