"""Progress of long work on a terminal or in a log: one helper for every command.

    with progress("products", total=200_000) as advance:
        for batch in batches:
            ...
            advance(len(batch))

On a terminal (the stream is a TTY) this draws a rich progress bar; otherwise it writes a
plain line at every tenth of the work (`products: 20000/200000 (10%)`), which reads well in
CI logs and in files. Both go to stderr by default, so stdout stays clean for data.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TextIO

PLAIN_STEPS = 10  # plain lines per task: one every tenth of the work


@contextmanager
def progress(
    description: str, total: int, *, stream: TextIO | None = None
) -> Iterator[Callable[[int], None]]:
    """Report progress of `total` units of work; yields `advance(units_done_since_last)`."""
    out = sys.stderr if stream is None else stream
    if getattr(out, "isatty", lambda: False)():
        with _bar(description, total, out) as advance:
            yield advance
        return
    yield from _plain(description, total, out)


@contextmanager
def _bar(description: str, total: int, out: TextIO) -> Iterator[Callable[[int], None]]:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(file=out)) as bar:
        task = bar.add_task(description, total=total)
        yield lambda units: bar.advance(task, units)


def _plain(description: str, total: int, out: TextIO) -> Iterator[Callable[[int], None]]:
    started = time.monotonic()
    state = {"done": 0, "reported": 0}
    step = max(1, -(-total // PLAIN_STEPS))  # ceil(total / steps)

    def report() -> None:
        percent = 100 * state["done"] // total if total else 100
        elapsed = time.monotonic() - started
        out.write(f"{description}: {state['done']}/{total} ({percent}%) {elapsed:.1f} s\n")
        out.flush()
        state["reported"] = state["done"]

    def advance(units: int) -> None:
        state["done"] += units
        if state["done"] - state["reported"] >= step or state["done"] >= total:
            report()

    yield advance
    if state["reported"] != state["done"] or state["done"] == 0:
        report()


__all__ = ["progress"]
