# Two commands for a new user:  `make demo` (set up + run the demo)  and  `make test`.
# Both create the virtual environment themselves. CPU torch is pinned: a bare `torch`
# would pull a multi-GB CUDA build.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_PIN ?= torch==2.13.0

.PHONY: setup test lint typecheck check demo bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_PIN)
	$(PY) -m pip install -q -e '.[model,dev]'
	touch $@

setup: $(VENV)/.installed

test: $(VENV)/.installed
	$(PY) -m pytest

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check kernel train tests scripts

typecheck: $(VENV)/.installed
	$(VENV)/bin/mypy

check: lint typecheck test

demo: $(VENV)/.installed
	$(VENV)/bin/cyntra demo --out demo-out

bench: $(VENV)/.installed
	$(PY) -m cyntra.bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
