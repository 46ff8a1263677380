# jaxlab: `make demo` runs the main job, `make test` the test suite. Both set up .venv first.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
JOBS   ?= 2

.PHONY: setup demo test test-slow bench bench-gpu lint clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(PY) -m jaxlab.launch --sweep experiments/muon_vs_adamw/sweep.gin --preset smoke --report

test: $(STAMP)
	$(PY) -m pytest -q -n $(JOBS) -m "not slow" --durations=15

test-slow: $(STAMP)
	$(PY) -m pytest -q -n $(JOBS) -m slow

bench: $(STAMP)
	for b in benchmarks/[!_]*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

# On a GPU machine whose python3 already has JAX with CUDA (see the script's header).
bench-gpu:
	bash benchmarks/gpu.sh

lint: $(STAMP)
	$(PY) -m ruff check jaxlab pallas_kernels tests benchmarks experiments

clean:
	rm -rf $(VENV) .pytest_cache runs
