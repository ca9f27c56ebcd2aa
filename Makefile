# The two Quick start commands: `make run` and `make test`. Both set up what they need first;
# the set-up is skipped when requirements have not changed since the last one.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup run test bench lint

setup: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $(STAMP)

run: setup
	$(PY) manage.py serve

lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

test: lint
	$(PY) manage.py check
	$(PY) -m pytest

bench: setup
	$(PY) bench/runner.py
