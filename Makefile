# proxybench: `make bench` regenerates every table and plot; `make test` runs the tests.
# Both create the virtual environment (.venv) and install the project when it is missing.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
N      ?=
PROXIES ?=
ARGS   ?=

.PHONY: setup bench test lint report data check-params clean-cache

setup: $(STAMP)

# torch is installed first and pinned exactly: a looser spec would pull GBs of CUDA wheels.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

bench: $(STAMP)
	$(BIN)/proxybench bench $(if $(N),--sample $(N)) $(if $(PROXIES),--proxies $(PROXIES)) $(ARGS)

report: $(STAMP)
	$(BIN)/proxybench report $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest -q $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check bench proxies datasets tests

data: $(STAMP)
	$(BIN)/proxybench data

check-params: $(STAMP)
	$(BIN)/proxybench check-params --all
