"""fmtrain's FSDP units, without processes: which modules become units, and that the name
`fsdp` builds fmtrain's strategy (the two-rank runs are in test_distributed.py)."""

from __future__ import annotations

from lightning.pytorch.strategies import StrategyRegistry

import fmtrain.engine  # noqa: F401  (registers the name)
from fmtrain.engine.fsdp import FSDPStrategy, twin_safe_units
from fmtrain.methods import VJEPAModule
from fmtrain.methods.configs import PredictorConfig
from fmtrain.nn.encoder import ViTEncoder


def test_encoder_and_its_ema_twin_get_the_same_units():
    module = VJEPAModule(
        input_size=(8, 32, 32),
        patch_size=(2, 8, 8),
        encoder=ViTEncoder(size="vit_test"),
        predictor=PredictorConfig(embed_dim=32, depth=1, num_heads=2),
    )
    units = twin_safe_units(module)
    names = {name for name, m in module.named_modules() if id(m) in units}
    method = module.method
    for part in ("encoder", "target_encoder"):
        blocks = getattr(method, part).blocks
        assert f"method.{part}" in names
        assert {f"method.{part}.blocks.{i}" for i in range(len(blocks))} <= names
    assert "method.predictor" in names
    # the same relative names under both twins: the same flat parameters, the same shards
    relative = lambda part: sorted(n.removeprefix(part) for n in names if n.startswith(part))  # noqa: E731
    assert relative("method.encoder") == relative("method.target_encoder")
    assert "" not in names and "method" not in names  # the root unit is FSDP's own


def test_the_name_fsdp_builds_fmtrains_strategy():
    strategy = StrategyRegistry.get("fsdp")
    assert type(strategy) is FSDPStrategy
