"""The ledger's hash chain: every stored transfer extends one SHA-256 chain, so altering, removing
or reordering any stored transfer breaks every chain hash after it (`viz ledger verify` recomputes
it; each batch's chain hash is also anchored in the public log).

    chain(seq) = SHA-256(bytes of chain(seq - 1) || canonical_line(transfer seq)),
    chain(0) = GENESIS
"""

from __future__ import annotations

import hashlib
from json.encoder import encode_basestring  # type: ignore[attr-defined]

from viz.ledger.transfers import Posted

__all__ = ["GENESIS", "canonical_line", "chain_next"]

GENESIS = "0" * 64


def canonical_line(posted: Posted, pending_seq: int | None) -> bytes:
    """The bytes a transfer contributes to the hash chain: the compact JSON array (as
    `json.dumps(fields, separators=(",", ":"), ensure_ascii=False)` writes it) of
    [seq, id, debit, credit, amount, phase, pending_seq, expires_at_us, kind, request_id,
    adapter_version_id, document_id, memo, timestamp_us]."""
    fields = (
        posted.seq,
        posted.id,
        posted.debit,
        posted.credit,
        posted.amount,
        posted.phase,
        pending_seq,
        posted.expires_at_us,
        posted.kind,
        posted.request_id,
        posted.adapter_version_id,
        posted.document_id,
        posted.memo,
        posted.timestamp_us,
    )
    return ("[" + ",".join(map(_json, fields)) + "]").encode()


def _json(value: str | int | None) -> str:
    if value is None:
        return "null"
    if isinstance(value, str):
        return encode_basestring(value)  # what json.dumps(ensure_ascii=False) uses, in C
    return str(int(value))


def chain_next(previous: str, line: bytes) -> str:
    """The chain hash after a transfer whose `canonical_line` is `line` (hex in, hex out)."""
    return hashlib.sha256(bytes.fromhex(previous) + line).hexdigest()
