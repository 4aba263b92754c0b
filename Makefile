# Two commands matter: `make lab` (set up, then open the course) and `make test` (set up, then
# run every test). Both create .venv when it is missing and install requirements.txt into it; a
# second run reinstalls nothing unless requirements.txt or pyproject.toml changed.

PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
# The stamp's name carries a hash of the dependency files: a changed pin means a new stamp.
DEPS_HASH := $(shell cat requirements.txt pyproject.toml | sha256sum | cut -c1-12)
STAMP  := $(VENV)/.installed-$(DEPS_HASH)
PORT   ?= 8888
# `make lab LAB_DIR=student` opens the student copies instead.
LAB_DIR ?= notebooks

# Trained tiny models and generated clips are cached inside the repository (ignored by git).
export COURSE_LIB_CACHE := $(CURDIR)/.cache
# Use this venv's Jupyter kernel even if the user has their own "python3" kernel registered.
export JUPYTER_PREFER_ENV_PATH := 1
# The notebooks are sized for a 2-core laptop; don't oversubscribe a bigger machine's cores either.
export OMP_NUM_THREADS ?= 2

NBVAL := --nbval-lax --nbval-current-env --nbval-sanitize-with tests/nbval_sanitize.cfg

.PHONY: lab test test-fast student bench notebooks clean help

help:
	@echo "make lab       set up .venv and open the course in JupyterLab"
	@echo "make test      set up .venv and run all tests (library, notebooks, student copies, browser)"
	@echo "make student   write student copies of the notebooks into student/"
	@echo "make bench     run every benchmark in benchmarks/"
	@echo "make notebooks re-execute the notebooks and store the outputs the tests check"
	@echo "make clean     remove .venv, caches and generated files (never student/)"

$(STAMP): requirements.txt pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; install Python 3.11 or run make PYTHON=/path/to/python3.11"; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	@rm -f $(VENV)/.installed-*
	@touch $@

lab: $(STAMP)
	$(VENV)/bin/jupyter lab --ServerApp.root_dir=$(LAB_DIR) --port=$(PORT) $(if $(filter 0,$(shell id -u)),--allow-root)

test: $(STAMP)
	$(PY) -m pytest tests notebooks $(NBVAL) --durations=15

# Library tests only: no notebooks, no browser.
test-fast: $(STAMP)
	$(PY) -m pytest tests -m "not notebooks and not browser"

student: $(STAMP)
	$(PY) -m course_lib.student

bench: $(STAMP)
	@set -e; for script in benchmarks/*.py; do echo "== $$script"; $(PY) $$script; done

notebooks: $(STAMP)
	$(PY) -m course_lib.nbtools refresh notebooks/*.ipynb

clean:
	rm -rf $(VENV) .cache .pytest_cache build *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
	@echo "student/ was left alone (it may hold students' work); delete it by hand if you mean to."
