"""The service's version: a leaf, so that any module may read it without importing the app.

Read from the installed package's metadata (pyproject.toml's `version`, installed by `uv sync`
and in the image), so that `service.version` on every span, log and metric names the release
that runs.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("glassbox")
except PackageNotFoundError:  # the source tree run without being installed
    __version__ = "0+unknown"
