"""The verifiable transparency log: RFC 6962 Merkle trees, their proofs, the log in the database.

- `hashing`: the definitions: leaf and node hashes, the root of a list of leaves (MTH), valid input;
- `verifiers`: inclusion and consistency proof checks, which need only the proof;
- `tree`: `MerkleTree`, an append-only tree in memory, and proofs as ranges of stored nodes;
- `store`: the public log in the database: append events, sign checkpoints, prove, export, verify.
"""

from viz.log.hashing import (
    EMPTY_ROOT,
    HASH_SIZE,
    PROOF_HASHES_MAX,
    TREE_SIZE_MAX,
    ProofError,
    is_valid_subtree,
    leaf_hash,
    node_hash,
    root_hash,
)
from viz.log.store import (
    Checkpoint,
    append_entry,
    export_log,
    load_signing_key,
    prove_consistency,
    prove_entry,
    sign_checkpoint,
    verify_export,
    verify_proof,
)
from viz.log.tree import (
    MerkleTree,
    NodeAddress,
    consistency_proof_ranges,
    covering_nodes,
    hash_from_nodes,
    hashes_of_ranges,
    inclusion_proof_ranges,
    subtree_consistency_proof_ranges,
)
from viz.log.verifiers import (
    verify_consistency,
    verify_inclusion,
    verify_subtree_consistency,
    verify_subtree_inclusion,
)

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "PROOF_HASHES_MAX",
    "TREE_SIZE_MAX",
    "Checkpoint",
    "MerkleTree",
    "NodeAddress",
    "ProofError",
    "append_entry",
    "consistency_proof_ranges",
    "covering_nodes",
    "export_log",
    "hash_from_nodes",
    "hashes_of_ranges",
    "inclusion_proof_ranges",
    "is_valid_subtree",
    "leaf_hash",
    "load_signing_key",
    "node_hash",
    "prove_consistency",
    "prove_entry",
    "root_hash",
    "sign_checkpoint",
    "subtree_consistency_proof_ranges",
    "verify_consistency",
    "verify_export",
    "verify_inclusion",
    "verify_proof",
    "verify_subtree_consistency",
    "verify_subtree_inclusion",
]
