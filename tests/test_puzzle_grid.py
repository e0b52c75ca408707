"""The CUDA kernel's index arithmetic, run on the CPU.

``rubikkit._C._puzzle_grid_on_host`` runs the kernel's thread body (csrc/puzzle/puzzle_grid.h,
the same source the kernel compiles) for every (block, thread) of the launches the CUDA path
would make, one thread at a time. So how rows map to warps and lanes, how a launch strides over
a grid smaller than its rows, how the slot table is cut into launches, and both index widths are
checked against the numpy reference on every machine, GPU or not. Whether the kernel runs on a
device is test_puzzle_cuda.py's job.
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from puzzle_inputs import numpy_volumes, puzzle_layout, random_values

from rubikkit.ops import reference

puzzle_module = importlib.import_module("rubikkit.ops.puzzle")
_C = puzzle_module._kernel_module()
pytestmark = pytest.mark.skipif(
    _C is None or not hasattr(_C, "_puzzle_grid_on_host"),
    reason="rubikkit._C is not built (run `make build`)",
)
MAX_BLOCKS = 1 << 20  # the kernel's own cap on a launch's grid
UINT32_MAX = 2**32 - 1


def _grid_on_host(vols, origins, cube, perms, rots, *, chunk, max_blocks, wide, rng):
    # The output starts as noise, so an element no thread writes shows as a mismatch.
    out = random_values((*perms.shape, vols.shape[1], *cube), vols.dtype.name, rng)
    _C._puzzle_grid_on_host(vols, origins, perms, rots, cube, out, chunk, max_blocks, wide)
    return out


def _check(vols, origins, cube, perms, rots, **launch):
    rng = np.random.default_rng(0)
    got = _grid_on_host(vols, origins, cube, perms, rots, rng=rng, **launch)
    want = reference.puzzle(vols, origins, cube, perms, rots)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("wide", [False, True], ids=["32-bit", "64-bit"])
@pytest.mark.parametrize(
    "chunk, max_blocks",
    [(64, MAX_BLOCKS), (2, MAX_BLOCKS), (4, 1), (7, 3)],
    ids=["one-launch", "launches-of-2-slots", "one-block", "three-blocks"],
)
@pytest.mark.parametrize("cw", [1, 5, 12, 16, 31, 32, 33, 70])
def test_kernel_grid_matches_reference(cw, chunk, max_blocks, wide):
    # 9 slots of 2 * 3 * 5 = 30 rows: the last block (and the last warp, where a warp holds
    # several rows, cw <= 16) is partial for every cw; chunks of 2, 4 and 7 slots leave a partial
    # last launch whose first slot is not the first of its sample; grids of 1 and 3 blocks make
    # every thread take several grid steps. Every rotation code, on a volume whose W axis is not
    # unit-stride (and runs backwards for the reversed layout).
    rng = np.random.default_rng(cw)
    layout = "reversed" if cw % 2 else "strided"
    vols = numpy_volumes((3, 2, 7, 16, cw + 2), "int16", layout, rng)
    cube = (3, 5, cw)
    origins, perms, rots = puzzle_layout(3, vols.shape, (1, 3, 1), cube, rng)
    rots[:] = np.arange(rots.size).reshape(rots.shape) % 4
    _check(vols, origins, cube, perms, rots, chunk=chunk, max_blocks=max_blocks, wide=wide)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    grid=st.tuples(st.integers(1, 2), st.integers(1, 3), st.integers(1, 2)),
    cube=st.tuples(st.integers(1, 4), st.integers(1, 4), st.integers(1, 40)),
    B=st.integers(1, 3),
    C=st.integers(1, 2),
    dtype=st.sampled_from(["uint8", "float16", "float32", "int64"]),
    chunk=st.integers(1, 9),
    max_blocks=st.sampled_from([1, 2, 5, MAX_BLOCKS]),
    wide=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_kernel_grid_matches_reference_random(
    grid, cube, B, C, dtype, chunk, max_blocks, wide, seed
):
    rng = np.random.default_rng(seed)
    shape = (B, C, *(g * c + 2 for g, c in zip(grid, cube)))
    vols = numpy_volumes(shape, dtype, "permuted", rng)
    origins, perms, rots = puzzle_layout(B, vols.shape, grid, cube, rng)
    _check(vols, origins, cube, perms, rots, chunk=chunk, max_blocks=max_blocks, wide=wide)


@pytest.mark.parametrize("cw, span, rows_per_warp", [(1, 1, 32), (5, 5, 6), (12, 12, 2),
                                                     (16, 16, 2), (17, 17, 1), (32, 32, 1),
                                                     (70, 32, 1)])  # fmt: skip
def test_launch_plan_packs_short_rows_into_a_warp(cw, span, rows_per_warp):
    # 8 slots of 3 * 10 * 10 = 300 rows each: 2400 rows, 8 warps a block.
    plan = _C._puzzle_launch_plan((1, 8, 3), (10, 10, cw), 0, 8)
    assert (plan["span"], plan["rows_per_warp"], plan["rows"]) == (span, rows_per_warp, 2400)
    assert plan["blocks"] == -(-2400 // (8 * rows_per_warp))
    assert plan["narrow"]


def test_launch_plan_rows_stay_32_bit_while_every_value_fits():
    # Rows of 32 or more elements: one row a warp, 8 a block, and a grid capped at 2^20 blocks,
    # so a grid step is 2^23 rows; the row loop's last value is rows + 2^23 - 1 at most.
    fits = UINT32_MAX - 8 * MAX_BLOCKS
    plan = _C._puzzle_launch_plan((1, 1, fits), (1, 1, 32), 0, 1)
    assert plan["blocks"] == MAX_BLOCKS and plan["narrow"]
    assert not _C._puzzle_launch_plan((1, 1, fits + 1), (1, 1, 32), 0, 1)["narrow"]
    assert not _C._puzzle_launch_plan((1, 1, 2**32), (1, 1, 32), 0, 1)["narrow"]
    assert not _C._puzzle_launch_plan((1, 1, 8), (1, 1, 32), 0, 1, wide=True)["narrow"]
    # The slot a launch starts at, and M, enter the row arithmetic too.
    many = (2**32, 1, 1)
    assert _C._puzzle_launch_plan(many, (1, 1, 1), UINT32_MAX - 1, 1)["narrow"]
    assert not _C._puzzle_launch_plan(many, (1, 1, 1), UINT32_MAX, 1)["narrow"]
    assert not _C._puzzle_launch_plan((1, 2**32, 1), (1, 1, 1), 0, 1)["narrow"]


def test_grid_on_host_names_bad_launch_arguments():
    rng = np.random.default_rng(1)
    vols = numpy_volumes((1, 1, 8, 8, 8), "float32", "contiguous", rng)
    origins, perms, rots = puzzle_layout(1, vols.shape, 2, 4, rng)
    for kwargs, name in [
        ({"chunk": 0, "max_blocks": 4}, "chunk"),
        ({"chunk": 4, "max_blocks": 0}, "max_blocks"),
        ({"chunk": 4, "max_blocks": MAX_BLOCKS + 1}, "max_blocks"),
    ]:
        with pytest.raises(ValueError, match=f"^{name}: "):
            _grid_on_host(vols, origins, (4, 4, 4), perms, rots, wide=False, rng=rng, **kwargs)
    with pytest.raises(ValueError, match="^count: "):
        _C._puzzle_launch_plan((1, 8, 1), (4, 4, 4), 6, 3)
