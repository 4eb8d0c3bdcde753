# The two commands of the README: `make demo` (set up + offline main job), `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test bench clean

setup: $(VENV)/.installed

# The package alone (what the demo needs): about half the set-up time of the test extras.
$(VENV)/.base: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e .
	touch $@

$(VENV)/.installed: $(VENV)/.base
	$(PY) -m pip install --quiet -e ".[test]"
	touch $@

demo: $(VENV)/.base
	$(VENV)/bin/cascade-rcnn demo --out demo_output

test: setup
	$(PY) -m pytest tests -q

bench: setup
	$(PY) benchmarks/inference.py

clean:
	rm -rf $(VENV) demo_output predictions
