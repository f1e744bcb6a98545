"""Accounts (people and firms) and their API keys."""

from viz.accounts.accounts import ACCOUNT_KINDS, create_account, get_account, list_accounts
from viz.accounts.keys import (
    NewApiKey,
    authenticate,
    create_api_key,
    list_api_keys,
    revoke_api_key,
)

__all__ = [
    "ACCOUNT_KINDS",
    "NewApiKey",
    "authenticate",
    "create_account",
    "create_api_key",
    "get_account",
    "list_accounts",
    "list_api_keys",
    "revoke_api_key",
]
