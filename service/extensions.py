"""Extension objects, created bare here and bound to an app in `create_app`.

A leaf: it imports nothing of the service but the declarative base, so any module may
import `db` or `cache` without pulling in the app (tests/test_import_graph.py checks it).
"""

from __future__ import annotations

from flask_caching import Cache
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy

from service.database import Base

# expire_on_commit=False: a committed row can still be serialised without a reload.
db = SQLAlchemy(model_class=Base, session_options={"expire_on_commit": False})
migrate = Migrate()
cache = Cache()
