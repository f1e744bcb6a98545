"""One error tree for all of Viz.

Every error a user can cause is a `VizError`. Each class carries the HTTP status the API answers
with and the exit code the CLI leaves with; the CLI (`viz.cli.main`) and, later, the HTTP API
translate them in exactly one place each. A message names the problem, the value seen and the
next step.

`assert` is for our own bugs; these classes are for the user's input and the world's state.
"""

from __future__ import annotations

__all__ = [
    "VizError",
    "NotFound",
    "InvalidInput",
    "Forbidden",
    "Unauthenticated",
    "PaymentRequired",
    "Conflict",
    "LimitExceeded",
    "Overloaded",
    "StorageCorrupt",
    "LedgerCorrupt",
    "Interrupted",
]


class VizError(Exception):
    """Base of every error Viz raises on purpose."""

    http_status: int = 500
    exit_code: int = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(VizError):
    """A named thing (account, key, document, model) does not exist."""

    http_status = 404
    exit_code = 3


class InvalidInput(VizError):
    """The input is malformed: a bad licence, an unreadable file, an out-of-range option."""

    http_status = 400
    exit_code = 2


class Forbidden(VizError):
    """The caller is known but not allowed to do this."""

    http_status = 403
    exit_code = 4


class Unauthenticated(Forbidden):
    """No valid credentials: a wrong, malformed or revoked API key."""

    http_status = 401


class PaymentRequired(VizError):
    """The consumer's balance cannot pay for the request."""

    http_status = 402
    exit_code = 5


class Conflict(VizError):
    """The request clashes with what is stored: a duplicate, an immutable version."""

    http_status = 409
    exit_code = 6


class LimitExceeded(VizError):
    """A named maximum (upload size, prompt length, queue depth) would be exceeded."""

    http_status = 413
    exit_code = 7


class Overloaded(VizError):
    """The server's request queue is full: retry in a moment (HTTP 429)."""

    http_status = 429
    exit_code = 9


class StorageCorrupt(VizError):
    """Stored data (weights, blobs, cache) does not match its recorded hash."""

    http_status = 500
    exit_code = 8


class LedgerCorrupt(StorageCorrupt):
    """A ledger invariant failed: sums, limits, the hash chain or the log disagree.

    Raised by explicit checks (never `assert`, which `python -O` drops); it means stored money
    records were altered outside Viz or a bug slipped through, and needs a person to look.
    """


class Interrupted(VizError):
    """Long work (training) was stopped by the user; it left a checkpoint to resume from."""

    http_status = 503
    exit_code = 130
