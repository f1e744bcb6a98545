"""The ledger: double-entry accounts and transfers, usage -> royalties, payouts, verify.

Money is an integer count of micro-units (1 unit = 1,000,000). By noun:

- `accounts`: ledger accounts and their codes; `transfers`: what a transfer is and the rules it
  obeys; `chain`: the hash chain over stored transfers; `book`: one write transaction applying
  transfers against running balances; `book_rows`: the rows the book reads and writes;
- `usage`: what a served request used and was charged; `pricing`: the price lookup and how a
  charge is split; `reservations`: funds held before serving; `settlement`: a usage event settled
  into royalties; `usage_events`: the stored events that make settling idempotent;
- `shares`: the royalty shares a merged version pays its contributors; `escrow`: what a
  taken-down version earned; `payouts`: money in and out; `statements`: balances and history;
  `verify`: what `viz ledger verify` checks; `requests`: what the ledger knows of one request
  (charged, held, voided), for the gateway.
"""

from viz.ledger.accounts import (
    CLEARING,
    ESCROW,
    EXTERNAL,
    PLATFORM,
    Balance,
    consumer_code,
    creator_code,
    set_credit_limit,
)
from viz.ledger.anchors import anchor_ledger
from viz.ledger.book import Book
from viz.ledger.escrow import Release, release_escrow
from viz.ledger.payouts import (
    PayoutOrder,
    PayoutProvider,
    PayoutResult,
    RecordOnly,
    expire_overdue,
    payout,
    topup,
    transfer,
    transfer_group,
)
from viz.ledger.requests import RequestState, request_state
from viz.ledger.reservations import quote, reservation_state, reserve, void_reservation
from viz.ledger.settlement import BatchOutcome, settle, settle_batch
from viz.ledger.shares import set_version_shares, version_shares
from viz.ledger.statements import Entry, Statement, balances, history, resolve_codes, statement
from viz.ledger.transfers import AMOUNT_MAX, Posted, Transfer
from viz.ledger.usage import AdapterUse, Line, Settlement, Usage
from viz.ledger.verify import Report, verify_ledger

__all__ = [
    "AMOUNT_MAX",
    "CLEARING",
    "ESCROW",
    "EXTERNAL",
    "PLATFORM",
    "AdapterUse",
    "Balance",
    "BatchOutcome",
    "Book",
    "Entry",
    "Line",
    "PayoutOrder",
    "PayoutProvider",
    "PayoutResult",
    "Posted",
    "RecordOnly",
    "Release",
    "Report",
    "RequestState",
    "Settlement",
    "Statement",
    "Transfer",
    "Usage",
    "anchor_ledger",
    "balances",
    "consumer_code",
    "creator_code",
    "expire_overdue",
    "history",
    "payout",
    "quote",
    "release_escrow",
    "request_state",
    "reservation_state",
    "reserve",
    "resolve_codes",
    "set_credit_limit",
    "set_version_shares",
    "settle",
    "settle_batch",
    "statement",
    "topup",
    "transfer",
    "transfer_group",
    "verify_ledger",
    "version_shares",
    "void_reservation",
]
