"""One metered call: authenticate, resolve, reserve, run, then settle or void.

`begin` authenticates the Bearer key, counts the request against the account's rate limit,
claims its Idempotency-Key, resolves the model (or lets the recommender choose for
`model: "auto"`), retrieves sources for `viz.rag`, tokenises and hot-loads adapters outside any
transaction, reserves what the request may cost (max_tokens x n) in a short one (recording this
process's lease as its holder), then queues the generations on the engine. `Call.finish` records
the delivered usage (a failed request's tokens are settled, or its hold voided, at once) and
stores the answer for its Idempotency-Key in one transaction, hands the settlement to the
settler (`viz.serving.settler`: after the answer, many per transaction), counts metrics and logs
one JSON line.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request
from sqlalchemy.orm import Session

from viz.accounts.keys import authenticate
from viz.errors import InvalidInput, PaymentRequired, RateLimited, Unauthenticated, VizError
from viz.ledger import Usage, quote, reserve, settle, void_reservation
from viz.models.generate import GenerationSettings, text_prompt_ids
from viz.models.grammar import check_schema
from viz.routing.hardware import parse_hardware
from viz.routing.options import QUERY_CHARS_MAX, RouteRequest
from viz.routing.route import recommend_route
from viz.serving.adapter_ref import parse_model
from viz.serving.engines import Engine, Generation
from viz.serving.grounding import Grounding
from viz.serving.idempotency import claim, fingerprint, finished
from viz.serving.leases import deliver, progress, track
from viz.serving.logprobs import TokenTexts
from viz.serving.options import answer_schema, check_logit_bias, sampling
from viz.serving.protocol import ChatBody, CompletionBody, RouteOptions, TextBody
from viz.serving.resolve import Resolved, compose_reader, resolve
from viz.serving.server import Server
from viz.serving.tools import ToolUse, call_schema, prompt_ids, tool_use
from viz.store.database import session_scope
from viz.store.gateway import RequestInFlight
from viz.store.schema import Account
from viz.store.windows import hit

__all__ = ["Call", "Unanswerable", "begin", "caller", "count_request"]

log = logging.getLogger("viz.serving")


@dataclass
class Call:
    """A request in flight: who, what, how much was reserved, and the generations running it."""

    server: Server
    account: Account
    request_id: str
    resolved: Resolved
    prompt_ids: list[int]
    options: GenerationSettings
    n: int
    grounding: Grounding | None = None
    route: dict[str, Any] | None = None
    tools: ToolUse | None = None  # the functions the model may call (chat)
    echo: str | None = None  # the prompt's text, put before the answer (completions, echo)
    token_texts: TokenTexts | None = None  # to spell tokens out, when logprobs are asked for
    jobs: list[Generation] = field(default_factory=list)
    idempotent: bool = False  # an Idempotency-Key claimed this request id
    reserved: bool = False
    settled: bool = False
    started: float = field(default_factory=time.monotonic)
    progressed: float = field(default_factory=time.monotonic)  # last recorded stream progress
    timings: dict[str, float] = field(default_factory=dict)  # stage -> seconds (Server-Timing)

    def usage(self, completion_tokens: int, *, most: bool = False) -> Usage:
        """The usage to settle; `most` prices every source as cited (for the reservation)."""
        citations: tuple[int, ...] = ()
        if self.grounding is not None:
            cited = None if most else self.grounding.cited
            citations = self.grounding.document_ids(cited)
        return Usage(
            request_id=self.request_id,
            consumer=self.account.name,
            base=self.resolved.base_id,
            tokens_in=len(self.prompt_ids),
            tokens_out=completion_tokens,
            composition=self.resolved.composition(),
            citations=citations,
        )

    def reserve(self, session: Session) -> None:
        """Hold what the request may cost (max_tokens x n), in the caller's transaction.

        Raises:
            PaymentRequired: the consumer's balance cannot cover it (HTTP 429 insufficient_quota).
        """
        settings = self.server.settings
        most = quote(
            session,
            self.usage(self.options.max_tokens * self.n, most=True),
            fee_bps=settings.platform_fee_bps,
        )
        if not most:
            return
        try:
            reserve(
                session,
                self.request_id,
                self.account.name,
                most,
                timeout_s=settings.reservation_timeout_s,
                anchor=False,  # the keeper anchors (viz.ledger.anchors)
            )
        except PaymentRequired as error:
            raise PaymentRequired(
                f"insufficient quota: this request may cost up to {most} micro-units "
                f"({self.options.max_tokens} tokens x {self.n}); {error.message}"
            ) from error
        track(session, self.server.keeper.lease_id, self.usage(0))
        self.reserved = True

    def progress(self, tokens_sent: int) -> None:
        """Record a stream's tokens sent so far, at most every VIZ_PROGRESS_INTERVAL_S: what
        another process settles if this one dies."""
        if not self.reserved or self.settled:
            return
        now = time.monotonic()
        if now - self.progressed >= self.server.settings.progress_interval_s:
            self.progressed = now
            progress(self.server.database, self.request_id, tokens_sent)

    def start(self, engine: Engine, composition: Any) -> None:
        """Queue the generations (after `reserve` committed); any failure voids the hold."""
        try:
            for choice in range(self.n):
                self.jobs.append(
                    engine.submit(self.prompt_ids, self.options, composition, choice=choice)
                )
        except BaseException:
            self.abandon()
            raise
        self.server.queue.set(engine.waiting)

    def abandon(self) -> None:
        """Stop the generations and settle what was delivered (nothing: the hold is voided)."""
        for job in self.jobs:
            job.cancel()
        if not self.settled:
            self.finish(failed=True, tokens=0)

    def finish(
        self,
        *,
        failed: bool = False,
        tokens: int | None = None,
        answer: dict[str, Any] | None = None,
    ) -> int:
        """Account for the tokens delivered (`tokens`, else all generated) and, in the same
        transaction, store `answer` for the request's Idempotency-Key (a failed request stores
        none: a retry runs again); returns the tokens. Once per call.

        A reserved, answered request is recorded as delivered and settled by the settler after
        the answer goes out; a failed one is settled (voided if nothing was sent) here."""
        if tokens is None:
            tokens = sum(job.completion_tokens for job in self.jobs)
        if self.settled:
            return tokens
        self.settled = True
        server, began = self.server, time.perf_counter()
        delivered = self.reserved and not failed
        try:
            with session_scope(server.database) as session:
                if delivered:
                    deliver(session, self.usage(tokens))
                elif failed and tokens == 0 and self.reserved:
                    void_reservation(session, self.request_id, anchor=False)
                elif self.reserved or tokens or not failed:
                    fee_bps = server.settings.platform_fee_bps
                    settle(session, self.usage(tokens), fee_bps=fee_bps, anchor=False)
                self._release(session, None if failed else answer, keep=delivered)
        except VizError:
            with session_scope(server.database) as session:  # never leave the key running
                self._release(session, None)
            raise
        if delivered:
            server.settler.submit(self.request_id)
        self.timings["deliver"] = time.perf_counter() - began  # settled after the answer
        self._record("error" if failed else "ok", tokens)
        return tokens

    def _release(
        self, session: Session, answer: dict[str, Any] | None, *, keep: bool = False
    ) -> None:
        """The request is no longer in flight (`keep`: its delivered row stays for the
        settler); its Idempotency-Key is answered or failed."""
        if self.reserved and not keep:
            session.query(RequestInFlight).filter_by(request_id=self.request_id).delete()
        if self.idempotent:
            finished(session, self.request_id, answer)

    def _record(self, status: str, tokens: int) -> None:
        """Count the request in the metrics of each model part and log it as one JSON line."""
        server, seconds = self.server, time.monotonic() - self.started
        for part in [u.label for u in self.resolved.uses] or [self.resolved.base_id]:
            server.requests.labels(part, status).inc()
            server.tokens.labels(part, "in").inc(len(self.prompt_ids))
            server.tokens.labels(part, "out").inc(tokens)
            server.latency.labels(part).observe(seconds)
        line = {
            "request_id": self.request_id,
            "account": self.account.name,
            "model": self.resolved.model,
            "status": status,
            "tokens_in": len(self.prompt_ids),
            "tokens_out": tokens,
            "seconds": round(time.monotonic() - self.started, 3),
        }
        log.info(json.dumps(line))


@dataclass(frozen=True)
class Unanswerable:
    """`viz.rag` found nothing relevant: answer "cannot find" without generating or charging."""

    request_id: str
    model: str
    grounding: Grounding
    route: dict[str, Any] | None


def begin(
    server: Server,
    request: Request,
    body: CompletionBody,
    authorization: str | None,
    idempotency_key: str | None,
    messages: list[dict[str, Any]] | None,
    prompt: str | None,
) -> Call | Unanswerable | dict[str, Any]:
    """Authenticate, count and claim the Idempotency-Key, resolve; retrieve sources (viz.rag);
    load, tokenise and hot-load outside any transaction; reserve in a short one; then queue.
    A dict is the replay of an earlier answer with the same Idempotency-Key."""
    settings, began = server.settings, time.perf_counter()
    timings: dict[str, float] = {}
    use = tool_use(body) if isinstance(body, ChatBody) else None
    options = sampling(
        body, max_tokens_limit=settings.generate_tokens_max, schema=_schema(body, use)
    )
    with session_scope(server.database) as session:
        account = caller(session, authorization)
        count_request(server, session, account.id, request)
        session.commit()  # counted even if the request fails
        timings["auth"] = time.perf_counter() - began
        request_id = request.state.request_id
        if idempotency_key is not None:
            found = claim(
                session,
                account,
                idempotency_key,
                fingerprint(request.url.path, body.model_dump(mode="json")),
                server.keeper.lease_id,
                fee_bps=settings.platform_fee_bps,
            )
            if isinstance(found, dict):
                request.state.request_id = found.get("id", request_id)  # x-request-id
                return found
            request_id = request.state.request_id = found
        resolved, route = _resolve(server, session, body, account, messages, prompt, options)
        session.flush()
        session.expunge(account)
    timings["resolve"] = time.perf_counter() - began - timings["auth"]
    prepared: Call | Unanswerable | None = None
    try:
        call = Call(server, account, request_id, resolved, [], options, body.n, tools=use)
        call.timings = timings
        call.idempotent, call.route = idempotency_key is not None, route
        if isinstance(body, TextBody) and body.echo:
            call.echo = body.prompt
        prepared = _prepare(call, body, messages, prompt)
        return prepared
    finally:
        if idempotency_key is not None and not isinstance(prepared, Call):
            with session_scope(server.database) as session:  # nothing ran: a retry runs again
                finished(session, request_id, None)


def _prepare(
    call: Call,
    body: CompletionBody,
    messages: list[dict[str, Any]] | None,
    prompt: str | None,
) -> Call | Unanswerable:
    """`call` grounded, tokenised and hot-loaded (outside any transaction), reserved and queued;
    or the "cannot find" answer when retrieval found nothing relevant."""
    server, resolved, route = call.server, call.resolved, call.route
    settings, prepared = server.settings, time.perf_counter()
    if server.kind == "vllm" and resolved.precision == "nf4" and resolved.uses and not route:
        raise InvalidInput(
            f"{' + '.join(use.label for use in resolved.uses)} was trained on an NF4 base "
            "(QLoRA) and is served on NF4 weights only; this gateway's vLLM servers serve the "
            "base unquantised: use a gateway on the builtin engine for it"
        )
    engine = server.engine(resolved.base_id, resolved.precision)
    grounding = None
    if body.viz.rag is not None:
        if messages is None:
            raise InvalidInput("viz.rag works with chat completions (/v1/chat/completions)")
        if body.viz.rag.reranker == "llm":
            raise InvalidInput(
                "the llm reranker is not served (it would share the generating model); use a "
                "trained reranker (viz rag train-reranker) or candidates: 0"
            )
        grounding, messages = server.retriever.ground(body.viz.rag, messages)
        if not grounding.relevant:
            return Unanswerable(call.request_id, resolved.model, grounding, route)
    tokenizer = engine.tokenizer
    if messages is not None:
        ids = prompt_ids(
            tokenizer, messages, call.tools, prompt_tokens_max=settings.prompt_tokens_max
        )
    else:
        ids = text_prompt_ids(tokenizer, prompt or "", prompt_tokens_max=settings.prompt_tokens_max)
    check_logit_bias(call.options, len(tokenizer))
    if call.options.json_schema is not None:
        check_schema(call.options.json_schema)  # a schema the grammar cannot take: 400
    if call.options.logprobs is not None:
        call.token_texts = TokenTexts(tokenizer)
    composition = server.compose(resolved, engine)
    call.prompt_ids, call.grounding = ids, grounding
    began = time.perf_counter()
    call.timings["prepare"] = began - prepared  # retrieval, tokenising, hot-loading adapters
    with session_scope(server.database) as session:
        call.reserve(session)
    call.timings["reserve"] = time.perf_counter() - began
    call.start(engine, composition)
    return call


def caller(session: Session, authorization: str | None) -> Account:
    """The account of the `Authorization: Bearer viz_...` header.

    Raises:
        Unauthenticated: no header, or a wrong, malformed or revoked key.
    """
    if not authorization or not authorization.lower().startswith("bearer "):
        raise Unauthenticated(
            "no API key: send 'Authorization: Bearer viz_...' (create a key with: viz keys create)"
        )
    return authenticate(session, authorization[7:])


def count_request(server: Server, session: Session, account_id: int, request: Request) -> None:
    """One more request in the account's minute, shared by every replica (the database counts);
    the limit and what remains go out as x-ratelimit-* headers.

    Raises:
        RateLimited: over VIZ_API_REQUESTS_PER_MINUTE (429 rate_limit_exceeded).
    """
    limit = server.settings.api_requests_per_minute
    if not limit:
        return
    count, reset_s = hit(session, f"api:{account_id}", window_s=60)
    request.state.ratelimit = (limit, max(0, limit - count), reset_s)
    if count > limit:
        raise RateLimited(
            f"rate limit reached: at most {limit} requests per minute for this account "
            f"(VIZ_API_REQUESTS_PER_MINUTE); retry in {reset_s:.0f} s"
        )


def _schema(body: CompletionBody, use: ToolUse | None) -> str | None:
    """The JSON schema the answer is decoded under: a forced tool call's, or response_format's.

    Raises:
        InvalidInput: both are asked for.
    """
    if not isinstance(body, ChatBody):
        return None
    call, answer = call_schema(use), answer_schema(body)
    if use is not None and answer is not None:
        raise InvalidInput(
            "response_format json with tools: the answer is either a tool call or JSON "
            "content; drop one (or set tool_choice: none)"
        )
    return call or answer


def _resolve(
    server: Server,
    session: Session,
    body: CompletionBody,
    account: Account,
    messages: list[dict[str, Any]] | None,
    prompt: str | None,
    options: GenerationSettings,
) -> tuple[Resolved, dict[str, Any] | None]:
    """The base and adapters to run, and for `model: "auto"` the recommender's choice."""
    ref = parse_model(body.model)
    route = None
    if ref.auto:
        route = _route(server, session, body, account, messages, prompt, options.max_tokens)
        ref = parse_model(route["model"])
    elif body.viz.route is not None:
        raise InvalidInput('viz.route goes with model "auto"; drop it or ask for "auto"')
    resolved = resolve(
        session,
        ref,
        account,
        parents=body.viz.parents,
        precision=route["precision"] if route else None,
    )
    if body.viz.rag is not None:
        choice = body.viz.rag.reader
        name = server.settings.rag_reader if choice == "default" else choice
        resolved = compose_reader(
            session, resolved, name, account, parents=body.viz.parents, required=choice
        )
    return resolved, route


def _route(
    server: Server,
    session: Session,
    body: CompletionBody,
    account: Account,
    messages: list[dict[str, Any]] | None,
    prompt: str | None,
    max_tokens: int,
) -> dict[str, Any]:
    """`model: "auto"`: the recommender's choice for the last user message (or the prompt)."""
    options = body.viz.route or RouteOptions()
    if messages is not None:
        users = [m["content"] for m in messages if m.get("role") == "user"]
        query = users[-1] if users else messages[-1]["content"]
    else:
        query = prompt or ""
    request = RouteRequest(
        query[-QUERY_CHARS_MAX:],
        parse_hardware(options.hardware) if options.hardware else server.hardware,
        budget_micro=options.budget,
        max_latency_ms=options.max_latency_ms,
        context_tokens=options.context_tokens,
        reply_tokens=max_tokens,
    )
    return recommend_route(session, server.settings, request, caller=account).to_json()
