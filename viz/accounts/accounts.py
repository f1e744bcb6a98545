"""Accounts: a person or a firm that can create (earn) and consume (pay); admins run the place."""

from __future__ import annotations

import re

from sqlalchemy import select
from sqlalchemy.orm import Session

from viz.errors import Conflict, InvalidInput, NotFound
from viz.store.schema import Account

__all__ = ["ACCOUNT_KINDS", "create_account", "get_account", "list_accounts"]

ACCOUNT_KINDS = ("person", "firm")
ACCOUNT_NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_.-]{1,62}[a-z0-9]$")


def create_account(
    session: Session,
    name: str,
    *,
    kind: str = "person",
    display_name: str = "",
    is_admin: bool = False,
) -> Account:
    """Create an account named `name` (lowercase letters, digits, `.`, `_`, `-`; 3-64 chars).

    Raises:
        InvalidInput: the name or kind is malformed.
        Conflict: an account with that name exists.
    """
    if not ACCOUNT_NAME_PATTERN.match(name):
        raise InvalidInput(
            f"account name {name!r} is not valid: use 3-64 lowercase letters, digits, '.', '_' "
            "or '-', starting and ending with a letter or digit (e.g. 'ada-lovelace')"
        )
    if kind not in ACCOUNT_KINDS:
        raise InvalidInput(f"account kind {kind!r} is not one of {', '.join(ACCOUNT_KINDS)}")
    if session.scalar(select(Account).where(Account.name == name)) is not None:
        raise Conflict(f"account {name!r} already exists; pick another name")
    account = Account(name=name, kind=kind, display_name=display_name or name, is_admin=is_admin)
    session.add(account)
    session.flush()
    return account


def get_account(session: Session, name: str) -> Account:
    """The account named `name`.

    Raises:
        NotFound: no such account; the message says how to create it.
    """
    account = session.scalar(select(Account).where(Account.name == name))
    if account is None:
        raise NotFound(f"no account named {name!r}; create it with: viz account create {name}")
    return account


def list_accounts(session: Session) -> list[Account]:
    return list(session.scalars(select(Account).order_by(Account.name)))
