"""Run-time machinery around Lightning's loop: atomic checkpoints, resume, out-of-memory advice,
and the opt-in micro-batch finder. Nothing here knows a model or a data format."""
