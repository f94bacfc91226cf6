# Every target installs what it needs into a local virtual environment.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
OUT ?= out

.PHONY: help install demo test test-slow test-all bench clean

help:
	@echo "make demo   - run the main job on its embedded default data (writes $(OUT)/demo)"
	@echo "make test   - run the fast test suite"
	@echo "make test-slow - run only the tests marked slow (CI runs them after make test)"
	@echo "make test-all - run every test, slow ones included"
	@echo "make bench  - run the speed benchmarks (prints JSON)"

$(STAMP): setup.cfg pyproject.toml
	@# Optional system packages (JPEG2000 via glymur, Fashion-MNIST); skipped where apt is not usable.
	-@bash .ci/sysdeps
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[cpu,test]"
	touch $(STAMP)

install: $(STAMP)

DEMO_ARGS ?=

demo: $(STAMP)
	TF_CPP_MIN_LOG_LEVEL=2 $(VENV)/bin/deepcorrect demo --out $(OUT)/demo $(DEMO_ARGS)

test: $(STAMP)
	TF_CPP_MIN_LOG_LEVEL=2 $(PY) -m pytest -q

test-slow: $(STAMP)
	TF_CPP_MIN_LOG_LEVEL=2 $(PY) -m pytest -q -m slow

test-all: $(STAMP)
	TF_CPP_MIN_LOG_LEVEL=2 $(PY) -m pytest -q -m ""

bench: $(STAMP)
	@for b in benchmarks/bench_*.py; do echo "# $$b"; TF_CPP_MIN_LOG_LEVEL=2 $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) $(OUT) *.egg-info
