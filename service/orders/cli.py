"""`flask --app service orders expire-pending`: release stock held by undecided payments."""

from __future__ import annotations

from datetime import timedelta

import click
from flask.cli import AppGroup

from service.orders import service as orders
from service.orders.reconcile_cli import reconcile_command

orders_cli = AppGroup("orders", help="Order maintenance.")


@orders_cli.command("expire-pending")
@click.option(
    "--older-than",
    type=click.IntRange(min=0),
    default=900,
    show_default=True,
    help="Seconds a pending order may wait for its payment.",
)
def expire_pending(older_than: int) -> None:
    """Finish requested cancels; cancel pending orders whose payment never reached a decision."""
    finished = orders.finish_requested_cancels()
    count = orders.expire_pending(older_than=timedelta(seconds=older_than))
    click.echo(f"expired {count} pending orders; finished {finished} requested cancels", err=True)


orders_cli.add_command(reconcile_command)
