"""The transparency log's RFC 6962 Merkle tree: known roots, every transparency-dev test vector,
and proofs from our own tree for every index and size up to 70, tampered byte by byte."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from viz.errors import InvalidInput
from viz.log import (
    EMPTY_ROOT,
    PROOF_HASHES_MAX,
    MerkleTree,
    NodeAddress,
    ProofError,
    consistency_proof_ranges,
    covering_nodes,
    hashes_of_ranges,
    inclusion_proof_ranges,
    is_valid_subtree,
    leaf_hash,
    node_hash,
    root_hash,
    subtree_consistency_proof_ranges,
    verify_consistency,
    verify_inclusion,
    verify_subtree_consistency,
    verify_subtree_inclusion,
)
from viz.log.hashing import check_leaf_index, check_old_size, split_point
from worlds.catalogue import SHARED

VECTORS = SHARED / "data" / "rfc6962-vectors"
# transparency-dev/merkle testdata/ at commit 417fb0c (VECTORS / "NOTICE.md"): JSON files per
# folder, 36 with wantErr false and 482 tampered ones with wantErr true.
VECTOR_CASES = {
    "inclusion": 98,
    "consistency": 98,
    "subtreeinclusion": 204,
    "subtreeconsistency": 118,
}

# SHA-256 of the empty string (FIPS 180-4 example; RFC 6962 MTH({})).
EMPTY_ROOT_HEX = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

# The eight leaves of RFC 6962 implementations and the roots of their first 1..8 leaves, from
# transparency-dev/merkle proof/verify_test.go (`leaves`, `roots`); the vectors' happy paths carry
# the same roots (test_vector_proofs_are_the_ones_our_tree_builds checks them byte for byte).
STANDARD_LEAVES = [
    b"",
    b"\x00",
    b"\x10",
    b"\x20\x21",
    b"\x30\x31",
    b"\x40\x41\x42\x43",
    bytes(range(0x50, 0x58)),
    bytes(range(0x60, 0x70)),
]
STANDARD_ROOTS_HEX = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
STANDARD_HASHES = [leaf_hash(leaf) for leaf in STANDARD_LEAVES]

SIZES_MAX = 70
ENTRIES = [f"entry {number}".encode() for number in range(SIZES_MAX)]
ENTRY_HASHES = [leaf_hash(entry) for entry in ENTRIES]
# Proofs for these sizes get every byte of every hash flipped, one at a time; the other sizes get
# one byte per hash, at a position that moves with the index, to keep this file under 15 s.
EVERY_BYTE_SIZES = {1, 2, 3, 5, 8, 13, 21, 34, 55, 64, 70}


# --- the RFC 6962 definitions, as written: the reference our tree's proofs are checked against ---


def inclusion_proof(leaf_hashes: Sequence[bytes], index: int) -> list[bytes]:
    """PATH(index, D[n]) of RFC 6962 section 2.1.1 over a list: sibling hashes from the leaf up."""
    check_leaf_index(index, len(leaf_hashes))
    return _path(leaf_hashes, index)


def consistency_proof(leaf_hashes: Sequence[bytes], old_size: int) -> list[bytes]:
    """PROOF(old_size, D[n]) of RFC 6962 section 2.1.2, n = len(leaf_hashes)."""
    check_old_size(old_size, len(leaf_hashes))
    return _subproof(old_size, leaf_hashes, old_root_known=True)


def _path(leaves: Sequence[bytes], index: int) -> list[bytes]:
    if len(leaves) == 1:
        return []
    k = split_point(len(leaves))
    if index < k:
        return _path(leaves[:k], index) + [root_hash(leaves[k:])]
    return _path(leaves[k:], index - k) + [root_hash(leaves[:k])]


def _subproof(m: int, leaves: Sequence[bytes], old_root_known: bool) -> list[bytes]:
    """SUBPROOF(m, D[n], b); `old_root_known` is b."""
    if m == len(leaves):
        return [] if old_root_known else [root_hash(leaves)]
    k = split_point(len(leaves))
    if m <= k:
        return _subproof(m, leaves[:k], old_root_known) + [root_hash(leaves[k:])]
    return _subproof(m - k, leaves[k:], old_root_known=False) + [root_hash(leaves[:k])]


# --- helpers ------------------------------------------------------------------------------------


def vector_files(folder: str, pattern: str = "**/*.json") -> list[Any]:
    return [
        pytest.param(path, id=str(path.relative_to(VECTORS)))
        for path in sorted((VECTORS / folder).glob(pattern))
    ]


def read_case(path: Path) -> dict[str, Any]:
    case = json.loads(path.read_text())
    case["proof"] = [base64.b64decode(hash_) for hash_ in case["proof"] or []]
    for name in ("root", "root1", "root2", "leafHash"):
        if name in case:
            case[name] = base64.b64decode(case[name])
    return case


def expect(case: dict[str, Any], verify: Callable[[], None]) -> None:
    """A happy case must verify; a tampered one must raise ProofError."""
    if case["wantErr"]:
        with pytest.raises(ProofError):
            verify()
    else:
        verify()


def flipped(hash_: bytes, position: int) -> bytes:
    return hash_[:position] + bytes([hash_[position] ^ 0x01]) + hash_[position + 1 :]


def with_flipped(proof: Sequence[bytes], element: int, position: int) -> list[bytes]:
    return [*proof[:element], flipped(proof[element], position), *proof[element + 1 :]]


def byte_positions(size: int, index: int) -> Sequence[int]:
    """Every byte for the sizes in EVERY_BYTE_SIZES; else one, moving with the index."""
    return range(32) if size in EVERY_BYTE_SIZES else (index % 32,)


def rejected(verify: Callable[..., None], *arguments: Any) -> bool:
    try:
        verify(*arguments)
    except ProofError:
        return True
    return False


# --- known values -------------------------------------------------------------------------------


def test_the_empty_tree_has_the_hash_of_the_empty_string_as_root() -> None:
    assert EMPTY_ROOT.hex() == EMPTY_ROOT_HEX
    assert root_hash([]) == EMPTY_ROOT
    assert MerkleTree().root() == EMPTY_ROOT


def test_leaves_and_nodes_are_hashed_with_distinct_prefixes() -> None:
    left, right = leaf_hash(b"a"), leaf_hash(b"b")

    assert left == hashlib.sha256(b"\x00a").digest()
    assert node_hash(left, right) == hashlib.sha256(b"\x01" + left + right).digest()
    # An entry that happens to equal two hashes side by side is not mistaken for their parent.
    assert leaf_hash(left + right) != node_hash(left, right)
    assert MerkleTree([left]).root() == left
    assert MerkleTree([left, right]).root() == node_hash(left, right)


@pytest.mark.parametrize("size", range(1, 9))
def test_the_standard_leaves_have_the_reference_roots(size: int) -> None:
    expected = bytes.fromhex(STANDARD_ROOTS_HEX[size - 1])

    assert root_hash(STANDARD_HASHES[:size]) == expected
    assert MerkleTree(STANDARD_HASHES[:size]).root() == expected
    assert MerkleTree(STANDARD_HASHES).root(size) == expected


# --- the transparency-dev vectors ---------------------------------------------------------------


def test_every_vector_folder_is_there_with_all_its_cases() -> None:
    counts = {folder: len(vector_files(folder)) for folder in VECTOR_CASES}

    assert counts == VECTOR_CASES, f"vectors missing under {VECTORS}"


@pytest.mark.parametrize("path", vector_files("inclusion"))
def test_inclusion_vector(path: Path) -> None:
    case = read_case(path)

    expect(
        case,
        lambda: verify_inclusion(
            case["leafHash"], case["leafIdx"], case["treeSize"], case["proof"], case["root"]
        ),
    )


@pytest.mark.parametrize("path", vector_files("consistency"))
def test_consistency_vector(path: Path) -> None:
    case = read_case(path)

    expect(
        case,
        lambda: verify_consistency(
            case["size1"], case["size2"], case["root1"], case["root2"], case["proof"]
        ),
    )


@pytest.mark.parametrize("path", vector_files("subtreeinclusion"))
def test_subtree_inclusion_vector(path: Path) -> None:
    case = read_case(path)

    expect(
        case,
        lambda: verify_subtree_inclusion(
            case["leafHash"],
            case["leafIdx"],
            case["start"],
            case["end"],
            case["proof"],
            case["root"],
        ),
    )


@pytest.mark.parametrize("path", vector_files("subtreeconsistency"))
def test_subtree_consistency_vector(path: Path) -> None:
    case = read_case(path)

    expect(
        case,
        lambda: verify_subtree_consistency(
            case["start"], case["end"], case["size"], case["root1"], case["root2"], case["proof"]
        ),
    )


@pytest.mark.parametrize(
    "path",
    vector_files("inclusion", "[0-9]/happy-path.json")
    + vector_files("consistency", "[0-9]/happy-path.json")
    + vector_files("subtreeinclusion", "[0-9]/happy-path.json")
    + vector_files("subtreeconsistency", "[0-9]/happy-path.json"),
)
def test_vector_proofs_are_the_ones_our_tree_builds(path: Path) -> None:
    """The numbered happy paths are proofs over the standard leaves: we build the same bytes."""
    case = read_case(path)
    tree = MerkleTree(STANDARD_HASHES)
    folder = path.relative_to(VECTORS).parts[0]

    if folder == "inclusion":
        size = case["treeSize"]
        built = tree.inclusion_proof(case["leafIdx"], size)
        assert built == inclusion_proof(STANDARD_HASHES[:size], case["leafIdx"])
        assert (tree.root(size), case["leafHash"]) == (case["root"], tree.node(0, case["leafIdx"]))
    elif folder == "consistency":
        size = case["size2"]
        built = tree.consistency_proof(case["size1"], size)
        assert built == consistency_proof(STANDARD_HASHES[:size], case["size1"])
        assert (tree.root(case["size1"]), tree.root(size)) == (case["root1"], case["root2"])
    elif folder == "subtreeinclusion":
        built = tree.subtree_inclusion_proof(case["leafIdx"], case["start"], case["end"])
        assert tree.subtree_hash(case["start"], case["end"]) == case["root"]
        assert tree.node(0, case["leafIdx"]) == case["leafHash"]
    else:
        built = tree.subtree_consistency_proof(case["start"], case["end"], case["size"])
        assert tree.subtree_hash(case["start"], case["end"]) == case["root1"]
        assert tree.root(case["size"]) == case["root2"]
    assert built == case["proof"]


# --- proofs from our own tree -------------------------------------------------------------------


def test_the_tree_agrees_with_the_rfc_definitions_for_every_size_up_to_70() -> None:
    tree = MerkleTree(ENTRY_HASHES)

    for size in range(1, SIZES_MAX + 1):
        leaves = ENTRY_HASHES[:size]
        assert tree.root(size) == root_hash(leaves)
        for index in range(size):
            assert tree.inclusion_proof(index, size) == inclusion_proof(leaves, index)
        for old_size in range(1, size + 1):
            assert tree.consistency_proof(old_size, size) == consistency_proof(leaves, old_size)


@pytest.mark.parametrize("size", range(1, SIZES_MAX + 1))
def test_every_inclusion_proof_verifies_and_any_flipped_byte_is_rejected(size: int) -> None:
    tree = MerkleTree(ENTRY_HASHES[:size])
    root = tree.root()
    accepted = []

    for index in range(size):
        leaf, proof = ENTRY_HASHES[index], tree.inclusion_proof(index)
        verify_inclusion(leaf, index, size, proof, root)
        for position in byte_positions(size, index):
            attempts = [
                (f"proof[{element}]", leaf, with_flipped(proof, element, position), root)
                for element in range(len(proof))
            ]
            attempts.append(("root", leaf, proof, flipped(root, position)))
            attempts.append(("leaf", flipped(leaf, position), proof, root))
            accepted += [
                f"leaf {index}: {what} byte {position}"
                for what, bad_leaf, bad_proof, bad_root in attempts
                if not rejected(verify_inclusion, bad_leaf, index, size, bad_proof, bad_root)
            ]
    assert accepted == []


@pytest.mark.parametrize("size", range(1, SIZES_MAX + 1))
def test_every_consistency_proof_verifies_and_any_flipped_byte_is_rejected(size: int) -> None:
    tree = MerkleTree(ENTRY_HASHES[:size])
    new_root = tree.root()
    accepted = []

    for old_size in range(1, size + 1):
        old_root, proof = tree.root(old_size), tree.consistency_proof(old_size)
        verify_consistency(old_size, size, old_root, new_root, proof)
        for position in byte_positions(size, old_size):
            attempts = [
                (f"proof[{element}]", old_root, new_root, with_flipped(proof, element, position))
                for element in range(len(proof))
            ]
            attempts.append(("old root", flipped(old_root, position), new_root, proof))
            attempts.append(("new root", old_root, flipped(new_root, position), proof))
            accepted += [
                f"from {old_size}: {what} byte {position}"
                for what, bad_old_root, bad_new_root, bad_proof in attempts
                if not rejected(
                    verify_consistency, old_size, size, bad_old_root, bad_new_root, bad_proof
                )
            ]
    assert accepted == []


@pytest.mark.parametrize("size", range(1, 41))
def test_every_subtree_proof_verifies_and_a_flipped_hash_is_rejected(size: int) -> None:
    tree = MerkleTree(ENTRY_HASHES[:size])
    root = tree.root()
    subtrees = [(s, e) for e in range(1, size + 1) for s in range(e) if is_valid_subtree(s, e)]

    for start, end in subtrees:
        subtree_root = tree.subtree_hash(start, end)
        proof = tree.subtree_consistency_proof(start, end)
        verify_subtree_consistency(start, end, size, subtree_root, root, proof)
        for element in range(len(proof)):
            tampered = with_flipped(proof, element, start % 32)
            with pytest.raises(ProofError):
                verify_subtree_consistency(start, end, size, subtree_root, root, tampered)
        for index in range(start, end):
            inside = tree.subtree_inclusion_proof(index, start, end)
            assert inside == inclusion_proof(ENTRY_HASHES[start:end], index - start)
            verify_subtree_inclusion(ENTRY_HASHES[index], index, start, end, inside, subtree_root)


@pytest.mark.parametrize("size", range(1, 41))
def test_subtree_proofs_generalise_both_rfc_proofs(size: int) -> None:
    """SUBTREE_PROOF(0, m, D_n) = PROOF(m, D_n) and SUBTREE_PROOF(i, i + 1, D_n) = PATH(i, D_n)."""
    tree = MerkleTree(ENTRY_HASHES[:size])
    root = tree.root()

    for old_size in range(1, size + 1):
        proof = tree.consistency_proof(old_size)
        assert tree.subtree_consistency_proof(0, old_size) == proof
        verify_subtree_consistency(0, old_size, size, tree.root(old_size), root, proof)
    for index in range(size):
        proof = tree.inclusion_proof(index)
        assert tree.subtree_consistency_proof(index, index + 1) == proof
        verify_subtree_consistency(index, index + 1, size, ENTRY_HASHES[index], root, proof)
        verify_subtree_inclusion(ENTRY_HASHES[index], index, 0, size, proof, root)


# --- a log that grows ---------------------------------------------------------------------------


def test_a_growing_log_proves_every_step_against_every_earlier_checkpoint() -> None:
    tree = MerkleTree()
    checkpoints = [EMPTY_ROOT]

    for entry in ENTRIES[:33]:
        index = tree.append(leaf_hash(entry))
        size = tree.size
        checkpoints.append(tree.root())

        assert (index, size) == (size - 1, len(checkpoints) - 1)
        assert checkpoints[-1] == root_hash(ENTRY_HASHES[:size])
        verify_inclusion(leaf_hash(entry), index, size, tree.inclusion_proof(index), tree.root())
        for old_size in range(1, size):
            assert tree.root(old_size) == checkpoints[old_size]
            proof = tree.consistency_proof(old_size)
            verify_consistency(old_size, size, checkpoints[old_size], checkpoints[-1], proof)


def test_stored_nodes_are_the_perfect_subtrees_addressed_by_level_and_index() -> None:
    tree = MerkleTree(ENTRY_HASHES[:13])

    assert [len(level) for level in tree.levels] == [13, 6, 3, 1]
    for level, nodes in enumerate(tree.levels):
        for index, hash_ in enumerate(nodes):
            address = NodeAddress(level, index)
            leaves = ENTRY_HASHES[address.first_leaf : address.end_leaf]
            assert hash_ == tree.node(level, index) == root_hash(leaves)
    with pytest.raises(InvalidInput, match="needs 16"):
        tree.node(2, 3)  # leaves [12, 16): only 13 exist


def test_proofs_are_ranges_of_stored_nodes_read_in_one_batch() -> None:
    """The draft's figures: [4, 8) and [8, 13) in a tree of 14 leaves."""
    tree = MerkleTree(ENTRY_HASHES[:14])
    reads: list[int] = []

    def read_nodes(addresses: Sequence[NodeAddress]) -> list[bytes]:
        reads.append(len(addresses))
        return [tree.node(address.level, address.index) for address in addresses]

    assert subtree_consistency_proof_ranges(4, 8, 14) == [(0, 4), (8, 14)]
    assert subtree_consistency_proof_ranges(8, 13, 14) == [(12, 13), (13, 14), (8, 12), (0, 8)]
    assert covering_nodes(8, 14) == [NodeAddress(2, 2), NodeAddress(1, 6)]
    assert inclusion_proof_ranges(10, 13) == [(11, 12), (8, 10), (12, 13), (0, 8)]
    assert consistency_proof_ranges(6, 8) == [(4, 6), (6, 8), (0, 4)]

    proof = hashes_of_ranges(subtree_consistency_proof_ranges(4, 8, 14), read_nodes)

    assert proof == tree.subtree_consistency_proof(4, 8)
    assert reads == [3]  # one read: (2, 0) for [0, 4), then (2, 2) and (1, 6) for [8, 14)


# --- bad input ----------------------------------------------------------------------------------


def test_an_index_outside_the_tree_is_refused() -> None:
    tree = MerkleTree(ENTRY_HASHES[:5])
    leaf, proof, root = ENTRY_HASHES[4], tree.inclusion_proof(4), tree.root()

    for index in (5, 6, -1):
        with pytest.raises(ProofError, match="leaf index"):
            verify_inclusion(leaf, index, 5, proof, root)
        with pytest.raises(ProofError, match="leaf index"):
            tree.inclusion_proof(index)
        with pytest.raises(ProofError, match="leaf index"):
            inclusion_proof(ENTRY_HASHES[:5], index)
    with pytest.raises(ProofError, match="not in a tree of 0"):
        verify_inclusion(leaf, 0, 0, [], EMPTY_ROOT)


def test_a_log_that_shrinks_or_starts_empty_has_no_consistency_proof() -> None:
    tree = MerkleTree(ENTRY_HASHES[:8])
    root4, root8 = tree.root(4), tree.root()

    with pytest.raises(ProofError, match="larger than new size"):
        verify_consistency(8, 4, root8, root4, tree.consistency_proof(4))
    with pytest.raises(ProofError, match="larger than new size"):
        tree.consistency_proof(8, 4)
    with pytest.raises(ProofError, match="larger than new size"):
        consistency_proof(ENTRY_HASHES[:4], 8)
    with pytest.raises(ProofError, match="empty tree"):
        verify_consistency(0, 8, EMPTY_ROOT, root8, [])
    with pytest.raises(ProofError, match="empty tree"):
        tree.consistency_proof(0)


def test_sizes_past_the_tree_are_refused() -> None:
    tree = MerkleTree(ENTRY_HASHES[:8])

    for ask in (lambda: tree.root(9), lambda: tree.inclusion_proof(0, 9)):
        with pytest.raises(ProofError, match="past this tree of 8"):
            ask()
    with pytest.raises(ProofError, match="ends past"):
        tree.subtree_consistency_proof(8, 10)


@pytest.mark.parametrize(
    ("problem", "verify"),
    [
        ("short proof hash", lambda p, r: verify_inclusion(ENTRY_HASHES[0], 0, 8, [p[0][:31]], r)),
        ("text leaf hash", lambda p, r: verify_inclusion("ab" * 32, 0, 8, p, r)),
        ("float size", lambda p, r: verify_inclusion(ENTRY_HASHES[0], 0, 8.0, p, r)),
        ("bool size", lambda p, r: verify_consistency(True, 8, r, r, p)),
        ("huge size", lambda p, r: verify_consistency(1, 2**64, r, r, p)),
        ("endless proof", lambda p, r: verify_inclusion(p[0], 0, 8, p * PROOF_HASHES_MAX, r)),
        ("unaligned subtree", lambda p, r: verify_subtree_consistency(2, 6, 8, r, r, p)),
        ("reversed subtree", lambda p, r: verify_subtree_inclusion(p[0], 0, 2, 1, p, r)),
    ],
)
def test_malformed_input_is_refused_as_invalid(problem: str, verify: Callable[..., None]) -> None:
    tree = MerkleTree(ENTRY_HASHES[:8])

    with pytest.raises(ProofError) as raised:
        verify(tree.inclusion_proof(0), tree.root())

    assert isinstance(raised.value, InvalidInput) and raised.value.http_status == 400, problem


def test_the_tree_only_takes_32_byte_leaf_hashes() -> None:
    tree = MerkleTree()

    with pytest.raises(InvalidInput, match="leaf_hash first"):
        tree.append(b"a raw entry, not its hash")
    assert tree.size == 0
