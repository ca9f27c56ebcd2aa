# The two Quick start commands: `make run` and `make test`. Both set up what they need first;
# the set-up is skipped when nothing it depends on changed since the last one.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
NPM_STAMP := frontend/node_modules/.installed
GPU_STAMP := $(VENV)/.installed-gpu
CHROMIUM := /usr/bin/chromium
NGINX := /usr/sbin/nginx

.PHONY: setup run test bench lint browser nginx cluster

# The local 2x2 cluster: two runners and two gateways on Redis and PostgreSQL at 127.0.0.1.
CLUSTER_DB := realtime
CLUSTER_ENV := REDIS_URL=redis://127.0.0.1:6379/0 \
	DATABASE_URL=postgres://postgres@127.0.0.1:5432/$(CLUSTER_DB) \
	RUNNER_URLS=ws://127.0.0.1:8765,ws://127.0.0.1:8766

setup: $(STAMP) $(NPM_STAMP)

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
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

# The TLS proxy test runs Debian's nginx as a child process on free ports (tests/proxy/).
nginx:
	@test -x $(NGINX) || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light; }

run: setup
	$(PY) manage.py serve

lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

test: lint browser nginx $(GPU_STAMP)
	$(PY) manage.py check
	$(PY) manage.py makemigrations --check --dry-run
	cd frontend && REALTIME_PYTHON=$(abspath $(PY)) npm test --silent
	$(PY) -m pytest

cluster: setup
	psql -h 127.0.0.1 -U postgres -tAc "select 1 from pg_database where datname = '$(CLUSTER_DB)'" | grep -q 1 \
		|| psql -h 127.0.0.1 -U postgres -c "create database $(CLUSTER_DB)"
	$(CLUSTER_ENV) $(PY) manage.py migrate --noinput
	$(CLUSTER_ENV) $(PY) manage.py collectstatic --noinput -v 0
	$(CLUSTER_ENV) $(PY) manage.py demo_user
	@echo "gateways: http://localhost:8001/ and http://localhost:8002/ (Ctrl+C stops all four processes)"
	$(CLUSTER_ENV) PATH=$(abspath $(VENV))/bin:$$PATH $(VENV)/bin/honcho -f deploy/Procfile -d . start

bench: setup
	$(PY) bench/runner.py
	$(PY) bench/gateway.py
