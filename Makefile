# The two commands a new user types: `make demo` and `make test`. Everything else is optional.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
# The CPU build of torch comes from different places on different machines: override e.g.
#   make test TORCH_REQ="torch==2.5.1 --index-url https://download.pytorch.org/whl/cpu"
TORCH_REQ ?= torch==2.13.0
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.dist-vgg-installed
# pytest arguments, e.g. make test PYTEST_ARGS="-k models -x"
PYTEST_ARGS ?=

.PHONY: venv test lint demo demo-slurm bench clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

# Reinstalled only when pyproject.toml or the torch requirement changes: a warm `make test` starts at once.
$(STAMP): pyproject.toml | $(VENV)/bin/python
	$(PIP) install -q $(TORCH_REQ)
	DS_BUILD_OPS=0 $(PIP) install -q -e '.[dev]'
	echo "$(TORCH_REQ)" > $(STAMP)

venv: $(STAMP)
	@if [ "$$(cat $(STAMP))" != "$(TORCH_REQ)" ]; then rm -f $(STAMP); $(MAKE) --no-print-directory $(STAMP); fi

lint: venv
	$(VENV)/bin/ruff check dist_vgg data_prep tests bench
	$(VENV)/bin/ruff format --check dist_vgg data_prep tests bench

test: lint
	$(PY) -m pytest $(PYTEST_ARGS)

demo: venv
	$(PY) -m dist_vgg.demo

# Needs root and Debian's slurmctld/slurmd/munge (the local two-node cluster of cluster/local/).
demo-slurm: venv
	DIST_VGG_PYTHON=$(abspath $(PY)) cluster/local/demo_slurm.sh

bench: venv
	$(PY) bench/run_all.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache demo_out
