"""The OpenAPI document against the running service: for every status each operation
documents there is a request that gets it, and that answer carries every header documented
for it, and no service header (Link, Location, ETag, Retry-After, RateLimit-*, X-Trace-Id,
Idempotent-Replayed) that is not documented."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest
import requests

from service.config import DEFAULT_DEV_API_KEY
from tests.contract.conftest import MAX_BODY, RATE_LIMIT, Service
from tests.processes import flask_cli

SERVICE_HEADERS = {
    "link",
    "location",
    "etag",
    "retry-after",
    "ratelimit-limit",
    "ratelimit-remaining",
    "ratelimit-reset",
    "x-trace-id",
    "idempotent-replayed",
}
MISSING_ID = 2147483647
_names = itertools.count(1)


@dataclass
class Client:
    """Requests to one server as one caller (an API key, or none)."""

    base_url: str
    token: str | None = None

    def __call__(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        headers = dict(kwargs.pop("headers", {}))
        if self.token:
            headers.setdefault("Authorization", f"Bearer {self.token}")
        return requests.request(method, self.base_url + path, headers=headers, timeout=30, **kwargs)


@dataclass
class Shop:
    """Callers of the running service and of the one whose database is down."""

    key: Client
    anonymous: Client
    limited: Client  # a key whose allowance is used up
    down: Client
    customer: Client  # keys of one scope each
    operator: Client

    def category(self) -> dict[str, Any]:
        response = self.key("POST", "/api/v1/categories", json={"name": f"Cat {next(_names)}"})
        assert response.status_code == 201, response.text
        return dict(response.json())

    def product(self, price: str = "2.00", stock: int = 5) -> dict[str, Any]:
        body = {
            "sku": f"C-{next(_names)}",
            "name": "Thing",
            "price": price,
            "stock": stock,
            "category_id": self.category()["id"],
        }
        response = self.key("POST", "/api/v1/products", json=body)
        assert response.status_code == 201, response.text
        return dict(response.json())

    def order(self, product_id: int, quantity: int = 1, **kwargs: Any) -> requests.Response:
        body = {
            "customer_email": "c@example.com",
            "items": [{"product_id": product_id, "quantity": quantity}],
        }
        return self.key("POST", "/api/v1/orders", json=body, **kwargs)


@pytest.fixture(scope="module")
def shop(service: Service) -> Shop:
    token = _new_key(service, "limited", "customer", "operator")
    limited = Client(service.api.base_url, token)
    _exhaust(limited)
    return Shop(
        key=Client(service.api.base_url, DEFAULT_DEV_API_KEY),
        anonymous=Client(service.api.base_url),
        limited=limited,
        down=Client(service.down.base_url, DEFAULT_DEV_API_KEY),
        customer=Client(service.api.base_url, _new_key(service, "customer", "customer")),
        operator=Client(service.api.base_url, _new_key(service, "operator", "operator")),
    )


def _exhaust(limited: Client) -> None:
    """Spend the client's rate limit in every worker. memory:// counts per worker, and
    workers take unequal shares: send until every worker refuses (side by side, one
    connection each). A window lasts a minute from its first request, so a case run later
    in the module spends it again first."""
    if {limited("GET", "/api/v1/categories/0").status_code for _ in range(8)} == {429}:
        return
    with ThreadPoolExecutor(8) as pool:
        for _ in range(4):
            list(pool.map(lambda _: limited("GET", "/api/v1/categories/0"), range(RATE_LIMIT)))
            if {limited("GET", "/api/v1/categories/0").status_code for _ in range(8)} == {429}:
                break
    assert {limited("GET", "/api/v1/categories/0").status_code for _ in range(4)} == {429}


def _new_key(service: Service, name: str, *scopes: str) -> str:
    options = [option for scope in scopes for option in ("--scope", scope)]
    return flask_cli(service.env, "api-keys", "create", f"{name}-{next(_names)}", *options).strip()


Case = Callable[[Shop, str, str], requests.Response]
BODY = {"POST", "PATCH"}


def _path(shop: Shop, template: str) -> str:
    """The template with ids of fresh resources (a product also on no order)."""
    if "{category_id}" in template:
        return template.format(category_id=shop.category()["id"])
    if "{product_id}" in template:
        return template.format(product_id=shop.product()["id"])
    if "{order_id}" in template:
        return template.format(order_id=shop.order(shop.product()["id"]).json()["id"])
    return template


def _valid_body(shop: Shop, method: str, template: str) -> dict[str, Any] | None:
    if method == "PATCH":
        return {"description": "changed"}
    if template == "/api/v1/categories":
        return {"name": f"Cat {next(_names)}"}
    if template == "/api/v1/products":
        return {
            "sku": f"C-{next(_names)}",
            "name": "Thing",
            "price": "1.00",
            "stock": 1,
            "category_id": shop.category()["id"],
        }
    if template == "/api/v1/orders":
        return {
            "customer_email": "c@example.com",
            "items": [{"product_id": shop.product()["id"], "quantity": 1}],
        }
    return None


def success(shop: Shop, method: str, template: str) -> requests.Response:
    path = _path(shop, template)
    if template in ("/api/v1/categories", "/api/v1/products"):
        # A list with a next page: its Link header is due.
        path += "?limit=1" if method == "GET" else ""
    if template == "/api/v1/orders" and method == "GET":
        shop.order(shop.product()["id"])
        shop.order(shop.product()["id"])
        path += "?limit=1"
    if template == "/api/v1/orders" and method == "POST":
        # A replay: the first answer's headers, and Idempotent-Replayed.
        body = _valid_body(shop, method, template)
        retry = {"Idempotency-Key": f"contract-{next(_names)}"}
        assert shop.key(method, path, json=body, headers=retry).status_code == 201
        return shop.key(method, path, json=body, headers=retry)
    public_read = method == "GET" and not template.startswith(("/api/v1/orders", "/api/v1/reports"))
    client = shop.anonymous if public_read else shop.key
    return client(method, path, json=_valid_body(shop, method, template))


def not_modified(shop: Shop, method: str, template: str) -> requests.Response:
    path = _path(shop, template)
    etag = shop.key("GET", path).headers["ETag"]  # the sales report needs a key
    return shop.key("GET", path, headers={"If-None-Match": etag})


def bad_request(shop: Shop, method: str, template: str) -> requests.Response:
    path = _path(shop, template)
    if method in BODY:
        headers = {"Content-Type": "application/json"}
        return shop.key(method, path, data='{"name": ,}', headers=headers)
    return shop.key(method, path + "?cursor=garbage")


def unauthorized(shop: Shop, method: str, template: str) -> requests.Response:
    return shop.anonymous(method, _path(shop, template), json=_valid_body(shop, method, template))


def forbidden(shop: Shop, method: str, template: str) -> requests.Response:
    """A valid key without the operation's scope: placing an order is the customer's, every
    other operation that can answer 403 the operator's."""
    placing = (method, template) == ("POST", "/api/v1/orders")
    client = shop.operator if placing else shop.customer
    return client(method, _path(shop, template), json=_valid_body(shop, method, template))


def payment_declined(shop: Shop, method: str, template: str) -> requests.Response:
    return shop.order(shop.product(price="20000.00")["id"])  # over the gateway's limit


def not_found(shop: Shop, method: str, template: str) -> requests.Response:
    path = template.replace("{category_id}", str(MISSING_ID))
    path = path.replace("{product_id}", str(MISSING_ID)).replace("{order_id}", str(MISSING_ID))
    return shop.key(method, path, json=_valid_body(shop, method, template))


def conflict(shop: Shop, method: str, template: str) -> requests.Response:
    if template == "/api/v1/categories":
        return shop.key(method, template, json={"name": shop.category()["name"]})
    if template == "/api/v1/products":
        sku = shop.product()["sku"]
        body = {**_valid_body(shop, method, template), "sku": sku}  # type: ignore[dict-item]
        return shop.key(method, template, json=body)
    if template == "/api/v1/categories/{category_id}":
        product = shop.product()
        path = template.format(category_id=product["category_id"])
        if method == "PATCH":
            return shop.key(method, path, json={"name": shop.category()["name"]})
        return shop.key(method, path)  # it still has a product
    if template == "/api/v1/products/{product_id}":
        product = shop.product()
        path = template.format(product_id=product["id"])
        if method == "PATCH":
            return shop.key(method, path, json={"sku": shop.product()["sku"]})
        assert shop.order(product["id"]).status_code == 201
        return shop.key(method, path)  # it is on an order
    if template == "/api/v1/orders":
        return shop.order(shop.product(stock=1)["id"], quantity=2)
    path = _path(shop, template)  # cancel, twice
    assert shop.key(method, path).status_code == 200
    return shop.key(method, path)


def precondition_failed(shop: Shop, method: str, template: str) -> requests.Response:
    stale = {"If-Match": '"0000000000000000000000000000000000000000"'}
    path = _path(shop, template)
    return shop.key(method, path, json=_valid_body(shop, method, template), headers=stale)


def too_large(shop: Shop, method: str, template: str) -> requests.Response:
    body = json.dumps({"name": "x" * MAX_BODY})
    headers = {"Content-Type": "application/json"}
    return shop.key(method, _path(shop, template), data=body, headers=headers)


def unsupported_media_type(shop: Shop, method: str, template: str) -> requests.Response:
    headers = {"Content-Type": "text/plain"}
    return shop.key(method, _path(shop, template), data="name=x", headers=headers)


def invalid(shop: Shop, method: str, template: str) -> requests.Response:
    client = shop.key if template.startswith("/api/") else shop.anonymous
    path = _path(shop, template) if template.startswith("/api/") else template
    return client(method, path + "?unknown=1", json=_valid_body(shop, method, template))


def rate_limited(shop: Shop, method: str, template: str) -> requests.Response:
    path = template.format(category_id=1, product_id=1, order_id=1)
    body = _valid_body(shop, method, template)
    _exhaust(shop.limited)  # its window may have ended since the module began (> 60 s)
    return shop.limited(method, path, json=body)


def unavailable(shop: Shop, method: str, template: str) -> requests.Response:
    path = template.format(category_id=1, product_id=1, order_id=1)
    headers = {"Content-Type": "application/json"} if method in BODY else {}
    return shop.down(method, path, data="{}" if method in BODY else None, headers=headers)


CASES: dict[int, Case] = {
    200: success,
    201: success,
    204: success,
    304: not_modified,
    400: bad_request,
    401: unauthorized,
    402: payment_declined,
    403: forbidden,
    404: not_found,
    409: conflict,
    412: precondition_failed,
    413: too_large,
    415: unsupported_media_type,
    422: invalid,
    429: rate_limited,
    503: unavailable,
}


def _documented(spec: dict[str, Any]) -> list[tuple[str, str, int]]:
    return [
        (method.upper(), path, int(status))
        for path, operations in spec["paths"].items()
        for method, operation in operations.items()
        if method != "parameters"
        for status in operation["responses"]
        if status != "default"  # an unexpected 500: no request is meant to get it
    ]


@pytest.fixture(scope="module")
def spec(service: Service) -> dict[str, Any]:
    return dict(requests.get(service.api.url("/openapi.json"), timeout=30).json())


def _resolve(spec: dict[str, Any], item: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in item:
        section, name = item["$ref"].split("/")[-2:]
        item = spec["components"][section][name]
    return item


def test_every_documented_status_has_a_case(spec: dict[str, Any]) -> None:
    documented = {status for _, _, status in _documented(spec)}
    assert documented <= set(CASES), documented - set(CASES)
    assert len(_documented(spec)) > 100


def test_the_document_describes_every_answer(spec: dict[str, Any], shop: Shop) -> None:
    """Each documented (operation, status): the running service answers it, with the
    documented content type and headers, and no undocumented service header."""
    mismatches = []
    for method, template, status in _documented(spec):
        response = CASES[status](shop, method, template)
        documented = _resolve(
            spec, spec["paths"][template][method.lower()]["responses"][str(status)]
        )
        headers = {name.lower() for name in documented.get("headers", {})}
        sent = {name.lower() for name in response.headers} & SERVICE_HEADERS
        content = set(documented.get("content", {}))
        media_type = response.headers.get("Content-Type", "").split(";")[0]
        problems = []
        if response.status_code != status:
            problems.append(f"answered {response.status_code}: {response.text[:200]}")
        else:
            if headers - sent:
                problems.append(f"documented, not sent: {sorted(headers - sent)}")
            if sent - headers:
                problems.append(f"sent, not documented: {sorted(sent - headers)}")
            if content and media_type not in content:
                problems.append(f"content {media_type!r}, documented {sorted(content)}")
        if problems:
            mismatches.append(f"{method} {template} {status}: {'; '.join(problems)}")
    assert not mismatches, "\n".join(mismatches)


def test_security_is_stated_per_operation_and_holds(spec: dict[str, Any], shop: Shop) -> None:
    """`security: []` is public (answers without a key); a bearer requirement refuses 401."""
    for method, template, status in _documented(spec):
        if status not in (200, 201, 204):
            continue
        operation = spec["paths"][template][method.lower()]
        assert "security" in operation, (method, template)
        anonymous = unauthorized(shop, method, template).status_code
        if operation["security"]:
            assert anonymous == 401, (method, template)
        else:
            assert anonymous == status, (method, template)
