"""Where the cubes are cut: cells of a grid, the gap, jitter."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rubikkit.ops import cell_origins, sample_origins


def test_known_answer_from_the_docstring():
    o = cell_origins((160, 160, 160), grid=2, cube_size=64, jitter=False)
    assert o.shape == (8, 3) and o.dtype == np.int64
    np.testing.assert_array_equal(o[:2], [[8, 8, 8], [8, 8, 88]])
    np.testing.assert_array_equal(o[7], [88, 88, 88])


def test_cells_are_numbered_in_c_order_over_dhw():
    # Without a gap the origins are the cell corners: cell k at grid index (k//4, k//2%2, k%2).
    o = cell_origins((1, 20, 40, 60), grid=2, cube_size=None)
    for k in range(8):
        np.testing.assert_array_equal(o[k], np.array([k // 4, (k // 2) % 2, k % 2]) * (10, 20, 30))


@settings(max_examples=60, deadline=None)
@given(
    grid=st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(1, 3)),
    shape=st.tuples(st.integers(3, 40), st.integers(3, 40), st.integers(3, 40)),
    frac=st.floats(0.3, 1.0),
    jitter=st.booleans(),
    seed=st.integers(0, 2**31),
)
def test_every_cube_lies_inside_its_own_cell(grid, shape, frac, jitter, seed):
    grid = tuple(min(g, s) for g, s in zip(grid, shape))
    smallest = [s // g for s, g in zip(shape, grid)]
    cube = tuple(max(1, int(c * frac)) for c in smallest)
    o = sample_origins(3, shape, grid, cube, jitter=jitter, rng=seed)
    assert o.shape == (3, int(np.prod(grid)), 3)
    idx = np.stack(np.meshgrid(*[np.arange(g) for g in grid], indexing="ij"), -1).reshape(-1, 3)
    for axis in range(3):
        L, g = shape[axis], grid[axis]
        start = idx[:, axis] * L // g
        stop = (idx[:, axis] + 1) * L // g
        assert (o[..., axis] >= start).all()
        assert (o[..., axis] + cube[axis] <= stop).all()
        if not jitter:  # centred: the gap is split evenly (the extra voxel goes after the cube)
            slack = stop - start - cube[axis]
            np.testing.assert_array_equal(
                o[..., axis] - start, np.broadcast_to(slack // 2, o.shape[:2])
            )


def test_jitter_reaches_every_offset_and_no_jitter_is_fixed():
    o = sample_origins(400, (12, 12, 12), 2, 4, jitter=True, rng=0)
    # Cells of 6 with cubes of 4: offsets 0, 1, 2 inside each cell, on every axis.
    for axis in range(3):
        assert set((o[..., axis] % 6).ravel().tolist()) == {0, 1, 2}
    fixed = sample_origins(5, (12, 12, 12), 2, 4, jitter=False)
    assert (fixed == fixed[0]).all()


def test_rng_kinds_are_reproducible():
    a = sample_origins(4, (30, 30, 30), 2, 10, rng=7)
    np.testing.assert_array_equal(a, sample_origins(4, (30, 30, 30), 2, 10, rng=7))
    np.testing.assert_array_equal(
        a, sample_origins(4, (30, 30, 30), 2, 10, rng=np.random.default_rng(7))
    )
    t1 = sample_origins(4, (30, 30, 30), 2, 10, rng=torch.Generator().manual_seed(1))
    t2 = sample_origins(4, (30, 30, 30), 2, 10, rng=torch.Generator().manual_seed(1))
    np.testing.assert_array_equal(t1, t2)


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: cell_origins((160, 160, 160), 2, 81), ValueError, "cube_size: .* does not fit"),
        (lambda: cell_origins((10, 10, 10), 2, (5, 6, 5)), ValueError, "cube_size"),
        (lambda: cell_origins((10, 10, 10), 2, 0), ValueError, "cube_size"),
        (lambda: cell_origins((10, 10, 10), 2, "4"), TypeError, "cube_size"),
        (lambda: cell_origins((10, 10, 2), 3, 1), ValueError, "grid: 3 cells along axis W"),
        (lambda: cell_origins((10, 10, 10), (2, 2), 1), ValueError, "grid"),
        (lambda: cell_origins((10, 10, 10), 0, 1), ValueError, "grid"),
        (lambda: cell_origins((10, 10), 2, 1), ValueError, "volume_shape"),
        (lambda: cell_origins(10, 2, 1), TypeError, "volume_shape"),
        (lambda: cell_origins((10, 0, 10), 1, 1), ValueError, "volume_shape"),
        (lambda: sample_origins(0, (10, 10, 10)), ValueError, "batch"),
        (lambda: sample_origins(True, (10, 10, 10)), ValueError, "batch"),
        (lambda: sample_origins(2, (10, 10, 10), rng=1.5), TypeError, "rng"),
    ],
)
def test_bad_arguments(call, error, match):
    with pytest.raises(error, match=match):
        call()
