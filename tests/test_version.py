"""service.version is the installed package's version (pyproject.toml), not a constant."""

from __future__ import annotations

import tomllib

from service.version import __version__
from tests.observability.conftest import ROOT


def test_the_version_is_the_package_metadata() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert __version__ == project["version"]
