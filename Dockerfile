# syntax=docker/dockerfile:1
# glassbox image: one image, three commands (docs/deploy.md):
#   api       gunicorn -c python:service.gunicorn_conf     (the default CMD)
#   payments  gunicorn -c python:service.gunicorn_conf 'service.payments:create_app()'  (PORT=8001)
#   migrate   flask --app service db upgrade
# The last stage (runtime) is the default target; `--target profiler` builds the py-spy image.
# The build reads no DATABASE_URL, SECRET_KEY or any other secret: credentials are injected
# at run time. The base is pinned by version; pin it by digest too where the registry can be
# reached (`docker buildx imagetools inspect`), which this repository's machines cannot.

# One pin for both stages.
FROM python:3.11.14-slim-bookworm AS base

# ---- builder: the locked dependencies in /opt/venv ---------------------------------------
FROM base AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_NO_CACHE=1 \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/opt/venv

# The same uv as the Makefile, from PyPI: no other download site is needed to build.
RUN pip install uv==0.13.9

WORKDIR /src
# Only the lock and the project metadata first, so that a code change reuses this layer.
COPY pyproject.toml uv.lock ./
# Runtime dependencies only (no dev or deploy tools), exactly as locked. The project itself
# is not installed: its code is copied to /app, which keeps migrations/ beside service/.
RUN uv sync --frozen --no-default-groups --no-install-project

COPY service/ /app/service/
COPY migrations/ /app/migrations/
# The project's own metadata too (importlib.metadata gives service.version its release); the
# code that runs is /app's (PYTHONPATH), the same files.
COPY README.md ./
COPY service/ ./service/
# Byte-compile now: at run time the root filesystem is read-only and nothing is written.
RUN uv sync --frozen --no-default-groups --no-editable \
    && /opt/venv/bin/python -m compileall -q /app/service /app/migrations

# ---- profiler: py-spy for an ephemeral debug container beside a pod (docs/deploy.md) -----
# Built only on request (`--target profiler`); it runs as root because ptrace needs it.
FROM base AS profiler
RUN pip install --no-cache-dir py-spy==0.4.3
CMD ["py-spy", "--help"]

# ---- runtime: no compilers, no uv, no pip cache, a non-root user -------------------------
FROM base AS runtime

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONPATH=/app \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# A fixed numeric id so that Kubernetes' runAsNonRoot can verify it (k8s/base sets the same).
RUN groupadd --system --gid 10001 glassbox \
    && useradd --system --uid 10001 --gid glassbox --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin glassbox

# Code and dependencies stay owned by root: the app user can read them, not change them.
COPY --from=builder /opt/venv /opt/venv
COPY --from=builder /app /app
WORKDIR /app

USER 10001:10001
EXPOSE 8000 8001

# For docker and compose (Kubernetes uses its own probes). No curl in a slim image: Python's
# urllib is enough. PORT is 8000 for the api, 8001 for payments.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health/live' % os.environ.get('PORT', '8000'), timeout=3)"]

CMD ["gunicorn", "-c", "python:service.gunicorn_conf"]
