"""The Merkle tree of a transparency log: node addresses, proofs as leaf ranges, the tree itself.

`MerkleTree` is an append-only RFC 6962 tree in memory that stores every complete node, so
`append` hashes one node on average and a root or proof costs O(log n) hashes. The proofs it
builds are the ones `viz.log.verifiers` checks.

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
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from viz.errors import InvalidInput
from viz.log.hashing import (
    EMPTY_ROOT,
    HASH_SIZE,
    ProofError,
    check_count,
    check_leaf_index,
    check_old_size,
    check_subtree,
    is_valid_subtree,
    node_hash,
    split_point,
)

__all__ = [
    "MerkleTree",
    "NodeAddress",
    "Range",
    "consistency_proof_ranges",
    "covering_nodes",
    "hash_from_nodes",
    "hashes_of_ranges",
    "inclusion_proof_ranges",
    "subtree_consistency_proof_ranges",
]

Range = tuple[int, int]
"""A leaf range [start, end) whose Merkle tree hash MTH(D[start:end]) is one proof hash."""


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
        middle = low + split_point(high - low)
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
        check_subtree(start, end)
        if start == end or end > self.size:
            raise ProofError(f"subtree [{start}, {end}) is empty or past {self.size} leaves")
        return hash_from_nodes(self._read_nodes(covering_nodes(start, end)))

    def inclusion_proof(self, index: int, tree_size: int | None = None) -> list[bytes]:
        """PATH(index, D[tree_size]) (default: the current size); O(log n) hashes.

        Raises:
            ProofError: `tree_size` is larger than the tree or `index` is not below it.
        """
        size = self._checked_size(tree_size)
        check_leaf_index(index, size)
        return hashes_of_ranges(inclusion_proof_ranges(index, size), self._read_nodes)

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        """PROOF(old_size, D[new_size]) (default: the current size); O(log n) hashes.

        Raises:
            ProofError: `new_size` is larger than the tree, or `old_size` is 0 or above it.
        """
        size = self._checked_size(new_size)
        check_old_size(old_size, size)
        return hashes_of_ranges(consistency_proof_ranges(old_size, size), self._read_nodes)

    def subtree_inclusion_proof(self, index: int, start: int, end: int) -> list[bytes]:
        """Inclusion proof of leaf `index` in the subtree [start, end); O(log n) hashes.

        Raises:
            ProofError: an invalid subtree, one past the tree, or `index` outside it.
        """
        check_subtree(start, end)
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
        check_subtree(start, end)
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
        check_count("tree size", tree_size)
        if tree_size > self.size:
            raise ProofError(f"tree size {tree_size} is past this tree of {self.size} leaves")
        return tree_size
