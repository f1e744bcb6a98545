"""The error map: each VizError class's HTTP status and OpenAI error type and code, as the API
answers them (`viz.serving.responses.error_response` reads them from the class)."""

from __future__ import annotations

import json

import pytest
from starlette.requests import Request

from viz.errors import (
    Conflict,
    Forbidden,
    Interrupted,
    InvalidInput,
    LedgerCorrupt,
    LimitExceeded,
    NotFound,
    Overloaded,
    PayloadTooLarge,
    PaymentRequired,
    RateLimited,
    StorageCorrupt,
    Unauthenticated,
    VizError,
)
from viz.serving.responses import error_response

MAP = [
    (VizError, 500, "server_error", None, 1),
    (NotFound, 404, "invalid_request_error", "model_not_found", 3),
    (InvalidInput, 400, "invalid_request_error", None, 2),
    (Forbidden, 403, "permission_denied", None, 4),
    (Unauthenticated, 401, "invalid_request_error", "invalid_api_key", 4),
    (PaymentRequired, 429, "insufficient_quota", "insufficient_quota", 5),
    (Conflict, 409, "invalid_request_error", "idempotency_conflict", 6),
    (LimitExceeded, 400, "invalid_request_error", "context_length_exceeded", 7),
    (PayloadTooLarge, 413, "invalid_request_error", None, 7),
    (RateLimited, 429, "rate_limit_exceeded", "rate_limit_exceeded", 7),
    (Overloaded, 429, "rate_limit_exceeded", "rate_limit_exceeded", 9),
    (StorageCorrupt, 500, "server_error", None, 8),
    (LedgerCorrupt, 500, "server_error", None, 8),
    (Interrupted, 500, "server_error", None, 130),
]


def _request() -> Request:
    request = Request({"type": "http", "method": "POST", "path": "/v1/chat/completions"})
    request.state.request_id = "req-1"
    return request


@pytest.mark.parametrize(("cls", "status", "kind", "code", "exit_code"), MAP)
def test_each_error_answers_with_its_class_status_type_and_code(  # type: ignore[no-untyped-def]
    cls, status, kind, code, exit_code
) -> None:
    assert (cls.http_status, cls.openai_type, cls.openai_code) == (status, kind, code)
    assert cls.exit_code == exit_code
    response = error_response(_request(), cls("what went wrong"))
    assert response.status_code == status
    assert response.headers["x-request-id"] == "req-1"
    body = json.loads(bytes(response.body))
    assert body == {
        "error": {"message": "what went wrong", "type": kind, "param": None, "code": code}
    }


def test_every_error_class_is_in_the_map() -> None:
    import viz.errors

    classes = {getattr(viz.errors, name) for name in viz.errors.__all__}
    assert classes == {row[0] for row in MAP}


def test_a_missing_collection_is_not_a_missing_model() -> None:
    error = NotFound("no collection 'papers'")
    error.param = "viz.rag"  # type: ignore[attr-defined]  # as the retriever names it
    body = json.loads(bytes(error_response(_request(), error).body))
    assert body["error"]["param"] == "viz.rag" and body["error"]["code"] is None
    bad = error_response(_request(), InvalidInput("n: too big"), param="n")
    assert json.loads(bytes(bad.body))["error"]["param"] == "n"
