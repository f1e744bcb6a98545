"""RFC 6962 Merkle trees for a verifiable transparency log: hashes, proofs and their verification.

A log commits to its ordered leaves with one 32-byte root hash per tree size (RFC 6962 section 2.1,
unchanged in RFC 9162 section 2.1). Two proofs let a client check the log without the leaves:

- an inclusion proof: leaf `index` is in the tree of `tree_size` leaves with this root;
- a consistency proof: the tree of `old_size` leaves is a prefix of the tree of `new_size` leaves,
  so the log only ever appended.

This module holds three layers, all pure Python over `hashlib`:

1. The definitions, written as RFC 6962 states them over a list of leaf hashes (`root_hash`,
   `inclusion_proof`, `consistency_proof`). They hash O(n) nodes per call: the reference, and fine
   for small lists.
2. The verifiers (`verify_inclusion`, `verify_consistency`), iterative as in RFC 9162 sections
   2.1.3.2 and 2.1.4.2: they need only the proof, never the tree. `verify_subtree_inclusion` and
   `verify_subtree_consistency` check the subtree proofs of Merkle Tree Certificates
   (draft-ietf-plants-merkle-tree-certs, "Subtrees"), which generalise both.
3. `MerkleTree`, an append-only tree in memory that stores every complete node, so `append` hashes
   one node on average and a root or proof costs O(log n) hashes.

Node addressing, shared with the database-backed log that persists the same nodes:

- Node `(level, index)` is the root of the perfect subtree over leaves
  `[index * 2**level, (index + 1) * 2**level)`. Level 0 holds the leaf hashes; node `(k + 1, i)` is
  `node_hash((k, 2i), (k, 2i + 1))`.
- A node exists once the tree has `(index + 1) * 2**level` leaves and never changes afterwards,
  which is what lets a log store it once. A tree of `n` leaves holds `n >> level` nodes at `level`.
- Any RFC 6962 node, including the "ragged" right-edge nodes of a tree whose size is not a power
  of two, covers a leaf range `[start, end)` that `covering_nodes` splits into at most log2(n)
  stored nodes; `hash_from_nodes` folds their hashes back into the node's hash.
- A proof is a list of such ranges (`subtree_consistency_proof_ranges` and its two special cases),
  computed from the sizes alone, so a store can fetch every node a proof needs in one read.

Verifiers take hashes as `bytes`. Proof hashes and leaf hashes must be 32 bytes; roots are only
compared, so a malformed root never matches a computed one (two equal roots for one size pass, as
in the reference vectors). Every failure raises `ProofError`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from viz.errors import InvalidInput

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "PROOF_HASHES_MAX",
    "TREE_SIZE_MAX",
    "MerkleTree",
    "NodeAddress",
    "ProofError",
    "consistency_proof",
    "consistency_proof_ranges",
    "covering_nodes",
    "hash_from_nodes",
    "hashes_of_ranges",
    "inclusion_proof",
    "inclusion_proof_ranges",
    "is_valid_subtree",
    "leaf_hash",
    "node_hash",
    "root_hash",
    "subtree_consistency_proof_ranges",
    "verify_consistency",
    "verify_inclusion",
    "verify_subtree_consistency",
    "verify_subtree_inclusion",
]

HASH_SIZE = 32
"""Bytes in a SHA-256 hash: every leaf, node and proof hash."""

TREE_SIZE_MAX = 2**64 - 1
"""RFC 9162 tree sizes and leaf indexes are uint64."""

PROOF_HASHES_MAX = 2 * 64
"""No proof for a tree of at most TREE_SIZE_MAX leaves holds more hashes than this."""

EMPTY_ROOT = hashlib.sha256(b"").digest()
"""MTH({}) = SHA-256(""), the root of the empty tree."""

RETRY_HINT = "fetch both again; a signed checkpoint that still fails is evidence against the log"

Range = tuple[int, int]
"""A leaf range [start, end) whose Merkle tree hash MTH(D[start:end]) is one proof hash."""


class ProofError(InvalidInput):
    """A Merkle proof, or the sizes, indexes and hashes that come with it, does not check out."""


@dataclass(frozen=True, slots=True)
class NodeAddress:
    """A stored node: the root of the perfect subtree over leaves `[first_leaf, end_leaf)`."""

    level: int
    index: int

    @property
    def first_leaf(self) -> int:
        return self.index << self.level

    @property
    def end_leaf(self) -> int:
        return (self.index + 1) << self.level


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


def inclusion_proof(leaf_hashes: Sequence[bytes], index: int) -> list[bytes]:
    """PATH(index, D[n]) of RFC 6962 section 2.1.1: sibling hashes from the leaf up; O(n) hashes.

    Raises:
        ProofError: `index` is not a leaf of the tree.
    """
    _check_leaf_index(index, len(leaf_hashes))
    return _path(leaf_hashes, index, 0, len(leaf_hashes))


def consistency_proof(leaf_hashes: Sequence[bytes], old_size: int) -> list[bytes]:
    """PROOF(old_size, D[n]) of RFC 6962 section 2.1.2, n = len(leaf_hashes); O(n) hashes.

    Raises:
        ProofError: `old_size` is 0 (nothing to prove) or larger than the tree.
    """
    _check_old_size(old_size, len(leaf_hashes))
    return _subproof(leaf_hashes, old_size, 0, len(leaf_hashes), old_root_known=True)


def _range_root(leaf_hashes: Sequence[bytes], start: int, end: int) -> bytes:
    if end - start == 1:
        return leaf_hashes[start]
    middle = start + _split(end - start)
    return node_hash(_range_root(leaf_hashes, start, middle), _range_root(leaf_hashes, middle, end))


def _path(leaf_hashes: Sequence[bytes], index: int, start: int, end: int) -> list[bytes]:
    if end - start == 1:
        return []
    middle = start + _split(end - start)
    if index < middle:
        return _path(leaf_hashes, index, start, middle) + [_range_root(leaf_hashes, middle, end)]
    return _path(leaf_hashes, index, middle, end) + [_range_root(leaf_hashes, start, middle)]


def _subproof(
    leaf_hashes: Sequence[bytes], old_size: int, start: int, end: int, old_root_known: bool
) -> list[bytes]:
    """SUBPROOF(m, D[start:end], b) with m = old_size - start; `old_root_known` is b."""
    if old_size == end:
        return [] if old_root_known else [_range_root(leaf_hashes, start, end)]
    middle = start + _split(end - start)
    if old_size <= middle:
        left = _subproof(leaf_hashes, old_size, start, middle, old_root_known)
        return left + [_range_root(leaf_hashes, middle, end)]
    right = _subproof(leaf_hashes, old_size, middle, end, old_root_known=False)
    return right + [_range_root(leaf_hashes, start, middle)]


def _split(size: int) -> int:
    """The largest power of two smaller than `size` (size >= 2): where RFC 6962 splits a tree."""
    return 1 << ((size - 1).bit_length() - 1)


# --- verification -------------------------------------------------------------------------------


def verify_inclusion(
    leaf_hash: bytes, index: int, tree_size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Check that leaf `index` with this hash is in the tree of `tree_size` leaves with `root`.

    RFC 9162 section 2.1.3.2, which hashes len(proof) nodes and needs no tree.

    Raises:
        ProofError: a malformed argument, an index outside the tree, a proof of the wrong length,
            or a proof that does not lead to `root`.
    """
    _check_hash("leaf hash", leaf_hash)
    _check_proof(proof)
    _check_count("tree size", tree_size)
    _check_leaf_index(index, tree_size)
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
    _check_count("new size", new_size)
    _check_proof(proof)
    _check_old_size(old_size, new_size)
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
    _check_hash("leaf hash", leaf_hash)
    _check_proof(proof)
    _check_subtree(start, end)
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
    _check_count("tree size", tree_size)
    _check_proof(proof)
    _check_subtree(start, end)
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


def is_valid_subtree(start: int, end: int) -> bool:
    """Whether [start, end) is a subtree: `start` is a multiple of BIT_CEIL(end - start).

    Every node of an RFC 6962 tree is one, and so is any [0, x) and any empty [x, x).
    """
    if start > end:
        return False
    size = end - start
    return size == 0 or start % (1 << (size - 1).bit_length()) == 0


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


# --- proofs as leaf ranges, and the stored nodes that cover them --------------------------------


def subtree_consistency_proof_ranges(start: int, end: int, tree_size: int) -> list[Range]:
    """SUBTREE_PROOF(start, end, D[tree_size]) of Merkle Tree Certificates, as leaf ranges.

    Proof order: the deepest hash first. Two special cases are the RFC 6962 proofs:
    `consistency_proof_ranges(m, n)` is (0, m, n) and `inclusion_proof_ranges(i, n)` is
    (i, i + 1, n). Pure arithmetic: O(log n) steps, no hashing.

    Args:
        start: first leaf of the subtree; [start, end) must satisfy `is_valid_subtree`.
        end: one past its last leaf, at most `tree_size`.
        tree_size: leaves in the tree the proof is for.
    """
    assert is_valid_subtree(start, end) and end <= tree_size
    if start == end:
        return []
    ranges: list[Range] = []  # top-down; reversed at the end
    low, high, subtree_root_known = 0, tree_size, True
    while (low, high) != (start, end):
        middle = low + _split(high - low)
        if end <= middle:  # the subtree is in the left child: the right child is a sibling
            ranges.append((middle, high))
            high = middle
        elif middle <= start:  # in the right child
            ranges.append((low, middle))
            low = middle
        else:  # start == low < middle < end: keep proving its part in the right child
            ranges.append((low, middle))
            low = start = middle
            subtree_root_known = False
    if not subtree_root_known:
        ranges.append((low, high))
    ranges.reverse()
    return ranges


def inclusion_proof_ranges(index: int, tree_size: int) -> list[Range]:
    """PATH(index, D[tree_size]) as leaf ranges, from the leaf's sibling up."""
    return subtree_consistency_proof_ranges(index, index + 1, tree_size)


def consistency_proof_ranges(old_size: int, new_size: int) -> list[Range]:
    """PROOF(old_size, D[new_size]) as leaf ranges, in proof order."""
    return subtree_consistency_proof_ranges(0, old_size, new_size)


def covering_nodes(start: int, end: int) -> list[NodeAddress]:
    """The stored nodes whose hashes fold (`hash_from_nodes`) into MTH(D[start:end]).

    Left to right, largest first: one node per set bit of `end - start`, since a valid subtree
    starts on a multiple of each. One node for a perfect subtree, at most log2(end - start) + 1
    for a ragged node on a tree's right edge.
    """
    assert start < end and is_valid_subtree(start, end)
    nodes = []
    while start < end:
        level = (end - start).bit_length() - 1  # start is a multiple of 2**level: a valid subtree
        nodes.append(NodeAddress(level, start >> level))
        start += 1 << level
    return nodes


def hash_from_nodes(hashes: Sequence[bytes]) -> bytes:
    """Fold the hashes of `covering_nodes`, right to left, into the hash of their range."""
    result = hashes[-1]
    for left in reversed(hashes[:-1]):
        result = node_hash(left, result)
    return result


def hashes_of_ranges(
    ranges: Sequence[Range], read_nodes: Callable[[Sequence[NodeAddress]], Sequence[bytes]]
) -> list[bytes]:
    """MTH of each range, reading every covering node in one `read_nodes` call (one query).

    Args:
        ranges: valid, non-empty subtrees, as the `*_proof_ranges` functions return them.
        read_nodes: returns the stored hash of each address, in order.
    """
    covers = [covering_nodes(start, end) for start, end in ranges]
    hashes = iter(read_nodes([address for cover in covers for address in cover]))
    return [hash_from_nodes([next(hashes) for _ in cover]) for cover in covers]


# --- the in-memory tree -------------------------------------------------------------------------


class MerkleTree:
    """An append-only RFC 6962 tree in memory that stores every complete node.

    `levels[k][i]` is node (k, i), the hash of leaves [i * 2**k, (i + 1) * 2**k); see the module
    docstring. Memory: about 2n stored hashes, ~150 MB for a million leaves in CPython.
    Costs in hashes: `append` 1 on average (at most log2 n), `root` and each proof O(log n),
    for the current size or any earlier one, since stored nodes never change.
    """

    def __init__(self, leaf_hashes: Iterable[bytes] = ()) -> None:
        self._levels: list[list[bytes]] = [[]]
        for hash_ in leaf_hashes:
            self.append(hash_)

    @property
    def size(self) -> int:
        return len(self._levels[0])

    @property
    def levels(self) -> Sequence[Sequence[bytes]]:
        """The stored nodes by level; read them, append through `append`."""
        return self._levels

    def append(self, leaf_hash: bytes) -> int:
        """Add a leaf hash (from `leaf_hash(entry)`), store the nodes it completes; its index.

        Raises:
            InvalidInput: the hash is not 32 bytes.
        """
        if not isinstance(leaf_hash, bytes) or len(leaf_hash) != HASH_SIZE:
            raise InvalidInput(
                f"a leaf hash is {HASH_SIZE} bytes, got {leaf_hash!r:.80}; "
                "hash the entry with viz.log.leaf_hash first"
            )
        levels = self._levels
        index = len(levels[0])
        levels[0].append(leaf_hash)
        level, position, hash_ = 0, index, leaf_hash
        while position & 1:  # a right child completes its parent
            hash_ = node_hash(levels[level][position - 1], hash_)
            level, position = level + 1, position >> 1
            if level == len(levels):
                levels.append([])
            levels[level].append(hash_)
        return index

    def node(self, level: int, index: int) -> bytes:
        """The stored hash of node (level, index).

        Raises:
            InvalidInput: the node is not complete in this tree.
        """
        if not (0 <= level < len(self._levels) and 0 <= index < len(self._levels[level])):
            raise InvalidInput(
                f"node ({level}, {index}) is not complete in a tree of {self.size} "
                f"leaves; it needs {(index + 1) << max(level, 0)}"
            )
        return self._levels[level][index]

    def root(self, tree_size: int | None = None) -> bytes:
        """MTH of the first `tree_size` leaves (default: all); O(log n) hashes.

        Raises:
            ProofError: `tree_size` is larger than the tree.
        """
        size = self._checked_size(tree_size)
        return EMPTY_ROOT if size == 0 else self.subtree_hash(0, size)

    def subtree_hash(self, start: int, end: int) -> bytes:
        """MTH(D[start:end]) of a valid, non-empty subtree of the current tree.

        Raises:
            ProofError: [start, end) is empty, not a valid subtree, or past the tree.
        """
        _check_subtree(start, end)
        if start == end or end > self.size:
            raise ProofError(f"subtree [{start}, {end}) is empty or past {self.size} leaves")
        return hash_from_nodes(self._read_nodes(covering_nodes(start, end)))

    def inclusion_proof(self, index: int, tree_size: int | None = None) -> list[bytes]:
        """PATH(index, D[tree_size]) (default: the current size); O(log n) hashes.

        Raises:
            ProofError: `tree_size` is larger than the tree or `index` is not below it.
        """
        size = self._checked_size(tree_size)
        _check_leaf_index(index, size)
        return hashes_of_ranges(inclusion_proof_ranges(index, size), self._read_nodes)

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        """PROOF(old_size, D[new_size]) (default: the current size); O(log n) hashes.

        Raises:
            ProofError: `new_size` is larger than the tree, or `old_size` is 0 or above it.
        """
        size = self._checked_size(new_size)
        _check_old_size(old_size, size)
        return hashes_of_ranges(consistency_proof_ranges(old_size, size), self._read_nodes)

    def subtree_inclusion_proof(self, index: int, start: int, end: int) -> list[bytes]:
        """Inclusion proof of leaf `index` in the subtree [start, end); O(log n) hashes.

        Raises:
            ProofError: an invalid subtree, one past the tree, or `index` outside it.
        """
        _check_subtree(start, end)
        self._checked_size(end)  # the subtree is complete in this tree
        if not start <= index < end:
            raise ProofError(f"leaf {index} is outside the subtree [{start}, {end})")
        ranges = inclusion_proof_ranges(index - start, end - start)
        shifted = [(low + start, high + start) for low, high in ranges]
        return hashes_of_ranges(shifted, self._read_nodes)

    def subtree_consistency_proof(
        self, start: int, end: int, tree_size: int | None = None
    ) -> list[bytes]:
        """SUBTREE_PROOF(start, end, D[tree_size]) (default: the current size).

        Raises:
            ProofError: an invalid subtree, or one past `tree_size`, or `tree_size` past the tree.
        """
        size = self._checked_size(tree_size)
        _check_subtree(start, end)
        if end > size:
            raise ProofError(f"subtree [{start}, {end}) ends past the tree of {size} leaves")
        ranges = subtree_consistency_proof_ranges(start, end, size)
        return hashes_of_ranges(ranges, self._read_nodes)

    def _read_nodes(self, addresses: Sequence[NodeAddress]) -> list[bytes]:
        levels = self._levels
        return [levels[address.level][address.index] for address in addresses]

    def _checked_size(self, tree_size: int | None) -> int:
        if tree_size is None:
            return self.size
        _check_count("tree size", tree_size)
        if tree_size > self.size:
            raise ProofError(f"tree size {tree_size} is past this tree of {self.size} leaves")
        return tree_size


# --- input checks -------------------------------------------------------------------------------


def _check_count(name: str, value: int) -> None:
    """A size or index: an int in [0, TREE_SIZE_MAX]."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProofError(f"{name} must be an integer, got {value!r:.80}")
    if not 0 <= value <= TREE_SIZE_MAX:
        raise ProofError(f"{name} {value} is outside [0, {TREE_SIZE_MAX}]")


def _check_hash(name: str, value: bytes) -> None:
    if not isinstance(value, bytes) or len(value) != HASH_SIZE:
        shown = f"{len(value)} bytes" if isinstance(value, bytes) else type(value).__name__
        raise ProofError(f"{name} must be {HASH_SIZE} bytes of SHA-256, got {shown}")


def _check_proof(proof: Sequence[bytes]) -> None:
    if len(proof) > PROOF_HASHES_MAX:
        raise ProofError(f"a proof holds at most {PROOF_HASHES_MAX} hashes, got {len(proof)}")
    for position, hash_ in enumerate(proof):
        _check_hash(f"proof hash {position}", hash_)


def _check_leaf_index(index: int, tree_size: int) -> None:
    _check_count("leaf index", index)
    if index >= tree_size:
        raise ProofError(
            f"leaf index {index} is not in a tree of {tree_size} leaves: an index is below "
            "the tree size; ask for a proof against a later checkpoint"
        )


def _check_old_size(old_size: int, new_size: int) -> None:
    _check_count("old size", old_size)
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


def _check_subtree(start: int, end: int) -> None:
    _check_count("subtree start", start)
    _check_count("subtree end", end)
    if not is_valid_subtree(start, end):
        raise ProofError(
            f"[{start}, {end}) is not a subtree: start must be at most end and a "
            "multiple of the smallest power of two >= end - start"
        )
