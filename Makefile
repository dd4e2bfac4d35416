# Two entry points that do all the set-up on a fresh machine (see README.md):
#   make run    installs medtune into .venv and runs the default learning-rate study
#   make test   installs medtune with its test extra into .venv and runs the test suite
# TORCH_SPEC picks the PyTorch build: the CPU wheel by default; on a GPU machine use e.g. TORCH_SPEC=torch.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: run test bench install

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

install: $(VENV)/.installed

run: $(VENV)/.installed
	$(BIN)/medtune run lr-schedulers

test: $(VENV)/.installed
	$(BIN)/python -m pytest

bench: $(VENV)/.installed
	$(BIN)/python -m pytest tests/bench -s -p no:cacheprovider
