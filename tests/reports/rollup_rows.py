"""The rollups' rows, and the check that they are what a rebuild from the orders makes."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from service.extensions import db
from service.reports import rollups


def rollup_rows() -> dict[str, set[tuple[Any, ...]]]:
    """Every row of each rollup table (in an app context)."""
    return {
        rollup.__tablename__: {
            tuple(row) for row in db.session.execute(sa.select(rollup.__table__))
        }
        for rollup in rollups.ROLLUPS
    }


def assert_as_rebuilt() -> dict[str, set[tuple[Any, ...]]]:
    """The rows kept equal the rows a rebuild writes (in an app context); the rows."""
    kept = rollup_rows()
    rollups.rebuild()
    assert rollup_rows() == kept
    return kept
