# The two commands of the README: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench models clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e ".[train,reference,notebooks,dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/ednn-dask demo

test: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check ednn_dask training tests bench

bench: $(STAMP)
	$(PY) bench/bench_pipeline.py

models: $(STAMP)
	$(VENV)/bin/ednn-dask train ising --out models/ising-2d-f1c1.onnx --overwrite
	$(VENV)/bin/ednn-dask train ising --dim 3 --out models/ising-3d-f1c1.onnx --overwrite
	$(VENV)/bin/ednn-dask train laplacian --out models/laplacian-f10c2.onnx --overwrite

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
