"""`flask --app service seed` and the progress it shows (service/seed.py, service/progress.py)."""

from __future__ import annotations

import io
import re
import subprocess
from pathlib import Path

from flask import Flask

from service.progress import progress
from tests.reliability.servers import PROJECT_ROOT, VENV_BIN, run_on_terminal, server_env


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_lines_when_not_a_terminal() -> None:
    out = io.StringIO()
    with progress("products", total=1000, stream=out) as advance:
        for _ in range(10):
            advance(100)
    lines = out.getvalue().splitlines()
    assert len(lines) == 10  # one per tenth, no repeats at the end
    assert re.fullmatch(r"products: 100/1000 \(10%\) \d+\.\d s", lines[0]), lines
    assert lines[-1].startswith("products: 1000/1000 (100%)")


def test_plain_lines_report_the_end_even_between_steps() -> None:
    out = io.StringIO()
    with progress("orders", total=0, stream=out):
        pass
    assert out.getvalue().startswith("orders: 0/0 (100%)")


def test_a_bar_on_a_terminal() -> None:
    out = _Terminal()
    with progress("products", total=4, stream=out) as advance:
        for _ in range(4):
            advance(1)
    text = out.getvalue()
    assert "products" in text
    assert "4/4" in text
    assert "━" in text  # rich's bar


def test_seed_command_prints_progress_lines(app: Flask) -> None:
    result = app.test_cli_runner().invoke(args=["seed", "--products", "12000", "--orders", "1500"])
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    products = [line for line in lines if line.startswith("products: ")]
    orders = [line for line in lines if line.startswith("orders: ")]
    assert [line.split()[1] for line in products] == ["5000/12000", "10000/12000", "12000/12000"]
    assert [line.split()[1] for line in orders] == ["1000/1500", "1500/1500"]
    assert lines[-1] == "seeded 12000 products and 1500 orders"


def test_seed_command_draws_a_bar_on_a_terminal(tmp_path: Path) -> None:
    env = server_env(DATABASE_URL=f"sqlite:///{tmp_path / 'seed.db'}", COLUMNS="100")
    flask = [str(VENV_BIN / "flask"), "--app", "service"]
    subprocess.run(
        [*flask, "db", "upgrade"],
        env=env,
        cwd=PROJECT_ROOT,
        check=True,
        capture_output=True,
        timeout=120,
    )
    status, output = run_on_terminal([*flask, "seed", "--products", "6000", "--orders", "0"], env)
    assert status == 0, output
    text = output.decode()
    assert "━" in text, text
    assert "6000/6000" in text
    assert "products: " not in text  # no plain lines on a terminal
