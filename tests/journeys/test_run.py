"""`make run`, then README's "Try it" examples (a search first) and its generated client."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from profiling.harness.processes import free_port
from tests.journeys.conftest import MakeServer, readme_block, serving, user_env


@pytest.fixture(scope="module")
def run_server(tree: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MakeServer]:
    log = tmp_path_factory.mktemp("run") / "make-run.log"
    env = user_env(PAYMENTS_PORT=str(free_port()))
    with serving(tree, "run", env, log) as server:
        yield server


def _bash(script: str, tree: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", script],
        cwd=tree,
        env=user_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _json_documents(text: str) -> list[Any]:
    """The JSON documents printed one after another (pretty-printed or on one line)."""
    decoder, documents, index = json.JSONDecoder(), [], 0
    while index < len(text):
        if text[index].isspace():
            index += 1
            continue
        document, index = decoder.raw_decode(text, index)
        documents.append(document)
    return documents


def test_readme_try_it_answers_a_search_first(run_server: MakeServer, tree: Path) -> None:
    assert "Development API key: gbx_dev_key_for_local_use_only" in run_server.output()
    script = readme_block(tree, "## Try it").replace(
        "127.0.0.1:8000", f"127.0.0.1:{run_server.port}"
    )
    assert script.lstrip().startswith("curl -s 'http://127.0.0.1:"), script
    assert "?q=" in script.splitlines()[0]

    done = _bash(script, tree)

    assert done.returncode == 0, done.stdout + done.stderr
    search, page, order, report = _json_documents(done.stdout)
    assert search["items"], search
    assert all("roast" in item["name"].lower() for item in search["items"])
    assert len(page["items"]) == 2, page
    assert order["customer_email"] == "ada@example.com", order
    assert order["status"] == "paid", order
    assert "trace_id" not in report, report  # not a problem document


def test_readme_client_command_and_example_run_as_written(
    run_server: MakeServer, tree: Path
) -> None:
    port = f"127.0.0.1:{run_server.port}"
    text = (tree / "README.md").read_text()
    (command,) = [line for line in text.splitlines() if "openapi-python-client generate" in line]

    done = _bash(command.replace("127.0.0.1:8000", port), tree)

    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "Warning" not in output, output
    assert "not in PATH" not in output, output
    example = text.split(command, 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    ran = subprocess.run(
        [str(tree / ".venv" / "bin" / "python"), "-c", example.replace("127.0.0.1:8000", port)],
        cwd=tree,
        env=user_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
