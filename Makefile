# Two commands do all set-up: `make demo` and `make test`.
# TORCH_SPEC is installed first: the CPU build on disk here. GPU users: `make TORCH_SPEC=torch ...`
# or install their own torch into .venv beforehand (any torch>=2.4 already there is kept).
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint install clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/attnstreams reproduce --quick

test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks sidebyside examples

clean:
	rm -rf $(VENV) runs .pytest_cache
