"""checkov (offline, --skip-download) on what would be deployed: both rendered overlays, the
Secret template, the Dockerfile and the workflows. The only failures allowed are the ones in
JUSTIFIED, and each of those must still occur (a fixed finding leaves the list).

checkov lives in a venv of its own (.venv/checkov, locked by tests/deploy/checkov/uv.lock):
installed beside the app it would downgrade packaging and pytest.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import pytest

from tests.deploy.conftest import ROOT, run, tool

CHECKOV_PROJECT = ROOT / "tests" / "deploy" / "checkov"
CHECKOV_VENV = ROOT / ".venv" / "checkov"

JUSTIFIED = {
    "CKV_K8S_43": (
        "Image should use digest: the repository names release tags; cd.yml renders prod "
        "with the digest of the image it has just pushed, which cannot exist before the build"
    ),
    "CKV_K8S_15": (
        "Image Pull Policy should be Always: images are immutable (a digest in prod, a "
        "release tag elsewhere), so IfNotPresent runs the same bytes and pod starts do not "
        "depend on the registry being up"
    ),
    "CKV_K8S_35": (
        "Secrets as files rather than environment variables: the app reads every setting "
        "from the environment (service/config/); the three secrets are mapped one by one "
        "(secretKeyRef), nothing else of the Secret reaches the pod"
    ),
}


@pytest.fixture(scope="session")
def checkov() -> str:
    result = run(
        tool("uv"),
        "sync",
        "--frozen",
        "--quiet",
        "--project",
        str(CHECKOV_PROJECT),
        "--python",
        sys.executable,
        env={
            **os.environ,
            "UV_PROJECT_ENVIRONMENT": str(CHECKOV_VENV),
            "UV_PYTHON_DOWNLOADS": "never",
        },
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    return str(CHECKOV_VENV / "bin" / "checkov")


@pytest.fixture(scope="session")
def report(
    checkov: str, rendered_text: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> list[dict[str, Any]]:
    folder = tmp_path_factory.mktemp("rendered")
    files = []
    for overlay, text in rendered_text.items():
        path = folder / f"{overlay}.yaml"
        path.write_text(text)
        files.append(str(path))
    files += ["k8s/secret.template.yaml", "Dockerfile"]
    files += [str(p.relative_to(ROOT)) for p in sorted((ROOT / ".github/workflows").glob("*"))]
    result = run(
        checkov,
        "--skip-download",
        "--quiet",
        "--compact",
        "--output",
        "json",
        "--framework",
        "kubernetes",
        "dockerfile",
        "github_actions",
        "--file",
        *files,
        timeout=600,
    )
    # Exit status 1 means failed checks, judged below; anything else is a crash.
    assert result.returncode in (0, 1), result.stderr
    data = json.loads(result.stdout)
    return data if isinstance(data, list) else [data]


def test_every_framework_was_scanned(report: list[dict[str, Any]]) -> None:
    summaries = {r["check_type"]: r["summary"] for r in report}
    assert set(summaries) == {"kubernetes", "dockerfile", "github_actions"}
    for summary in summaries.values():
        assert summary["parsing_errors"] == 0
        assert summary["passed"] > 50
    assert summaries["kubernetes"]["resource_count"] > 50


def test_only_justified_failures(report: list[dict[str, Any]]) -> None:
    failed: dict[str, list[str]] = {}
    for r in report:
        for check in r["results"]["failed_checks"]:
            failed.setdefault(check["check_id"], []).append(check["resource"])
    unexpected = {k: v for k, v in failed.items() if k not in JUSTIFIED}
    assert unexpected == {}
    # A finding that no longer occurs must leave the list: the list stays honest.
    assert set(failed) == set(JUSTIFIED)


def test_the_dockerfile_and_workflows_pass_every_check(report: list[dict[str, Any]]) -> None:
    for r in report:
        if r["check_type"] in ("dockerfile", "github_actions"):
            assert r["results"]["failed_checks"] == [], r["check_type"]
