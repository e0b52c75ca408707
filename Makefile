# rubikkit: one Makefile drives set-up, build, tests and the book, locally and in CI.
#   make book   set up .venv, build the extension, execute every notebook, build book/_build/html
#   make test   set up (if needed) and run the whole suite: unit tests, CUDA compile, notebooks (nbval)
#   make lint   ruff (+ clang-format --dry-run for csrc)
#   make bench  run the CPU benchmarks and print their tables
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Installed only when no torch is importable (a user with a CUDA build keeps theirs).
TORCH_SPEC ?= torch==2.13.0
# Real data for tests and benchmarks (never copied into the repo).
SHARED_DATA ?= $(abspath ../shared/data)
export RUBIKKIT_TEST_DATA ?= $(if $(wildcard $(SHARED_DATA)),$(SHARED_DATA),)
# Keep numba's cache and OpenMP sane on small machines.
export OMP_NUM_THREADS ?= $(shell nproc 2>/dev/null || echo 2)
PYTEST_WORKERS ?= 2

NOTEBOOKS := $(sort $(wildcard notebooks/*.ipynb))
ASSIGNMENTS := $(sort $(wildcard notebooks/assignments/*.ipynb))

.PHONY: help setup build test test-unit test-notebooks book lint format bench device-data clean distclean

help:
	@echo "make book   - set up, build, execute the notebooks and build the Jupyter Book"
	@echo "make test   - set up (when needed) and run the whole test suite"
	@echo "make lint   - ruff and clang-format checks"
	@echo "make bench  - CPU benchmarks (tables in benchmarks/RESULTS.md)"

# --- environment -----------------------------------------------------------------------------
$(PY):
	@if $(PYTHON) -c "import torch" 2>/dev/null; then \
	  echo "torch found in $(PYTHON): creating $(VENV) with system site-packages to keep it"; \
	  $(PYTHON) -m venv --system-site-packages $(VENV); \
	else \
	  $(PYTHON) -m venv $(VENV); \
	fi
	$(PY) -m pip install -q --upgrade pip setuptools wheel

$(VENV)/.deps-stamp: pyproject.toml | $(PY)
	@$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install "$(TORCH_SPEC)"
	$(PY) -m pip install -q "pybind11>=2.12" "setuptools>=68" wheel
	$(PY) -m pip install -q -e ".[dev]" --no-build-isolation
	touch $@

setup: $(VENV)/.deps-stamp

build: setup
	$(PY) setup.py -q build_ext --inplace

# --- tests -----------------------------------------------------------------------------------
test: build
	$(MAKE) --no-print-directory test-unit test-notebooks

test-unit:
	$(PY) -m pytest -n $(PYTEST_WORKERS) tests

# Chapters and assignment sources under nbval (lax: only cells marked # NBVAL_CHECK_OUTPUT are
# compared). --dist loadfile keeps all cells of a notebook on one worker (one kernel, in order).
test-notebooks:
	@if [ -n "$(strip $(NOTEBOOKS) $(ASSIGNMENTS))" ]; then \
	  $(PY) -m pytest -p no:cacheprovider --nbval-lax --nbval-current-env \
	    --nbval-sanitize-with notebooks/nbval_sanitize.cfg -n $(PYTEST_WORKERS) --dist loadfile \
	    $(NOTEBOOKS) $(ASSIGNMENTS); \
	else echo "no notebooks yet"; fi

# --- book ------------------------------------------------------------------------------------
# Student versions of the assignments are regenerated (idempotent), the execution cache cleared so
# every chapter runs, and any warning fails the build.
book: build
	$(PY) -m rubikkit assignments release notebooks/assignments book/assignments
	rm -rf book/_build/.jupyter_cache
	$(VENV)/bin/jupyter-book build --all -W --keep-going book
	@echo "book: open book/_build/html/index.html"

# --- quality ---------------------------------------------------------------------------------
lint: setup
	$(VENV)/bin/ruff check rubikkit tests benchmarks data_scripts notebooks/conftest.py setup.py
	$(VENV)/bin/ruff format --check rubikkit tests benchmarks data_scripts notebooks/conftest.py setup.py
	@if [ -x $(VENV)/bin/clang-format ]; then \
	  find csrc -name '*.cpp' -o -name '*.h' -o -name '*.cu' | xargs -r $(VENV)/bin/clang-format --dry-run -Werror; \
	else echo "clang-format not installed: skipping csrc"; fi

format: setup
	$(VENV)/bin/ruff format rubikkit tests benchmarks data_scripts setup.py
	$(VENV)/bin/ruff check --fix rubikkit tests benchmarks data_scripts setup.py
	@if [ -x $(VENV)/bin/clang-format ]; then \
	  find csrc -name '*.cpp' -o -name '*.h' -o -name '*.cu' | xargs -r $(VENV)/bin/clang-format -i; fi

# The benchmarks that run as they are; finetune_step.py takes experiment configs and
# _report.py is their shared helper (see benchmarks/README.md).
BENCHMARKS := benchmarks/puzzle.py benchmarks/slic.py benchmarks/pretrain.py
bench: build
	@for b in $(BENCHMARKS); do echo "== $$b"; $(PY) $$b; done

# Copy the real data beside the working tree for a lent GPU machine (experiments/device_run.sh):
# ../shared does not travel with a device call, .device_data does (gitignored, never committed).
DEVICE_DATASETS ?= medmnist3d lidc_nodule_vois brats2015_deepmedic
device-data:
	@test -d "$(SHARED_DATA)" || { echo "device-data: $(SHARED_DATA) not found (set SHARED_DATA)"; exit 2; }
	mkdir -p .device_data
	for d in $(DEVICE_DATASETS); do rm -rf .device_data/$$d; cp -r "$(SHARED_DATA)/$$d" .device_data/; done
	du -sh .device_data

clean:
	rm -rf build rubikkit/*.so book/_build .pytest_cache .hypothesis
	find . -name __pycache__ -not -path './$(VENV)/*' -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
