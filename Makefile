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
.PHONY: help venv runtime-venv run serve serve-payments migrate test lint format clean audit

help:  ## List the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

define bootstrap-venv
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@test -x $(UV) || $(BIN)/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
endef

# run, serve and migrate install what running needs (the project's dependencies); every
# other target the dev group too (tests, linters, load and profiling tools).
$(VENV)/.synced-runtime: pyproject.toml uv.lock
	$(bootstrap-venv)
	$(UV) sync --frozen --inexact --quiet --no-dev
	@touch $@

$(VENV)/.synced: pyproject.toml uv.lock
	$(bootstrap-venv)
	$(UV) sync --frozen --inexact --quiet
	@touch $@ $(VENV)/.synced-runtime

venv: $(VENV)/.synced  ## Create or refresh .venv from uv.lock (with the dev group)

runtime-venv: $(VENV)/.synced-runtime

migrate: runtime-venv  ## Apply database migrations (DATABASE_URL)
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

serve: migrate  ## Production server: gunicorn (docs/deploy.md); honours PORT, WEB_CONCURRENCY and WEB_THREADS
	PROMETHEUS_MULTIPROC_DIR=$${PROMETHEUS_MULTIPROC_DIR:-$(CURDIR)/var/metrics/api} \
	    $(BIN)/gunicorn -c python:service.gunicorn_conf

serve-payments: runtime-venv  ## The payments service under gunicorn, on PORT if given, else PAYMENTS_PORT
	PORT=$(if $(filter file,$(origin PORT)),$(PAYMENTS_PORT),$(PORT)) \
	PROMETHEUS_MULTIPROC_DIR=$(CURDIR)/var/metrics/payments \
	    $(BIN)/gunicorn -c python:service.gunicorn_conf 'service.payments:create_app()'

test: venv  ## Run the tests (PostgreSQL and Redis too when TEST_DATABASE_URL / TEST_REDIS_URL are set)
	$(UV) sync --frozen --inexact --quiet --group bench  # the bench's peer is tested too
	$(BIN)/pytest $(PYTEST_ARGS)

# Mutation testing of the money code (not in CI: hours). Mutates the files in place one at a
# time: run it in a clean tree. Resumable: `make mutation MUTATION_INIT=` continues a session.
COSMIC_RAY := $(UV) run --no-project --with cosmic-ray==8.7.0
MUTATION_CONFIG := tests/mutation/cosmic-ray.toml
MUTATION_SESSION ?= var/mutation.sqlite
MUTATION_INIT ?= yes
.PHONY: mutation
mutation: venv  ## Mutation testing of service/orders and service/payments money code (cosmic-ray); survivors in var/mutation-survivors.txt
	@mkdir -p var
	$(if $(MUTATION_INIT),$(COSMIC_RAY) cosmic-ray init $(MUTATION_CONFIG) $(MUTATION_SESSION) --force)
	$(if $(MUTATION_INIT),$(COSMIC_RAY) cr-filter-operators $(MUTATION_SESSION) $(MUTATION_CONFIG))
	env -u TEST_DATABASE_URL -u TEST_REDIS_URL $(COSMIC_RAY) cosmic-ray exec $(MUTATION_CONFIG) $(MUTATION_SESSION)
	$(COSMIC_RAY) cr-report $(MUTATION_SESSION) --surviving-only --show-diff | tee var/mutation-survivors.txt

lint: venv  ## ruff (lint and format check) and mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# The lock exported (every group), unless AUDIT_REQUIREMENTS names a requirements file.
AUDIT_LOCK_EXPORT := var/audit-requirements.txt
audit: venv  ## pip-audit over every locked package: fails on a known vulnerability, and on any package it could not check (--strict)
	@mkdir -p var
	$(if $(AUDIT_REQUIREMENTS),,$(UV) export --frozen --all-groups --no-emit-project --format requirements-txt --quiet --output-file $(AUDIT_LOCK_EXPORT))
	$(BIN)/pip-audit --requirement $(or $(AUDIT_REQUIREMENTS),$(AUDIT_LOCK_EXPORT)) --no-deps --disable-pip --strict --progress-spinner off

format: venv  ## Apply ruff's formatting and safe fixes
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:  ## Remove .venv, the SQLite database and caches
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache

# --- Load tests, profiling and benchmarks (docs/measurement.md) ---
# URL of the running server for `make load` and `make profile`.
LOAD_URL ?= http://$(HOST):$(PORT)
LOAD_SHAPE ?= smoke
.PHONY: load load-ui profile bench

load: venv  ## Locust, headless, against LOAD_URL (LOAD_SHAPE=smoke|steady|spike|soak); reports in loadtests/results/
	@mkdir -p loadtests/results
	$(BIN)/locust -f loadtests/locustfile.py --headless --host $(LOAD_URL) --shape $(LOAD_SHAPE) \
		--csv loadtests/results/$(LOAD_SHAPE) --html loadtests/results/$(LOAD_SHAPE).html \
		--only-summary --exit-code-on-error 1

LOAD_UI_PORT ?= 8089
load-ui: venv  ## Locust's web UI on http://127.0.0.1:LOAD_UI_PORT (8089): shoppers against LOAD_URL, start and watch them there
	@echo "Locust's web UI: http://127.0.0.1:$(LOAD_UI_PORT)  (shoppers against $(LOAD_URL), shape $(LOAD_SHAPE))"
	$(BIN)/locust -f loadtests/locustfile.py --host $(LOAD_URL) --shape $(LOAD_SHAPE) \
		--web-host 127.0.0.1 --web-port $(LOAD_UI_PORT)

profile: venv  ## py-spy flame graphs (SVG, speedscope) and dumps of the gunicorn workers at LOAD_URL under load; in profiling/results/
	$(BIN)/python -m profiling.capture --url $(LOAD_URL)

bench: venv  ## Side-by-side req/s, p50, p99 of the bench variants and the FastAPI peer, a verdict per goal, the lever table, before → after against BENCH_BASELINE_REF (BENCH_SECONDS, BENCH_ROUNDS, BENCH_VARIANTS, …); JSON + PNG in profiling/results/
	$(UV) sync --frozen --inexact --quiet --group bench  # the peer: FastAPI, uvicorn, asyncpg; granian
	$(BIN)/python -m profiling.bench

# BENCH_SCALE_DATABASE_URL: a PostgreSQL database of its own, seeded once (1M products, 1M orders).
.PHONY: bench-report
bench-report: venv  ## The sales report and search at 1M orders and products: each goal of issue 29 with PASS/FAIL (docs/measurement.md); JSON in profiling/results/
	$(BIN)/python -m profiling.bench_scale

# --- The profiling lab (docs/measurement.md, "The lab") ---
# LAB_DATABASE_URL: the database to seed once and reuse; empty means the SQLite file var/lab.db.
# It starts its own API, payments service and OTLP receiver; py-spy needs root or CAP_SYS_PTRACE.
LAB_DATABASE_URL ?=
.PHONY: lab

lab: venv  ## The lab: CPU-bound vs IO-bound, py-spy beside traces (LAB_DATABASE_URL, LAB_SECONDS); report in profiling/results/lab-report.md
	LAB_DATABASE_URL=$(LAB_DATABASE_URL) $(BIN)/python -m profiling.lab

# --- The compose stack (README "The stack"): Docker with Compose v2 ---
# STACK_ENV holds the stack's secrets; made once with random values, then kept (the
# database volume was initialised with them).
STACK_ENV ?= .env
DOCKER ?= docker
STACK_SECRETS := POSTGRES_PASSWORD REDIS_PASSWORD SECRET_KEY PAYMENTS_SHARED_SECRET GRAFANA_ADMIN_PASSWORD
.PHONY: stack-up stack-down dashboards

$(STACK_ENV):
	@umask 077; $(PYTHON) -c 'import secrets, sys; [print(f"{n}={secrets.token_urlsafe(32)}") for n in sys.argv[1:]]' $(STACK_SECRETS) > $@
	@echo "wrote $@: random secrets for the stack (keep it: the database volume uses them)"

stack-up: $(STACK_ENV)  ## The whole stack in Docker (API, payments, PostgreSQL, Redis, collector, Jaeger, Prometheus, Loki, Pyroscope, Grafana); makes .env once
	$(DOCKER) compose --env-file $(STACK_ENV) up -d --build

stack-down:  ## Stop the stack (STACK_DOWN_ARGS=-v also drops its volumes)
	$(DOCKER) compose --env-file $(STACK_ENV) down $(STACK_DOWN_ARGS)

dashboards: venv  ## Regenerate the Grafana dashboards' JSON from observability/grafana/dashboards.py
	$(BIN)/python observability/grafana/dashboards.py

# --- Deployment (docs/deploy.md): Dockerfile, k8s/, .github/workflows/, compose.yaml ---
# The same checks run in `make test` (tests/deploy); the PgBouncer and migration-lock tests
# there need PostgreSQL (TEST_DATABASE_URL) and run with the rest of the suite.
K8S_OVERLAY ?= prod
# kustomize loads nothing from outside k8s/, so the collector's config (one source, shared
# with compose) is copied under k8s/base; tests/deploy fails when the copy is stale.
K8S_COLLECTOR_CONFIG := k8s/base/otel-collector-config.yaml
K8S_LOKI_CONFIG := k8s/components/loki/loki-config.yaml
K8S_ALERTMANAGER := k8s/components/alertmanager
.PHONY: check-deploy manifests k8s-config

check-deploy: venv  ## hadolint, kubectl kustomize (no flags) + kubernetes-validate 1.29-1.37, checkov, actionlint, workflow and compose schemas
	$(BIN)/pytest -p no:cacheprovider -q -m "not postgres" tests/deploy

k8s-config:  ## Copy the collector's, Loki's, Alertmanager's and the blackbox exporter's configs from observability/ into k8s/ (after editing them)
	@cp observability/otel-collector/config.yaml $(K8S_COLLECTOR_CONFIG)
	@cp observability/loki/config.yaml $(K8S_LOKI_CONFIG)
	@cp observability/alertmanager/alertmanager.yml observability/alertmanager/render-receivers.sh $(K8S_ALERTMANAGER)/
	@cp observability/blackbox/blackbox.yml k8s/components/blackbox/blackbox.yml

manifests: venv k8s-config  ## Print the manifests of K8S_OVERLAY (dev or prod), as kubectl apply -k would apply them
	@$(BIN)/kubectl kustomize k8s/overlays/$(K8S_OVERLAY)

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
