"""Progress of long measurement work: a bar on a terminal, plain lines otherwise.

rich draws the bar (the same library as `flask seed`'s progress, service/progress.py);
when the output is a file or a pipe (CI, `make bench > log`) each step is one line.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)


class Steps(Protocol):
    def say(self, message: str) -> None:
        """A line for the reader, above the bar if there is one."""

    def advance(self, message: str = "") -> None:
        """One step done; `message` says what it was."""


class _Lines:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def say(self, message: str) -> None:
        print(f"{self.prefix}: {message}", flush=True)

    def advance(self, message: str = "") -> None:
        if message:
            self.say(message)


class _Bar:
    def __init__(self, prefix: str, progress: Progress, task: TaskID) -> None:
        self.prefix = prefix
        self.progress = progress
        self.task = task

    def say(self, message: str) -> None:
        self.progress.console.print(f"{self.prefix}: {message}", highlight=False, markup=False)

    def advance(self, message: str = "") -> None:
        if message:
            self.say(message)
        self.progress.advance(self.task)


@contextmanager
def steps(prefix: str, title: str, total: int) -> Iterator[Steps]:
    """`total` steps of `title`: a rich bar when stdout is a terminal, plain lines otherwise."""
    if not sys.stdout.isatty():
        lines = _Lines(prefix)
        lines.say(f"{title} ({total} steps)")
        yield lines
        return
    console = Console()
    columns = (
        TextColumn(f"{prefix}: {title}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    # print() inside the block lands above the bar (rich redirects stdout while it draws).
    with Progress(*columns, console=console, transient=False) as progress:
        yield _Bar(prefix, progress, progress.add_task(title, total=total))
