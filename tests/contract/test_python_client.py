"""A user's view of the API contract: generate a Python client from the running server's
/openapi.json with openapi-python-client and call the server through it (the server:
tests/contract/conftest.py)."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from service.config import DEFAULT_DEV_API_KEY
from tests.processes import Process
from tests.reliability.servers import VENV_BIN

CLIENT_PACKAGE = "glassbox_client"


@pytest.fixture(scope="module")
def generated(server: Process, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Generate the client package from the live spec, as its README tells users to."""
    out = tmp_path_factory.mktemp("generated")
    done = subprocess.run(
        [
            str(VENV_BIN / "openapi-python-client"),
            "generate",
            "--url",
            server.url("/openapi.json"),
            "--meta",
            "none",
            "--output-path",
            str(out / CLIENT_PACKAGE),
        ],
        # Its post-generation hooks run ruff, found on PATH.
        env={**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Warning" not in done.stdout + done.stderr, done.stdout + done.stderr
    sys.path.insert(0, str(out))
    try:
        yield CLIENT_PACKAGE
    finally:
        sys.path.remove(str(out))
        for name in [m for m in sys.modules if m.split(".")[0] == CLIENT_PACKAGE]:
            del sys.modules[name]


def test_generated_client_names_functions_after_the_operation_ids(generated: str) -> None:
    for module in (
        "api.products.get_product",
        "api.products.list_products",
        "api.orders.place_order",
        "api.orders.cancel_order",
        "api.reports.get_sales_report",
    ):
        assert hasattr(importlib.import_module(f"{generated}.{module}"), "sync")


def test_generated_client_reads_products_and_places_an_order(
    server: Process, generated: str
) -> None:
    client_module = importlib.import_module(f"{generated}.client")
    get_product = importlib.import_module(f"{generated}.api.products.get_product")
    list_products = importlib.import_module(f"{generated}.api.products.list_products")
    place_order = importlib.import_module(f"{generated}.api.orders.place_order")
    get_order = importlib.import_module(f"{generated}.api.orders.get_order")
    cancel_order = importlib.import_module(f"{generated}.api.orders.cancel_order")
    models = importlib.import_module(f"{generated}.models")

    anonymous = client_module.Client(base_url=server.base_url, raise_on_unexpected_status=True)
    shopper = client_module.AuthenticatedClient(
        base_url=server.base_url, token=DEFAULT_DEV_API_KEY, raise_on_unexpected_status=True
    )
    # Their httpx clients keep connections alive: closed on the way out.
    with anonymous, shopper:
        page = list_products.sync(client=anonymous, limit=5)
        assert isinstance(page, models.ProductPage)
        assert len(page.items) == 5
        product = get_product.sync(client=anonymous, product_id=page.items[0].id)
        assert isinstance(product, models.Product)
        assert product.sku == page.items[0].sku

        in_stock = next(p for p in page.items if p.stock > 0)
        body = models.OrderCreate.from_dict(
            {
                "customer_email": "ada@example.com",
                "items": [{"product_id": in_stock.id, "quantity": 1}],
            }
        )
        order = place_order.sync(client=shopper, body=body)
        assert isinstance(order, models.Order), order
        assert order.items[0].product_id == in_stock.id
        assert get_order.sync(client=shopper, order_id=order.id).id == order.id
        cancelled = cancel_order.sync(client=shopper, order_id=order.id)
        assert isinstance(cancelled, models.Order)
        assert cancelled.status.value == "cancelled"

        # Without the key the same call is a documented 401 problem, not an exception.
        refused = place_order.sync_detailed(client=anonymous, body=body)
        assert refused.status_code == 401
        assert isinstance(refused.parsed, models.Problem)
        # The problem's trace is a field of the model, not an unknown extra.
        assert refused.parsed.trace_id == refused.headers["X-Trace-Id"]
        assert "trace_id" not in refused.parsed.additional_properties
