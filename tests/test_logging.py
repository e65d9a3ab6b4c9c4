from __future__ import annotations

import io
import json
import logging
import re

import pytest
from flask import Flask

from service.config import ConfigError, load_config
from service.logs import choose_format
from tests.conftest import build_app
from tests.reliability.servers import VENV_BIN, run_on_terminal, server_env


def _lines(captured: str) -> list[dict]:
    return [json.loads(line) for line in captured.splitlines() if line.startswith("{")]


def test_one_json_access_line_per_request(
    sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    app = build_app(sqlite_url, LOG_LEVEL="INFO")
    app.test_client().get("/api/v1/products/123456")
    access = [
        line for line in _lines(capsys.readouterr().out) if line["logger"] == "glassbox.access"
    ]
    assert len(access) == 1
    line = access[0]
    assert line["method"] == "GET"
    assert line["route"] == "/api/v1/products/{product_id}"  # the template, as in spans
    assert line["status"] == 404
    assert line["duration_ms"] >= 0
    assert line["client"] == "127.0.0.1"
    assert line["level"] == "INFO"
    assert line["service"] == "glassbox-api"
    assert {"trace_id", "span_id", "timestamp"} <= set(line)


def _access_line_written(app: Flask, monkeypatch: pytest.MonkeyPatch, *, alone: bool) -> dict:
    """The access line of one request, the app's JSON handler writing into a buffer: the only
    handler (`alone`), or beside another one, as when logs are exported or captured."""
    from service.logs import access_log

    (handler,) = [h for h in logging.getLogger().handlers if getattr(h, "_glassbox_json", False)]
    buffer = io.StringIO()
    monkeypatch.setattr(handler, "stream", buffer)
    others = [] if alone else [logging.NullHandler()]
    monkeypatch.setattr(logging.getLogger(), "handlers", [handler, *others])
    records: list[logging.LogRecord] = []
    make_record = access_log.makeRecord

    def counted(*args: object, **kwargs: object) -> logging.LogRecord:
        record = make_record(*args, **kwargs)  # type: ignore[arg-type]
        records.append(record)
        return record

    monkeypatch.setattr(access_log, "makeRecord", counted)
    app.test_client().get("/api/v1/products/123456", headers={"X-Forwarded-For": "10.0.0.1"})
    monkeypatch.undo()
    (line,) = [json.loads(text) for text in buffer.getvalue().splitlines()]
    line["records_made"] = len(records)
    return line


def test_the_direct_access_line_is_the_record_paths_line(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = build_app(sqlite_url, LOG_LEVEL="INFO", LOG_FORMAT="json")
    direct = _access_line_written(app, monkeypatch, alone=True)
    recorded = _access_line_written(app, monkeypatch, alone=False)
    # Alone, the line is written without a LogRecord; beside another handler, through one.
    assert (direct.pop("records_made"), recorded.pop("records_made")) == (0, 1)
    assert list(direct) == list(recorded)  # the same fields in the same order
    varying = {"timestamp", "duration_ms", "trace_id", "span_id"}
    assert {k: v for k, v in direct.items() if k not in varying} == {
        k: v for k, v in recorded.items() if k not in varying
    }
    assert (direct["status"], direct["route"]) == (404, "/api/v1/products/{product_id}")
    assert (len(direct["trace_id"]), len(direct["span_id"])) == (32, 16)
    assert direct["timestamp"].endswith("+00:00")


def test_errors_are_logged_once_with_their_stack(
    sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    app: Flask = build_app(sqlite_url)  # built here so its log handler writes to the capture

    def boom() -> str:
        raise RuntimeError("kaput")

    app.add_url_rule("/boom", view_func=boom)
    app.test_client().get("/boom")
    errors = [line for line in _lines(capsys.readouterr().out) if line["level"] == "ERROR"]
    assert len(errors) == 1
    assert "RuntimeError: kaput" in errors[0]["exc_info"]


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    ("requested", "environment", "stream", "expected"),
    [
        ("auto", "development", _Terminal(), "console"),
        ("auto", "development", io.StringIO(), "json"),  # piped: a collector reads it
        ("auto", "production", _Terminal(), "json"),
        ("auto", "test", _Terminal(), "json"),
        ("json", "development", _Terminal(), "json"),
        ("console", "production", io.StringIO(), "console"),
    ],
)
def test_log_format_follows_log_format_environment_and_terminal(
    requested: str, environment: str, stream: io.StringIO, expected: str
) -> None:
    assert choose_format(requested, environment, stream) == expected


def test_log_format_is_validated() -> None:
    with pytest.raises(ConfigError, match="LOG_FORMAT='pretty'"):
        load_config({"LOG_FORMAT": "pretty"})


def test_console_format_is_one_readable_line(
    sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    app = build_app(sqlite_url, LOG_FORMAT="console", LOG_LEVEL="INFO")
    app.test_client().get("/api/v1/products/123456")
    lines = [line for line in capsys.readouterr().out.splitlines() if "glassbox.access" in line]
    assert len(lines) == 1
    assert re.fullmatch(
        r"\d\d:\d\d:\d\d INFO +glassbox\.access  GET /api/v1/products/\{product_id\} 404 "
        r"\d+\.\d ms  client=127\.0\.0\.1(  trace=[0-9a-f]{32})?",
        lines[0],
    ), lines[0]


def test_development_logs_on_a_terminal_are_console_lines(sqlite_url: str) -> None:
    """What `make run` shows: the migration logs on a real pseudo-terminal, not JSON."""
    status, output = run_on_terminal(
        [str(VENV_BIN / "flask"), "--app", "service", "db", "upgrade"],
        server_env(GLASSBOX_ENV="development", DATABASE_URL=sqlite_url, NO_COLOR="1"),
    )
    assert status == 0, output
    lines = [line for line in output.decode().splitlines() if "alembic" in line]
    assert lines, output
    assert all(not line.lstrip().startswith("{") for line in lines), lines
    assert re.match(r"\d\d:\d\d:\d\d INFO +alembic\.runtime\.migration  ", lines[0]), lines


def test_gunicorn_writes_no_access_line_and_computes_none() -> None:
    # The app writes its own line; gunicorn's logger would still build the access-log
    # atoms for every request, because a logconfig_dict is set.
    from gunicorn.config import Config

    from service import gunicorn_conf
    from service.gunicorn_worker import NoAccessLogger

    config = Config()
    for name in ("logger_class", "logconfig_dict", "accesslog"):
        config.set(name, getattr(gunicorn_conf, name))
    assert config.logger_class is NoAccessLogger
    logger = NoAccessLogger(config)
    assert not logger.access_log_enabled

    class Untouchable:
        def __getattr__(self, name: str) -> None:
            raise AssertionError(f"the access log read {name}")

    logger.access(Untouchable(), Untouchable(), {}, Untouchable())
