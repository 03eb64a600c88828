# Pruning Explorer — one-command entry points.
#   make run    create .venv, install, open the window on digits-cnn
#   make test   create/update .venv with test extras, run the whole suite headless
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
TSTAMP := $(VENV)/.installed-test
# pytest-xdist processes for make test: the tests run single-threaded, so one per core
TEST_WORKERS ?= 2

.PHONY: run test venv test-venv bench retrain screenshot clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q -e .
	touch $@

$(TSTAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q -e '.[test]'
	PY=$(PY) bash scripts/ensure_qt_libs.sh --xvfb
	touch $@ $(STAMP)

venv: $(STAMP)
test-venv: $(TSTAMP)

run: $(STAMP)
	PY=$(PY) bash scripts/ensure_qt_libs.sh --desktop
	$(VENV)/bin/pruning-explorer gui

test: $(TSTAMP)
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest -q -p no:cacheprovider -n $(TEST_WORKERS) tests

bench: $(TSTAMP)
	$(PY) benchmarks/run_all.py

# the digits models (about a minute) and tiny-lm (about 12 minutes of one thread); one model: `make retrain MODELS=tiny-lm`
MODELS ?= digits-mlp digits-cnn digits-vgg tiny-lm
retrain: $(STAMP)
	OMP_NUM_THREADS=1 $(VENV)/bin/pruning-explorer train-builtin --out resources/models --models $(MODELS)

screenshot: $(STAMP)
	QT_QPA_PLATFORM=offscreen $(VENV)/bin/pruning-explorer gui --screenshot docs/screenshot.png

clean:
	rm -rf $(VENV) build *.egg-info
