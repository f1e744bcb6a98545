"""API keys: `viz_<key_id>_<secret>`, shown once, stored as the SHA-256 of the secret.

The key id is public and indexes the row; the secret has 256 bits of entropy, so a plain SHA-256
digest is enough (no slow password hash needed), and it is compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session, joinedload

from viz.errors import Conflict, LimitExceeded, NotFound, Unauthenticated
from viz.store.schema import Account, ApiKey, utc_now

__all__ = ["NewApiKey", "authenticate", "create_api_key", "list_api_keys", "revoke_api_key"]

KEY_PREFIX = "viz"
KEY_ID_BYTES = 8
KEY_SECRET_BYTES = 32
KEY_PATTERN = re.compile(r"^viz_([0-9a-f]{16})_([0-9a-f]{64})$")
KEY_LABEL_CHARS_MAX = 100


@dataclass(frozen=True)
class NewApiKey:
    """A freshly created key: `token` is shown to the user once and never stored."""

    key_id: str
    token: str


LAST_USED_RESOLUTION = timedelta(minutes=1)


def create_api_key(
    session: Session, account: Account, *, label: str = "", keys_max: int = 100
) -> NewApiKey:
    """Issue a new key for `account`.

    Raises:
        LimitExceeded: the account already holds `keys_max` active keys.
    """
    if len(label) > KEY_LABEL_CHARS_MAX:
        raise LimitExceeded(
            f"key label is {len(label)} characters; the maximum is {KEY_LABEL_CHARS_MAX}"
        )
    active = session.scalar(
        select(func.count())
        .select_from(ApiKey)
        .where(ApiKey.account_id == account.id, ApiKey.revoked_at.is_(None))
    )
    if active is not None and active >= keys_max:
        raise LimitExceeded(
            f"account {account.name!r} has {active} active API keys (maximum {keys_max}); "
            "revoke unused ones with: viz keys revoke KEY_ID"
        )
    key_id = secrets.token_hex(KEY_ID_BYTES)
    secret = secrets.token_hex(KEY_SECRET_BYTES)
    session.add(
        ApiKey(key_id=key_id, account_id=account.id, secret_sha256=_digest(secret), label=label)
    )
    session.flush()
    return NewApiKey(key_id=key_id, token=f"{KEY_PREFIX}_{key_id}_{secret}")


def authenticate(session: Session, token: str) -> Account:
    """The account that owns `token`, if the key is well formed, known, unrevoked and correct.

    Raises:
        Unauthenticated: anything else; the message never says which part was wrong beyond
            malformed vs. not accepted, so it leaks nothing about which key ids exist.
    """
    match = KEY_PATTERN.match(token.strip())
    if match is None:
        raise Unauthenticated(
            "API key is malformed: expected viz_<16 hex>_<64 hex>; create one with: "
            "viz keys create --account NAME"
        )
    key_id, secret = match.groups()
    key = session.scalar(  # the key and its account in one statement
        select(ApiKey).options(joinedload(ApiKey.account)).where(ApiKey.key_id == key_id)
    )
    # Compare even when the key is unknown, so timing does not reveal which ids exist.
    stored = key.secret_sha256 if key is not None else "0" * 64
    correct = hmac.compare_digest(stored, _digest(secret))
    if key is None or not correct or key.revoked_at is not None:
        raise Unauthenticated("API key not accepted: it is wrong or has been revoked")
    now = utc_now()
    last = key.last_used_at
    if last is not None and last.tzinfo is None:  # SQLite hands back naive UTC
        last = last.replace(tzinfo=UTC)
    if last is None or now - last > LAST_USED_RESOLUTION:
        key.last_used_at = now  # at most once a minute: a read-only check stays read-only
    return key.account


def list_api_keys(session: Session, account: Account) -> list[ApiKey]:
    return list(
        session.scalars(
            select(ApiKey).where(ApiKey.account_id == account.id).order_by(ApiKey.created_at)
        )
    )


def revoke_api_key(session: Session, key_id: str, *, account: Account | None = None) -> ApiKey:
    """Revoke key `key_id` (optionally checking it belongs to `account`).

    Raises:
        NotFound: no such key (for that account).
        Conflict: the key is already revoked.
    """
    key = session.scalar(  # the key and its account in one statement
        select(ApiKey).options(joinedload(ApiKey.account)).where(ApiKey.key_id == key_id)
    )
    if key is None or (account is not None and key.account_id != account.id):
        raise NotFound(f"no API key with id {key_id!r}; list keys with: viz keys list")
    if key.revoked_at is not None:
        raise Conflict(f"API key {key_id} was already revoked at {key.revoked_at:%Y-%m-%d %H:%M}")
    key.revoked_at = utc_now()
    return key


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("ascii")).hexdigest()
