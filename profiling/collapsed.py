"""Read py-spy's `--format raw` output (collapsed stacks) and rank its frames.

One line per distinct stack, root first, then the number of samples:

    <module> (gunicorn/__main__.py:10);…;percentile (service/reports/reference.py:66) 12

py-spy names a frame `function (file:line)`, with the file shortened to its path below the
`sys.path` entry it was imported from (`service/reports/reference.py`, `sqlalchemy/orm/…`,
`socket.py`). Frames are ranked by function (the line is dropped): self samples count the
stacks a function is on top of, total samples the stacks it is anywhere in (once per stack,
so recursion is not counted twice).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

_FRAME = re.compile(r"^(?P<name>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


@dataclass(frozen=True)
class Frame:
    name: str
    file: str
    line: int | None = None

    @property
    def function(self) -> tuple[str, str]:
        return self.name, self.file

    def __str__(self) -> str:
        return f"{self.name} ({self.file})" if self.file else self.name


Stack = tuple[Frame, ...]


def parse_frame(text: str) -> Frame:
    """`name (file:line)` → Frame; anything else (py-spy's `process N:"…"` roots) keeps its text."""
    match = _FRAME.match(text)
    if match is None:
        return Frame(text, "")
    line = match.group("line")
    return Frame(match.group("name"), match.group("file"), int(line) if line else None)


def read_stacks(paths: Iterable[Path]) -> list[tuple[Stack, int]]:
    """Every (stack, samples) of the given raw files, added up as one profile."""
    stacks: list[tuple[Stack, int]] = []
    for path in paths:
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            stack_text, _, count = line.rstrip().rpartition(" ")
            if not stack_text or not count.isdigit():
                continue
            stacks.append((tuple(parse_frame(part) for part in stack_text.split(";")), int(count)))
    return stacks


# A thread of gunicorn's request pool (the threaded worker runs each request in one) runs
# this loop; the worker's main thread then only polls sockets.
REQUEST_POOL_FRAME = ("_worker", "concurrent/futures/thread.py")


def is_request_thread(stack: Stack) -> bool:
    """The worker's main thread, or a thread of its request pool (busy or waiting)."""
    if not is_started_thread(stack):
        return True
    return any(frame.function == REQUEST_POOL_FRAME for frame in stack)


def is_started_thread(stack: Stack) -> bool:
    """A thread started with `threading`, not the process's main one."""
    return bool(stack) and stack[0].file == "threading.py" and stack[0].name.endswith("_bootstrap")


def is_background_thread(stack: Stack) -> bool:
    """A helper thread (OpenTelemetry's exporters): started with `threading`, no request's."""
    return not is_request_thread(stack)


@dataclass(frozen=True)
class Ranked:
    name: str
    file: str
    samples: int
    share: float  # of the profile's samples
    hottest_line: int | None = None  # the line with most self samples (self rankings)

    def __str__(self) -> str:
        return f"{self.name} ({self.file})" if self.file else self.name


def _first(
    counts: Counter[tuple[str, str]], limit: int, where: Callable[[str], bool]
) -> list[tuple[str, str, int]]:
    """The `limit` most sampled (function, file) pairs whose file passes `where`."""
    chosen = [(name, file, n) for (name, file), n in counts.most_common() if where(file)]
    return chosen[:limit]


@dataclass
class Profile:
    samples: int = 0
    self_samples: Counter[tuple[str, str]] = field(default_factory=Counter)
    total_samples: Counter[tuple[str, str]] = field(default_factory=Counter)
    lines: Counter[tuple[str, str, int | None]] = field(default_factory=Counter)

    def top_self(
        self, limit: int, where: Callable[[str], bool] = lambda file: True
    ) -> list[Ranked]:
        return [
            Ranked(name, file, count, count / self.samples, self._hottest_line(name, file))
            for name, file, count in _first(self.self_samples, limit, where)
        ]

    def top_total(
        self, limit: int, where: Callable[[str], bool] = lambda file: True
    ) -> list[Ranked]:
        return [
            Ranked(name, file, count, count / self.samples)
            for name, file, count in _first(self.total_samples, limit, where)
        ]

    def _hottest_line(self, name: str, file: str) -> int | None:
        lines = {ln: n for (fn, fl, ln), n in self.lines.items() if (fn, fl) == (name, file)}
        return max(lines, key=lambda ln: lines[ln]) if lines else None

    def share_in(self, name: str) -> float:
        """Share of samples whose stack passes through a function of that name."""
        count = sum(n for (fn, _), n in self.total_samples.items() if fn == name)
        return count / self.samples if self.samples else 0.0


def profile(
    stacks: Sequence[tuple[Stack, int]], keep: Callable[[Stack], bool] = lambda s: True
) -> Profile:
    """Self and total samples per function over the stacks that `keep` accepts."""
    result = Profile()
    for stack, count in stacks:
        if not stack or not keep(stack):
            continue
        result.samples += count
        top = stack[-1]
        result.self_samples[top.function] += count
        result.lines[(top.name, top.file, top.line)] += count
        for function in {frame.function for frame in stack}:
            result.total_samples[function] += count
    return result
