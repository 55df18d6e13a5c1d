"""Credentials in a recipe (`data.init_args.storage_options`) reach the storage client and
nothing else: the config a run saves beside its logs, and the config a logger (W&B) records,
carry a placeholder instead.

A value is a credential when its key names one (``key``, ``secret``, ``token``,
``password``, ``credentials``, ...). Well-known non-secret token modes (gcsfs's ``anon``,
``google_default``, ``cloud``) are kept, so the saved recipe still says how it authenticated.
"""

from __future__ import annotations

import re
from typing import Any

from jsonargparse import Namespace
from lightning.pytorch.cli import SaveConfigCallback

__all__ = ["REDACTED", "RedactingSaveConfigCallback", "is_secret_key", "redact_secrets"]

REDACTED = "<redacted>"
_SECRET_KEY = re.compile(
    r"(^|_)(key|secret|token|password|passwd|credentials?|signature|sas|"
    r"connection_string|private_key|account_key)($|_)",
    re.IGNORECASE,
)
# key names that contain a secret word but hold none
_NOT_SECRET_KEYS = {"key_prefix", "token_uri", "sse_kms_key_id"}
# gcsfs token modes: how to authenticate, not a credential
_PUBLIC_TOKEN_MODES = {"anon", "google_default", "cloud", "browser", "cache"}


def is_secret_key(name: str) -> bool:
    """Whether a storage option called `name` holds a credential."""
    return name.lower() not in _NOT_SECRET_KEYS and bool(_SECRET_KEY.search(name))


def _redact_value(name: str, value: Any) -> Any:
    if value is None or not is_secret_key(name):
        return redact_secrets(value)
    if isinstance(value, str) and value in _PUBLIC_TOKEN_MODES:
        return value
    return REDACTED


def redact_secrets(value: Any) -> Any:
    """`value` with its containers (dicts, jsonargparse Namespaces, lists) copied and every
    credential-named entry, at any depth, replaced by `REDACTED`; other leaves are shared."""
    if isinstance(value, Namespace):
        out = Namespace()
        for name, item in vars(value).items():
            setattr(out, name, _redact_value(name, item))
        return out
    if isinstance(value, dict):
        return {k: _redact_value(str(k), v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact_secrets(v) for v in value)
    return value  # leaves are shared, never changed


class RedactingSaveConfigCallback(SaveConfigCallback):
    """Lightning's config saving (``config.yaml`` in the run's log folder), with credentials
    replaced by a placeholder; a W&B run also gets the whole recipe, redacted the same way,
    as its run config (where W&B users compare runs)."""

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        full = self.config
        self.config = redact_secrets(full)
        try:
            super().setup(trainer, pl_module, stage)
        finally:
            self.config = full

    def save_config(self, trainer: Any, pl_module: Any, stage: str) -> None:
        from lightning.pytorch.loggers import WandbLogger  # no wandb import until used

        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_hyperparams({"recipe": self.config.as_dict()})
