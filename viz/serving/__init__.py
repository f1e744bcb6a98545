"""Serving: the gateway of the OpenAI-compatible API over engines.

A paid request flows one way: `protocol` (the request bodies) -> `call` (authenticate, resolve
the model grammar of `adapter_ref` with `resolve`, ground it with `grounding`, reserve) -> an
engine (`engines`: the `Engine` protocol; `engines.builtin` is the first implementation) ->
`call` (settle or void, in `viz.ledger`) -> `responses` (JSON or SSE). `idempotency` replays a
retried request; `server` holds the process's engines and metrics; `routes` is the API router
`viz.app.create_app` mounts. None of these imports torch: an engine is opened lazily.
"""

from viz.serving.adapter_ref import ModelRef, Term, parse_model
from viz.serving.engines import AdapterWeights, Engine, EngineLimits, Generation, open_engine

__all__ = [
    "AdapterWeights",
    "Engine",
    "EngineLimits",
    "Generation",
    "ModelRef",
    "Term",
    "open_engine",
    "parse_model",
]
