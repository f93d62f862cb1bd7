# The two commands of the README: `make demo` (main job on built-in defaults) and
# `make test`. Both create .venv and install everything on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# torch/torchvision pinned to the release this kit is tested with (a CPU-capable build).
TORCH  ?= torch==2.14.1 torchvision==0.29.1

.PHONY: demo test bench clean

# Two distributions, both editable: imlkit-runtime (runtime/) and imlkit (the rest), which
# requires the first; one pip command so it resolves imlkit-runtime from ./runtime.
$(STAMP): pyproject.toml runtime/pyproject.toml setup.py Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e ./runtime -e ".[cpu,dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m bench.demo

test: $(STAMP)
	$(PY) -m pytest -q

# Benchmarks (pytest-benchmark suites in bench/) and their report: bench.prepare builds the
# cached exports, profiles and compiled kernels first, then the 20-minute-budget run measures.
# Options for the suites go in BENCH_ARGS, e.g. make bench BENCH_ARGS="--models m2sformer,qmanet
# --backends torch,ort"; PREPARE_ARGS for bench.prepare (e.g. --models m2sformer).
bench: $(STAMP)
	$(PY) -m bench.prepare $(PREPARE_ARGS)
	$(PY) -m pytest bench/ $(BENCH_ARGS) --benchmark-json=bench-out/latest.json
	$(PY) -m bench.report --json bench-out/latest.json --out bench-out/

clean:
	rm -rf $(VENV) demo-out artifacts .pytest_cache
