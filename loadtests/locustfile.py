"""Shoppers for Locust: browse, look at products (often the same ones), search, buy, cancel.

Run from the repository root (docs/measurement.md):

    locust -f loadtests/locustfile.py --headless --host http://127.0.0.1:8000 --shape smoke

Options (each also an environment variable): `--shape` (LOAD_SHAPE: smoke, steady, spike,
soak), `--peak-users` (LOAD_PEAK_USERS) and `--shape-seconds` (LOAD_SECONDS) to rescale it,
`--think-scale` (LOAD_THINK_SCALE) to shorten or lengthen think time; the API key for
orders and the sales report comes from GLASSBOX_API_KEY (default: the development key; a
key of your own needs the customer and operator scopes). GLASSBOX_API_KEYS, a comma-separated
list (`make profile` makes one key per shopper), gives each shopper the next key, sent with
every request: each then has an allowance of its own. Thresholds live in
loadtests/thresholds.toml; a run that exceeds one exits with code 1.

Every request starts a trace of its own (`traceparent`, sampled) and carries the baggage
`synthetic_request=true`, as the OpenTelemetry Demo's load generator does: the service marks
its span and metrics synthetic, and the SLOs leave them out. A failure names its trace id.
"""

from __future__ import annotations

import itertools
import logging
import os
import random
import re
import secrets
from collections import Counter
from collections.abc import Callable
from functools import partial
from typing import Any

from locust import FastHttpUser, LoadTestShape, events, task
from locust.env import Environment

from loadtests.shapes import SHAPES, Shape
from loadtests.thresholds import load_thresholds, violations

log = logging.getLogger("loadtests")

DEV_API_KEY = "gbx_dev_key_for_local_use_only"  # the documented development key
PRODUCTS = "/api/v1/products"
ORDERS = "/api/v1/orders"
# Words the seed data puts in product names (service/seed.py), so searches find something.
SEARCH_WORDS = ("blend", "roast", "kit", "mug", "set", "box", "dark", "bright", "organic", "bold")
SORTS = ("created_at", "-created_at", "price", "-price", "name")
MONEY = re.compile(r"^-?\d+\.\d{2}$")
ORDER_STATUSES = {"pending", "paid", "cancelled"}
SYNTHETIC_BAGGAGE = "synthetic_request=true"
# Picks what shoppers do; load generation, not secrets.
rng = random.Random()  # noqa: S311
# One key per shopper, in turn, when GLASSBOX_API_KEYS names several (see the docstring).
shopper_keys = itertools.cycle(
    [key.strip() for key in os.environ.get("GLASSBOX_API_KEYS", "").split(",") if key.strip()]
)

# Products seen in list pages, shared by every shopper of this process: product views pick
# from it with a strong bias to the first ones, so a few products get most views (a cache's
# best case, and a shop's usual one).
catalog: list[int] = []
in_catalog: set[int] = set()
CATALOG_LIMIT = 5000  # enough variety; bounded, so an hour-long soak does not grow it forever
# Outcomes that are not failures but that a reader wants to see counted (printed at the end).
outcomes: Counter[str] = Counter()


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    parser.add_argument(
        "--shape",
        choices=sorted(SHAPES),
        default="smoke",
        env_var="LOAD_SHAPE",
        help="load shape: " + "; ".join(f"{n}: {s.description}" for n, s in SHAPES.items()),
    )
    parser.add_argument(
        "--peak-users", type=int, default=0, env_var="LOAD_PEAK_USERS", help="rescale users"
    )
    parser.add_argument(
        "--shape-seconds",
        type=float,
        default=0.0,
        env_var="LOAD_SECONDS",
        help="rescale the shape to last this many seconds",
    )
    parser.add_argument(
        "--think-scale",
        type=float,
        default=1.0,
        env_var="LOAD_THINK_SCALE",
        help="multiply every think time (0.1 keeps the server busier, e.g. for profiling)",
    )


def _options_of(environment: Environment) -> Any:
    return environment.parsed_options


class SelectedShape(LoadTestShape):
    """Runs the schedule named by --shape (the one shape class Locust finds in this file)."""

    chosen: Shape | None = None

    def _shape(self) -> Shape:
        if self.chosen is None:
            assert self.runner is not None
            options = _options_of(self.runner.environment)
            self.chosen = SHAPES[options.shape].scaled(
                peak_users=options.peak_users or None, seconds=options.shape_seconds or None
            )
            log.info("shape %s: %s", options.shape, self.chosen.description)
        return self.chosen

    def tick(self) -> tuple[int, float] | None:
        return self._shape().at(self.get_run_time())


class Invalid(Exception):
    """A response whose body does not have the documented shape."""


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise Invalid(message)


def check_product(data: Any) -> None:
    _require(isinstance(data, dict), "product is not an object")
    _require(isinstance(data.get("id"), int), "product.id is not an integer")
    _require(isinstance(data.get("name"), str) and data["name"] != "", "product.name missing")
    _require(isinstance(data.get("sku"), str), "product.sku missing")
    _require(
        isinstance(data.get("price"), str) and bool(MONEY.match(data["price"])),
        "product.price is not a decimal string",
    )
    _require(isinstance(data.get("stock"), int) and data["stock"] >= 0, "product.stock invalid")
    _require(isinstance(data.get("category_id"), int), "product.category_id missing")


def check_product_with_id(product_id: int, data: Any) -> None:
    check_product(data)
    _require(data["id"] == product_id, f"asked for {product_id}, got {data['id']}")


def check_page(data: Any) -> list[Any]:
    _require(isinstance(data, dict), "page is not an object")
    _require(isinstance(data.get("items"), list), "page.items is not a list")
    _require(
        data.get("next_cursor") is None or isinstance(data.get("next_cursor"), str),
        "page.next_cursor is neither a string nor null",
    )
    return list(data["items"])


def check_order(data: Any) -> None:
    _require(isinstance(data, dict), "order is not an object")
    _require(isinstance(data.get("id"), int), "order.id is not an integer")
    _require(data.get("status") in ORDER_STATUSES, f"order.status {data.get('status')!r}")
    _require(isinstance(data.get("total"), str) and bool(MONEY.match(data["total"])), "total")
    _require(isinstance(data.get("items"), list) and data["items"] != [], "order.items empty")


def check_cancelled(data: Any) -> None:
    check_order(data)
    _require(data["status"] == "cancelled", f"status {data['status']!r} after cancel")


def check_report(data: Any) -> None:
    _require(isinstance(data, dict), "report is not an object")
    _require(isinstance(data.get("totals"), dict), "report.totals missing")
    _require(isinstance(data.get("groups"), list), "report.groups is not a list")
    _require(isinstance(data["totals"].get("orders"), int), "report.totals.orders missing")


def _problem_title(response: Any) -> str:
    try:
        return str(response.json().get("title", ""))
    except Exception:
        return ""


def traced(headers: dict[str, str] | None = None) -> dict[str, str]:
    """`headers` and a new sampled W3C trace context, marked synthetic by its baggage."""
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return {
        **(headers or {}),
        "traceparent": f"00-{trace_id}-{span_id}-01",
        "baggage": SYNTHETIC_BAGGAGE,
    }


def trace_of(response: Any) -> str:
    """The trace id to look up: the server's X-Trace-Id, else the one this request sent."""
    found = (response.headers or {}).get("X-Trace-Id")
    if found:
        return str(found)
    request = getattr(response, "request", None)
    sent = str((request.headers or {}).get("traceparent", "")) if request is not None else ""
    parts = sent.split("-")
    return parts[1] if len(parts) == 4 else "unknown"


def accept(response: Any, status: int, check: Callable[[Any], object]) -> Any | None:
    """The JSON body when `response` has `status` and `check(body)` raises nothing; else the
    response is marked failed (with the status and problem title, or why the body is
    invalid, and the trace id) and None is returned."""
    if response.status_code != status:
        response.failure(
            f"status {response.status_code} {_problem_title(response)} (trace {trace_of(response)})"
        )
        return None
    try:
        data = response.json()
        check(data)
    except (Invalid, ValueError) as exc:
        response.failure(f"invalid body: {exc} (trace {trace_of(response)})")
        return None
    response.success()
    return data


def check_products_page(data: Any) -> None:
    for item in check_page(data):
        check_product(item)


def check_search_results(word: str, data: Any) -> None:
    for item in check_page(data):
        check_product(item)
        _require(word in item["name"].lower(), f"{item['name']!r} lacks {word!r}")


class Shopper(FastHttpUser):
    """One shopper: a weighted mix of what people do in a shop, with think time between."""

    def wait_time(self) -> float:
        options = _options_of(self.environment)
        low, high = SHAPES[options.shape].think_time
        return rng.uniform(low, high) * options.think_scale

    def on_start(self) -> None:
        own_key = next(shopper_keys, None)
        token = own_key or os.environ.get("GLASSBOX_API_KEY", DEV_API_KEY)
        self.auth = {"Authorization": f"Bearer {token}"}
        if own_key:  # FastHttpSession's header for every request (reads count per key too)
            self.client.auth_header = self.auth["Authorization"]
        self.my_orders: list[int] = []
        self.email = f"shopper{rng.randint(1, 10_000)}@example.com"
        self.etags: dict[int, str] = {}
        if not catalog:
            self._list_page({"limit": 100}, name=PRODUCTS)

    # Reading the shop

    def _list_page(self, params: dict[str, Any], *, name: str) -> str | None:
        with self.client.get(
            PRODUCTS, params=params, headers=traced(), name=name, catch_response=True
        ) as response:
            data = accept(response, 200, check_products_page)
        if data is None:
            return None
        for item in data["items"]:
            if len(catalog) < CATALOG_LIMIT and item["id"] not in in_catalog:
                in_catalog.add(item["id"])
                catalog.append(item["id"])
        cursor: str | None = data["next_cursor"]
        return cursor

    @task(10)
    def browse(self) -> None:
        """A list page with filters, then a few more pages through the cursor."""
        params: dict[str, Any] = {
            "limit": rng.choice((10, 20, 50)),
            "sort": rng.choice(SORTS),
        }
        if rng.random() < 0.5:
            params["category_id"] = rng.randint(1, 6)
        if rng.random() < 0.3:
            low = rng.randint(2, 100)
            params.update(min_price=f"{low}.00", max_price=f"{low + 50}.00")
        cursor = self._list_page(params, name=PRODUCTS)
        for _ in range(rng.choice((0, 0, 1, 2, 3))):
            if cursor is None:
                break
            cursor = self._list_page({**params, "cursor": cursor}, name=f"{PRODUCTS} (next page)")

    @task(14)
    def view_product(self) -> None:
        """One product, mostly among the popular few; sometimes revalidated with its ETag."""
        if not catalog:
            return
        product_id = catalog[int(len(catalog) * rng.random() ** 3)]
        headers = {}
        etag = self.etags.get(product_id)
        if etag and rng.random() < 0.3:
            headers["If-None-Match"] = etag
        with self.client.get(
            f"{PRODUCTS}/{product_id}",
            headers=traced(headers),
            name=f"{PRODUCTS}/{{id}}",
            catch_response=True,
        ) as response:
            if response.status_code == 304 and etag:
                response.success()
                outcomes["product not modified (304)"] += 1
                return
            checked = accept(response, 200, partial(check_product_with_id, product_id))
            if checked is not None and response.headers.get("ETag"):
                self.etags[product_id] = response.headers["ETag"]

    @task(4)
    def search(self) -> None:
        word = rng.choice(SEARCH_WORDS)
        with self.client.get(
            PRODUCTS,
            params={"q": word},
            headers=traced(),
            name=f"{PRODUCTS}?q=",
            catch_response=True,
        ) as response:
            accept(response, 200, partial(check_search_results, word))

    # Buying

    @task(3)
    def place_order(self) -> None:
        """An order of 1-3 products; 409 (out of stock) is an answer a shop gives, not a fault."""
        if not catalog:
            return
        chosen = rng.sample(catalog, k=min(len(catalog), rng.randint(1, 3)))
        body = {
            "customer_email": self.email,
            "items": [{"product_id": pid, "quantity": rng.randint(1, 2)} for pid in chosen],
        }
        with self.client.post(
            ORDERS, json=body, headers=traced(self.auth), name=ORDERS, catch_response=True
        ) as response:
            if response.status_code == 409:
                response.success()
                outcomes["order refused: out of stock (409)"] += 1
                return
            data = accept(response, 201, check_order)
            if data is None:
                return
            outcomes[f"order {data['status']}"] += 1
            if data["status"] == "paid":
                self.my_orders.append(data["id"])

    @task(2)
    def check_order_status(self) -> None:
        if not self.my_orders:
            return
        order_id = rng.choice(self.my_orders)
        with self.client.get(
            f"{ORDERS}/{order_id}",
            headers=traced(self.auth),
            name=f"{ORDERS}/{{id}}",
            catch_response=True,
        ) as response:
            accept(response, 200, check_order)

    @task(1)
    def cancel_order(self) -> None:
        """A few shoppers change their mind (each order is cancelled at most once)."""
        if not self.my_orders or rng.random() < 0.5:
            return
        order_id = self.my_orders.pop(rng.randrange(len(self.my_orders)))
        with self.client.post(
            f"{ORDERS}/{order_id}/cancel",
            headers=traced(self.auth),
            name=f"{ORDERS}/{{id}}/cancel",
            catch_response=True,
        ) as response:
            if accept(response, 200, check_cancelled) is not None:
                outcomes["order cancelled"] += 1

    # The back office

    @task(1)
    def sales_report(self) -> None:
        group_by = rng.choice(("day", "product", "category"))
        with self.client.get(
            "/api/v1/reports/sales",
            params={"group_by": group_by},
            headers=traced(self.auth),
            name="/api/v1/reports/sales",
            catch_response=True,
        ) as response:
            accept(response, 200, check_report)


@events.quitting.add_listener
def _enforce_thresholds(environment: Environment, **_kwargs: Any) -> None:
    """Set the exit code from loadtests/thresholds.toml (and fail on errors in this file)."""
    if environment.runner is None or environment.parsed_options is None:
        return
    shape = environment.parsed_options.shape
    stats = environment.stats
    by_name = {name: entry for (name, _method), entry in stats.entries.items()}
    problems = violations(load_thresholds(shape), stats.total, by_name)
    if environment.runner.exceptions:
        problems.append(f"{len(environment.runner.exceptions)} exception(s) in the locustfile")
    for outcome, count in sorted(outcomes.items()):
        log.info("outcome: %s: %d", outcome, count)
    if problems:
        for problem in problems:
            log.error("threshold exceeded: %s", problem)
        environment.process_exit_code = 1
    else:
        log.info("thresholds met (shape %s)", shape)
        environment.process_exit_code = 0
