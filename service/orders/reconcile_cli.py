"""`flask --app service orders reconcile`: the orders/ledger check, once or as a periodic job
that Prometheus scrapes (gauge glassbox_reconcile_mismatches{mismatch}; alert
GlassboxLedgerMismatch)."""

from __future__ import annotations

import json
import logging
import time
from datetime import timedelta

import click
from prometheus_client import CollectorRegistry, Gauge, start_http_server

from service.orders.reconcile import Mismatches, Windows, ledger_engine, reconcile

log = logging.getLogger(__name__)


class ReconcileMetrics:
    """The job's own registry (not the app's multiprocess one): one process, its gauges."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.mismatches = Gauge(
            "glassbox_reconcile_mismatches",
            "Orders and ledger entries that disagree, by kind of mismatch",
            ["mismatch"],
            registry=self.registry,
        )
        self.last_success = Gauge(
            "glassbox_reconcile_last_success_timestamp_seconds",
            "When the last reconciliation finished",
            registry=self.registry,
        )

    def record(self, found: Mismatches) -> None:
        for name, count in found.as_dict().items():
            self.mismatches.labels(name).set(count)
        self.last_success.set_to_current_time()


@click.command("reconcile")
@click.option(
    "--ledger-url",
    envvar="PAYMENTS_DATABASE_URL",
    required=True,
    help="The payments ledger's database (read only). [env: PAYMENTS_DATABASE_URL]",
)
@click.option(
    "--every",
    type=click.FloatRange(min=1),
    default=None,
    help="Run every so many seconds instead of once.",
)
@click.option(
    "--settle",
    type=click.FloatRange(min=0),
    default=Windows.settle.total_seconds(),
    show_default=True,
    help="Seconds a change is given before a disagreement counts.",
)
@click.option("--metrics-port", type=int, default=None, help="Serve the gauges on this port.")
@click.option("--metrics-host", default="0.0.0.0", show_default=True)  # noqa: S104
def reconcile_command(
    ledger_url: str,
    every: float | None,
    settle: float,
    metrics_port: int | None,
    metrics_host: str,
) -> None:
    """Count orders and payments that disagree (read-only); print them as JSON."""
    ledger = ledger_engine(ledger_url)
    metrics = ReconcileMetrics()
    if metrics_port is not None:
        start_http_server(metrics_port, metrics_host, registry=metrics.registry)
    while True:
        try:
            found = reconcile(ledger=ledger, windows=Windows(settle=timedelta(seconds=settle)))
        except Exception:
            if every is None:
                raise
            # A periodic job outlives a failed round; the stale timestamp is the signal.
            log.exception("reconciliation failed")
        else:
            metrics.record(found)
            click.echo(json.dumps(found.as_dict()))
        if every is None:
            return
        time.sleep(every)
