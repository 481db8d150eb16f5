# proxybench: `make bench` regenerates every table and plot; `make test` runs the tests.
# Both create the virtual environment (.venv) and install the project when it is missing.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
N      ?=
PROXIES ?=
ARGS   ?=

.PHONY: setup bench test lint report data check-params perf compare regress regress-avx2 baseline precision scaling bench-full

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

# speed of the proxies as ratios to one forward+backward pass, and memory growth (writes reports/perf.md)
perf: $(STAMP)
	$(BIN)/proxybench perf $(ARGS)

# one proxy against every baseline on the default study: make compare PROXY=my_proxy
compare: $(STAMP)
	$(BIN)/proxybench compare $(PROXY) $(ARGS)

# speed-ups of 1 and 2 local workers and Ray on 2 CPUs on one study (writes reports/scaling.md, README block)
scaling: $(STAMP)
	$(BIN)/proxybench scaling $(ARGS)

# the complete NB201 training-free study: all 15,625 cells, every task (resumable), then the report;
# executor and device through ARGS, e.g. ARGS="--executor ray --address auto" (see README: cluster or GPU)
bench-full: $(STAMP)
	$(BIN)/proxybench run --space nb201 --task all --sample all --proxies '@training-free' $(ARGS)
	$(BIN)/proxybench bench $(ARGS)

# recompute the golden study and fail on a correlation regression (CI runs this)
regress: $(STAMP)
	$(BIN)/proxybench regress --no-progress $(ARGS)

# the same under a second CPU dispatch (the kernels of an AVX2-only CPU): what CI checks as "another machine"
SECOND_DISPATCH := ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2
regress-avx2: $(STAMP)
	$(SECOND_DISPATCH) $(BIN)/proxybench regress --no-progress $(ARGS)

# measure every proxy's numerical precision (other CPU kernels, threads, float64) on the golden cells and a
# sample of the committed scores: writes reports/precision.json, which judges regress and the committed scores
precision: $(STAMP)
	$(BIN)/proxybench precision $(ARGS)

# write reports/baseline.json on purpose, after an intended change of a proxy's numbers
baseline: $(STAMP)
	$(BIN)/proxybench regress --write $(ARGS)
