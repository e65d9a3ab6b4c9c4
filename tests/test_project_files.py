"""The project's own files agree with each other: the licence with pyproject, pre-commit with
`make lint`, the Python versions of .python-version, pyproject and the CI matrix."""

from __future__ import annotations

import re
import tomllib

import yaml

from tests.reliability.servers import PROJECT_ROOT

PYPROJECT = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())


def make_recipe(target: str) -> list[str]:
    """The commands of a Makefile target, $(BIN) spelled as the path it stands for."""
    makefile = (PROJECT_ROOT / "Makefile").read_text()
    block = re.search(rf"^{target}:.*\n((?:\t.*\n)+)", makefile, flags=re.MULTILINE)
    assert block, target
    return [line.strip().replace("$(BIN)/", ".venv/bin/") for line in block[1].splitlines()]


def test_the_licence_is_the_one_pyproject_names() -> None:
    assert PYPROJECT["project"]["license"] == {"text": "MIT"}
    text = (PROJECT_ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License\n")
    assert "Permission is hereby granted, free of charge" in text


def test_pre_commit_runs_what_make_lint_runs() -> None:
    config = yaml.safe_load((PROJECT_ROOT / ".pre-commit-config.yaml").read_text())
    hooks = [hook for repo in config["repos"] for hook in repo["hooks"]]
    assert [hook["entry"] for hook in hooks] == make_recipe("lint")
    # Each hook checks the whole tree, as `make lint` does, not only the staged files.
    assert all(hook["pass_filenames"] is False for hook in hooks)


def test_python_versions_agree() -> None:
    lowest = PYPROJECT["project"]["requires-python"].removeprefix(">=")
    assert (PROJECT_ROOT / ".python-version").read_text().strip() == lowest
    assert PYPROJECT["tool"]["ruff"]["target-version"] == "py" + lowest.replace(".", "")
    assert PYPROJECT["tool"]["mypy"]["python_version"] == lowest
    ci = yaml.safe_load((PROJECT_ROOT / ".github/workflows/ci.yml").read_text())
    matrix = ci["jobs"]["test"]["strategy"]["matrix"]["python"]
    minors = [int(version.split(".")[1]) for version in matrix]
    assert matrix[0] == lowest
    assert minors == list(range(minors[0], minors[-1] + 1))  # every version in between


def test_the_newest_python_of_the_matrix_has_a_wheel_of_every_compiled_dependency() -> None:
    """The matrix stops where a locked dependency stops publishing wheels (a source build
    would need a compiler and toolchains the runners may lack)."""
    ci = yaml.safe_load((PROJECT_ROOT / ".github/workflows/ci.yml").read_text())
    newest = ci["jobs"]["test"]["strategy"]["matrix"]["python"][-1]
    tag = "cp" + newest.replace(".", "")
    lock = tomllib.loads((PROJECT_ROOT / "uv.lock").read_text())
    # Per package name (a lock may hold one version for old Pythons and one for new ones):
    # the CPython tags of its version-specific wheels, and whether it has a universal one.
    specific: dict[str, set[str]] = {}
    universal: set[str] = set()
    for package in lock["package"]:
        for wheel in package.get("wheels", []):
            python, abi = wheel["url"].rsplit("/", 1)[1][:-4].split("-")[-3:-1]
            if abi == "abi3" or python.startswith("py"):
                universal.add(package["name"])
            else:
                specific.setdefault(package["name"], set()).add(python)
    missing = sorted(n for n, tags in specific.items() if n not in universal and tag not in tags)
    assert missing == []
