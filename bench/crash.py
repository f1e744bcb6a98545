"""Crash campaign: `viz serve` killed with SIGKILL at random moments under concurrent streaming
load, restarted, and the money checked after each kill; then two replicas on one PostgreSQL.

Per database (SQLite; PostgreSQL when VIZ_TEST_POSTGRES_URL is set or the default answers), each
of --kills rounds: --clients clients stream chat completions, each with its own
Idempotency-Key; after a random 0.5-8 s the server gets SIGKILL; it is restarted and every key is
retried. Checked after each round (a failed check stops the campaign):

- `viz ledger verify` passes, nothing stays reserved, no request is left in flight;
- every answer the clients got whole before the kill is replayed identically, and charged once;
- every key is answered after the restart, and charged exactly once for its answer; what a
  killed stream had sent is settled once, and a killed request that had sent nothing costs
  nothing.

Figures (no time is asserted): restart to the first retried answer and to all of them, against
the same after a clean stop (SIGTERM, drained) as the baseline in the same process.

Replicas: two `viz serve` on one PostgreSQL, --replica-clients clients x --replica-requests
requests, keys spread over both (every fifth key sent to both): balances exact to the micro-unit.

Example:

    .venv/bin/python bench/crash.py                      # 200 kills per database (hours on a CPU)
    .venv/bin/python bench/crash.py --kills 10 --replica-clients 50 --replica-requests 4
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import random
import statistics
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import openai
from sqlalchemy import create_engine, func, select, text

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from viz.accounts import create_api_key, get_account  # noqa: E402
from viz.ledger import balances, topup, verify_ledger  # noqa: E402
from viz.models.loading import ensure_cached  # noqa: E402
from viz.models.registry import BUILTIN_BASES, builtin_record  # noqa: E402
from viz.store import open_database, session_scope  # noqa: E402
from viz.store.gateway import RequestInFlight  # noqa: E402
from viz.store.schema import AdapterVersion, LedgerPending, UsageEvent  # noqa: E402
from worlds.ledger import build_market  # noqa: E402
from worlds.serving import make_adapter, register, serve_process  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "crash"
BASE = "smollm2-135m-instruct"
MODEL = "qa-real"  # a priced plain-PEFT adapter (100 in / 300 out per 1k tokens): money moves
FUNDS = 1_000_000_000
QUESTIONS = [
    "Name a river of Europe and say one thing about it.",
    "What is a prime number? Answer briefly.",
    "Write one sentence about the sea.",
    "Why is the sky blue? One sentence.",
]


def world(url: str | None) -> dict[str, Any]:
    """A data folder (and database: SQLite in it, or a fresh PostgreSQL schema) with the base,
    a funded consumer and its API key; the environment `viz serve` runs in."""
    home = Path(tempfile.mkdtemp(prefix="viz-crash-"))
    models = REPO / ".viz" / "test-models"
    base_folder = ensure_cached(builtin_record(BUILTIN_BASES[BASE]), models)
    (home / "models").symlink_to(models, target_is_directory=True)
    env = {**os.environ, "VIZ_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    env |= {"VIZ_PROGRESS_INTERVAL_S": "0.2", "VIZ_API_REQUESTS_PER_MINUTE": "0"}
    if url:
        schema = f"crash_{uuid.uuid4().hex[:10]}"
        with create_engine(url, isolation_level="AUTOCOMMIT").connect() as connection:
            connection.execute(text(f'CREATE SCHEMA "{schema}"'))
        env["VIZ_DATABASE_URL"] = f"{url}?options=-csearch_path%3D{schema}"
    else:
        env["VIZ_DATABASE_URL"] = f"sqlite:///{home / 'viz.db'}"
    database = open_database(env["VIZ_DATABASE_URL"])
    build_market(database)
    adapter = make_adapter(base_folder, home / "qa", seed=3)
    with session_scope(database) as session:
        session.execute(AdapterVersion.__table__.update().values(status="rejected"))
        register(session, Path(home / "blobs"), adapter, MODEL, "ada")
        topup(session, "bob", FUNDS, transfer_id="bob-funds")
        key = create_api_key(session, get_account(session, "bob")).token
    return {"env": env, "key": key, "database": database}


def ask(url: str, key: str, idempotency_key: str, question: str, stream: bool) -> dict[str, Any]:
    """One completion (streamed or not) as {id, text, tokens}; raises on a cut connection."""
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=300)
    body: dict[str, Any] = {
        "model": MODEL,
        "messages": [{"role": "user", "content": question}],
        "max_tokens": 24,
        "temperature": 0,
        "extra_headers": {"Idempotency-Key": idempotency_key},
    }
    if not stream:
        answer = client.chat.completions.create(**body)
        text_ = answer.choices[0].message.content or ""
        return {"id": answer.id, "text": text_, "tokens": answer.usage.completion_tokens}
    pieces, request_id, tokens = [], "", 0
    with client.chat.completions.create(
        **body, stream=True, stream_options={"include_usage": True}
    ) as events:
        for event in events:
            request_id = event.id
            if event.usage:
                tokens = event.usage.completion_tokens
            if event.choices and event.choices[0].delta.content:
                pieces.append(event.choices[0].delta.content)
    return {"id": request_id, "text": "".join(pieces), "tokens": tokens}


def spent(database: Any) -> tuple[int, int]:
    """(what bob's balance dropped by, the sum of the usage events' charges)."""
    with session_scope(database) as session:
        posted = [b.posted for b in balances(session, "bob") if b.code == "consumer:bob"][0]
        charged = session.scalar(select(func.coalesce(func.sum(UsageEvent.charge), 0)))
    return FUNDS - posted, int(charged)


def check_money(database: Any) -> None:
    with session_scope(database) as session:
        verify_ledger(session)
        open_ = session.scalar(select(func.count()).select_from(LedgerPending))
        flying = session.scalar(select(func.count()).select_from(RequestInFlight))
    assert open_ == 0, f"{open_} reservations left open"
    assert flying == 0, f"{flying} requests left in flight"
    dropped, charged = spent(database)
    assert dropped == charged, f"balance dropped {dropped}, usage events charge {charged}"


def round_(w: dict[str, Any], clients: int, rng: random.Random, kill: bool) -> dict[str, float]:
    """One round: load, a kill (or a clean stop), a restart, every key retried, checks."""
    keys = [(uuid.uuid4().hex, rng.choice(QUESTIONS), n % 2 == 0) for n in range(clients)]
    got: dict[str, dict[str, Any]] = {}
    with serve_process(w["env"]) as (url, process):
        pool = ThreadPoolExecutor(clients)

        def one(spec: tuple[str, str, bool]) -> None:
            with contextlib.suppress(openai.APIError):
                got[spec[0]] = ask(url, w["key"], *spec)

        futures = [pool.submit(one, spec) for spec in keys]
        time.sleep(rng.uniform(0.5, 8.0))  # before, during or after the answers
        if kill:
            process.kill()
        else:
            process.terminate()  # drains: every request finishes
        process.wait()
        for future in futures:
            future.result()
        pool.shutdown()
    started = time.monotonic()
    first = None
    with serve_process(w["env"]) as (url, _):
        after = {}
        for idempotency_key, question, stream in keys:
            after[idempotency_key] = ask(url, w["key"], idempotency_key, question, stream)
            first = first or time.monotonic() - started
        every = time.monotonic() - started
    for idempotency_key, answer in got.items():  # whole before the kill: replayed identically
        assert after[idempotency_key]["id"] == answer["id"], "replayed under the same id"
        assert after[idempotency_key]["text"] == answer["text"], "replayed identically"
    check_money(w["database"])
    with session_scope(w["database"]) as session:
        events = {e.request_id: e.tokens_out for e in session.scalars(select(UsageEvent))}
    for answer in after.values():  # each answer charged once, for what the client got
        assert events.get(answer["id"]) == answer["tokens"], "charged for the answer given"
    return {"first_s": first or 0.0, "all_s": every, "whole_before": len(got), "keys": clients}


def campaign(label: str, url: str | None, kills: int, clients: int, seed: int) -> dict[str, Any]:
    w = world(url)
    rng = random.Random(seed)
    baseline = [round_(w, clients, rng, kill=False) for _ in range(max(1, kills // 20))]
    killed = []
    for number in range(kills):
        killed.append(round_(w, clients, rng, kill=True))
        print(
            f"{label}: kill {number + 1}/{kills}: restart to all answered "  # noqa: T201
            f"{killed[-1]['all_s']:.1f} s",
            flush=True,
        )
    w["database"].dispose()
    return {"label": label, "baseline": baseline, "killed": killed}


def replicas(url: str, clients: int, requests: int) -> dict[str, Any]:
    """Two replicas on one PostgreSQL; keys spread over both, every fifth sent to both."""
    w = world(url)
    with serve_process(w["env"]) as (first, _), serve_process(w["env"]) as (second, _):
        urls = [first, second]
        answers: list[dict[str, Any]] = []
        lock = threading.Lock()

        def client(number: int) -> None:
            for n in range(requests):
                key = f"c{number}-r{n}"
                question = QUESTIONS[(number + n) % len(QUESTIONS)]
                targets = urls if (number + n) % 5 == 0 else [urls[(number + n) % 2]]
                for target in targets:
                    answer = ask(target, w["key"], key, question, stream=n % 2 == 0)
                    with lock:
                        answers.append(answer)

        started = time.monotonic()
        with ThreadPoolExecutor(clients) as pool:
            list(pool.map(client, range(clients)))
        seconds = time.monotonic() - started
    check_money(w["database"])
    with session_scope(w["database"]) as session:
        events = session.scalar(select(func.count()).select_from(UsageEvent))
    distinct = {a["id"] for a in answers}
    assert events == len(distinct) == clients * requests, "each key charged exactly once"
    dropped, charged = spent(w["database"])
    w["database"].dispose()
    return {
        "answers": len(answers),
        "keys": len(distinct),
        "seconds": seconds,
        "dropped": dropped,
        "charged": charged,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=200, help="SIGKILLs per database")
    parser.add_argument("--clients", type=int, default=6, help="concurrent clients per round")
    parser.add_argument("--replica-clients", type=int, default=50)
    parser.add_argument("--replica-requests", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    url = os.environ.get(
        "VIZ_TEST_POSTGRES_URL", "postgresql+psycopg://viz:viz@127.0.0.1:5432/viz_test"
    )
    try:
        with create_engine(url).connect():
            pass
    except Exception as error:  # noqa: BLE001 - any failure means the same: SQLite only
        print(f"PostgreSQL at {url} not reachable ({type(error).__name__}): SQLite only")  # noqa: T201
        url = ""
    runs = [campaign("sqlite", None, args.kills, args.clients, args.seed)]
    if url:
        runs.append(campaign("postgresql", url, args.kills, args.clients, args.seed))
    shared = replicas(url, args.replica_clients, args.replica_requests) if url else None
    report(runs, shared, args)


def report(runs: list[dict[str, Any]], shared: dict[str, Any] | None, args: Any) -> None:
    lines = [
        "# Crash campaign: SIGKILL under load, restart, money checked",
        "",
        f"`.venv/bin/python bench/crash.py --kills {args.kills} --clients {args.clients} "
        f"--replica-clients {args.replica_clients} --replica-requests {args.replica_requests}`"
        f" on {platform.machine()}, {os.cpu_count()} cores; {MODEL}, a priced plain-PEFT adapter "
        f"on {BASE}, 24 tokens "
        "a request, half of them streamed. Every round passed every check (a failure stops "
        "the campaign): ledger verified, nothing reserved or in flight, answers given before "
        "the kill replayed identically, every key answered and charged once.",
        "",
        "| database | kills | keys | answered whole before the kill | restart to first retried "
        "answer p50 (s) | restart to all p50 / max (s) | same after a clean stop p50 (s) | ratio |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        killed, baseline = run["killed"], run["baseline"]
        first = statistics.median(r["first_s"] for r in killed)
        every = [r["all_s"] for r in killed]
        clean = statistics.median(r["all_s"] for r in baseline)
        lines.append(
            f"| {run['label']} | {len(killed)} | {sum(r['keys'] for r in killed)} | "
            f"{sum(r['whole_before'] for r in killed)} | {first:.1f} | "
            f"{statistics.median(every):.1f} / {max(every):.1f} | {clean:.1f} | "
            f"{statistics.median(every) / clean:.2f}x |"
        )
    if shared:
        lines += [
            "",
            f"Two replicas on one PostgreSQL: {args.replica_clients} clients x "
            f"{args.replica_requests} requests ({shared['answers']} answers for "
            f"{shared['keys']} keys, every fifth key sent to both) in {shared['seconds']:.0f} s: "
            f"each key charged exactly once; bob's balance dropped {shared['dropped']} "
            f"micro-units, the usage events charge {shared['charged']} (exact).",
        ]
    text_ = "\n".join(lines) + "\n"
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "report.md").write_text(text_)
    print(text_)  # noqa: T201


if __name__ == "__main__":
    main()
