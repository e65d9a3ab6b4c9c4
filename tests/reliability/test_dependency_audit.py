"""pip-audit against the lock file: every locked package, runtime and dev groups.

pip-audit asks PyPI's JSON API for each pinned version
(https://pypi.org/pypi/<name>/<version>/json, its `vulnerabilities`). A finding fails the
test; upgrade the package under the lock (`uv lock --upgrade-package NAME`).

Where that per-version endpoint is not served (the registry mirror of the build machines
answers 404 for it while serving the rest of PyPI; OSV is not reachable there at all),
pip-audit can only skip each package. The test then says so in its output instead of
passing as if it had audited; anywhere the endpoint answers, a skipped package fails it.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import requests

from tests.reliability.servers import PROJECT_ROOT, VENV_BIN

NOT_FOUND = "Dependency not found on PyPI and could not be audited"


def _locked_requirements(path: Path) -> dict[str, str]:
    exported = subprocess.run(
        [
            str(VENV_BIN / "uv"),
            "export",
            "--frozen",
            "--format",
            "requirements-txt",
            "--no-emit-project",
            "--all-groups",
            "--output-file",
            str(path),
        ],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert exported.returncode == 0
    pins = [line.split()[0] for line in path.read_text().splitlines() if "==" in line]
    return dict(pin.split("==", 1) for pin in pins)


def _per_version_feed_available(name: str, version: str) -> bool:
    url = f"https://pypi.org/pypi/{name}/{version}/json"
    try:
        return requests.get(url, timeout=20).status_code == 200
    except requests.RequestException:
        return False


def test_no_locked_dependency_has_a_known_vulnerability(tmp_path: Path) -> None:
    requirements = tmp_path / "requirements.txt"
    locked = _locked_requirements(requirements)
    assert "flask" in locked
    assert len(locked) > 50  # the whole lock, dev tools included

    report = tmp_path / "audit.json"
    audit = subprocess.run(
        [
            str(VENV_BIN / "pip-audit"),
            "--requirement",
            str(requirements),
            "--no-deps",  # the export is the complete, pinned set
            "--disable-pip",
            "--vulnerability-service",
            "pypi",
            "--cache-dir",
            str(tmp_path / "cache"),
            "--progress-spinner",
            "off",
            "--format",
            "json",
            "--output",
            str(report),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert audit.returncode == 0, audit.stdout + audit.stderr
    dependencies = json.loads(report.read_text())["dependencies"]
    found = {d["name"]: d["vulns"] for d in dependencies if d.get("vulns")}
    assert found == {}, "known vulnerabilities: upgrade these under uv.lock"

    skipped = [d for d in dependencies if "skip_reason" in d]
    audited = len(dependencies) - len(skipped)
    print(f"pip-audit: {audited} of {len(dependencies)} locked packages audited, 0 vulnerable")
    # A package skipped for any other reason (e.g. not pinned) is a problem of the lock.
    assert all(d["skip_reason"].startswith(NOT_FOUND) for d in skipped), skipped
    if _per_version_feed_available("flask", locked["flask"]):
        assert skipped == [], "the vulnerability feed answers: every package must be audited"
    else:
        print(
            f"pip-audit: PyPI's per-version JSON API is not served on this network; "
            f"{len(skipped)} packages could not be checked here"
        )
