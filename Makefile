# On a fresh machine: `make demo` (detect faces on the bundled photo) and `make test` (the test suite).
# Both create .venv with python3 when it is missing and install this package into it, editable. pip reruns
# only when pyproject.toml changes (stamp files in .venv), so a second run starts at once.
# The Python version and the extras are read from pyproject.toml (tools/project_meta.py), not repeated here.

PYTHON ?= python3
VENV ?= .venv
VENV_PYTHON := $(VENV)/bin/python
# -qq: errors only; pip's notes about this machine's configuration would bury them.
PIP_INSTALL := $(VENV_PYTHON) -m pip install -qq
PYTEST_ARGS ?=
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

.DEFAULT_GOAL := help
.PHONY: help demo test web-test web-deps bench lint

# A python3 older than requires-python stops every target that sets up .venv, with one line (make's own
# "*** ... Stop." instead of a recipe's error plus make's "Error 1" line).
ifneq ($(filter demo test web-test bench lint $(VENV_PYTHON) $(VENV)/%,$(MAKECMDGOALS)),)
PYTHON_PROBLEM := $(shell if command -v $(PYTHON) >/dev/null 2>&1; then $(PYTHON) tools/project_meta.py check-python 2>&1; \
  else echo "$(PYTHON) not found; name one: make demo PYTHON=/path/to/python3.X"; fi)
ifneq ($(PYTHON_PROBLEM),)
$(error $(PYTHON_PROBLEM))
endif
endif

help:
	@echo "make demo      set up .venv, detect faces on src/blazeface/assets/sample.jpg -> annotated/sample.jpg"
	@echo "make test      set up .venv with every extra of pyproject.toml, run the test suite"
	@echo "make web-test  install Chromium (apt) and web/'s npm packages, run the browser test"
	@echo "make bench     latency of every model on every backend, 640x480, one thread"
	@echo "make lint      ruff and lint-imports, where installed in .venv"
	@echo "Another interpreter: make demo PYTHON=/path/to/python3.X"

$(VENV_PYTHON):
	@echo "make: creating $(VENV) with $(PYTHON)"
	@$(PYTHON) -m venv $(VENV) || { rm -rf $(VENV); echo "make: '$(PYTHON) -m venv' failed (Debian/Ubuntu: apt-get install python3-venv)" >&2; exit 1; }

# The package alone (what the demo needs).
$(VENV)/.installed: pyproject.toml | $(VENV_PYTHON)
	@$(VENV_PYTHON) tools/project_meta.py check-python
	@echo "make: installing blazeface into $(VENV) (pip -e .; the first time takes a few minutes)"
	@$(PIP_INSTALL) -e .
	@touch $@

# The package with every extra (test, onnx, ncnn, ...), so that no test skips for a missing runtime.
$(VENV)/.installed-extras: pyproject.toml | $(VENV_PYTHON)
	@$(VENV_PYTHON) tools/project_meta.py check-python
	@extras=$$($(VENV_PYTHON) tools/project_meta.py extras) && \
	  echo "make: installing blazeface[$$extras] into $(VENV) (the first time takes a few minutes)" && \
	  $(PIP_INSTALL) -e ".[$$extras]"
	@touch $@ $(VENV)/.installed

demo: $(VENV)/.installed
	@if [ -e annotated/sample.jpg ]; then echo "make: replacing annotated/sample.jpg (written by an earlier make demo)"; fi
	@echo "make: $(VENV)/bin/blazeface detect src/blazeface/assets/sample.jpg --out annotated --json -"
	@$(VENV)/bin/blazeface detect src/blazeface/assets/sample.jpg --out annotated --json -
	@echo "make: the JSON line above lists each face (box x1 y1 x2 y2, score, five landmarks);" \
	  "the annotated picture is annotated/sample.jpg"

# The browser test runs inside `make test` when Chromium and web/node_modules are there, and skips with
# its reason otherwise; `make web-deps` installs both.
test: $(VENV)/.installed-extras
	$(VENV_PYTHON) -m pytest -rs $(PYTEST_ARGS)

web/node_modules/.package-lock.json: web/package-lock.json
	@command -v npm >/dev/null 2>&1 || { echo "make: the browser test needs Node.js and npm (Debian: apt-get install nodejs npm)" >&2; exit 1; }
	npm ci --prefix web --ignore-scripts --no-audit --no-fund
	@touch $@

web-deps: web/node_modules/.package-lock.json
	@command -v chromium >/dev/null 2>&1 || { echo "make: installing Debian's chromium (apt-get; a few minutes)" && \
	  $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

web-test: $(VENV)/.installed-extras web-deps
	$(VENV_PYTHON) -m pytest -rs tests/test_web.py $(PYTEST_ARGS)

bench: $(VENV)/.installed-extras
	$(VENV)/bin/blazeface bench --model all --backend all --size 640x480 --threads 1

lint: $(VENV)/.installed-extras
	@if [ -x $(VENV)/bin/ruff ]; then echo "ruff check ."; $(VENV)/bin/ruff check .; \
	  else echo "make: ruff is not installed in $(VENV); skipping it"; fi
	@if [ -x $(VENV)/bin/lint-imports ]; then echo "lint-imports"; $(VENV)/bin/lint-imports; \
	  else echo "make: lint-imports (import-linter) is not installed in $(VENV); skipping it"; fi
