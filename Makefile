# Two commands from a fresh clone: `make demo` and `make test`. Both create .venv and install everything first.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed-stamp
# torch first, pinned: a bare torch requirement with no torch installed would pull a multi-GB CUDA build.
TORCH ?= torch==2.13.0

.PHONY: setup demo test lint clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet $(TORCH)
	$(PIP) install --quiet -e '.[test]'
	# kronfluence is only compared against in tests; --no-deps keeps it from pulling a CUDA torch.
	$(PIP) install --quiet --no-deps kronfluence accelerate einops einconv opt-einsum
	# kronfluence's wheel also installs a top-level `tests` package that would shadow ours.
	rm -rf $(VENV)/lib/python*/site-packages/tests
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(VENV)/bin/quadselect demo --run-dir runs/demo

lint: setup
	$(VENV)/bin/ruff check src tests scripts benchmarks

test: lint
	$(VENV)/bin/pytest -q

clean:
	rm -rf runs .pytest_cache .ruff_cache
