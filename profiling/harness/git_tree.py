"""Another commit of this repository as a folder of files, for serving it beside today's code.

`git archive` of the commit, unpacked into a temporary folder that is removed afterwards:
no worktree to register or prune, and it works in any clone that has the commit (a shallow
clone may not: `commit_of` says so by returning None).
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from profiling.harness.processes import ROOT


def commit_of(ref: str, repository: Path = ROOT) -> str | None:
    """The full commit id `ref` names in `repository`, or None (unknown ref, not a repo)."""
    git = shutil.which("git")
    if git is None or not ref:
        return None
    found = subprocess.run(  # noqa: S603 - git with a ref given by the user running the bench
        [git, "-C", str(repository), "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    return found.stdout.strip() if found.returncode == 0 else None


@contextlib.contextmanager
def extracted_tree(commit: str, repository: Path = ROOT) -> Iterator[Path]:
    """The files of `commit` in a temporary folder, removed when the block ends."""
    git, tar = shutil.which("git"), shutil.which("tar")
    if git is None or tar is None:
        raise RuntimeError("extracting a commit needs git and tar on PATH")
    with tempfile.TemporaryDirectory(prefix=f"glassbox-{commit[:7]}-") as folder:
        archive = subprocess.Popen(  # noqa: S603 - git archive of a commit id we resolved
            [git, "-C", str(repository), "archive", "--format=tar", commit],
            stdout=subprocess.PIPE,
        )
        assert archive.stdout is not None
        unpacked = subprocess.run(  # noqa: S603 - tar into our own temporary folder
            [tar, "-x", "-C", folder], stdin=archive.stdout, check=False, timeout=300
        )
        archive.stdout.close()
        if archive.wait(timeout=60) != 0 or unpacked.returncode != 0:
            raise RuntimeError(f"could not extract {commit} from {repository}")
        yield Path(folder)


def tree_env(tree: Path) -> dict[str, str]:
    """What a process needs to import the extracted tree's packages before this checkout's
    (the virtualenv's editable install appends this checkout at the end of sys.path)."""
    return {"PYTHONPATH": str(tree)}
