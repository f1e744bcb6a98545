"""The public log in the database: append events, sign checkpoints, prove, export, verify.

Each event (publish, approve, takedown, restore; the ledger's batches later) is a leaf: the
canonical JSON of the event, hashed as RFC 6962 says (SHA-256(0x00 || data)). A checkpoint is the
tree size and root, signed with the log's Ed25519 key (kept in `<VIZ_HOME>/log/signing-key.pem`,
created on first use). `export_log` writes every entry plus a signed checkpoint to one JSON file
that `verify_export` checks offline, with no database and no network.
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

from viz.errors import InvalidInput, NotFound
from viz.log.hashing import ProofError, leaf_hash, root_hash
from viz.log.tree import MerkleTree
from viz.log.verifiers import verify_consistency, verify_inclusion
from viz.store.database import write_lock
from viz.store.schema import LogEntry

__all__ = [
    "Checkpoint",
    "append_entry",
    "export_log",
    "load_signing_key",
    "prove_consistency",
    "prove_entry",
    "sign_checkpoint",
    "verify_export",
    "verify_proof",
]

LOG_ORIGIN = "viz-log/v1"
EXPORT_FORMAT = 1


@dataclass(frozen=True)
class Checkpoint:
    """A signed statement: the log had `size` entries with this `root`."""

    origin: str
    size: int
    root: str  # hex
    time: str
    public_key: str  # base64 raw Ed25519
    signature: str  # base64 over `body()`

    def body(self) -> bytes:
        return f"{self.origin}\n{self.size}\n{self.root}\n{self.time}\n".encode()


def append_entry(session: Session, kind: str, payload: dict[str, Any]) -> LogEntry:
    """Append one event; its index is the next free one (appends are serialised)."""
    write_lock(session, "log")
    index = session.scalar(select(func.coalesce(func.max(LogEntry.index) + 1, 0)))
    event = {"kind": kind, "time": datetime.now(UTC).isoformat(timespec="seconds"), **payload}
    data = json.dumps(event, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    entry = LogEntry(
        index=index,
        kind=kind,
        data=data,
        leaf_hash=leaf_hash(data.encode()).hex(),
        created_at=datetime.now(UTC),
    )
    session.execute(
        insert(LogEntry.metadata.tables["log_entries"]),
        [{c: getattr(entry, c) for c in ("index", "kind", "data", "leaf_hash", "created_at")}],
    )
    return entry


def sign_checkpoint(session: Session, key_path: Path) -> Checkpoint:
    """Sign the current size and root with the log key."""
    hashes = _leaf_hashes(session)
    return _sign(load_signing_key(key_path), len(hashes), root_hash(hashes))


def prove_entry(session: Session, index: int, key_path: Path) -> dict[str, Any]:
    """The entry, its inclusion proof and a signed checkpoint it verifies against."""
    hashes = _leaf_hashes(session)
    if not 0 <= index < len(hashes):
        raise NotFound(f"no log entry {index}; the log has {len(hashes)} entries")
    tree = MerkleTree(hashes)
    entry = session.get(LogEntry, index)
    assert entry is not None
    checkpoint = _sign(load_signing_key(key_path), tree.size, tree.root())
    return {
        "index": index,
        "data": entry.data,
        "proof": [node.hex() for node in tree.inclusion_proof(index)],
        "checkpoint": asdict(checkpoint),
    }


def prove_consistency(session: Session, old_size: int, key_path: Path) -> dict[str, Any]:
    """A proof that the log of `old_size` entries is a prefix of today's, with today's
    signed checkpoint: what an auditor who saved an old checkpoint asks for."""
    hashes = _leaf_hashes(session)
    if not 0 < old_size <= len(hashes):
        raise NotFound(f"old size {old_size} must be 1..{len(hashes)} (the log's size)")
    tree = MerkleTree(hashes)
    checkpoint = _sign(load_signing_key(key_path), tree.size, tree.root())
    return {
        "old_size": old_size,
        "old_root": tree.root(old_size).hex(),
        "consistency": [node.hex() for node in tree.consistency_proof(old_size)],
        "checkpoint": asdict(checkpoint),
    }


def export_log(session: Session, path: Path, key_path: Path) -> Checkpoint:
    """Write every entry and a signed checkpoint to `path` (JSON)."""
    entries = list(session.scalars(select(LogEntry).order_by(LogEntry.index)))
    checkpoint = _sign(
        load_signing_key(key_path),
        len(entries),
        root_hash([bytes.fromhex(e.leaf_hash) for e in entries]),
    )
    document = {
        "format": EXPORT_FORMAT,
        "checkpoint": asdict(checkpoint),
        "entries": [{"index": e.index, "data": e.data} for e in entries],
    }
    path.write_text(json.dumps(document, indent=1))
    return checkpoint


def verify_export(path: Path, *, trusted_public_key: str | None = None) -> Checkpoint:
    """Recompute the root of an exported log and check the checkpoint's signature.

    Raises:
        InvalidInput: unreadable file, missing or reordered entries, wrong root, bad signature,
            or a key other than the trusted one.
    """
    try:
        document = json.loads(path.read_text())
        checkpoint = Checkpoint(**document["checkpoint"])
        entries = document["entries"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise InvalidInput(f"{path} is not an exported Viz log: {error}") from error
    if [e.get("index") for e in entries] != list(range(len(entries))):
        raise InvalidInput(f"{path}: entries are missing or out of order")
    if len(entries) != checkpoint.size:
        raise InvalidInput(f"{path}: {len(entries)} entries, the checkpoint says {checkpoint.size}")
    computed = root_hash([leaf_hash(e["data"].encode()) for e in entries]).hex()
    if computed != checkpoint.root:
        raise InvalidInput(
            f"{path}: the entries hash to root {computed}, the checkpoint says "
            f"{checkpoint.root}: the log was altered"
        )
    if trusted_public_key and trusted_public_key != checkpoint.public_key:
        raise InvalidInput(
            f"{path}: signed by key {checkpoint.public_key}, not the trusted {trusted_public_key}"
        )
    _verify_signature(checkpoint)
    return checkpoint


def verify_proof(proof: dict[str, Any], *, trusted_public_key: str | None = None) -> None:
    """Check a `prove_entry` or `prove_consistency` result offline: signature, then proof."""
    checkpoint = Checkpoint(**proof["checkpoint"])
    if trusted_public_key and trusted_public_key != checkpoint.public_key:
        raise InvalidInput("the proof's checkpoint is signed by another key")
    _verify_signature(checkpoint)
    if "consistency" in proof:
        verify_consistency(
            proof["old_size"],
            checkpoint.size,
            bytes.fromhex(proof["old_root"]),
            bytes.fromhex(checkpoint.root),
            [bytes.fromhex(h) for h in proof["consistency"]],
        )
        return
    verify_inclusion(
        leaf_hash(proof["data"].encode()),
        proof["index"],
        checkpoint.size,
        [bytes.fromhex(h) for h in proof["proof"]],
        bytes.fromhex(checkpoint.root),
    )


def load_signing_key(path: Path) -> Any:
    """The log's Ed25519 private key, created (mode 0600) on first use."""
    # deferred: cryptography loads OpenSSL (~30 ms); only signing and checking need it
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        pem = Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as file:
            file.write(pem)
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise InvalidInput(f"{path} is not an Ed25519 private key")
    return key


def _sign(key: Any, size: int, root: bytes) -> Checkpoint:
    # deferred: cryptography loads OpenSSL (~30 ms); only signing and checking need it
    from cryptography.hazmat.primitives import serialization

    public = key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    unsigned = Checkpoint(
        LOG_ORIGIN,
        size,
        root.hex(),
        datetime.now(UTC).isoformat(timespec="seconds"),
        base64.b64encode(public).decode(),
        "",
    )
    signature = base64.b64encode(key.sign(unsigned.body())).decode()
    return Checkpoint(**{**asdict(unsigned), "signature": signature})


def _verify_signature(checkpoint: Checkpoint) -> None:
    # deferred: cryptography loads OpenSSL (~30 ms); only signing and checking need it
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        public = Ed25519PublicKey.from_public_bytes(base64.b64decode(checkpoint.public_key))
        public.verify(base64.b64decode(checkpoint.signature), checkpoint.body())
    except (InvalidSignature, ValueError) as error:
        raise ProofError(
            "the checkpoint's signature does not verify: it was altered or signed by another key"
        ) from error


def _leaf_hashes(session: Session) -> list[bytes]:
    rows = session.scalars(select(LogEntry.leaf_hash).order_by(LogEntry.index))
    return [bytes.fromhex(row) for row in rows]
