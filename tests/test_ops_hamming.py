"""Permutation sets (Noroozi & Favaro, Algorithm 1) and the puzzle samplers."""

from __future__ import annotations

import hashlib
import itertools
import math

import numpy as np
import pytest
import torch

from rubikkit.ops import (
    hamming_permutations,
    min_pairwise_distance,
    pairwise_hamming,
    sample_permutations,
    sample_rotations,
)


@pytest.fixture(scope="module")
def sets_8_100():
    """The paper's setting, both greedy rules (computed once: ~0.5 s each)."""
    return {m: hamming_permutations(8, 100, method=m, seed=0) for m in ("max_min", "max_avg")}


def _assert_distinct_permutations(perms, n):
    assert perms.dtype == np.int64
    assert (np.sort(perms, axis=1) == np.arange(n)).all(), "a row is not a permutation"
    assert len(np.unique(perms, axis=0)) == len(perms), "rows repeat"


@pytest.mark.parametrize("method", ["max_min", "max_avg"])
def test_rows_are_distinct_permutations(sets_8_100, method):
    perms = sets_8_100[method]
    assert perms.shape == (100, 8)
    _assert_distinct_permutations(perms, 8)


def test_max_min_keeps_every_pair_at_least_5_apart(sets_8_100):
    assert min_pairwise_distance(sets_8_100["max_min"]) >= 5


def test_max_avg_leaves_closer_pairs(sets_8_100):
    # The rule most public code ships: its minimum distance is reported, and it is smaller.
    d_avg = min_pairwise_distance(sets_8_100["max_avg"])
    assert 2 <= d_avg < min_pairwise_distance(sets_8_100["max_min"])


def test_deterministic_per_seed(sets_8_100):
    np.testing.assert_array_equal(hamming_permutations(8, 100, seed=0), sets_8_100["max_min"])
    other = hamming_permutations(8, 100, seed=1)
    assert not np.array_equal(other, sets_8_100["max_min"])
    _assert_distinct_permutations(other, 8)


def test_the_sets_the_records_were_trained_with_stay_the_same(sets_8_100):
    # Every committed pre-training drew its orders from these sets (K = 100, seed 0): a change
    # to the selection, however fast, must give them bit for bit.
    digests = {m: hashlib.sha256(p.tobytes()).hexdigest()[:16] for m, p in sets_8_100.items()}
    assert digests == {"max_min": "c6aba5e3aa71a3df", "max_avg": "88fe6ccc6970e929"}


@pytest.mark.parametrize("method", ["max_min", "max_avg"])
@pytest.mark.parametrize(("n", "k", "seed"), [(4, 24, 0), (5, 30, 1), (6, 200, 2)])
def test_each_pick_is_a_farthest_candidate(method, n, k, seed):
    # Algorithm 1 checked by brute force: every row after the first is, among all n! candidates
    # not yet chosen, one of those farthest from the rows before it.
    perms = hamming_permutations(n, k, method=method, seed=seed)
    everything = np.array(list(itertools.permutations(range(n))))
    reduce = np.min if method == "max_min" else np.sum
    for i in range(1, k):
        dist = (everything[:, None, :] != perms[None, :i, :]).sum(axis=2)
        score = reduce(dist, axis=1)
        free = (dist > 0).all(axis=1)  # not one of the rows chosen so far
        assert score[free].max() == reduce((perms[:i] != perms[i]).sum(axis=1)), i


@pytest.mark.parametrize(("n", "k"), [(2, 2), (3, 6), (4, 10), (5, 1)])
def test_small_sets(n, k):
    perms = hamming_permutations(n, k, seed=3)
    assert perms.shape == (k, n)
    _assert_distinct_permutations(perms, n)


def test_all_permutations_when_k_is_n_factorial():
    perms = hamming_permutations(4, math.factorial(4))
    _assert_distinct_permutations(perms, 4)
    assert len(perms) == 24


def test_more_than_9_cubes_uses_a_random_pool():
    # 27 cubes (3x3x3): n! is not enumerable, the candidates are a pool of random permutations.
    perms = hamming_permutations(27, 20, seed=0, pool_size=2000)
    assert perms.shape == (20, 27)
    _assert_distinct_permutations(perms, 27)
    np.testing.assert_array_equal(perms, hamming_permutations(27, 20, seed=0, pool_size=2000))


def test_pairwise_hamming_known_answer():
    p = np.array([[0, 1, 2, 3], [1, 0, 2, 3], [3, 2, 1, 0]])
    np.testing.assert_array_equal(pairwise_hamming(p), [[0, 2, 4], [2, 0, 4], [4, 4, 0]])
    assert min_pairwise_distance(p) == 2


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"n_cubes": 1}, ValueError, "n_cubes"),
        ({"n_cubes": 8.0}, TypeError, "n_cubes"),
        ({"n_cubes": 200}, ValueError, "n_cubes"),
        ({"k": 0}, ValueError, "k: must be >= 1"),
        ({"k": True}, TypeError, "k"),
        ({"n_cubes": 3, "k": 7}, ValueError, "k: only 6 candidate"),
        # beyond 9 cubes the pool limits k, and the message must say so (it said "only 100
        # candidate permutations of 10 cubes", as if 10! were 100)
        ({"n_cubes": 10, "k": 200, "pool_size": 100}, ValueError, r"pool_size = 100\), asked 200"),
        ({"method": "max_sum"}, ValueError, "method"),
        ({"seed": -1}, ValueError, "seed"),
        ({"seed": "zero"}, TypeError, "seed"),
        ({"pool_size": 0}, ValueError, "pool_size"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        hamming_permutations(**{"n_cubes": 4, "k": 3, **kwargs})


def test_pairwise_helpers_bad_arguments():
    with pytest.raises(ValueError, match="perms"):
        pairwise_hamming(np.arange(4))
    with pytest.raises(ValueError, match="perms: need at least 2"):
        min_pairwise_distance(np.arange(4)[None])


# --- samplers ----------------------------------------------------------------------------------


def test_sample_permutations_reaches_every_index():
    perm_set = hamming_permutations(4, 10, seed=0)
    labels, perms = sample_permutations(2000, perm_set, rng=0)
    assert labels.shape == (2000,) and perms.shape == (2000, 4)
    assert labels.dtype == np.int64 and perms.dtype == np.int64
    assert set(labels.tolist()) == set(range(10))
    np.testing.assert_array_equal(perms, perm_set[labels])


def test_sample_permutations_is_reproducible_from_any_rng():
    perm_set = hamming_permutations(4, 10, seed=0)
    a = sample_permutations(50, perm_set, rng=5)[0]
    np.testing.assert_array_equal(a, sample_permutations(50, perm_set, rng=5)[0])
    np.testing.assert_array_equal(
        a, sample_permutations(50, perm_set, rng=np.random.default_rng(5))[0]
    )
    t1 = sample_permutations(50, perm_set, rng=torch.Generator().manual_seed(3))[0]
    t2 = sample_permutations(50, perm_set, rng=torch.Generator().manual_seed(3))[0]
    np.testing.assert_array_equal(t1, t2)


def test_sample_rotations_reaches_every_code():
    rots = sample_rotations(100, 8, rng=0)
    assert rots.shape == (100, 8) and rots.dtype == np.int64
    assert set(np.unique(rots).tolist()) == {0, 1, 2, 3}
    # Every code in every slot: the two rotation bits are independent fair coins per cube.
    for m in range(8):
        assert set(rots[:, m].tolist()) == {0, 1, 2, 3}
    assert (sample_rotations(10, 8, codes=(0,), rng=1) == 0).all()
    assert set(np.unique(sample_rotations(200, 3, codes=(1, 2), rng=1)).tolist()) == {1, 2}


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: sample_permutations(0, np.zeros((2, 3), int)), ValueError, "batch"),
        (lambda: sample_permutations(2, np.zeros(3, int)), ValueError, "perm_set"),
        (lambda: sample_permutations(2, np.zeros((2, 3))), TypeError, "perm_set"),
        (lambda: sample_permutations(2, np.zeros((2, 3), int), rng="x"), TypeError, "rng"),
        (lambda: sample_rotations(0, 8), ValueError, "batch"),
        (lambda: sample_rotations(2, 0), ValueError, "n_cubes"),
        (lambda: sample_rotations(2, 8, codes=(0, 4)), ValueError, "codes"),
        (lambda: sample_rotations(2, 8, codes=()), ValueError, "codes"),
        (lambda: sample_rotations(2, 8, rng=-3), ValueError, "rng"),
    ],
)
def test_sampler_bad_arguments(call, error, match):
    with pytest.raises(error, match=match):
        call()
