"""What `make bench` measures: the variants (a server configuration and a request each) and
the targets (ratios of two variants with a bound). docs/measurement.md explains them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

HOT_IDS = 100  # the cached variants read the first 100 products: all stay in Redis


@dataclass(frozen=True)
class Variant:
    """One server configuration and one request: an environment dict and a URL path."""

    name: str
    path: str  # may contain {id}: replaced by a random id for every request
    env: Mapping[str, str] = field(default_factory=dict)
    app: str | None = None  # gunicorn app; None = service/gunicorn_conf.py's wsgi_app
    ids: str = ""  # "hot" (1..HOT_IDS) or "all" (every product) when path has {id}
    description: str = ""

    @property
    def is_glassbox(self) -> bool:
        return self.app is None or self.app.endswith("glassbox_app()")


NO_CACHE = {"BENCH_CACHE_TYPE": "NullCache"}
OTEL_OFF = {"OTEL_SDK_DISABLED": "true"}
OTEL_ALL = {"OTEL_TRACES_SAMPLER": "parentbased_always_on"}
UNCACHED_APP = "profiling.bench_apps:glassbox_app()"
PRODUCT = "/api/v1/products/{id}"
FIRST_PAGE = "/api/v1/products?limit=20"

VARIANTS: tuple[Variant, ...] = (
    Variant("bare_wsgi", "/", app="profiling.bench_apps:bare_wsgi", description="ceiling"),
    Variant("flask_hello", "/", app="profiling.bench_apps:hello_app()", description="Flask"),
    Variant("product_cached", PRODUCT, ids="hot", description="Redis hit, telemetry default"),
    Variant("product_cached_otel_off", PRODUCT, OTEL_OFF, ids="hot"),
    Variant("product_cached_otel_100", PRODUCT, OTEL_ALL, ids="hot"),
    Variant("product_uncached", PRODUCT, NO_CACHE, UNCACHED_APP, "all", "SQL, telemetry default"),
    Variant("product_uncached_otel_off", PRODUCT, {**NO_CACHE, **OTEL_OFF}, UNCACHED_APP, "all"),
    Variant("product_uncached_otel_100", PRODUCT, {**NO_CACHE, **OTEL_ALL}, UNCACHED_APP, "all"),
    Variant("list_first", FIRST_PAGE, NO_CACHE, UNCACHED_APP, description="first page, SQL"),
    Variant("list_first_otel_off", FIRST_PAGE, {**NO_CACHE, **OTEL_OFF}, UNCACHED_APP),
    Variant("list_first_otel_100", FIRST_PAGE, {**NO_CACHE, **OTEL_ALL}, UNCACHED_APP),
    # The path is completed with a cursor deep in the list once the database is ready.
    Variant("list_deep", FIRST_PAGE + "&cursor=", NO_CACHE, UNCACHED_APP, description="keyset"),
)


@dataclass(frozen=True)
class Target:
    name: str
    numerator: str
    denominator: str
    metric: str  # "rps" (throughput ratio) or "p50" (latency ratio)
    bound: float
    at_least: bool  # True: ratio >= bound passes; False: ratio <= bound passes
    issue: int


TARGETS: tuple[Target, ...] = (
    Target("deep page / first page, p50 latency", "list_deep", "list_first", "p50", 1.5, False, 5),
    Target(
        "cached read / bare WSGI, telemetry on", "product_cached", "bare_wsgi", "rps", 0.70, True, 5
    ),
    Target(
        "uncached read / bare WSGI, telemetry on",
        "product_uncached",
        "bare_wsgi",
        "rps",
        0.30,
        True,
        5,
    ),
    Target(
        "uncached read: telemetry default / off",
        "product_uncached",
        "product_uncached_otel_off",
        "rps",
        0.90,
        True,
        3,
    ),
    Target(
        "product list: telemetry default / off",
        "list_first",
        "list_first_otel_off",
        "rps",
        0.90,
        True,
        3,
    ),
    Target(
        "uncached read: 100% sampled / off",
        "product_uncached_otel_100",
        "product_uncached_otel_off",
        "rps",
        0.80,
        True,
        3,
    ),
    Target(
        "product list: 100% sampled / off",
        "list_first_otel_100",
        "list_first_otel_off",
        "rps",
        0.80,
        True,
        3,
    ),
)
