"""The migration Job's command (k8s/base/migrate_locked.py) on PostgreSQL: it migrates nothing
before it holds the advisory lock, and of two Jobs released at once exactly one migrates.
"""

from __future__ import annotations

import runpy
import time
from collections.abc import Iterator

import psycopg
import pytest
import sqlalchemy as sa

from tests.conftest import TEST_DATABASE_URL, require
from tests.deploy.conftest import ROOT, finish, start_migration

pytestmark = pytest.mark.postgres


def _migrate_lock_key() -> int:
    # The script's globals, without running its main().
    script = runpy.run_path(str(ROOT / "k8s" / "base" / "migrate_locked.py"))
    return int(script["MIGRATION_LOCK_KEY"])


@pytest.fixture
def scratch_url() -> Iterator[str]:
    url = sa.engine.make_url(require(TEST_DATABASE_URL, "TEST_DATABASE_URL (PostgreSQL)"))
    name = f"{url.database}_migrate_lock"
    admin = psycopg.connect(TEST_DATABASE_URL, autocommit=True)
    admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    admin.execute(f"CREATE DATABASE {name}")
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()


def _waiting(connection: psycopg.Connection, count: int, deadline: float) -> None:
    """Poll until `count` backends wait for an advisory lock of this database."""
    while time.monotonic() < deadline:
        (waiting,) = connection.execute(
            "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database "
            "WHERE l.locktype = 'advisory' AND NOT l.granted AND d.datname = current_database()"
        ).fetchone() or (0,)
        if waiting == count:
            return
        time.sleep(0.05)
    pytest.fail(f"{count} migration(s) never waited for the lock")


def test_migrations_wait_for_the_lock_and_run_once(scratch_url: str) -> None:
    with (
        psycopg.connect(scratch_url, autocommit=True) as observer,
        psycopg.connect(scratch_url) as holder,
    ):
        # Hold the Job's lock ourselves, as a running migration would.
        holder.execute("SELECT pg_advisory_xact_lock(%s)", (_migrate_lock_key(),))
        jobs = [start_migration(scratch_url) for _ in range(2)]
        try:
            _waiting(observer, 2, time.monotonic() + 60)
            # Nothing was migrated while the lock was held elsewhere.
            (exists,) = observer.execute(
                "SELECT to_regclass('public.alembic_version') IS NOT NULL"
            ).fetchone() or (None,)
            assert exists is False
        finally:
            holder.rollback()  # releases the lock
        results = finish(jobs)
    for status, output in results:
        assert status == 0, output
    # The first to get the lock migrated; the second found the schema at head.
    assert sorted("Running upgrade" in output for _, output in results) == [False, True]
    with psycopg.connect(scratch_url) as connection:
        (version,) = connection.execute("SELECT version_num FROM alembic_version").fetchone() or (
            None,
        )
    assert version
