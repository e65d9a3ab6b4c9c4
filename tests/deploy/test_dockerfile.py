"""Dockerfile and .dockerignore: hadolint is clean, and the image keeps its promises (pinned
base, no secret at build, non-root, health check, the gunicorn entry). No Docker engine runs
here, so the build itself happens in CI (.github/workflows/ci.yml, job `image`).
"""

from __future__ import annotations

import re
from pathlib import Path

from tests.deploy.conftest import ROOT, run, tool

DOCKERFILE = (ROOT / "Dockerfile").read_text()


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", DOCKERFILE)
    result = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            result.append((word.upper(), rest.strip()))
    return result


def test_hadolint_is_clean() -> None:
    result = run(tool("hadolint"), "--failure-threshold", "style", "Dockerfile", timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_catches_a_bad_dockerfile(tmp_path: Path) -> None:
    # Shows the check is live: an unpinned base and an unpinned pip install are findings.
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install uv\n")
    result = run(tool("hadolint"), "--failure-threshold", "style", str(bad), timeout=60)
    assert result.returncode == 1
    assert "DL3007" in result.stdout
    assert "DL3013" in result.stdout


def test_base_image_is_pinned_to_a_release() -> None:
    bases = [args.split()[0] for word, args in _instructions() if word == "FROM"]
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm", bases[0])
    # Every later stage (builder, profiler, runtime) builds on that one pin.
    assert bases[1:] == ["base", "base", "base"]


def test_build_needs_no_secret() -> None:
    for word, args in _instructions():
        if word in ("ARG", "ENV"):
            assert not re.search(r"SECRET|PASSWORD|TOKEN|DATABASE_URL|REDIS_URL", args), args
    assert "--mount=type=secret" not in DOCKERFILE


def test_runtime_stage() -> None:
    instructions = _instructions()
    runtime = instructions[max(i for i, (word, _) in enumerate(instructions) if word == "FROM") :]
    words = [word for word, _ in runtime]
    env = " ".join(args for word, args in runtime if word == "ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in env
    assert "PYTHONUNBUFFERED=1" in env
    (user,) = [args for word, args in runtime if word == "USER"]
    assert user == "10001:10001"  # numeric, so that runAsNonRoot can verify it
    (healthcheck,) = [args for word, args in runtime if word == "HEALTHCHECK"]
    assert "/health/live" in healthcheck
    assert "curl" not in healthcheck  # the slim image has none
    (cmd,) = [args for word, args in runtime if word == "CMD"]
    assert cmd == '["gunicorn", "-c", "python:service.gunicorn_conf"]'
    # No compiler or package manager run in the final stage: it only copies.
    assert "RUN" not in words[words.index("USER") :]
    assert not any("apt-get" in args for word, args in runtime if word == "RUN")


def test_dockerignore_lets_in_only_what_the_build_copies() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    # Everything is excluded first: tests, venvs, results, var/, .git, .env never reach a layer.
    assert patterns[0] == "**"
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    copied = set()
    for word, args in _instructions():
        if word == "COPY" and "--from" not in args:
            copied |= {source.rstrip("/") for source in args.split()[:-1]}
    # README.md: the project's metadata (service.version) is built from pyproject.toml, which
    # names it.
    assert allowed == copied == {"pyproject.toml", "uv.lock", "README.md", "service", "migrations"}
