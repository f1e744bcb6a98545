"""`viz ledger`: top up, meter usage, pay creators out, read balances and statements, verify.

Amounts are integer micro-units (1 unit = 1,000,000 micro-units), like adapter prices.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import typer

from viz.cli._context import session, state, table
from viz.errors import InvalidInput
from viz.ledger import (
    AdapterUse,
    Usage,
    anchor_ledger,
    balances,
    expire_overdue,
    history,
    payout,
    release_escrow,
    resolve_codes,
    set_credit_limit,
    settle,
    statement,
    topup,
    verify_ledger,
)
from viz.market.catalogue import find_version

app = typer.Typer(
    help="Ledger: top-ups, metered usage, royalties, payouts, verification.\n\n"
    "Example: viz ledger topup bob 5000000 && viz ledger balance bob && viz ledger verify"
)


def money(micro: int) -> str:
    """`1,215 (0.001215 units)`: exact micro-units first, units for the eye."""
    sign = "-" if micro < 0 else ""
    units, rest = divmod(abs(micro), 1_000_000)
    return f"{micro:,} ({sign}{units}.{rest:06d} units)"


@app.command("topup")
def topup_(
    context: typer.Context,
    account: str = typer.Argument(..., help="Consumer account name"),
    amount: int = typer.Argument(..., help="Micro-units to add (1 unit = 1,000,000)"),
    transfer_id: str = typer.Option(
        "", "--id", help="Your id for this top-up: repeating it never credits twice"
    ),
    memo: str = typer.Option("", help="A note kept with the transfer (e.g. an invoice number)"),
) -> None:
    """Credit a consumer with money paid in from outside.

    Example: viz ledger topup bob 5000000 --id invoice-2026-0042
    """
    with session(context) as database:
        posted = topup(database, account, amount, transfer_id=transfer_id, memo=memo[:200])
        balance = balances(database, f"consumer:{account}")[0]
    verb = "already recorded" if posted.replayed else "topped up"
    typer.echo(f"{verb}: {account} +{money(posted.amount)} (transfer {posted.id})")
    typer.echo(f"balance: {money(balance.posted)}")


@app.command("meter")
def meter(
    context: typer.Context,
    consumer: str = typer.Option(..., help="Paying account"),
    adapter: list[str] = typer.Option(
        [], "--adapter", "-a", help="NAME[@VERSION][:WEIGHT], repeatable (newest version, 1.0)"
    ),
    tokens_in: int = typer.Option(..., help="Prompt tokens"),
    tokens_out: int = typer.Option(..., help="Generated tokens"),
    cite: list[int] = typer.Option([], "--cite", help="Cited document id (repeatable)"),
    base: str | None = typer.Option(None, help="Base id (default: the adapters' base)"),
    request_id: str = typer.Option("", help="Idempotency key: the same id settles once"),
) -> None:
    """Record and settle one served request (what `viz serve` does for each request).

    Example: viz ledger meter --consumer bob -a qasper-nlp:0.7 --tokens-in 120 --tokens-out 80
    """
    settings = state(context).settings
    with session(context) as database:
        uses = []
        bases = set()
        for text in adapter:
            reference, _, weight = text.partition(":")
            version = find_version(database, reference)
            uses.append(AdapterUse(version.adapter.name, version.version, weight or "1"))
            bases.add(version.adapter.base_id)
        if len(bases) > 1:
            raise InvalidInput(f"the adapters adapt different bases ({', '.join(sorted(bases))})")
        usage = Usage(
            request_id=request_id or f"cli-{uuid.uuid4().hex}",
            consumer=consumer,
            base=base or (bases.pop() if bases else settings.default_base_model),
            tokens_in=tokens_in,
            tokens_out=tokens_out,
            composition=tuple(uses),
            citations=tuple(cite),
        )
        settled = settle(database, usage, fee_bps=settings.platform_fee_bps)
    verb = "already settled" if settled.replayed else "settled"
    typer.echo(f"{verb} request {settled.request_id}: charged {consumer} {money(settled.charge)}")
    rows = [
        [
            line.account,
            line.kind,
            line.adapter or (f"document {line.document_id}" if line.document_id else ""),
            money(line.amount),
        ]
        for line in settled.lines
    ]
    typer.echo(table(rows, ["to", "kind", "for", "micro-units"]))


@app.command("balance")
def balance(
    context: typer.Context,
    account: str = typer.Argument(..., help="Account name, or a ledger code (platform, escrow)"),
) -> None:
    """Balances of an account's ledger accounts (consumer and creator).

    Example: viz ledger balance bob
    """
    with session(context) as database:
        found = balances(database, account)
    rows = [
        [
            b.code,
            money(b.posted),
            f"{b.pending_debits:,}",
            money(b.available) if b.kind != "external" else "-",
        ]
        for b in found
    ]
    typer.echo(table(rows, ["account", "balance", "reserved", "available"]))


@app.command("history")
def history_(
    context: typer.Context,
    account: str = typer.Argument(..., help="Account name or ledger code"),
    limit: int = typer.Option(20, help="Newest transfers to show"),
) -> None:
    """The newest transfers of an account, newest first.

    Example: viz ledger history bob --limit 10
    """
    with session(context) as database:
        rows = []
        for code in resolve_codes(database, account):
            for entry in history(database, code, limit=limit):
                when = datetime.fromtimestamp(entry.timestamp_us / 1e6, UTC)
                rows.append(
                    [
                        f"{when:%Y-%m-%d %H:%M:%S}",
                        code,
                        f"{entry.amount:+,}",
                        f"{entry.kind}/{entry.phase}",
                        entry.counterparty,
                        entry.request_id or entry.transfer_id,
                    ]
                )
    if not rows:
        typer.echo(f"{account}: no transfers yet")
        return
    typer.echo(table(rows, ["time (UTC)", "account", "micro-units", "what", "with", "reference"]))


@app.command("statement")
def statement_(
    context: typer.Context, creator: str = typer.Argument(..., help="Creator account name")
) -> None:
    """A creator's earnings per adapter and per document, payouts and balance.

    Example: viz ledger statement ada
    """
    with session(context) as database:
        found = statement(database, creator)
    typer.echo(f"earnings statement of {creator}")
    if found.per_adapter:
        typer.echo(
            table(
                [[name, f"{n:,}", money(amount)] for name, n, amount in found.per_adapter],
                ["adapter", "requests", "earned"],
            )
        )
    if found.per_document:
        typer.echo(
            table(
                [[name, f"{n:,}", money(amount)] for name, n, amount in found.per_document],
                ["document", "citations", "earned"],
            )
        )
    typer.echo(f"earned:    {money(found.earned)}")
    typer.echo(f"paid out:  {money(found.paid_out)}")
    if found.pending_payout:
        typer.echo(f"paying:    {money(found.pending_payout)}")
    typer.echo(f"balance:   {money(found.balance)}")


@app.command("payout")
def payout_(
    context: typer.Context,
    creator: str = typer.Argument(..., help="Creator account name"),
    minimum: int = typer.Option(1, "--min", help="Pay only if at least this many micro-units"),
) -> None:
    """Pay a creator's available earnings to the outside world (recorded; see README).

    Example: viz ledger payout ada --min 1000000
    """
    result = payout(state(context).engine(), creator, minimum=minimum)
    if result is None:
        typer.echo(f"nothing paid: {creator} has less than {money(minimum)} available")
        return
    typer.echo(f"paid {creator} {money(result.amount)}: transfer {result.transfer_id}")
    typer.echo(f"provider reference: {result.reference}")


@app.command("credit-limit")
def credit_limit(
    context: typer.Context,
    account: str = typer.Argument(..., help="Consumer account name"),
    limit: int = typer.Argument(..., help="Micro-units it may owe (0: prepaid only)"),
) -> None:
    """Let a consumer spend beyond its balance, up to a limit.

    Example: viz ledger credit-limit bob 1000000
    """
    with session(context) as database:
        set_credit_limit(database, account, limit)
    typer.echo(f"consumer:{account} may now owe up to {money(limit)}")


@app.command("release-escrow")
def release_escrow_(
    context: typer.Context,
    reference: str = typer.Argument(..., help="NAME@VERSION of the adapter taken down"),
    to: str = typer.Option(..., help="creator (after a restore) | consumers (takedown upheld)"),
) -> None:
    """Pay what a taken-down adapter version earned in escrow to its creator or the consumers.

    Example: viz ledger release-escrow qasper-nlp@1.0.0 --to creator
    """
    with session(context) as database:
        released = release_escrow(database, find_version(database, reference), to=to)
    typer.echo(
        f"released {released.shares} escrowed share(s) of {reference} to the {to}: "
        f"{money(released.amount)}"
        + (f" ({released.already_released} released before)" if released.already_released else "")
    )


@app.command("expire")
def expire(context: typer.Context) -> None:
    """Release reservations past their timeout (also done before each new reservation).

    Example: viz ledger expire
    """
    with session(context) as database:
        expired = expire_overdue(database)
    typer.echo(f"expired {len(expired)} reservation(s)")


@app.command("verify")
def verify(context: typer.Context) -> None:
    """Recompute balances from the transfers and check every invariant and the public log.

    Example: viz ledger verify
    """
    with session(context) as database:
        report = verify_ledger(database)
    typer.echo(
        f"ledger verified: {report.transfers:,} transfers, {report.accounts} accounts, "
        f"{report.usage_events:,} usage events, {report.batches:,} log batches; "
        f"debits = credits = {report.total_posted:,}; chain {report.chain[:16]}..."
    )
    if report.unanchored:
        typer.echo(
            f"{report.unanchored:,} recent transfer(s) await their anchor in the public log "
            "(a running gateway anchors them within seconds; or: viz ledger anchor)"
        )


@app.command("anchor")
def anchor(context: typer.Context) -> None:
    """Anchor the transfers written since the last anchor in the public log now (a gateway does
    this every VIZ_LEDGER_ANCHOR_INTERVAL_S; run it after a crash left some unanchored).

    Example: viz ledger anchor
    """
    with session(context) as database:
        entry = anchor_ledger(database)
        done = json.loads(entry.data) if entry is not None else None
    if done is None:
        typer.echo("every transfer is anchored already")
    else:
        typer.echo(
            f"anchored transfers {done['first_seq']:,}..{done['last_seq']:,} in log entry "
            f"{entry.index if entry else ''} (chain {done['chain'][:16]}...)"
        )
