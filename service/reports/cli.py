"""`flask --app service reports rebuild-rollups`: the sales report's rollups from the orders."""

from __future__ import annotations

from datetime import date, datetime

import click
from flask.cli import AppGroup

from service.reports import rollups
from service.reports.service import forget_sales

reports_cli = AppGroup("reports", help="Sales report maintenance.")


@reports_cli.command("rebuild-rollups")
@click.option(
    "--since",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    default=None,
    help="First UTC day to rebuild (YYYY-MM-DD); every day when left out.",
)
def rebuild_rollups(since: datetime | None) -> None:
    """Rewrite the report's rollups from the orders (after a deploy of migration 0007, run
    from the day it started: the previous release paid and cancelled without them)."""
    first: date | None = since.date() if since else None
    count = rollups.rebuild(first)
    forget_sales()  # cached reports may hold what the rebuild corrected
    click.echo(f"rebuilt the rollups of {count} paid orders since {first or 'the first day'}")
