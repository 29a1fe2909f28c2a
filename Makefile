# pml-vmf: `make test` and `make bench` build .venv when it is missing (or pyproject.toml changed), then run.
PYTHON ?= python3
VENV := .venv
# The one place the environment is pinned: the torch/torchvision pair that installs from this project's CI machines
# (timm needs torchvision; other pairs fail to load together there). Elsewhere: make test TORCH_SPEC="torch torchvision"
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.installed

.PHONY: test bench clean-venv

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet $(TORCH_SPEC)
	$(VENV)/bin/python -m pip install --quiet -e ".[dev]"
	touch $@

test: $(STAMP)
	HF_HUB_OFFLINE=1 $(VENV)/bin/python -m pytest

bench: $(STAMP)
	$(VENV)/bin/python benchmarks/bench_loss.py

clean-venv:
	rm -rf $(VENV)
