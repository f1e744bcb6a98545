"""`viz account`: create and inspect accounts (people and firms)."""

from __future__ import annotations

import sys

import typer

from viz.accounts import create_account, get_account, list_accounts, list_api_keys
from viz.cli._context import session, table
from viz.web.auth import set_password

app = typer.Typer(
    help="Accounts: people and firms that create and consume.\n\n"
    "Example: viz account create ada --kind person && viz account password ada"
)


@app.command("create")
def create(
    context: typer.Context,
    name: str = typer.Argument(..., help="Account name: 3-64 chars of a-z 0-9 . _ -"),
    kind: str = typer.Option("person", help="person or firm"),
    display_name: str = typer.Option("", help="Name shown to others (default: NAME)"),
    admin: bool = typer.Option(False, "--admin", help="Give the account the admin role"),
) -> None:
    """Create an account.

    Example: viz account create ada --kind person --display-name "Ada Lovelace"
    """
    with session(context) as database:
        account = create_account(
            database, name, kind=kind, display_name=display_name, is_admin=admin
        )
        typer.echo(
            f"created account {account.name} (id {account.id}, {account.kind}"
            f"{', admin' if account.is_admin else ''})"
        )


@app.command("list")
def list_(context: typer.Context) -> None:
    """List accounts.

    Example: viz account list
    """
    with session(context) as database:
        rows = [
            [str(a.id), a.name, a.kind, "admin" if a.is_admin else "", a.display_name]
            for a in list_accounts(database)
        ]
    typer.echo(
        table(rows, ["id", "name", "kind", "role", "display name"])
        if rows
        else "no accounts yet; create one with: viz account create NAME"
    )


@app.command("show")
def show(context: typer.Context, name: str = typer.Argument(..., help="Account name")) -> None:
    """Show one account and its API keys (ids only; secrets are never stored).

    Example: viz account show ada
    """
    with session(context) as database:
        account = get_account(database, name)
        keys = list_api_keys(database, account)
        typer.echo(f"account:  {account.name} (id {account.id})")
        typer.echo(f"kind:     {account.kind}{'  admin' if account.is_admin else ''}")
        typer.echo(f"display:  {account.display_name}")
        typer.echo(f"created:  {account.created_at:%Y-%m-%d %H:%M:%S}")
        active = sum(1 for key in keys if key.revoked_at is None)
        typer.echo(f"api keys: {active} active, {len(keys) - active} revoked")


@app.command("password")
def password(
    context: typer.Context,
    name: str = typer.Argument(..., help="Account name"),
    stdin: bool = typer.Option(
        False, "--password-stdin", help="Read the password from the first line of stdin"
    ),
) -> None:
    """Set the password NAME logs in with on the marketplace's pages (`viz serve`).

    Stored as an Argon2id hash; setting it ends the account's open web sessions.

    Example: viz account password ada            (asks twice, without echo)
             echo "$PASSWORD" | viz account password ada --password-stdin
    """
    if stdin:
        secret = sys.stdin.readline().rstrip("\r\n")
    else:
        secret = typer.prompt("password", hide_input=True, confirmation_prompt=True)
    with session(context) as database:
        set_password(database, get_account(database, name), secret)
    typer.echo(f"password set for {name}; log in at http://HOST:PORT/login (viz serve)")
