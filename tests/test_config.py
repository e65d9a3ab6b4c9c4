from __future__ import annotations

import re
from pathlib import Path

import pytest

from service import create_app
from service.config import ConfigError, all_variable_names, load_config


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"DATABASE_URL": "not a url"}, "DATABASE_URL"),
        ({"DATABASE_URL": "mysql://u@h/db"}, "unsupported database"),
        ({"REDIS_URL": "http://localhost"}, "REDIS_URL"),
        ({"RATELIMIT_ENABLED": "maybe"}, "RATELIMIT_ENABLED"),
        ({"DATABASE_POOL_SIZE": "0"}, "DATABASE_POOL_SIZE"),
        ({"GLASSBOX_ENV": "staging"}, "GLASSBOX_ENV"),
        ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL"),
        ({"GLASSBOX_ENV": "production"}, "SECRET_KEY"),
        ({"GLASSBOX_ENV": "production", "SECRET_KEY": "short"}, "SECRET_KEY"),
        (
            {"GLASSBOX_ENV": "production", "SECRET_KEY": "k" * 40, "PAYMENTS_URL": "http://p"},
            "PAYMENTS_SHARED_SECRET",
        ),
    ],
)
def test_bad_configuration_is_refused_with_a_clear_message(overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        create_app(overrides)


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as error:
        load_config({}, {"DATABASE_URL": "nope", "PORT": "x", "CACHE_DEFAULT_TIMEOUT": "-1"})
    assert "DATABASE_URL" in str(error.value)
    assert "CACHE_DEFAULT_TIMEOUT" in str(error.value)


def test_environment_is_read_in_the_factory_not_at_import() -> None:
    config = load_config(
        {"DATABASE_URL": "postgres://u:p@db:5432/shop", "REDIS_URL": "redis://r:6379/0"}
    )
    assert config["SQLALCHEMY_DATABASE_URI"] == "postgresql+psycopg://u:p@db:5432/shop"
    assert config["CACHE_TYPE"] == "RedisCache"
    assert config["RATELIMIT_STORAGE_URI"] == "redis://r:6379/0"
    embedded = load_config({})
    assert embedded["CACHE_TYPE"] == "SimpleCache"
    assert embedded["RATELIMIT_STORAGE_URI"] == "memory://"
    assert embedded["SQLALCHEMY_DATABASE_URI"].endswith("/var/glassbox.db")


def test_production_accepts_a_real_secret() -> None:
    config = load_config({"GLASSBOX_ENV": "production", "SECRET_KEY": "k" * 40})
    assert config["GLASSBOX_ENV"] == "production"


def _documented(path: Path, pattern: str) -> set[str]:
    return set(re.findall(pattern, path.read_text(), flags=re.MULTILINE))


def test_readme_and_env_example_list_exactly_the_variables(project_root: Path) -> None:
    names = {n for n in all_variable_names() if not n.startswith("OTEL_")}
    example = _documented(project_root / ".env.example", r"^#?\s*([A-Z][A-Z0-9_]+)=")
    readme = _documented(project_root / "README.md", r"^\| `([A-Z][A-Z0-9_]+)` \|")
    # OTEL_* are the OpenTelemetry SDK's own variables, documented beside ours.
    assert names <= example
    assert names <= readme
    assert {n for n in example if not n.startswith(("OTEL_", "TEST_"))} <= names
    assert {n for n in readme if not n.startswith(("OTEL_", "TEST_"))} <= names


def test_the_request_budget_is_split_between_the_dependencies() -> None:
    parts = load_config({})["REQUEST_BUDGET_PARTS"]
    # 5 s = 2 x 0.25 (Redis) + 2 (connect) + 2 (statement) + 0.25 (grace) + 0.25 (answer)
    assert parts["database_statement"] == 2.0
    assert parts["database_lock_ms"] == 1000
    assert parts["payments_worst"] <= parts["payments_total"]
    bigger = load_config({"REQUEST_BUDGET": "10"})
    assert bigger["DATABASE_STATEMENT_TIMEOUT"] == 7.0


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"DATABASE_STATEMENT_TIMEOUT": "3"}, "DATABASE_STATEMENT_TIMEOUT"),
        ({"REQUEST_BUDGET": "2"}, "REQUEST_BUDGET"),
        ({"PAYMENTS_TIMEOUT": "2.0"}, "PAYMENTS_TIMEOUT"),
        ({"DATABASE_POOL_TIMEOUT": "6"}, "DATABASE_POOL_TIMEOUT"),
    ],
)
def test_timeouts_that_do_not_fit_the_budget_are_refused(
    settings: dict[str, str], named: str
) -> None:
    with pytest.raises(ConfigError, match=named):
        load_config(settings)
