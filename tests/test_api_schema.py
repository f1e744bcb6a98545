"""schemathesis, the real tool, against the live /openapi.json of a running `viz serve`.

Every operation, with bodies drawn from the published schemas (valid and invalid ones), with a
valid API key and with none: no 5xx, every response's status, content type and body as the spec
publishes them, every error in OpenAI's shape. The server runs with small limits
(VIZ_GENERATE_TOKENS_MAX=4) so that bodies asking for long answers are refused, not generated.
tests/test_serving.py keeps an in-house property test of the completion bodies on an adapter
and compositions, where generation is exercised more.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import positive_data_acceptance

from viz.accounts import create_api_key, get_account
from viz.config import Settings
from viz.ledger import topup
from viz.store import open_database, session_scope
from worlds.ledger import build_market
from worlds.serving import serve_process

EXAMPLES = 20  # per operation and key: bounded for CI time


@pytest.fixture(scope="module")
def live(tmp_path_factory, models_dir: Path, smollm2_folder: Path):  # type: ignore[no-untyped-def]
    """`viz serve` on a fresh data folder with the real base and a funded consumer's key."""
    home = tmp_path_factory.mktemp("schema-home")
    (home / "models").symlink_to(models_dir, target_is_directory=True)
    database = open_database(Settings(home=home).database_url_resolved)
    build_market(database)
    with session_scope(database) as session:
        topup(session, "bob", 10_000_000, transfer_id="bob-funds")
        key = create_api_key(session, get_account(session, "bob")).token
    database.dispose()
    env = {
        **os.environ,
        "VIZ_HOME": str(home),
        "HF_HUB_OFFLINE": "1",
        "VIZ_GENERATE_TOKENS_MAX": "4",
        "VIZ_PROMPT_TOKENS_MAX": "256",
        "VIZ_API_REQUESTS_PER_MINUTE": "0",
    }
    env.pop("VIZ_DATABASE_URL", None)
    with serve_process(env) as (url, _):
        yield url, key


def operations(url: str) -> list:  # type: ignore[type-arg]
    """Every operation of the live spec (schemathesis's pytest plugin does not run on this
    pytest, so its strategies are driven by hypothesis here, as the plugin would)."""
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    return [result.ok() for result in schema.get_all_operations()]


def check(case, url: str, key: str | None) -> None:  # type: ignore[no-untyped-def]
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    response = case.call(base_url=url, headers=headers, timeout=120)
    # A schema-valid body may still be refused with a 400: limits in tokens and the server's
    # settings are not expressible in the spec (the rest of the checks run, the negative
    # data rejection among them).
    case.validate_response(response, headers=headers, excluded_checks=[positive_data_acceptance])
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert set(response.json()["error"]) == {"message", "type", "param", "code"}


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
@pytest.mark.parametrize("with_key", [True, False], ids=["valid key", "no key"])
def test_every_operation_answers_as_its_spec_says(live, mode, with_key: bool) -> None:  # type: ignore[no-untyped-def]
    url, key = live
    found = operations(url)
    assert {op.label for op in found} >= {"POST /v1/chat/completions", "GET /v1/models"}
    for operation in found:

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
        def run(case) -> None:  # type: ignore[no-untyped-def]
            check(case, url, key if with_key else None)

        try:
            run()
        except Unsatisfiable:  # nothing to make invalid (GET /health has no input)
            assert mode is GenerationMode.NEGATIVE
