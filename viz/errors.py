"""One error tree for all of Viz.

Every error a user can cause is a `VizError`. Each class carries what the HTTP API answers with
(`http_status`, and the OpenAI error body's `openai_type` and `openai_code`; the web pages answer
with the same status) and the exit code the CLI leaves with; the CLI (`viz.cli.main`) and the
HTTP API (`viz.serving.responses.error_response`) translate them in exactly one place each. A
message names the problem, the value seen and the next step.

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
    "PayloadTooLarge",
    "RateLimited",
    "Overloaded",
    "StorageCorrupt",
    "LedgerCorrupt",
    "Interrupted",
]


class VizError(Exception):
    """Base of every error Viz raises on purpose."""

    http_status: int = 500
    openai_type: str = "server_error"
    openai_code: str | None = None
    exit_code: int = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(VizError):
    """A named thing (account, key, document, model) does not exist."""

    http_status = 404
    openai_type = "invalid_request_error"
    openai_code = "model_not_found"  # what the API is asked for is a model
    exit_code = 3


class InvalidInput(VizError):
    """The input is malformed: a bad licence, an unreadable file, an out-of-range option."""

    http_status = 400
    openai_type = "invalid_request_error"
    exit_code = 2


class Forbidden(VizError):
    """The caller is known but not allowed to do this."""

    http_status = 403
    openai_type = "permission_denied"
    exit_code = 4


class Unauthenticated(Forbidden):
    """No valid credentials: a wrong, malformed or revoked API key."""

    http_status = 401
    openai_type = "invalid_request_error"
    openai_code = "invalid_api_key"


class PaymentRequired(VizError):
    """The consumer's balance cannot pay for the request (HTTP 429, as OpenAI answers it)."""

    http_status = 429
    openai_type = "insufficient_quota"
    openai_code = "insufficient_quota"
    exit_code = 5


class Conflict(VizError):
    """The request clashes with what is stored: a duplicate, an immutable version."""

    http_status = 409
    openai_type = "invalid_request_error"
    openai_code = "idempotency_conflict"  # the API's only conflict: a reused Idempotency-Key
    exit_code = 6


class LimitExceeded(VizError):
    """A named maximum (prompt length, max_tokens, a rate) would be exceeded (HTTP 400)."""

    http_status = 400
    openai_type = "invalid_request_error"
    openai_code: str | None = "context_length_exceeded"  # the API limits prompt, answer size
    exit_code = 7


class PayloadTooLarge(LimitExceeded):
    """An upload is over its size limit (HTTP 413)."""

    http_status = 413
    openai_code = None


class RateLimited(LimitExceeded):
    """Too many attempts from one client in a window (failed logins, sign-ups): wait (HTTP 429)."""

    http_status = 429
    openai_type = "rate_limit_exceeded"
    openai_code = "rate_limit_exceeded"


class Overloaded(VizError):
    """The server's request queue is full: retry in a moment (HTTP 429)."""

    http_status = 429
    openai_type = "rate_limit_exceeded"
    openai_code = "rate_limit_exceeded"
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

    http_status = 500
    exit_code = 130
