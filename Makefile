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
# The oldest numpy pyproject.toml allows, in a second environment: the evaluator must equal the reference there too.
NUMPY_MIN   ?= 1.24.4
NPMIN_VENV  ?= .venv-npmin
NPMIN_TESTS ?= tests/test_ytvis_eval.py tests/test_evaluate.py tests/test_masks.py tests/test_rle_runs.py tests/test_ytvis.py

.PHONY: install test test-kernels test-numpy-min test-slow test-slurm run smoke bench gpu-check lint clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(PIP_EXTRA) "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e ".[test]"
	touch $@

test: install
	$(BIN)/python -m pytest -q

# The numerical part of the suite (model, continual, engine, parity fixtures) again under PyTorch's portable CPU
# kernels: other summation orders, as on a machine with another CPU (AVX2 / AVX-512 / none). CI runs it.
KERNEL_TESTS ?= $(wildcard tests/test_backbone.py tests/test_classifier.py tests/test_criterion.py \
  tests/test_frame_decoder.py tests/test_hvpl.py tests/test_inference.py tests/test_matcher.py \
  tests/test_ms_deform_attn.py tests/test_pixel_decoder.py tests/test_point_sampling.py tests/test_spanning_tree.py \
  tests/test_tree_scan.py tests/test_video_decoder.py tests/test_authors_compat.py tests/test_parity_fixtures.py \
  tests/test_train_parity.py tests/test_ogc.py tests/test_ogc_authors.py tests/test_growth.py tests/test_optim.py \
  tests/test_trainer.py tests/test_overfit.py tests/test_predict.py tests/test_model_file.py)
test-kernels: install
	ATEN_CPU_CAPABILITY=default $(BIN)/python -m pytest -q $(KERNEL_TESTS)

# The evaluator's tests under numpy $(NUMPY_MIN) (numpy 1 keeps float32 where numpy 2 promotes to float64)
test-numpy-min: $(NPMIN_VENV)/.installed
	$(NPMIN_VENV)/bin/python -m pytest -q $(NPMIN_TESTS)

$(NPMIN_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(NPMIN_VENV)
	$(NPMIN_VENV)/bin/pip install -q --upgrade pip
	$(NPMIN_VENV)/bin/pip install -q $(PIP_EXTRA) "$(TORCH_SPEC)"
	$(NPMIN_VENV)/bin/pip install -q -e ".[test]" "numpy==$(NUMPY_MIN)"
	$(NPMIN_VENV)/bin/python -c "import numpy; assert numpy.__version__ == '$(NUMPY_MIN)', numpy.__version__"
	touch $@

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
