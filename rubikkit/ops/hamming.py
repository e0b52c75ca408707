"""Permutation sets with large Hamming distances, and sampling from them.

Cube ordering is a classification over a fixed set of ``k`` permutations (Zhuang et al., MICCAI
2019, Sec. 2.1.3, following the jigsaw puzzle of Noroozi & Favaro, ECCV 2016). Two permutations that
differ in few positions are nearly the same puzzle, so the set is chosen greedily to keep its
members far apart in Hamming distance (number of positions where two permutations differ);
Noroozi & Favaro, Algorithm 1:

1. candidates = all ``n!`` permutations; pick one at random;
2. repeat until ``k`` are chosen: pick the candidate that is farthest from the chosen set.

"Farthest" has two readings. ``"max_min"`` maximises the *minimum* distance to the chosen set
(for 8 cubes and k = 100 every pair then differs in at least 5 positions). ``"max_avg"``
maximises the *mean* distance, the rule most public code ships; it tends to leave some pairs much
closer (:func:`min_pairwise_distance` reports it).

For ``n_cubes > 9`` (e.g. 27 cubes of a 3x3x3 jigsaw) ``n!`` is too large to enumerate, so the
candidates are a random pool of distinct permutations instead (``pool_size``).
"""

from __future__ import annotations

import itertools
import math
import numbers

import numpy as np

from rubikkit.ops._random import as_generator

METHODS = ("max_min", "max_avg")
MAX_ENUMERATED = 9  # 9! = 362880 candidates is still fast; 10! is not


def _all_permutations(n: int) -> np.ndarray:
    return np.array(list(itertools.permutations(range(n))), dtype=np.int8)


def _random_pool(n: int, size: int, gen: np.random.Generator) -> np.ndarray:
    keys = gen.random((size, n))
    pool = np.argsort(keys, axis=1).astype(np.int8)
    return np.unique(pool, axis=0)  # distinct rows (for 10 cubes a 100_000 pool repeats ~1 %)


_TAKEN = -(2**62)


def _distance_index(cands: np.ndarray, n: int):
    """A function giving the Hamming distance of every row of ``cands`` to row ``i``.

    The distance is ``n`` minus the positions where two rows agree. Listing once, per position
    and value, the rows that hold that value there lets one call touch each row once (an
    increment per agreeing position) instead of comparing all ``n`` positions of every row.
    """
    holders = []
    for j in range(n):
        col = cands[:, j].astype(np.intp)
        order = np.argsort(col, kind="stable").astype(np.int32)  # < 2**31 rows
        holders.append(np.split(order, np.cumsum(np.bincount(col, minlength=n))[:-1]))
    agree = np.zeros(len(cands), dtype=np.int64)

    def distance_to(i: int) -> np.ndarray:
        agree.fill(0)
        for j, v in enumerate(cands[i]):
            agree[holders[j][v]] += 1  # a row appears once in a list: no repeated index
        return n - agree

    return distance_to


def hamming_permutations(
    n_cubes: int = 8,
    k: int = 100,
    method: str = "max_min",
    seed: int = 0,
    pool_size: int = 100_000,
) -> np.ndarray:
    """A set of ``k`` permutations of ``n_cubes`` chosen greedily for large Hamming distance.

    Parameters
    ----------
    n_cubes : int
        Length of each permutation (M, the number of cubes), >= 2.
    k : int
        Number of permutations (the number of ordering classes), 1 <= k <= candidates.
    method : {"max_min", "max_avg"}
        Greedy rule: maximise the minimum or the mean Hamming distance to the chosen set.
    seed : int
        Seeds the first pick and the tie-breaking; the result is a function of the arguments.
    pool_size : int
        Number of random candidates when ``n_cubes > 9`` (ignored otherwise); repeats are
        dropped, and ``k`` may not exceed the distinct ones.

    Returns
    -------
    perms : (k, n_cubes) int64 array
        Distinct permutations of ``0..n_cubes-1``; row ``i`` is ordering class ``i``.
    """
    for name, v, lo in (("n_cubes", n_cubes, 2), ("k", k, 1), ("pool_size", pool_size, 1)):
        if isinstance(v, bool) or not isinstance(v, numbers.Integral):
            raise TypeError(f"{name}: expected an int, got {type(v).__name__}")
        if v < lo:
            raise ValueError(f"{name}: must be >= {lo}, got {v}")
    if n_cubes > 127:
        raise ValueError(f"n_cubes: at most 127 cubes are supported, got {n_cubes}")
    if method not in METHODS:
        raise ValueError(f"method: expected one of {METHODS}, got {method!r}")
    gen = as_generator(seed, "seed")

    if n_cubes <= MAX_ENUMERATED:
        cands = _all_permutations(n_cubes)
    else:
        cands = _random_pool(n_cubes, pool_size, gen)
    if k > len(cands):
        if n_cubes <= MAX_ENUMERATED:
            raise ValueError(
                f"k: only {math.factorial(n_cubes)} candidate permutations of {n_cubes} cubes, "
                f"asked {k}"
            )
        # The pool is what limits k here, not n!: say so, or a user looks for a bug in n_cubes.
        raise ValueError(
            f"k: the random pool holds only {len(cands)} distinct permutations of {n_cubes} "
            f"cubes (pool_size = {pool_size}), asked {k}; raise pool_size"
        )
    # A seeded shuffle makes ties (there are many) break differently per seed but reproducibly.
    cands = cands[gen.permutation(len(cands))]

    distance_to = _distance_index(cands, n_cubes)
    chosen = np.empty(k, dtype=np.int64)
    chosen[0] = 0  # the shuffle already made the first candidate a random one
    # Running score of every candidate against the chosen set: its min or its summed distance.
    # A chosen candidate's score is pushed far below any other (distances sum to < 2**40), so
    # argmax skips it and, on ties, still takes the first of the best as a plain argmax does.
    score = distance_to(0)
    score[0] = _TAKEN
    for i in range(1, k):
        pick = int(np.argmax(score))
        chosen[i] = pick
        dist = distance_to(pick)
        if method == "max_min":
            np.minimum(score, dist, out=score)
        else:
            score += dist
        score[pick] = _TAKEN
    return cands[chosen].astype(np.int64)


def pairwise_hamming(perms) -> np.ndarray:
    """(k, k) Hamming distances between the rows of ``perms`` (k, n)."""
    p = np.asarray(perms)
    if p.ndim != 2:
        raise ValueError(f"perms: expected a (k, n) array, got shape {p.shape}")
    return (p[:, None, :] != p[None, :, :]).sum(axis=2)


def min_pairwise_distance(perms) -> int:
    """Smallest Hamming distance between two different rows of ``perms`` (k >= 2)."""
    dist = pairwise_hamming(perms)
    if len(dist) < 2:
        raise ValueError("perms: need at least 2 rows")
    return int(dist[~np.eye(len(dist), dtype=bool)].min())


def sample_permutations(batch: int, perm_set, rng=None) -> tuple[np.ndarray, np.ndarray]:
    """Draw one permutation per sample from a permutation set (uniform over its rows).

    Parameters
    ----------
    batch : int
        Number of samples B.
    perm_set : (k, M) int array
        E.g. from :func:`hamming_permutations`.
    rng : None, int, numpy.random.Generator or torch.Generator

    Returns
    -------
    labels : (B,) int64 array
        Row index in ``perm_set`` (the ordering class).
    perms : (B, M) int64 array
        ``perm_set[labels]``, ready for :func:`rubikkit.ops.puzzle`.
    """
    if isinstance(batch, bool) or not isinstance(batch, numbers.Integral) or batch < 1:
        raise ValueError(f"batch: expected an int >= 1, got {batch!r}")
    ps = np.asarray(perm_set)
    if ps.ndim != 2 or ps.shape[0] < 1:
        raise ValueError(f"perm_set: expected a (k, M) array with k >= 1, got shape {ps.shape}")
    if not np.issubdtype(ps.dtype, np.integer):
        raise TypeError(f"perm_set: expected integers, got dtype {ps.dtype}")
    gen = as_generator(rng)
    labels = gen.integers(0, ps.shape[0], size=int(batch), dtype=np.int64)
    return labels, ps[labels].astype(np.int64)


def sample_rotations(batch: int, n_cubes: int, codes=(0, 1, 2, 3), rng=None) -> np.ndarray:
    """Draw a rotation code per cube, uniformly from ``codes``.

    With the default all four codes are equally likely, i.e. each cube is rotated horizontally
    with probability 1/2 and, independently, vertically with probability 1/2 (the paper's two
    binary targets, Sec. 2.1.4). ``codes=(0,)`` gives the ordering-only task.

    Returns
    -------
    rots : (B, n_cubes) int64 array
    """
    if isinstance(batch, bool) or not isinstance(batch, numbers.Integral) or batch < 1:
        raise ValueError(f"batch: expected an int >= 1, got {batch!r}")
    if isinstance(n_cubes, bool) or not isinstance(n_cubes, numbers.Integral) or n_cubes < 1:
        raise ValueError(f"n_cubes: expected an int >= 1, got {n_cubes!r}")
    c = np.asarray(codes)
    if c.ndim != 1 or c.size == 0 or not np.issubdtype(c.dtype, np.integer):
        raise ValueError(f"codes: expected a non-empty sequence of ints, got {codes!r}")
    if c.min() < 0 or c.max() > 3:
        raise ValueError(f"codes: rotation codes are 0..3, got {codes!r}")
    gen = as_generator(rng)
    return c.astype(np.int64)[gen.integers(0, c.size, size=(int(batch), int(n_cubes)))]
