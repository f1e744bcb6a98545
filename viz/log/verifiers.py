"""Checking Merkle proofs: what a log's client runs, with only the proof and the hashes it trusts.

- an inclusion proof: leaf `index` is in the tree of `tree_size` leaves with this root;
- a consistency proof: the tree of `old_size` leaves is a prefix of the tree of `new_size` leaves,
  so the log only ever appended.

`verify_inclusion` and `verify_consistency` are iterative, as in RFC 9162 sections 2.1.3.2 and
2.1.4.2: they hash one node per proof hash and never need the tree. `verify_subtree_inclusion` and
`verify_subtree_consistency` check the subtree proofs of Merkle Tree Certificates
(draft-ietf-plants-merkle-tree-certs, "Subtrees"), which generalise both.

Verifiers take hashes as `bytes`. Proof hashes and leaf hashes must be 32 bytes; roots are only
compared, so a malformed root never matches a computed one (two equal roots for one size pass, as
in the reference vectors). Every failure raises `ProofError`.
"""

from __future__ import annotations

from collections.abc import Sequence

from viz.log.hashing import (
    EMPTY_ROOT,
    ProofError,
    check_count,
    check_hash,
    check_leaf_index,
    check_old_size,
    check_proof,
    check_subtree,
    node_hash,
)

__all__ = [
    "verify_consistency",
    "verify_inclusion",
    "verify_subtree_consistency",
    "verify_subtree_inclusion",
]

RETRY_HINT = "fetch both again; a signed checkpoint that still fails is evidence against the log"


def verify_inclusion(
    leaf_hash: bytes, index: int, tree_size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Check that leaf `index` with this hash is in the tree of `tree_size` leaves with `root`.

    RFC 9162 section 2.1.3.2, which hashes len(proof) nodes and needs no tree.

    Raises:
        ProofError: a malformed argument, an index outside the tree, a proof of the wrong length,
            or a proof that does not lead to `root`.
    """
    check_hash("leaf hash", leaf_hash)
    check_proof(proof)
    check_count("tree size", tree_size)
    check_leaf_index(index, tree_size)
    context = f"inclusion proof for leaf {index} of {tree_size}"
    computed = _root_from_inclusion_proof(leaf_hash, index, tree_size, proof, context)
    if computed != root:
        raise _mismatch(context, "root", computed, root)


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    """Check that the tree of `old_size` leaves is a prefix of the tree of `new_size` leaves.

    RFC 9162 section 2.1.4.2. Equal sizes need an empty proof and equal roots. An `old_size` of 0
    is refused: every tree extends the empty one, so such a proof would prove nothing.

    Raises:
        ProofError: malformed arguments, sizes that go back in time or start at 0, a proof of the
            wrong length, or a proof that does not lead to both roots.
    """
    check_count("new size", new_size)
    check_proof(proof)
    check_old_size(old_size, new_size)
    context = f"consistency proof from {old_size} to {new_size} leaves"
    if old_size == new_size:
        if proof:
            raise _wrong_length(context, proof, "long: equal sizes need none")
        if old_root != new_root:
            raise _mismatch(context, "root", old_root, new_root)
        return
    if not proof:
        raise _wrong_length(context, proof, "short")
    old_computed, new_computed = _roots_from_consistency_proof(
        old_size, new_size, old_root, proof, context
    )
    if old_computed != old_root:
        raise _mismatch(context, "old root", old_computed, old_root)
    if new_computed != new_root:
        raise _mismatch(context, "new root", new_computed, new_root)


def verify_subtree_inclusion(
    leaf_hash: bytes, index: int, start: int, end: int, proof: Sequence[bytes], subtree_root: bytes
) -> None:
    """Check that leaf `index` is in the subtree [start, end) whose hash is `subtree_root`.

    Merkle Tree Certificates, "Verifying a Subtree Inclusion Proof": an RFC 9162 inclusion proof
    for leaf `index - start` of the `end - start` leaves of the subtree.

    Raises:
        ProofError: malformed arguments, an invalid subtree, an index outside it, or a proof that
            does not lead to `subtree_root`.
    """
    check_hash("leaf hash", leaf_hash)
    check_proof(proof)
    check_subtree(start, end)
    if not start <= index < end:
        raise ProofError(f"leaf {index} is outside the subtree [{start}, {end})")
    context = f"inclusion proof for leaf {index} of subtree [{start}, {end})"
    computed = _root_from_inclusion_proof(leaf_hash, index - start, end - start, proof, context)
    if computed != subtree_root:
        raise _mismatch(context, "subtree hash", computed, subtree_root)


def verify_subtree_consistency(
    start: int,
    end: int,
    tree_size: int,
    subtree_root: bytes,
    root: bytes,
    proof: Sequence[bytes],
) -> None:
    """Check that the subtree [start, end) with `subtree_root` is part of the tree with `root`.

    Merkle Tree Certificates, "Verifying a Subtree Consistency Proof". With `start` 0 this is an
    RFC 9162 consistency proof from `end` to `tree_size` leaves. An empty subtree (start = end)
    needs an empty proof and the empty root, whatever `root` is.

    Raises:
        ProofError: malformed arguments, an invalid subtree or one past the tree, a proof of the
            wrong length, or a proof that does not lead to both hashes.
    """
    check_count("tree size", tree_size)
    check_proof(proof)
    check_subtree(start, end)
    if end > tree_size:
        raise ProofError(f"subtree [{start}, {end}) ends past the tree of {tree_size} leaves")
    context = f"consistency proof for subtree [{start}, {end}) of {tree_size} leaves"
    if start == end:
        if proof:
            raise _wrong_length(context, proof, "long: an empty subtree needs none")
        if subtree_root != EMPTY_ROOT:
            raise _mismatch(context, "subtree hash", EMPTY_ROOT, subtree_root)
        return
    subtree_computed, root_computed = _roots_from_subtree_consistency_proof(
        start, end, tree_size, subtree_root, proof, context
    )
    if subtree_computed != subtree_root:
        raise _mismatch(context, "subtree hash", subtree_computed, subtree_root)
    if root_computed != root:
        raise _mismatch(context, "root", root_computed, root)


def _root_from_inclusion_proof(
    leaf_hash: bytes, index: int, tree_size: int, proof: Sequence[bytes], context: str
) -> bytes:
    """RFC 9162 section 2.1.3.2 steps 2-5: the root the proof leads to, length checked."""
    assert 0 <= index < tree_size
    first, last, result = index, tree_size - 1, leaf_hash
    for sibling in proof:
        if last == 0:
            raise _wrong_length(context, proof, "long")
        if first & 1 or first == last:
            result = node_hash(sibling, result)
            while first & 1 == 0 and first != 0:
                first, last = first >> 1, last >> 1
        else:
            result = node_hash(result, sibling)
        first, last = first >> 1, last >> 1
    if last != 0:
        raise _wrong_length(context, proof, "short")
    return result


def _roots_from_consistency_proof(
    old_size: int, new_size: int, old_root: bytes, proof: Sequence[bytes], context: str
) -> tuple[bytes, bytes]:
    """RFC 9162 section 2.1.4.2 steps 2-7 for 0 < old_size < new_size: (old root, new root)."""
    assert 0 < old_size < new_size
    path = [old_root, *proof] if old_size & (old_size - 1) == 0 else list(proof)
    first, last = old_size - 1, new_size - 1
    while first & 1:
        first, last = first >> 1, last >> 1
    old_computed = new_computed = path[0]
    for hash_ in path[1:]:
        if last == 0:
            raise _wrong_length(context, proof, "long")
        if first & 1 or first == last:
            old_computed = node_hash(hash_, old_computed)
            new_computed = node_hash(hash_, new_computed)
            while first & 1 == 0 and first != 0:
                first, last = first >> 1, last >> 1
        else:
            new_computed = node_hash(new_computed, hash_)
        first, last = first >> 1, last >> 1
    if last != 0:
        raise _wrong_length(context, proof, "short")
    return old_computed, new_computed


def _roots_from_subtree_consistency_proof(
    start: int,
    end: int,
    tree_size: int,
    subtree_root: bytes,
    proof: Sequence[bytes],
    context: str,
) -> tuple[bytes, bytes]:
    """The draft's steps 3-9 for a non-empty subtree: (subtree hash, root) the proof leads to."""
    assert start < end <= tree_size
    first, last, tree_last = start, end - 1, tree_size - 1
    # Climb to the lowest node on the subtree's right edge that is also a node of the tree.
    if last == tree_last:
        while first != last:
            first, last, tree_last = first >> 1, last >> 1, tree_last >> 1
    else:
        while first != last and last & 1:
            first, last, tree_last = first >> 1, last >> 1, tree_last >> 1
    if first == last:  # the verifier knows that node's hash: it is the subtree's
        subtree_computed = root_computed = subtree_root
        rest = proof
    elif proof:
        subtree_computed = root_computed = proof[0]
        rest = proof[1:]
    else:
        raise _wrong_length(context, proof, "short")
    for hash_ in rest:
        if tree_last == 0:
            raise _wrong_length(context, proof, "long")
        if last & 1 or last == tree_last:
            if first < last:
                subtree_computed = node_hash(hash_, subtree_computed)
            root_computed = node_hash(hash_, root_computed)
            while last & 1 == 0:
                first, last, tree_last = first >> 1, last >> 1, tree_last >> 1
        else:
            root_computed = node_hash(root_computed, hash_)
        first, last, tree_last = first >> 1, last >> 1, tree_last >> 1
    if tree_last != 0:
        raise _wrong_length(context, proof, "short")
    return subtree_computed, root_computed


def _wrong_length(context: str, proof: Sequence[bytes], problem: str) -> ProofError:
    return ProofError(f"{context}: {len(proof)} hashes is too {problem}; {RETRY_HINT}")


def _mismatch(context: str, what: str, computed: bytes, expected: bytes) -> ProofError:
    return ProofError(
        f"{context} leads to {what} {computed.hex()}, not {expected.hex()}; {RETRY_HINT}"
    )
