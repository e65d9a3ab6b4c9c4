# glassbox — every target creates or refreshes .venv itself from uv.lock.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
UV_VERSION := 0.13.9
UV := $(VENV)/bin/uv
BIN := $(VENV)/bin
FLASK := $(BIN)/flask --app service

HOST ?= 127.0.0.1
PORT ?= 8000
WEB_CONCURRENCY ?= 2
PAYMENTS_PORT ?= 8001
export HOST PORT WEB_CONCURRENCY
export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := $(VENV)

.DEFAULT_GOAL := help
.PHONY: help venv run serve serve-payments migrate test lint format clean

help:  ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

$(VENV)/.synced: pyproject.toml uv.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@test -x $(UV) || $(BIN)/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	$(UV) sync --frozen --inexact --quiet
	@touch $@

venv: $(VENV)/.synced  ## Create or refresh .venv from uv.lock

migrate: venv  ## Apply database migrations (DATABASE_URL)
	$(FLASK) db upgrade

run: migrate  ## The embedded default: SQLite, in-process cache and limiter, demo data, on HOST:PORT
	$(FLASK) seed --if-empty
	$(FLASK) api-keys ensure-dev
	@echo "glassbox on http://$(HOST):$(PORT)  (Swagger UI: http://$(HOST):$(PORT)/docs)"
	@echo "payments service on http://$(HOST):$(PAYMENTS_PORT)"
	@$(BIN)/flask --app 'service.payments:create_app()' run --host $(HOST) \
	    --port $(PAYMENTS_PORT) --no-reload --without-threads & payments=$$!; \
	trap 'kill $$payments 2>/dev/null' EXIT INT TERM; \
	PAYMENTS_URL=$${PAYMENTS_URL:-http://$(HOST):$(PAYMENTS_PORT)} \
	    $(FLASK) run --host $(HOST) --port $(PORT) --no-reload --without-threads

serve: migrate  ## Production server: gunicorn, honours PORT and WEB_CONCURRENCY
	PROMETHEUS_MULTIPROC_DIR=$${PROMETHEUS_MULTIPROC_DIR:-$(CURDIR)/var/metrics/api} \
	    $(BIN)/gunicorn -c python:service.gunicorn_conf

serve-payments: venv  ## The payments service under gunicorn, on PORT if given, else PAYMENTS_PORT
	PORT=$(if $(filter file,$(origin PORT)),$(PAYMENTS_PORT),$(PORT)) \
	PROMETHEUS_MULTIPROC_DIR=$(CURDIR)/var/metrics/payments \
	    $(BIN)/gunicorn -c python:service.gunicorn_conf 'service.payments:create_app()'

test: venv  ## Run the tests (PostgreSQL and Redis too when TEST_DATABASE_URL / TEST_REDIS_URL are set)
	$(BIN)/pytest $(PYTEST_ARGS)

lint: venv  ## ruff (lint and format check) and mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: venv  ## Apply ruff's formatting and safe fixes
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:  ## Remove .venv, the SQLite database and caches
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache

# --- Load tests, profiling and benchmarks (docs/measurement.md) ---
# URL of the running server for `make load` and `make profile`.
LOAD_URL ?= http://$(HOST):$(PORT)
LOAD_SHAPE ?= smoke
.PHONY: load profile bench

load: venv  ## Locust, headless, against LOAD_URL (LOAD_SHAPE=smoke|steady|spike|soak); reports in loadtests/results/
	@mkdir -p loadtests/results
	$(BIN)/locust -f loadtests/locustfile.py --headless --host $(LOAD_URL) --shape $(LOAD_SHAPE) \
		--csv loadtests/results/$(LOAD_SHAPE) --html loadtests/results/$(LOAD_SHAPE).html \
		--only-summary --exit-code-on-error 1

profile: venv  ## py-spy flame graphs (SVG, speedscope) and dumps of the gunicorn workers at LOAD_URL under load; in profiling/results/
	$(BIN)/python -m profiling.capture --url $(LOAD_URL)

bench: venv  ## Side-by-side req/s, p50, p99 of the bench variants (BENCH_SECONDS, BENCH_ROUNDS, …); JSON + PNG in profiling/results/
	@command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	$(BIN)/python -m profiling.bench

# --- The profiling lab (docs/measurement.md, "The lab") ---
# LAB_DATABASE_URL: the database to seed once and reuse; empty means the SQLite file var/lab.db.
# It starts its own API, payments service and OTLP receiver; py-spy needs root or CAP_SYS_PTRACE.
LAB_DATABASE_URL ?=
.PHONY: lab

lab: venv  ## The lab: CPU-bound vs IO-bound, py-spy beside traces (LAB_DATABASE_URL, LAB_SECONDS); report in profiling/results/lab-report.md
	@command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	LAB_DATABASE_URL=$(LAB_DATABASE_URL) $(BIN)/python -m profiling.lab

# --- Deployment (docs/deploy.md): Dockerfile, k8s/, .github/workflows/, compose.yaml ---
# The same checks run in `make test` (tests/deploy); the PgBouncer and migration-lock tests
# there need PostgreSQL (TEST_DATABASE_URL) and run with the rest of the suite.
K8S_OVERLAY ?= prod
.PHONY: check-deploy manifests

check-deploy: venv  ## hadolint, kustomize + kubernetes-validate 1.29-1.37, checkov, actionlint, workflow and compose schemas
	$(BIN)/pytest -p no:cacheprovider -q -m "not postgres" tests/deploy

manifests: venv  ## Print the manifests of K8S_OVERLAY (dev or prod), as kubectl would apply them
	@$(BIN)/kubectl kustomize --load-restrictor LoadRestrictionsNone k8s/overlays/$(K8S_OVERLAY)

# --- The compose stack, end to end (observability/README.md, "The stack in CI") ---
# Base URLs of a running stack; the defaults are compose.yaml's loopback ports.
STACK_JAEGER_URL ?= http://127.0.0.1:16686
STACK_PROMETHEUS_URL ?= http://127.0.0.1:9090
STACK_LOKI_URL ?= http://127.0.0.1:3100
STACK_PYROSCOPE_URL ?= http://127.0.0.1:4040
STACK_CHECK_TIMEOUT ?= 180
.PHONY: stack-check

stack-check: venv  ## After traffic: a trace with the payments hop, an exemplar, its log line, a profile (STACK_*_URL)
	$(BIN)/python observability/stack_check.py --timeout $(STACK_CHECK_TIMEOUT) \
	    --jaeger $(STACK_JAEGER_URL) --prometheus $(STACK_PROMETHEUS_URL) \
	    --loki $(STACK_LOKI_URL) --pyroscope $(STACK_PYROSCOPE_URL)
