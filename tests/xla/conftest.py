"""XLA tests need torch-xla, which pins its own torch: they run in `make test-xla` (a separate
`.venv-xla`), on XLA's CPU backend here and on a TPU VM alike; each module skips itself,
with the reason, where torch-xla is not installed."""

import os

# before torch_xla is imported: its runtime reads the backend once. A TPU VM sets TPU itself.
os.environ.setdefault("PJRT_DEVICE", "CPU")
