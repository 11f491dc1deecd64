# Set-up and entry points. Everything a fresh machine needs is installed from here.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
CORES  ?= all
# PyTorch: 2.13.0 on machines without CUDA (here a CPU build from the local index); on a CUDA machine any
# torch >= 2.4 pip resolves. Override for a given CUDA build / driver, e.g.
#   make install TORCH_SPEC="torch==2.13.0" PIP_EXTRA="--index-url https://download.pytorch.org/whl/cu126"
TORCH_SPEC ?= $(shell if command -v nvidia-smi >/dev/null 2>&1; then echo "torch>=2.4"; else echo "torch==2.13.0"; fi)
PIP_EXTRA  ?=

.PHONY: install test test-slow test-slurm run smoke bench gpu-check lint clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(PIP_EXTRA) "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e ".[test]"
	touch $@

test: install
	$(BIN)/python -m pytest -q

test-slow: install
	$(BIN)/python -m pytest -q -m slow

test-slurm: install
	$(BIN)/python -m pytest -q -m slurm

run: install
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/snakemake --cores $(CORES) all

smoke: install
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/snakemake --cores 2 all --configfile config/smoke.yaml

bench: install
	for b in bench/bench_*.py; do $(BIN)/python $$b || exit 1; done

gpu-check: install
	$(BIN)/python bench/gpu_check.py --device cuda --timing-model paper_r50 --sizes 360

lint: install
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/snakemake --lint

clean:
	rm -rf .snakemake results/* resources/
