"""Business: orders, revenue, cancellations."""

from __future__ import annotations

from typing import Any

from observability.grafana.glassbox_dashboards.common import (
    SELECTOR,
    graph,
    new_dashboard,
    single,
    variables,
)

orders_paid = f'glassbox_orders_placed_total{{{SELECTOR}, status="paid"}}'


def _panels_1() -> list[Any]:
    return [
        single(
            "Orders placed",
            "Orders placed in the selected time range: paid, or payment_failed when the "
            "payment was declined.",
            "short",
            f"sum(increase(glassbox_orders_placed_total{{{SELECTOR}}}[$__range]))",
            decimals=0,
        ),
        single(
            "Revenue",
            "Value of orders paid in the selected time range (later cancellations are not "
            "subtracted).",
            "currencyEUR",
            f"sum(increase(glassbox_revenue_total{{{SELECTOR}}}[$__range]))",
            decimals=2,
        ),
        single(
            "Average order value",
            "Revenue divided by paid orders in the selected time range.",
            "currencyEUR",
            f"sum(increase(glassbox_revenue_total{{{SELECTOR}}}[$__range])) "
            f"/ sum(increase({orders_paid}[$__range]))",
            decimals=2,
        ),
        single(
            "Cancellations",
            "Orders cancelled in the selected time range, by the customer or as expired "
            "(a declined payment is payment_failed, not a cancellation).",
            "short",
            f"sum(increase(glassbox_orders_cancelled_total{{{SELECTOR}}}[$__range]))",
            decimals=0,
        ),
    ]


def _panels_2() -> list[Any]:
    return [
        graph(
            "Orders per minute by status",
            "Orders placed per minute by outcome: paid, or payment_failed (declined).",
            "short",
            [
                (
                    "sum by (status) (rate(glassbox_orders_placed_total"
                    f"{{{SELECTOR}}}[$__rate_interval])) * 60",
                    "{{status}}",
                )
            ],
            stacked=True,
        ),
        graph(
            "Revenue per minute",
            "EUR of paid orders per minute.",
            "currencyEUR",
            [
                (
                    f"sum(rate(glassbox_revenue_total{{{SELECTOR}}}[$__rate_interval])) * 60",
                    "revenue",
                )
            ],
        ),
        graph(
            "Cancellations per minute",
            "Orders cancelled per minute (by customers, or expired unpaid), and as a share "
            "of the orders placed.",
            "short",
            [
                (
                    "sum(rate(glassbox_orders_cancelled_total"
                    f"{{{SELECTOR}}}[$__rate_interval])) * 60",
                    "cancelled per minute",
                ),
                (
                    "sum(rate(glassbox_orders_cancelled_total"
                    f"{{{SELECTOR}}}[$__rate_interval])) "
                    "/ sum(rate(glassbox_orders_placed_total"
                    f"{{{SELECTOR}}}[$__rate_interval]))",
                    "share of orders placed",
                ),
            ],
            width=24,
            shares=["share of orders placed"],
        ),
    ]


def business() -> Any:
    board = new_dashboard(
        "glassbox-business",
        "glassbox: business",
        "Orders, revenue and cancellations, as the api counts them when they happen.",
        ["business"],
    ).variables(variables())
    for panel in [*_panels_1(), *_panels_2()]:
        board = board.with_panel(panel)
    return board
