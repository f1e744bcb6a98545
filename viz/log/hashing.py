"""The RFC 6962 definitions a transparency log rests on: hashes, the tree's root, valid input.

A log commits to its ordered leaves with one 32-byte root hash per tree size (RFC 6962 section 2.1,
unchanged in RFC 9162 section 2.1): MTH of one leaf is its leaf hash, SHA-256(0x00 || entry); MTH of
n > 1 leaves is SHA-256(0x01 || MTH(D[0:k]) || MTH(D[k:n])) with k the largest power of two below
n. `root_hash` computes it as written, over a list of leaf hashes (O(n) hashes: for an export or a
signature, not per request; `viz.log.tree.MerkleTree` answers in O(log n)).

The checks here are the definition of valid input shared by the verifiers (`viz.log.verifiers`)
and the tree (`viz.log.tree`): sizes and indexes are RFC 9162's uint64, hashes are 32 bytes, a
subtree [start, end) starts on a multiple of BIT_CEIL(end - start). Every failure raises
`ProofError`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from viz.errors import InvalidInput

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "PROOF_HASHES_MAX",
    "TREE_SIZE_MAX",
    "ProofError",
    "check_count",
    "check_hash",
    "check_leaf_index",
    "check_old_size",
    "check_proof",
    "check_subtree",
    "is_valid_subtree",
    "leaf_hash",
    "node_hash",
    "root_hash",
    "split_point",
]

HASH_SIZE = 32
"""Bytes in a SHA-256 hash: every leaf, node and proof hash."""

TREE_SIZE_MAX = 2**64 - 1
"""RFC 9162 tree sizes and leaf indexes are uint64."""

PROOF_HASHES_MAX = 2 * 64
"""No proof for a tree of at most TREE_SIZE_MAX leaves holds more hashes than this."""

EMPTY_ROOT = hashlib.sha256(b"").digest()
"""MTH({}) = SHA-256(""), the root of the empty tree."""


class ProofError(InvalidInput):
    """A Merkle proof, or the sizes, indexes and hashes that come with it, does not check out."""


# --- hashes -------------------------------------------------------------------------------------


def leaf_hash(data: bytes) -> bytes:
    """SHA-256(0x00 || data): the hash of one log entry (RFC 6962 section 2.1)."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right): the hash of an interior node."""
    return hashlib.sha256(b"\x01" + left + right).digest()


# --- the RFC 6962 definitions over a list of leaf hashes ----------------------------------------


def root_hash(leaf_hashes: Sequence[bytes]) -> bytes:
    """MTH(D[n]): the root of the tree over these leaf hashes; O(n) hashes.

    Args:
        leaf_hashes: `leaf_hash` of each entry, in log order.
    """
    if not leaf_hashes:
        return EMPTY_ROOT
    return _range_root(leaf_hashes, 0, len(leaf_hashes))


def split_point(size: int) -> int:
    """The largest power of two smaller than `size` (size >= 2): where RFC 6962 splits a tree."""
    return 1 << ((size - 1).bit_length() - 1)


def is_valid_subtree(start: int, end: int) -> bool:
    """Whether [start, end) is a subtree: `start` is a multiple of BIT_CEIL(end - start).

    Every node of an RFC 6962 tree is one, and so is any [0, x) and any empty [x, x).
    """
    if start > end:
        return False
    size = end - start
    return size == 0 or start % (1 << (size - 1).bit_length()) == 0


def _range_root(leaf_hashes: Sequence[bytes], start: int, end: int) -> bytes:
    if end - start == 1:
        return leaf_hashes[start]
    middle = start + split_point(end - start)
    return node_hash(_range_root(leaf_hashes, start, middle), _range_root(leaf_hashes, middle, end))


# --- valid input: sizes, indexes, hashes, subtrees ---------------------------------------------


def check_count(name: str, value: int) -> None:
    """A size or index: an int in [0, TREE_SIZE_MAX]."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProofError(f"{name} must be an integer, got {value!r:.80}")
    if not 0 <= value <= TREE_SIZE_MAX:
        raise ProofError(f"{name} {value} is outside [0, {TREE_SIZE_MAX}]")


def check_hash(name: str, value: bytes) -> None:
    if not isinstance(value, bytes) or len(value) != HASH_SIZE:
        shown = f"{len(value)} bytes" if isinstance(value, bytes) else type(value).__name__
        raise ProofError(f"{name} must be {HASH_SIZE} bytes of SHA-256, got {shown}")


def check_proof(proof: Sequence[bytes]) -> None:
    if len(proof) > PROOF_HASHES_MAX:
        raise ProofError(f"a proof holds at most {PROOF_HASHES_MAX} hashes, got {len(proof)}")
    for position, hash_ in enumerate(proof):
        check_hash(f"proof hash {position}", hash_)


def check_leaf_index(index: int, tree_size: int) -> None:
    check_count("leaf index", index)
    if index >= tree_size:
        raise ProofError(
            f"leaf index {index} is not in a tree of {tree_size} leaves: an index is below "
            "the tree size; ask for a proof against a later checkpoint"
        )


def check_old_size(old_size: int, new_size: int) -> None:
    check_count("old size", old_size)
    if old_size > new_size:
        raise ProofError(
            f"old size {old_size} is larger than new size {new_size}: a log only "
            "grows; swap them or fetch a newer checkpoint"
        )
    if old_size == 0:
        raise ProofError(
            "no consistency proof starts at the empty tree: every tree extends it; "
            "check the new checkpoint's signature instead"
        )


def check_subtree(start: int, end: int) -> None:
    check_count("subtree start", start)
    check_count("subtree end", end)
    if not is_valid_subtree(start, end):
        raise ProofError(
            f"[{start}, {end}) is not a subtree: start must be at most end and a "
            "multiple of the smallest power of two >= end - start"
        )
