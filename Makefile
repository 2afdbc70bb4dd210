# Every target creates .venv on first use, so each is the only command a newcomer types.
PRESET ?= ci
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
NBVAL := --nbval-lax --nbval-current-env --nbval-sanitize-with notebooks/nbval-sanitize.cfg

.PHONY: install run test test-unit test-notebooks lab clean-runs

install: $(STAMP)

# torch is pinned to the CPU build that lies on disk; installing it first keeps
# pip from resolving a multi-GB CUDA build for packages that depend on torch.
$(STAMP): pyproject.toml
	python3.11 -m venv $(VENV) 2>/dev/null || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e .
	touch $(STAMP)

run: $(STAMP)
	$(PY) -m rlnb.series --preset $(PRESET)

test: $(STAMP)
	$(PY) -m pytest tests notebooks $(NBVAL) --durations=15

test-unit: $(STAMP)
	$(PY) -m pytest tests

test-notebooks: $(STAMP)
	$(PY) -m pytest notebooks $(NBVAL)

# Jupyter refuses to start as root (as in most containers) unless told to: --allow-root only then.
# LAB_ARGS passes further options, e.g. LAB_ARGS="--no-browser --port=8890".
LAB_ARGS ?=
lab: $(STAMP)
	$(VENV)/bin/jupyter lab --notebook-dir=notebooks $(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_ARGS)

clean-runs:
	rm -rf runs
