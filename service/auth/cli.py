"""`flask --app service api-keys create|revoke|ensure-dev`."""

from __future__ import annotations

import click
from flask import current_app
from flask.cli import AppGroup

from service.auth import service as auth
from service.auth.models import Scope
from service.errors import AppError

api_keys_cli = AppGroup("api-keys", help="Manage API keys.")


@api_keys_cli.command("create")
@click.argument("name")
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    required=True,
    type=click.Choice([str(scope) for scope in Scope]),
    help="customer: place orders, read and cancel its own. operator: catalog writes, the "
    "sales report, read and cancel every order. Repeat for several.",
)
def create(name: str, scopes: tuple[str, ...]) -> None:
    """Create a key and print its token (and only the token) on stdout."""
    try:
        click.echo(auth.create_key(name=name, scopes=scopes))
    except AppError as exc:
        raise click.ClickException(exc.detail) from None


@api_keys_cli.command("revoke")
@click.argument("name")
def revoke(name: str) -> None:
    """Revoke a key by name."""
    try:
        auth.revoke_key(name=name)
    except AppError as exc:
        raise click.ClickException(exc.detail) from None
    click.echo(f"revoked {name}", err=True)


@api_keys_cli.command("ensure-dev")
def ensure_dev() -> None:
    """Create the development key (DEV_API_KEY) if missing, and print how to use it.

    It has every scope, so that each README example works with it; production refuses it.
    """
    if current_app.config["GLASSBOX_ENV"] == "production":
        raise click.ClickException("the development key is not created in production")
    token = current_app.config["DEV_API_KEY"]
    auth.ensure_dev_key(name="dev", token=token)
    click.echo(f"Development API key: {token}")
    click.echo(f'  curl -H "Authorization: Bearer {token}" ...')
