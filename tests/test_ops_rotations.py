"""Rotation codes: 180-degree rotations forming the Klein four-group."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from rubikkit.ops import (
    ROT_BOTH,
    ROT_HORIZONTAL,
    ROT_NONE,
    ROT_VERTICAL,
    ROTATIONS,
    compose_rotations,
    reversed_axes,
    rotation_bits,
)
from rubikkit.ops.reference import rotate_cube

CUBE = np.random.default_rng(0).standard_normal((2, 3, 4, 5))  # (C, d, h, w), all sizes distinct


def test_group_table():
    assert compose_rotations(ROT_HORIZONTAL, ROT_HORIZONTAL) == ROT_NONE
    assert compose_rotations(ROT_HORIZONTAL, ROT_VERTICAL) == ROT_BOTH
    assert compose_rotations(ROT_VERTICAL, ROT_BOTH) == ROT_HORIZONTAL
    assert compose_rotations(ROT_HORIZONTAL, ROT_BOTH) == ROT_VERTICAL
    for a in ROTATIONS:
        assert compose_rotations(a, ROT_NONE) == a  # identity
        assert compose_rotations(a, a) == ROT_NONE  # every code is its own inverse
        for b in ROTATIONS:
            assert compose_rotations(a, b) == compose_rotations(b, a)  # commutative
            for c in ROTATIONS:
                assert compose_rotations(compose_rotations(a, b), c) == compose_rotations(
                    a, compose_rotations(b, c)
                )


@pytest.mark.parametrize(("a", "b"), list(itertools.product(ROTATIONS, repeat=2)))
def test_composition_matches_rotating_twice(a, b):
    np.testing.assert_array_equal(
        rotate_cube(rotate_cube(CUBE, a), b), rotate_cube(CUBE, compose_rotations(a, b))
    )


@pytest.mark.parametrize(
    ("code", "plane"),
    [(ROT_HORIZONTAL, (2, 3)), (ROT_VERTICAL, (1, 2)), (ROT_BOTH, (1, 3))],
)
def test_codes_are_180_degree_rotations_in_their_plane(code, plane):
    np.testing.assert_array_equal(rotate_cube(CUBE, code), np.rot90(CUBE, 2, axes=plane))
    assert rotate_cube(CUBE, code).shape == CUBE.shape
    np.testing.assert_array_equal(rotate_cube(CUBE, ROT_NONE), CUBE)


def test_reversed_axes_and_bits():
    assert [reversed_axes(c) for c in ROTATIONS] == [(), (1, 2), (0, 1), (0, 2)]
    hor, ver = rotation_bits(np.array([[0, 1, 2, 3]]))
    np.testing.assert_array_equal(hor, [[0, 1, 0, 1]])
    np.testing.assert_array_equal(ver, [[0, 0, 1, 1]])
    # bits -> code round trip
    np.testing.assert_array_equal(hor + 2 * ver, [[0, 1, 2, 3]])


def test_elementwise_composition_on_arrays():
    a = np.array([0, 1, 2, 3])
    np.testing.assert_array_equal(compose_rotations(a, a[::-1]), [3, 3, 3, 3])


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: reversed_axes(4), ValueError, "code"),
        (lambda: reversed_axes(1.5), TypeError, "code"),
        (lambda: compose_rotations(1, 5), ValueError, "b: rotation codes"),
        (lambda: compose_rotations(-1, 0), ValueError, "a: rotation codes"),
        (lambda: compose_rotations(1.0, 0), TypeError, "a"),
        (lambda: rotation_bits(np.array([0, 4])), ValueError, "rots"),
        (lambda: rotation_bits(np.array([0.0])), TypeError, "rots"),
    ],
)
def test_bad_codes(call, error, match):
    with pytest.raises(error, match=match):
        call()
