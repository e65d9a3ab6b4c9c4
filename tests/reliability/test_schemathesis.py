"""Schemathesis against the app's own /openapi.json, served by gunicorn, with every check.

The run is bounded: a fixed seed and a fixed number of examples per operation (about
30 s on the 2-core CI machine). Writes are exercised with a real API key. Positive cases
that depend on facts a JSON schema cannot state (a signed cursor, an existing product)
are adjusted in tests/reliability/schemathesis_hooks.py, where each reason is written;
no check is switched off. tests/reliability/schemathesis.toml counts the server's 414 and
431 (a request over its limits) as rejections of invalid data.
"""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from pathlib import Path

import requests

from tests.reliability.conftest import StartServer
from tests.reliability.servers import VENV_BIN, server_env

SEED = 20261126
MAX_EXAMPLES = 100
RUN_TIMEOUT = 300  # seconds: a bound for a hung run, far above the usual half minute


def _seed_data(base_url: str, headers: dict[str, str]) -> tuple[list[int], list[int]]:
    """Rows for positive cases to refer to; each product is on an order so it stays."""
    categories, products = [], []
    for n in range(2):
        category = requests.post(
            f"{base_url}/api/v1/categories", json={"name": f"Fuzz {n}"}, headers=headers, timeout=10
        )
        assert category.status_code == 201, category.text
        categories.append(category.json()["id"])
        product = requests.post(
            f"{base_url}/api/v1/products",
            json={
                "sku": f"FUZZ-{n}",
                "name": f"Fuzz product {n}",
                "price": "1.00",
                "stock": 1_000_000_000,
                "category_id": categories[-1],
            },
            headers=headers,
            timeout=10,
        )
        assert product.status_code == 201, product.text
        products.append(product.json()["id"])
    order = requests.post(
        f"{base_url}/api/v1/orders",
        json={
            "customer_email": "fuzz@example.com",
            "items": [{"product_id": p, "quantity": 1} for p in products],
        },
        headers=headers,
        timeout=10,
    )
    assert order.status_code == 201, order.text
    return categories, products


def test_api_conforms_to_its_openapi_spec(
    gunicorn_server: StartServer, server_database: str, server_token: str, tmp_path: Path
) -> None:
    server = gunicorn_server(DATABASE_URL=server_database)
    headers = {"Authorization": f"Bearer {server_token}"}
    categories, products = _seed_data(server.base_url, headers)

    report = tmp_path / "schemathesis.json"
    ledger = tmp_path / "filtered.txt"
    env = server_env(
        SCHEMATHESIS_HOOKS=str(Path(__file__).with_name("schemathesis_hooks.py")),
        GLASSBOX_ST_CATEGORY_IDS=",".join(map(str, categories)),
        GLASSBOX_ST_PRODUCT_IDS=",".join(map(str, products)),
        GLASSBOX_ST_FILTERED_LOG=str(ledger),
    )
    command = [
        str(VENV_BIN / "schemathesis"),
        "--config-file",
        str(Path(__file__).with_name("schemathesis.toml")),
        "run",
        f"{server.base_url}/openapi.json",
        "--checks",
        "all",
        "--seed",
        str(SEED),
        "--max-examples",
        str(MAX_EXAMPLES),
        "--workers",
        "1",  # one at a time: the same seed gives the same run
        "--generation-database",
        "none",
        "--request-timeout",
        "30",
        "--header",
        f"Authorization: Bearer {server_token}",
        "--report",
        "json",
        "--report-json-path",
        str(report),
        "--no-color",
    ]
    result = subprocess.run(
        command,
        cwd=tmp_path,  # schemathesis keeps a cache folder in its working directory
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )
    output = result.stdout + result.stderr
    (tmp_path / "schemathesis.txt").write_text(output)
    assert result.returncode == 0, output[-20000:]

    summary = json.loads(report.read_text())
    generated = summary["test_cases"]["generated"]
    set_aside = (
        Counter(" ".join(line.split()[:3]) for line in ledger.read_text().splitlines())
        if ledger.exists()
        else Counter()
    )
    print(
        f"schemathesis: {generated} test cases on {summary['operations']['tested']} "
        f"operations in {summary['running_time']:.1f} s, 0 failures (seed {SEED}); "
        f"set aside by filter_failure: {dict(set_aside)}"
    )
    assert summary["exit_code"] == 0
    # Every operation was reached and every phase ran.
    assert summary["operations"]["tested"] == summary["operations"]["total"] >= 17
    assert summary["operations"]["errored"] == 0
    assert {name: phase["status"] for name, phase in summary["phases"].items()} == {
        "examples": "success",
        "coverage": "success",
        "fuzzing": "success",
        "stateful": "success",
    }
    assert generated >= 1000

    # The server stayed healthy throughout: no worker died and nothing was logged as a 500.
    assert server.process is not None
    assert server.process.poll() is None
    errors = [r for r in server.log_records() if r.get("level") in ("ERROR", "CRITICAL")]
    assert errors == []
