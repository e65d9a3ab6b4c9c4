"""What `make bench` measures: the variants (a server configuration and a request each) and
the targets (ratios of two variants with a bound). docs/measurement.md explains them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

HOT_IDS = 100  # the cached variants read the first 100 products, read once before each run


@dataclass(frozen=True)
class Variant:
    """One server configuration and one request: an environment dict and a URL path."""

    name: str
    path: str  # may contain {id}: replaced by a random id for every request
    env: Mapping[str, str] = field(default_factory=dict)
    app: str | None = None  # gunicorn app; None = service/gunicorn_conf.py's wsgi_app
    ids: str = ""  # "hot" (1..HOT_IDS) or "all" (every product) when path has {id}
    description: str = ""
    server: str = "gunicorn"  # "gunicorn", "granian" (glassbox) or "peer" (profiling/peer)
    peer_sampling: float | None = None  # the peer under opentelemetry-instrument at this ratio
    serves: str = ""  # measured on this other variant's server (none of its own)
    pace: float = 0.0  # >0: paced to this share of the `serves` variant's last rate (below)
    before: bool = False  # served from the baseline commit's files (BENCH_BASELINE_REF)

    @property
    def is_glassbox(self) -> bool:
        glassbox = self.app is None or self.app.endswith("glassbox_app()")
        return self.server != "peer" and (glassbox or self.app == BEFORE_CACHED_APP)

    @property
    def is_list(self) -> bool:
        return self.path.startswith(FIRST_PAGE)


NO_CACHE = {"BENCH_CACHE_TYPE": "NullCache"}
OTEL_OFF = {"OTEL_SDK_DISABLED": "true"}
OTEL_ALL = {"OTEL_TRACES_SAMPLER": "parentbased_always_on"}
# 4 request threads instead of 1: the threaded keep-alive worker (service/gunicorn_conf.py).
THREADS4 = {"WEB_THREADS": "4"}
# Continuous profiling on (service/profiles.py) at its default rate: the agent pushes to the
# bench's sink, which answers every POST ("{sink}" is replaced by its URL at start).
PROFILED = {"PYROSCOPE_SERVER_ADDRESS": "{sink}"}
UNCACHED_APP = "profiling.bench_apps:glassbox_app()"
# The levers of issue 12's redesign, each switched off against the default (LEVERS below).
# The default is the threaded worker that reads requests whole and keeps connections alive
# (service/gunicorn_conf.py); this is gunicorn's stock sync worker (a connection per request,
# the default until issue 25), as the lever's other side.
SYNC = {"GUNICORN_CMD_ARGS": "--worker-class sync"}
NO_LOCAL_TIER = {"CACHE_LOCAL_ENTRIES": "0"}  # Redis only, no per-worker tier in front
POOLER_SAFE = {"DATABASE_POOLER": "transaction"}  # the PgBouncer-safe path, not direct
# The limiter on with a limit no run reaches: what remains is its cost per request (a leased
# allowance, service/ratelimit.py). RATELIMIT_STORAGE_URI is not set, so its storage is
# REDIS_URL: the bench's Redis. With the cache hot and telemetry default, this is glassbox as
# deployed (issue 25).
LIMITED = {"RATELIMIT_ENABLED": "true", "RATELIMIT_DEFAULT": "100000000 per minute"}
# The "before" variants run glassbox at BENCH_BASELINE_REF from a copy of that commit's files.
# Its cached read keeps its entries under its own prefix: both cached variants share one
# Redis, and the two versions need not store the same thing under one key. The prefix is not
# a setting (service/config sets it); create_app's overrides win over it, and gunicorn passes
# literal arguments to an app factory.
BEFORE_CACHED_APP = "service:create_app({'CACHE_KEY_PREFIX': 'glassbox:before:cache:'})"
PRODUCT = "/api/v1/products/{id}"
FIRST_PAGE = "/api/v1/products?limit=20"
# The references every glassbox variant is shown against (issue 12).
PEER_PRODUCT = "peer_product"
PEER_FIRST_PAGE = "peer_list_first"
# "At half the maximum rate": wrk paces its connections (random waits between requests, see
# profiling/wrk/bench.lua) to half the rate the same server reached in its latest full-load
# run, with one connection per worker (BENCH_WORKERS). No more: gunicorn's sync worker accepts
# a connection, then waits for its request, and wrk opens the next connection right after an
# answer, before its wait; with more connections than workers, a worker would sit waiting for
# a paced request while requests sent on other connections queued behind it.
HALF_RATE = 0.5

# The order of a round (reversed in every other one). A variant sits next to those it is
# compared with: throughput drifts within a round on a loaded machine. Identical code
# measured 1.05-1.67x apart when 20 places apart (two runs), 0.98-0.99x when neighbours.
VARIANTS: tuple[Variant, ...] = (
    Variant("bare_wsgi", "/", app="profiling.bench_apps:bare_wsgi", description="ceiling"),
    Variant("flask_hello", "/", app="profiling.bench_apps:hello_app()", description="Flask"),
    Variant(PEER_PRODUCT, PRODUCT, ids="all", server="peer", description="FastAPI + asyncpg"),
    Variant(PEER_FIRST_PAGE, FIRST_PAGE, server="peer", serves=PEER_PRODUCT),
    Variant("peer_product_otel_10", PRODUCT, ids="all", server="peer", peer_sampling=0.1),
    Variant("peer_product_otel_100", PRODUCT, ids="all", server="peer", peer_sampling=1.0),
    Variant("product_cached", PRODUCT, ids="hot", description="Redis hit, telemetry default"),
    # glassbox before the redesign, beside today's code in the same rounds (BEFORE_AFTER).
    Variant("before_product_cached", PRODUCT, app=BEFORE_CACHED_APP, ids="hot", before=True),
    Variant("product_cached_otel_off", PRODUCT, OTEL_OFF, ids="hot"),
    Variant("product_cached_otel_100", PRODUCT, OTEL_ALL, ids="hot"),
    Variant("product_cached_profiled", PRODUCT, PROFILED, ids="hot", description="Pyroscope on"),
    # Each lever off, the rest as in the default variant it is compared with (LEVERS).
    Variant("product_cached_sync", PRODUCT, SYNC, ids="hot", description="sync worker"),
    Variant("product_cached_no_local", PRODUCT, NO_LOCAL_TIER, ids="hot", description="Redis only"),
    Variant("product_cached_limited", PRODUCT, LIMITED, ids="hot", description="as deployed"),
    Variant(
        "before_product_cached_limited",
        PRODUCT,
        LIMITED,
        app=BEFORE_CACHED_APP,
        ids="hot",
        before=True,
    ),
    Variant("product_cached_threads4", PRODUCT, THREADS4, ids="hot", description="4 threads"),
    Variant("product_cached_granian", PRODUCT, ids="hot", server="granian"),
    Variant(
        "product_cached_half_rate",
        PRODUCT,
        ids="hot",
        serves="product_cached",
        pace=HALF_RATE,
    ),
    # The same pacing on gunicorn's stock sync worker: whether a tail is the server's.
    Variant(
        "product_cached_sync_half_rate",
        PRODUCT,
        ids="hot",
        serves="product_cached_sync",
        pace=HALF_RATE,
    ),
    Variant("product_cached_otel_off_sync", PRODUCT, {**OTEL_OFF, **SYNC}, ids="hot"),
    Variant("product_cached_otel_100_sync", PRODUCT, {**OTEL_ALL, **SYNC}, ids="hot"),
    Variant("product_uncached", PRODUCT, NO_CACHE, UNCACHED_APP, "all", "SQL, telemetry default"),
    Variant("before_product_uncached", PRODUCT, NO_CACHE, UNCACHED_APP, "all", before=True),
    Variant("product_uncached_otel_off", PRODUCT, {**NO_CACHE, **OTEL_OFF}, UNCACHED_APP, "all"),
    Variant("product_uncached_otel_100", PRODUCT, {**NO_CACHE, **OTEL_ALL}, UNCACHED_APP, "all"),
    Variant("product_uncached_sync", PRODUCT, {**NO_CACHE, **SYNC}, UNCACHED_APP, "all"),
    Variant("product_uncached_threads4", PRODUCT, {**NO_CACHE, **THREADS4}, UNCACHED_APP, "all"),
    Variant(
        "product_uncached_pooler_tx", PRODUCT, {**NO_CACHE, **POOLER_SAFE}, UNCACHED_APP, "all"
    ),
    Variant(
        "product_uncached_half_rate",
        PRODUCT,
        ids="all",
        serves="product_uncached",
        pace=HALF_RATE,
    ),
    Variant("list_first", FIRST_PAGE, NO_CACHE, UNCACHED_APP, description="first page, SQL"),
    Variant("before_list_first", FIRST_PAGE, NO_CACHE, UNCACHED_APP, before=True),
    Variant("list_first_otel_off", FIRST_PAGE, {**NO_CACHE, **OTEL_OFF}, UNCACHED_APP),
    Variant("list_first_otel_100", FIRST_PAGE, {**NO_CACHE, **OTEL_ALL}, UNCACHED_APP),
    Variant("list_first_pooler_tx", FIRST_PAGE, {**NO_CACHE, **POOLER_SAFE}, UNCACHED_APP),
    # The path is completed with a cursor deep in the list once the database is ready.
    Variant("list_deep", FIRST_PAGE + "&cursor=", NO_CACHE, UNCACHED_APP, description="keyset"),
)


@dataclass(frozen=True)
class Target:
    name: str
    numerator: str
    denominator: str
    # "rps": throughput ratio; "p50": latency ratio; "tail": the numerator's p99 / p50;
    # "memory": the numerator's largest worker RSS / MEMORY_BASELINE_MB
    metric: str
    bound: float
    at_least: bool  # True: ratio >= bound passes; False: ratio <= bound passes
    issue: int


# Resident memory of one gunicorn worker serving the cached read (telemetry default) after a
# bench run, on main before issue 12's changes: the baseline of its memory goal.
MEMORY_BASELINE_MB = 95.7  # 2026-12-01: product_cached, the larger of 95.4 and 95.7


def _rps(name: str, numerator: str, denominator: str, bound: float, issue: int = 12) -> Target:
    return Target(name, numerator, denominator, "rps", bound, True, issue)


TARGETS: tuple[Target, ...] = (
    _rps(
        "cached read / peer's uncached read, telemetry default", "product_cached", PEER_PRODUCT, 1.0
    ),
    _rps(
        "as deployed (limiter on, telemetry default, cache hot) / peer",
        "product_cached_limited",
        PEER_PRODUCT,
        0.9,
        issue=25,
    ),
    _rps("cached read: limiter on / off", "product_cached_limited", "product_cached", 0.9, 25),
    _rps("uncached read / peer, telemetry default", "product_uncached", PEER_PRODUCT, 0.5),
    _rps("first page / peer's first page, telemetry default", "list_first", PEER_FIRST_PAGE, 0.5),
    _rps("cached read: telemetry default / off", "product_cached", "product_cached_otel_off", 0.95),
    _rps(
        "uncached read: telemetry default / off",
        "product_uncached",
        "product_uncached_otel_off",
        0.95,
    ),
    _rps("first page: telemetry default / off", "list_first", "list_first_otel_off", 0.95),
    _rps(
        "cached read: continuous profiling on / off",
        "product_cached_profiled",
        "product_cached",
        0.95,
        issue=13,
    ),
    _rps(
        "cached read: 100% sampled / off",
        "product_cached_otel_100",
        "product_cached_otel_off",
        0.85,
    ),
    _rps(
        "uncached read: 100% sampled / off",
        "product_uncached_otel_100",
        "product_uncached_otel_off",
        0.85,
    ),
    _rps("first page: 100% sampled / off", "list_first_otel_100", "list_first_otel_off", 0.85),
    Target(
        "cached read at about half rate: p99 / p50",
        "product_cached_half_rate",
        "product_cached_half_rate",
        "tail",
        3.0,
        False,
        12,
    ),
    Target(
        "uncached read at about half rate: p99 / p50",
        "product_uncached_half_rate",
        "product_uncached_half_rate",
        "tail",
        3.0,
        False,
        12,
    ),
    Target(
        "RSS per worker (cached read's server) / baseline",
        "product_cached",
        "",
        "memory",
        1.5,
        False,
        12,
    ),
    Target("deep page / first page, p50 latency", "list_deep", "list_first", "p50", 1.5, False, 5),
)


@dataclass(frozen=True)
class Lever:
    """One lever: the variant with it (`on`) against the same variant without it (`off`)."""

    name: str
    on: str
    off: str


LEVERS: tuple[Lever, ...] = (
    Lever("reads whole, keep-alive / sync worker", "product_cached", "product_cached_sync"),
    Lever("reads whole, keep-alive / sync worker", "product_uncached", "product_uncached_sync"),
    Lever("4 threads / 1", "product_cached_threads4", "product_cached"),
    Lever("4 threads / 1", "product_uncached_threads4", "product_uncached"),
    Lever("per-worker cache tier", "product_cached", "product_cached_no_local"),
    Lever("no pooler / transaction", "product_uncached", "product_uncached_pooler_tx"),
    Lever("no pooler / transaction", "list_first", "list_first_pooler_tx"),
    Lever("rate limiter (Redis)", "product_cached_limited", "product_cached"),
    Lever("continuous profiling", "product_cached_profiled", "product_cached"),
    Lever("telemetry (default / off)", "product_cached", "product_cached_otel_off"),
    Lever("telemetry (100% sampled / off)", "product_cached_otel_100", "product_cached_otel_off"),
    Lever(
        "telemetry (100% sampled / off), sync worker",
        "product_cached_otel_100_sync",
        "product_cached_otel_off_sync",
    ),
    Lever("telemetry (default / off)", "product_uncached", "product_uncached_otel_off"),
)

# Issue 12's goal reads, before (BENCH_BASELINE_REF) and after (this checkout).
BEFORE_AFTER: tuple[tuple[str, str, str], ...] = (
    ("cached read", "before_product_cached", "product_cached"),
    ("as deployed (limiter on)", "before_product_cached_limited", "product_cached_limited"),
    ("uncached read", "before_product_uncached", "product_uncached"),
    ("first page", "before_list_first", "list_first"),
)

# Names BENCH_VARIANTS accepts besides the variants' own: a group of them.
GROUPS: dict[str, tuple[str, ...]] = {
    "before": (PEER_PRODUCT, PEER_FIRST_PAGE, *(n for _, *pair in BEFORE_AFTER for n in pair)),
    "levers": tuple(dict.fromkeys(n for lever in LEVERS for n in (lever.on, lever.off))),
}


def expand(names: list[str]) -> list[str]:
    """Variant names with every group name replaced by its variants, in order, once each."""
    return list(dict.fromkeys(n for name in names for n in GROUPS.get(name, (name,))))


# Shown after the targets, without a bound: what the numbers mean beside them.
COMPARISONS: tuple[tuple[str, str, str], ...] = (
    ("peer under opentelemetry-instrument, 10% / plain", "peer_product_otel_10", PEER_PRODUCT),
    ("peer under opentelemetry-instrument, 100% / plain", "peer_product_otel_100", PEER_PRODUCT),
    (
        "cached read, granian WSGI / the default gunicorn worker",
        "product_cached_granian",
        "product_cached",
    ),
    ("cached read, paced rate / full-load rate", "product_cached_half_rate", "product_cached"),
    (
        "uncached read, paced rate / full-load rate",
        "product_uncached_half_rate",
        "product_uncached",
    ),
)
