"""Load shapes: how many shoppers, for how long, and how long they think between clicks.

Plain schedules (no Locust import, so tests can check them without gevent patching the
test process); the locustfile's one `LoadTestShape` runs the schedule chosen with
`--shape` (env `LOAD_SHAPE`). `--peak-users` and `--shape-seconds` rescale a shape.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Stage:
    until: float  # seconds since the start at which this stage ends
    users: int
    spawn_rate: float


@dataclass(frozen=True)
class Shape:
    name: str
    description: str
    stages: tuple[Stage, ...]
    # Seconds a shopper waits between two actions (uniform in this range).
    think_time: tuple[float, float] = (1.0, 5.0)

    @property
    def duration(self) -> float:
        return self.stages[-1].until

    def scaled(self, *, peak_users: int | None = None, seconds: float | None = None) -> Shape:
        """The same shape with its peak at `peak_users` and lasting `seconds`.

        Spawn rates follow, so that a ramp keeps its share of the (shorter) run.
        """
        natural_peak = max(stage.users for stage in self.stages)
        user_factor = (peak_users / natural_peak) if peak_users else 1.0
        time_factor = (seconds / self.duration) if seconds else 1.0
        stages = tuple(
            Stage(
                until=stage.until * time_factor,
                users=max(1, round(stage.users * user_factor)),
                spawn_rate=max(1.0, stage.spawn_rate * user_factor / time_factor),
            )
            for stage in self.stages
        )
        return Shape(self.name, self.description, stages, self.think_time)

    def at(self, elapsed: float) -> tuple[int, float] | None:
        """(users, spawn rate) `elapsed` seconds into the run; None once it is over."""
        for stage in self.stages:
            if elapsed < stage.until:
                return stage.users, stage.spawn_rate
        return None


SHAPES: dict[str, Shape] = {
    shape.name: shape
    for shape in (
        Shape(
            "smoke",
            "a few shoppers for 12 s, thinking briefly: does every journey work? (CI)",
            (Stage(until=12, users=6, spawn_rate=6),),
            # Short think time so that even the rarer journeys (reports, orders) run in 12 s.
            think_time=(0.05, 0.25),
        ),
        Shape(
            "steady",
            "ramp to 20 shoppers in 30 s, hold for 5 minutes",
            (Stage(until=30, users=20, spawn_rate=1), Stage(until=330, users=20, spawn_rate=1)),
        ),
        Shape(
            "spike",
            "10 shoppers, a sudden jump to 60 for 30 s, back to 10 for 90 s",
            (
                Stage(until=60, users=10, spawn_rate=10),
                Stage(until=90, users=60, spawn_rate=50),
                Stage(until=180, users=10, spawn_rate=50),
            ),
        ),
        Shape(
            "soak",
            "15 shoppers for an hour: leaks, pool exhaustion, slow drift",
            (Stage(until=60, users=15, spawn_rate=1), Stage(until=3660, users=15, spawn_rate=1)),
        ),
    )
}
