# The two Quick start commands: `make run` and `make test`. Both set up what they need first;
# the set-up is skipped when nothing it depends on changed since the last one.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
NPM_STAMP := frontend/node_modules/.installed
GPU_STAMP := $(VENV)/.installed-gpu
CHROMIUM := /usr/bin/chromium

.PHONY: setup run test bench lint browser

setup: $(STAMP) $(NPM_STAMP)

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $(STAMP)

# The optional diffusion extras, for the tests of the diffusers loading path (a CPU torch here).
$(GPU_STAMP): $(STAMP) requirements-gpu.txt
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-gpu.txt
	touch $(GPU_STAMP)

# Front-end packages from npm, exactly as the lockfile says; served by Django's static files.
$(NPM_STAMP): frontend/package.json frontend/package-lock.json
	cd frontend && npm ci --no-audit --no-fund --loglevel=error
	touch $(NPM_STAMP)

# The browser tests drive Debian's chromium (playwright cannot download its own here).
browser:
	@test -x $(CHROMIUM) || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }

run: setup
	$(PY) manage.py serve

lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

test: lint browser $(GPU_STAMP)
	$(PY) manage.py check
	$(PY) manage.py makemigrations --check --dry-run
	cd frontend && REALTIME_PYTHON=$(abspath $(PY)) npm test --silent
	$(PY) -m pytest

bench: setup
	$(PY) bench/runner.py
	$(PY) bench/gateway.py
