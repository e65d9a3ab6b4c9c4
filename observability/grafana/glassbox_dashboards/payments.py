"""Payments: what the payments service answers, as the api sees it, and whether the orders
agree with the ledger (flask orders reconcile)."""

from __future__ import annotations

from typing import Any

from observability.grafana.glassbox_dashboards.common import (
    SELECTOR,
    graph,
    new_dashboard,
    quantile,
    ratio_or_zero,
    single,
    variables,
)

PAYMENTS = "glassbox_payments_duration_seconds"
answers = f"rate({PAYMENTS}_count{{{SELECTOR}}}[$__rate_interval])"
declines = f'rate({PAYMENTS}_count{{{SELECTOR}, outcome="declined"}}[$__rate_interval])'
failures = f'rate({PAYMENTS}_count{{{SELECTOR}, outcome=~"error|timeout"}}[$__rate_interval])'
# The reconciliation is one job per environment, not a service instance: env only.
RECONCILE = 'deployment_environment=~"$env"'


def _payment_panels() -> list[Any]:
    return [
        graph(
            "Payment answers per second by outcome",
            "Authorizations the api asked for, by answer: approved, declined (a business "
            "answer), error or timeout (GlassboxPaymentsFailing).",
            "reqps",
            [(f"sum by (outcome) ({answers})", "{{outcome}}")],
            stacked=True,
        ),
        graph(
            "Declined and failed shares",
            "Declines (GlassboxPaymentDeclinesSpike: over 20% and three times the day's) and "
            "errors or timeouts (GlassboxPaymentsFailing: over 5%), as shares of the answers.",
            "percentunit",
            [
                (ratio_or_zero(f"sum({declines})", f"sum({answers})", by=""), "declined"),
                (ratio_or_zero(f"sum({failures})", f"sum({answers})", by=""), "error or timeout"),
            ],
        ),
        graph(
            "Payments latency (exemplars link to Jaeger)",
            "p50 and p95 of the api's calls to the payments service, retries included.",
            "s",
            [
                (quantile(0.5, f"{PAYMENTS}_bucket", SELECTOR), "p50"),
                (quantile(0.95, f"{PAYMENTS}_bucket", SELECTOR), "p95"),
            ],
            exemplar=True,
            width=24,
        ),
    ]


def _ledger_panels() -> list[Any]:
    return [
        graph(
            "Orders and ledger that disagree",
            "The four mismatches of the last reconciliation (GlassboxLedgerMismatch pages "
            "when one stays above 0 for 15 minutes).",
            "short",
            [
                (
                    f"max by (mismatch) (glassbox_reconcile_mismatches{{{RECONCILE}}})",
                    "{{mismatch}}",
                )
            ],
            width=18,
        ),
        single(
            "Since the last reconciliation",
            "Age of the last finished reconciliation (GlassboxReconcileNotRunning past 15 min).",
            "s",
            f"time() - max(glassbox_reconcile_last_success_timestamp_seconds{{{RECONCILE}}})",
            thresholds=[(None, "green"), (300, "orange"), (900, "red")],
        ),
    ]


def payments() -> Any:
    board = new_dashboard(
        "glassbox-payments",
        "glassbox: payments",
        "The payments service's answers as the api sees them, and the orders/ledger "
        "reconciliation.",
        ["payments", "business"],
    ).variables(variables())
    for panel in [*_payment_panels(), *_ledger_panels()]:
        board = board.with_panel(panel)
    return board
