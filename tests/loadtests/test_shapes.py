"""The load shapes' schedules (plain data: no Locust import, no gevent in the test process)."""

from __future__ import annotations

import pytest

from loadtests.shapes import SHAPES


def test_every_shape_starts_with_users_and_ends() -> None:
    for shape in SHAPES.values():
        users, rate = shape.at(0.0) or (0, 0.0)
        assert users >= 1, shape.name
        assert rate >= 1, shape.name
        assert shape.at(shape.duration) is None, shape.name


def test_smoke_fits_in_a_ci_run() -> None:
    assert SHAPES["smoke"].duration <= 20


def test_spike_jumps_and_comes_back() -> None:
    spike = SHAPES["spike"]
    before, during, after = (spike.at(t) for t in (30, 75, 120))
    assert before is not None
    assert during is not None
    assert after is not None
    assert during[0] > 3 * before[0]
    assert after[0] == before[0]


def test_scaling_changes_users_and_length_but_not_the_form() -> None:
    steady = SHAPES["steady"].scaled(peak_users=40, seconds=33)
    assert steady.duration == pytest.approx(33)
    assert steady.at(32.9) == (40, 20.0)
    assert steady.at(33.0) is None
    assert SHAPES["steady"].scaled().stages == SHAPES["steady"].stages
