"""The Merkle proofs at their edges: sizes and indices out of range, proofs one node too long.

Written against the mutants mutmut left alive (benchmarks/mutation.py --only merkle): each
assertion is a way a verifier could accept what it must refuse.
"""

from __future__ import annotations

import pytest

from dlsec.store import _merkle as merkle

LEAVES = [merkle.leaf_hash(bytes([i])) for i in range(13)]


def _root(n: int) -> bytes:
    return merkle.tree_root(LEAVES[:n])


def test_proofs_of_leaves_and_sizes_outside_the_tree_are_refused():
    with pytest.raises(ValueError, match=r"^leaf 5 is not in a tree of 5$"):
        merkle.inclusion_proof(LEAVES[:5], 5)
    with pytest.raises(ValueError, match=r"^leaf -1 is not in a tree of 5$"):
        merkle.inclusion_proof(LEAVES[:5], -1)
    with pytest.raises(ValueError, match=r"^old size 0 must be in \[1, 5\]$"):
        merkle.consistency_proof(LEAVES[:5], 0)
    with pytest.raises(ValueError, match=r"^old size 6 must be in \[1, 5\]$"):
        merkle.consistency_proof(LEAVES[:5], 6)


def test_inclusion_outside_the_tree_or_with_a_proof_too_long_is_false():
    # A one-leaf tree's root is its leaf: index 1 of size 1 would pass the hash check.
    assert merkle.verify_inclusion(LEAVES[0], 0, 1, [], _root(1))
    assert not merkle.verify_inclusion(LEAVES[0], 1, 1, [], _root(1))
    assert not merkle.verify_inclusion(LEAVES[0], -1, 1, [], _root(1))
    for n in (2, 5, 8, 13):
        for i in range(n):
            proof = merkle.inclusion_proof(LEAVES[:n], i)
            assert merkle.verify_inclusion(LEAVES[i], i, n, proof, _root(n))
            # One node more than the path: refused, whatever the node.
            for extra in (LEAVES[0], _root(n)):
                assert not merkle.verify_inclusion(LEAVES[i], i, n, [*proof, extra], _root(n))
            assert not merkle.verify_inclusion(LEAVES[i], n, n, proof, _root(n))


def test_consistency_outside_the_sizes_or_with_a_proof_too_long_is_false():
    for n in (2, 5, 8, 13):
        for m in range(1, n):
            proof = merkle.consistency_proof(LEAVES[:n], m)
            assert merkle.verify_consistency(m, n, _root(m), _root(n), proof)
            for extra in (LEAVES[0], _root(n)):
                assert not merkle.verify_consistency(m, n, _root(m), _root(n), [*proof, extra])
            # Sizes swapped (old larger than new) or an empty old tree: refused.
            assert not merkle.verify_consistency(n, m, _root(n), _root(m), proof)
            assert not merkle.verify_consistency(0, n, _root(0), _root(n), proof)
    # No proof where one is needed (3 is not a power of two: the path cannot be empty).
    assert not merkle.verify_consistency(3, 4, _root(3), _root(4), [])
    assert not merkle.verify_consistency(0, 0, _root(0), _root(0), [])


def test_consistency_of_equal_sizes_needs_equal_roots_and_no_proof():
    assert merkle.verify_consistency(5, 5, _root(5), _root(5), [])
    assert not merkle.verify_consistency(5, 5, _root(5), _root(4), [])
    assert not merkle.verify_consistency(5, 5, _root(5), _root(5), [LEAVES[0]])
