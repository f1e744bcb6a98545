"""The ledger: double-entry accounts and transfers, metering -> royalties, payouts, verify.

Money is an integer count of micro-units (1 unit = 1,000,000). See `transfers` for the rules a
transfer obeys, `pricing` for how a charge is split, `metering` for usage events, `requests` for
what the ledger knows of one request, `verify` for what `viz ledger verify` checks, `shares` for
the royalty shares a merged version pays its contributors.
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
from viz.ledger.escrow import Release, release_escrow
from viz.ledger.metering import (
    AdapterUse,
    BatchOutcome,
    Line,
    Settlement,
    Usage,
    quote,
    reserve,
    settle,
    settle_batch,
    void_reservation,
)
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
from viz.ledger.shares import set_version_shares, version_shares
from viz.ledger.statements import Entry, Statement, balances, history, resolve_codes, statement
from viz.ledger.transfers import AMOUNT_MAX, Book, Posted, Transfer
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
    "balances",
    "consumer_code",
    "creator_code",
    "expire_overdue",
    "history",
    "payout",
    "quote",
    "release_escrow",
    "request_state",
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
