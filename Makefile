# Each target sets up .venv from nothing when it is missing (torch first, pinned, then the project).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.mtkd-installed
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: setup test demo bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -c constraints.txt torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
# the independent implementation tests/test_transplant.py checks the zoo against (its declared
# dependencies are ours, or an unpinned torch: --no-deps keeps the pinned one)
	$(PY) -m pip install -q -c constraints.txt --no-deps deepctr-torch==0.3.0 tqdm
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -p no:cacheprovider tests

demo: $(STAMP)
	bash scripts/demo.sh

bench: $(STAMP)
	$(PY) benchmarks/data_bench.py

clean:
	rm -rf $(VENV) build demo_out
