# Two entry points that do all the set-up on a fresh machine (see README.md):
#   make run    installs medtune into .venv and runs the default learning-rate study
#   make test   installs medtune with its test extra into .venv, Chromium for the browser tests (as root, from
#               Debian's packages, when it is missing) and runs the test suite (in two lanes, see below)
# TORCH_SPEC picks the PyTorch build: the CPU wheel by default; on a GPU machine use e.g. TORCH_SPEC=torch.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: run test check bench gpu-check install browser docs

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e '.[dashboard,test,docs]'
	touch $@

install: $(VENV)/.installed

run: $(VENV)/.installed
	$(BIN)/medtune run lr-schedulers

# The browser tests drive Debian's Chromium through Playwright (no browser download): install it when it is missing
# and this is root on Debian (Ubuntu ships Chromium as a snap only); otherwise those tests are skipped with a note (set
# MEDTUNE_REQUIRE_BROWSER=1 to make a missing Chromium fail them instead, as CI does).
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  { export DEBIAN_FRONTEND=noninteractive; apt-get install -y -q chromium >/dev/null 2>&1 || \
	    { apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; }; } ; } || \
	  echo "note: no chromium found or installed; the browser tests will be skipped"

# Two lanes at once: the tests that bring up a cluster or a server of their own (`medtune cluster up`, a three-node
# Ray, an MLflow server stopped mid-run) and the suite's end-to-end run (consecutive sessions of its own, sharing
# nothing with the rest) run beside the rest, which spends much of its time waiting on processes that start; the
# second lane's report is printed after the main one, and either lane failing fails the target.
CLUSTER_LANE := tests/test_service.py tests/test_session_multinode.py tests/test_suite_end_to_end.py \
	tests/test_tracking_outage.py

# The static checks: ruff over the repository (pyproject.toml's [tool.ruff]) and mypy over the installed medtune
# namespace (tests/typecheck.py maps cluster/, trainables/, ... to their medtune.* names; [tool.mypy]).
check: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/python tests/typecheck.py

test: $(VENV)/.installed browser check
	@lane_log=$$(mktemp -t medtune-cluster-lane.XXXXXX); \
	$(BIN)/python -m pytest -p no:cacheprovider $(CLUSTER_LANE) >"$$lane_log" 2>&1 & lane=$$!; \
	trap 'kill $$lane 2>/dev/null' INT TERM; \
	$(BIN)/python -m pytest $(addprefix --ignore=,$(CLUSTER_LANE)); main=$$?; \
	wait $$lane; cluster=$$?; \
	echo "=== the cluster lane ($(CLUSTER_LANE)) ==="; cat "$$lane_log"; rm -f "$$lane_log"; \
	[ $$main -eq 0 ] && [ $$cluster -eq 0 ]

# The documentation site (docs/, mkdocs.yml) built into site/, any warning an error; `.venv/bin/mkdocs serve` serves it.
docs: $(VENV)/.installed
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

bench: $(VENV)/.installed
	$(BIN)/python -m pytest tests/bench -s -p no:cacheprovider

# The CUDA path run for real (the smoke LR study with AMP at 1, 2 and 4 trials per GPU, the optimizers that bring their
# own, nvidia-smi's utilisation and memory, the plan for a BrainTumour-sized task); one line and exit 0 without a GPU.
# On a GPU machine: make gpu-check TORCH_SPEC=torch
gpu-check: $(VENV)/.installed
	$(BIN)/python tests/bench/gpu_check.py
