"""`viz keys`: API keys for the HTTP API, shown once and stored only as a digest."""

from __future__ import annotations

import typer

from viz.accounts import create_api_key, get_account, list_api_keys, revoke_api_key
from viz.cli._context import session, state, table

app = typer.Typer(
    help="API keys: create (shown once), list, revoke.\n\n"
    "Example: viz keys create --account ada --label laptop"
)


@app.command("create")
def create(
    context: typer.Context,
    account: str = typer.Option(..., "--account", "-a", help="Account that owns the key"),
    label: str = typer.Option("", help="A note to tell keys apart"),
) -> None:
    """Create an API key. The key is printed once: store it now.

    Example: viz keys create --account ada --label laptop
    """
    with session(context) as database:
        owner = get_account(database, account)
        new_key = create_api_key(
            database,
            owner,
            label=label,
            keys_max=state(context).settings.api_keys_per_account_max,
        )
    typer.echo(new_key.token)
    typer.echo(
        f"key id {new_key.key_id} for {account}: this is the only time the key is "
        "shown; store it now",
        err=True,
    )


@app.command("list")
def list_(
    context: typer.Context,
    account: str = typer.Option(..., "--account", "-a", help="Account whose keys to list"),
) -> None:
    """List an account's keys (ids, labels, status; never secrets).

    Example: viz keys list --account ada
    """
    with session(context) as database:
        keys = list_api_keys(database, get_account(database, account))
        rows = [
            [
                key.key_id,
                key.label,
                f"{key.created_at:%Y-%m-%d %H:%M}",
                "revoked" if key.revoked_at else "active",
                f"{key.last_used_at:%Y-%m-%d %H:%M}" if key.last_used_at else "never",
            ]
            for key in keys
        ]
    typer.echo(
        table(rows, ["key id", "label", "created", "status", "last used"])
        if rows
        else f"{account} has no API keys; create one with: viz keys create -a {account}"
    )


@app.command("revoke")
def revoke(
    context: typer.Context, key_id: str = typer.Argument(..., help="Key id from viz keys list")
) -> None:
    """Revoke a key: requests with it are refused from now on.

    Example: viz keys revoke 3f9a0c2b7d1e4a58
    """
    with session(context) as database:
        key = revoke_api_key(database, key_id)
        typer.echo(f"revoked key {key.key_id} of {key.account.name}")
