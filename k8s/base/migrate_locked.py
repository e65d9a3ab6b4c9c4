"""`flask --app service db upgrade` under a PostgreSQL advisory lock: the migration Job's command.

Two Jobs may overlap (a retry, a second deploy, a manual run). Each one takes
pg_advisory_xact_lock first thing in Alembic's migration transaction, on the migration's own
connection; the later one waits, then finds the schema at head and does nothing. Without
the lock the later one would fail instead (PostgreSQL's transactional DDL and Alembic's
version check roll it back) and the Job would have to retry.

One connection, one transaction: the lock holds through PgBouncer in transaction pooling
mode (the server connection stays with the transaction), is released by the commit or when
the connection dies, and a waiting Job holds nothing the running one needs. (A lock taken
on a second connection deadlocked when the pooler had no third server connection to give
the migration: tests/deploy/test_pgbouncer.py.)
"""

from __future__ import annotations

import sys
from typing import Any

import sqlalchemy as sa

# "glassbox" in ASCII as a 64-bit number: a fixed key that no other lock here uses.
MIGRATION_LOCK_KEY = int.from_bytes(b"glassbox", "big")


def _lock(connection: sa.Connection) -> None:
    print("migrate: waiting for the migration lock", file=sys.stderr, flush=True)
    connection.exec_driver_sql("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_KEY,))
    print("migrate: lock held, upgrading", file=sys.stderr, flush=True)


def main() -> int:
    from flask_migrate import upgrade

    from service import create_app
    from service.extensions import db

    app = create_app()
    with app.app_context():
        engine: Any = db.engine
        if engine.dialect.name == "postgresql":
            # Alembic runs every migration in one transaction on one connection: its start is
            # where the lock belongs.
            sa.event.listen(engine, "begin", _lock)
        upgrade()
        engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
