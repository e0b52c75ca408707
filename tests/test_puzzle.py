"""The puzzle op: C++ kernel == numpy reference, algebra of puzzle/unpuzzle, and argument errors.

CUDA comparisons live in test_puzzle_cuda.py; this file runs everywhere (the fallback path is
tested by hiding the extension).
"""

from __future__ import annotations

import importlib
import os
import re
import shutil
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from conftest import run_direct_call
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from puzzle_inputs import (
    LAYOUTS,
    NUMPY_DTYPES,
    TORCH_DTYPES,
    TORCH_LAYOUTS,
    as_numpy,
    numpy_volumes,
    puzzle_layout,
    torch_volumes,
)

import rubikkit
from rubikkit import _ext
from rubikkit.ops import (
    backend_for,
    cell_origins,
    puzzle,
    reference,
    sample_origins,
    unpuzzle,
)
from rubikkit.ops._torch_impl import puzzle_torch, unpuzzle_torch

# The module, not the function that rubikkit.ops re-exports under the same name.
puzzle_module = importlib.import_module("rubikkit.ops.puzzle")
HAVE_KERNEL = puzzle_module._kernel_module() is not None
requires_kernel = pytest.mark.skipif(
    not HAVE_KERNEL, reason="rubikkit._C is not built (run `make build`)"
)
SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def puzzle_cases(draw, dtypes=NUMPY_DTYPES, layouts=LAYOUTS):
    """(volume shape, dtype, layout, grid, cube, seed): odd sizes, M != 8, B = 1, C > 1."""
    grid = tuple(draw(st.integers(1, 3)) for _ in range(3))
    # W up to 19 so the vectorised row loops run their bodies and their remainders.
    cube = (draw(st.integers(1, 5)), draw(st.integers(1, 5)), draw(st.integers(1, 19)))
    # Each cell holds its cube plus a gap of 0..3 voxels (so cells can have different lengths).
    dhw = tuple(g * c + draw(st.integers(0, 3)) for g, c in zip(grid, cube))
    B = draw(st.integers(1, 3))
    C = draw(st.integers(1, 3))
    return (
        (B, C, *dhw),
        draw(st.sampled_from(dtypes)),
        draw(st.sampled_from(layouts)),
        grid,
        cube,
        draw(st.integers(0, 2**32 - 1)),
    )


# --- kernel == reference -----------------------------------------------------------------------


@requires_kernel
@SETTINGS
@given(case=puzzle_cases(), jitter=st.booleans())
def test_cpp_kernel_matches_reference_numpy(case, jitter):
    shape, dtype, layout, grid, cube, seed = case
    rng = np.random.default_rng(seed)
    vols = numpy_volumes(shape, dtype, layout, rng)
    origins, perms, rots = puzzle_layout(shape[0], shape, grid, cube, rng, jitter=jitter)
    assert backend_for(vols) == "cpp"
    got = puzzle(vols, origins, cube, perms, rots)
    want = reference.puzzle(np.ascontiguousarray(vols), origins, cube, perms, rots)
    assert type(got) is np.ndarray and got.dtype == vols.dtype and got.flags.c_contiguous
    assert got.shape == (shape[0], origins.shape[1], shape[1], *cube)
    np.testing.assert_array_equal(got, want)


@requires_kernel
@SETTINGS
@given(case=puzzle_cases(dtypes=TORCH_DTYPES, layouts=TORCH_LAYOUTS))
def test_cpp_kernel_matches_reference_torch(case):
    shape, dtype, layout, grid, cube, seed = case
    rng = np.random.default_rng(seed)
    vols = torch_volumes(shape, dtype, layout, rng)
    origins, perms, rots = puzzle_layout(shape[0], shape, grid, cube, rng)
    assert backend_for(vols) == "cpp"
    got = puzzle(vols, origins, cube, perms, rots)
    assert isinstance(got, torch.Tensor) and got.dtype == vols.dtype
    assert got.device == vols.device and got.is_contiguous()
    want = reference.puzzle(as_numpy(vols), origins, cube, perms, rots)
    np.testing.assert_array_equal(as_numpy(got), want)


@requires_kernel
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", ["uint8", "int16", "float32", "float64"])
def test_cpp_kernel_large_input_uses_threads_and_matches(layout, dtype):
    # Big enough (> 256 kB of output) for the OpenMP path, with a 2x2x2 grid and 8 cubes.
    rng = np.random.default_rng(7)
    vols = numpy_volumes((2, 2, 37, 41, 43), dtype, layout, rng)
    origins, perms, rots = puzzle_layout(2, vols.shape, 2, (17, 19, 20), rng)
    got = puzzle(vols, origins, (17, 19, 20), perms, rots)
    want = reference.puzzle(np.ascontiguousarray(vols), origins, (17, 19, 20), perms, rots)
    np.testing.assert_array_equal(got, want)


@requires_kernel
def test_3x3x3_grid_with_27_cubes_matches_reference():
    rng = np.random.default_rng(3)
    vols = numpy_volumes((2, 1, 33, 30, 31), "float32", "contiguous", rng)
    origins, perms, rots = puzzle_layout(2, vols.shape, 3, (9, 8, 10), rng)
    assert origins.shape == (2, 27, 3)
    got = puzzle(vols, origins, (9, 8, 10), perms, rots)
    np.testing.assert_array_equal(got, reference.puzzle(vols, origins, (9, 8, 10), perms, rots))


@requires_kernel
def test_overlapping_cubes_and_shared_origins_2d():
    # Cubes may overlap (origins are not tied to a grid by the op); (M, 3) origins are shared.
    rng = np.random.default_rng(4)
    vols = numpy_volumes((3, 2, 10, 11, 12), "int16", "contiguous", rng)
    origins = np.array([[0, 0, 0], [1, 2, 3], [4, 5, 6]])
    perms = np.array([[0, 1, 2], [2, 1, 0], [1, 2, 0]])
    rots = np.array([[0, 1, 2], [3, 3, 3], [2, 1, 0]])
    got = puzzle(vols, origins, 6, perms, rots)
    want = reference.puzzle(vols, np.broadcast_to(origins, (3, 3, 3)), (6, 6, 6), perms, rots)
    np.testing.assert_array_equal(got, want)


def test_rots_none_means_no_rotation():
    rng = np.random.default_rng(5)
    vols = numpy_volumes((2, 1, 8, 8, 8), "float32", "contiguous", rng)
    origins, perms, _ = puzzle_layout(2, vols.shape, 2, 4, rng)
    np.testing.assert_array_equal(
        puzzle(vols, origins, 4, perms), puzzle(vols, origins, 4, perms, np.zeros((2, 8), int))
    )


def test_layout_arguments_accept_lists_and_tensors():
    rng = np.random.default_rng(6)
    vols = numpy_volumes((1, 1, 8, 8, 8), "float32", "contiguous", rng)
    origins, perms, rots = puzzle_layout(1, vols.shape, 2, 4, rng)
    want = puzzle(vols, origins, 4, perms, rots)
    got = puzzle(
        vols, origins.tolist(), [4, 4, 4], torch.from_numpy(perms).int(), rots.astype(np.uint8)
    )
    np.testing.assert_array_equal(got, want)


# --- kinds, out= -------------------------------------------------------------------------------


def test_numpy_in_numpy_out_and_tensor_in_tensor_out():
    rng = np.random.default_rng(8)
    vols = numpy_volumes((2, 1, 8, 8, 8), "float16", "contiguous", rng)
    origins, perms, rots = puzzle_layout(2, vols.shape, 2, 4, rng)
    a = puzzle(vols, origins, 4, perms, rots)
    t = puzzle(torch.from_numpy(vols), origins, 4, perms, rots)
    assert isinstance(a, np.ndarray) and a.dtype == np.float16
    assert isinstance(t, torch.Tensor) and t.dtype == torch.float16
    np.testing.assert_array_equal(a, t.numpy())


def test_out_is_reused_for_numpy_and_tensors():
    rng = np.random.default_rng(9)
    vols = numpy_volumes((2, 3, 9, 8, 7), "float32", "contiguous", rng)
    origins, perms, rots = puzzle_layout(2, vols.shape, (2, 2, 1), (4, 3, 5), rng)
    want = reference.puzzle(vols, origins, (4, 3, 5), perms, rots)
    out = np.full(want.shape, -1, np.float32)
    assert puzzle(vols, origins, (4, 3, 5), perms, rots, out=out) is out
    np.testing.assert_array_equal(out, want)
    tout = torch.full(want.shape, -1.0)
    assert puzzle(torch.from_numpy(vols), origins, (4, 3, 5), perms, rots, out=tout) is tout
    np.testing.assert_array_equal(tout.numpy(), want)


def test_gradients_do_not_flow():
    vols = torch.randn(1, 1, 8, 8, 8, requires_grad=True)
    origins = cell_origins(vols.shape, 2, 4, jitter=False)
    out = puzzle(vols, origins, 4, np.arange(8)[None], np.zeros((1, 8), int))
    assert not out.requires_grad
    np.testing.assert_array_equal(
        out.numpy(),
        reference.puzzle(vols.detach().numpy(), origins[None], (4, 4, 4), np.arange(8)[None],
                         np.zeros((1, 8), int)),
    )  # fmt: skip


# --- properties --------------------------------------------------------------------------------


def test_known_answer_octants():
    # Voxel value = number of its octant: slot m of the puzzle must be constant perms[m].
    D = H = W = 10
    d, h, w = np.indices((D, H, W))
    octant = (d >= 5) * 4 + (h >= 5) * 2 + (w >= 5)
    vols = octant.astype(np.uint8)[None, None]
    origins = cell_origins(vols.shape, 2, 4, jitter=True, rng=0)
    perms = np.array([[3, 0, 7, 5, 1, 2, 6, 4]])
    cubes = puzzle(vols, origins, 4, perms, np.array([[0, 1, 2, 3] * 2]))
    for m in range(8):
        assert (cubes[0, m] == perms[0, m]).all()


@pytest.mark.parametrize(
    ("code", "axes"), [(1, (2, 3)), (2, (1, 2)), (3, (1, 3))], ids=["hor", "ver", "both"]
)
def test_rotation_codes_are_180_degree_rotations(code, axes):
    # Known answer against np.rot90 on (C, d, h, w): 1 = (H, W) plane, 2 = (D, H), 3 = (D, W).
    rng = np.random.default_rng(code)
    vols = numpy_volumes((1, 2, 5, 6, 7), "int32", "contiguous", rng)
    out = puzzle(vols, [[0, 0, 0]], (5, 6, 7), [[0]], [[code]])
    np.testing.assert_array_equal(out[0, 0], np.rot90(vols[0], 2, axes=axes))


@SETTINGS
@given(case=puzzle_cases(layouts=("contiguous",)))
def test_unpuzzle_restores_every_covered_voxel(case):
    shape, dtype, _, grid, cube, seed = case
    rng = np.random.default_rng(seed)
    vols = numpy_volumes(shape, dtype, "contiguous", rng)
    origins, perms, rots = puzzle_layout(shape[0], shape, grid, cube, rng)
    back = unpuzzle(puzzle(vols, origins, cube, perms, rots), origins, perms, rots, shape)
    covered = np.zeros(shape, bool)
    for b in range(shape[0]):
        for d0, h0, w0 in origins[b]:
            covered[b, :, d0 : d0 + cube[0], h0 : h0 + cube[1], w0 : w0 + cube[2]] = True
    np.testing.assert_array_equal(back[covered], vols[covered])
    assert (back[~covered] == 0).all()
    if dtype not in TORCH_DTYPES:
        return
    # Tensors take the torch path of unpuzzle, with the same result.
    tback = unpuzzle(torch.from_numpy(puzzle(vols, origins, cube, perms, rots)), origins, perms,
                     rots, shape)  # fmt: skip
    assert torch.equal(tback, torch.from_numpy(back))


@SETTINGS
@given(
    grid=st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(1, 3)),
    cell=st.tuples(st.integers(1, 4), st.integers(1, 4), st.integers(1, 4)),
    seed=st.integers(0, 1000),
)
def test_without_gap_the_cubes_tile_the_volume(grid, cell, seed):
    # Cube = cell: every voxel lies in exactly one cube, so puzzle -> unpuzzle is the identity
    # whatever the permutation and rotations.
    shape = (1, 1, *(g * c for g, c in zip(grid, cell)))
    origins = sample_origins(1, shape, grid, None, jitter=True, rng=seed)
    count = np.zeros(shape[2:], int)
    for d0, h0, w0 in origins[0]:
        count[d0 : d0 + cell[0], h0 : h0 + cell[1], w0 : w0 + cell[2]] += 1
    assert (count == 1).all()
    rng = np.random.default_rng(seed)
    vols = numpy_volumes(shape, "float64", "contiguous", rng)
    _, perms, rots = puzzle_layout(1, shape, grid, cell, rng)
    back = unpuzzle(puzzle(vols, origins, cell, perms, rots), origins, perms, rots, shape)
    np.testing.assert_array_equal(back, vols)


def test_torch_implementation_matches_reference_on_cpu():
    # The idiomatic torch version (GPU fallback, benchmark line) has the same semantics.
    rng = np.random.default_rng(10)
    for dtype in ("float32", "bfloat16", "uint8"):
        vols = torch_volumes((2, 2, 11, 10, 9), dtype, "permuted", rng)
        origins, perms, rots = puzzle_layout(2, vols.shape, 2, (5, 4, 3), rng)
        got = puzzle_torch(vols, origins, (5, 4, 3), perms, rots)
        want = reference.puzzle(as_numpy(vols), origins, (5, 4, 3), perms, rots)
        np.testing.assert_array_equal(as_numpy(got), want)
        back = unpuzzle_torch(got, origins, perms, rots, vols.shape[2:])
        ref_back = reference.unpuzzle(want, origins, perms, rots, vols.shape[2:])
        np.testing.assert_array_equal(as_numpy(back), ref_back)


# --- fallback ----------------------------------------------------------------------------------


@pytest.fixture
def no_kernel(monkeypatch):
    """Hide rubikkit._C from the dispatcher and forget earlier fallback warnings."""
    monkeypatch.setattr(puzzle_module, "_kernel_module", lambda: None)
    monkeypatch.setattr(_ext, "_warned", set())


def test_fallback_to_reference_warns_once(no_kernel):
    rng = np.random.default_rng(11)
    vols = numpy_volumes((2, 1, 9, 9, 9), "int16", "reversed", rng)
    origins, perms, rots = puzzle_layout(2, vols.shape, 2, 4, rng)
    assert backend_for(vols) == "reference"
    with pytest.warns(rubikkit.RubikkitWarning, match="numpy reference"):
        got = puzzle(vols, origins, 4, perms, rots)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # announced once, then silent
        again = puzzle(vols, origins, 4, perms, rots)
    want = reference.puzzle(np.ascontiguousarray(vols), origins, (4, 4, 4), perms, rots)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(again, want)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "uint8"])
def test_fallback_for_tensors_keeps_kind_and_dtype(no_kernel, dtype):
    rng = np.random.default_rng(12)
    vols = torch_volumes((1, 2, 8, 9, 10), dtype, "strided", rng)
    origins, perms, rots = puzzle_layout(1, vols.shape, 2, 4, rng)
    with pytest.warns(rubikkit.RubikkitWarning, match="unavailable"):
        got = puzzle(vols, origins, 4, perms, rots)
    assert isinstance(got, torch.Tensor) and got.dtype == vols.dtype
    want = reference.puzzle(as_numpy(vols), origins, (4, 4, 4), perms, rots)
    np.testing.assert_array_equal(as_numpy(got), want)


# --- errors (Python layer) ---------------------------------------------------------------------


def _args(B=2, shape=(9, 9, 9), cube=4):
    rng = np.random.default_rng(0)
    vols = numpy_volumes((B, 1, *shape), "float32", "contiguous", rng)
    origins, perms, rots = puzzle_layout(B, vols.shape, 2, cube, rng)
    return vols, origins, cube, perms, rots


def _replace(args, **kw):
    names = ("volumes", "origins", "cube_size", "perms", "rots")
    d = dict(zip(names, args))
    d.update(kw)
    return d


@pytest.mark.parametrize(
    ("kw", "error", "match"),
    [
        ({"volumes": np.zeros((1, 9, 9, 9), np.float32)}, ValueError, "volumes: expected 5"),
        ({"volumes": np.zeros((2, 1, 9, 9, 9), bool)}, TypeError, "volumes: unsupported dtype"),
        ({"volumes": np.zeros((2, 1, 9, 9, 9), complex)}, TypeError, "volumes: unsupported"),
        ({"volumes": torch.zeros((2, 1, 9, 9, 9), dtype=torch.bool)}, TypeError, "volumes"),
        ({"volumes": torch.zeros((2, 1, 9, 9, 9), dtype=torch.complex64)}, TypeError, "volumes"),
        ({"volumes": [[[[[0.0]]]]]}, TypeError, "volumes: expected a numpy array"),
        ({"volumes": torch.zeros((2, 1, 9, 9, 9), device="meta")}, ValueError, "volumes: .* meta"),
        ({"origins": np.zeros((3, 8, 3), int)}, ValueError, "origins: expected shape"),
        ({"origins": np.zeros((2, 8, 2), int)}, ValueError, "origins: expected shape"),
        ({"origins": np.zeros((2, 8, 3, 1), int)}, ValueError, "origins: expected 3 or 2"),
        ({"origins": np.zeros((2, 8, 3))}, TypeError, "origins: expected an integer"),
        ({"origins": np.zeros((2, 0, 3), int)}, ValueError, "origins: need at least one"),
        ({"origins": np.full((2, 8, 3), 6)}, ValueError, "origins: .* out of bounds"),
        ({"origins": np.full((2, 8, 3), -1)}, ValueError, "origins: .* out of bounds"),
        ({"cube_size": 10}, ValueError, "origins: .* out of bounds"),
        ({"cube_size": 0}, ValueError, "cube_size"),
        ({"cube_size": (4, 4)}, ValueError, "cube_size"),
        ({"cube_size": 4.0}, TypeError, "cube_size"),
        ({"perms": np.zeros((2, 8), int)}, ValueError, "perms: row 0 .* not a permutation"),
        ({"perms": np.tile(np.arange(1, 9), (2, 1))}, ValueError, "perms: row 0"),
        ({"perms": np.tile(np.arange(8), (3, 1))}, ValueError, "perms: expected shape"),
        ({"perms": np.tile(np.arange(7), (2, 1))}, ValueError, "perms: expected shape"),
        ({"perms": np.arange(8)}, ValueError, "perms: expected 2 dimensions"),
        ({"perms": np.tile(np.arange(8.0), (2, 1))}, TypeError, "perms: expected an integer"),
        ({"rots": np.full((2, 8), 4)}, ValueError, r"rots: entry \[0, 0\] = 4 is not a rotation"),
        ({"rots": np.full((2, 8), -1)}, ValueError, "rots: entry .* = -1 is not a rotation"),
        ({"rots": np.zeros((2, 7), int)}, ValueError, "rots: expected shape"),
        ({"rots": np.zeros((1, 8), int)}, ValueError, "rots: expected shape"),
        ({"rots": np.zeros((2, 8), bool)}, TypeError, "rots: expected an integer"),
        # uint64 beyond int64 used to wrap to negatives quoted in the message ("row 0 = [-9...")
        ({"perms": np.full((2, 8), 2**63 + 1, np.uint64)}, ValueError, "perms: values must fit"),
        ({"origins": np.full((2, 8, 3), 2**64 - 1, np.uint64)}, ValueError, "origins: values must"),
    ],
)
@pytest.mark.parametrize("checks", ["compiled", "python"])
def test_bad_arguments_raise_naming_the_argument(kw, error, match, checks, monkeypatch):
    if checks == "python":  # the layout's values checked by reference.layout_error
        monkeypatch.setattr(puzzle_module, "_kernel_module", lambda: None)
    args = _replace(_args(), **kw)
    with pytest.raises(error, match=match):
        puzzle(**args)


@st.composite
def bad_layouts(draw):
    """A valid layout, then (mostly) one entry spoilt: a cell out of range or repeated, a code
    out of 0..3, or a corner that puts its cube outside the volume."""
    B, M = draw(st.integers(1, 4)), draw(st.sampled_from([1, 2, 8, 27]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    dhw = tuple(draw(st.integers(3, 12)) for _ in range(3))
    cube = tuple(draw(st.integers(1, n)) for n in dhw)
    origins = np.stack(
        [rng.integers(0, [n - c + 1 for n, c in zip(dhw, cube)], size=(M, 3)) for _ in range(B)]
    ).astype(np.int64)
    perms = np.stack([rng.permutation(M) for _ in range(B)]).astype(np.int64)
    rots = rng.integers(0, 4, size=(B, M)).astype(np.int64)
    b, m = draw(st.integers(0, B - 1)), draw(st.integers(0, M - 1))
    spoil = draw(st.sampled_from(["none", "cell", "repeat", "code", "corner"]))
    if spoil == "cell":
        perms[b, m] = draw(st.sampled_from([-1, M, M + 5, -(2**40)]))
    elif spoil == "repeat" and M > 1:
        perms[b, m] = perms[b, (m + 1) % M]
    elif spoil == "code":
        rots[b, m] = draw(st.sampled_from([-1, 4, 2**33]))
    elif spoil == "corner":
        axis = draw(st.integers(0, 2))
        origins[b, m, axis] = draw(st.sampled_from([-1, dhw[axis] - cube[axis] + 1, 2**40]))
    return origins, perms, rots, dhw, cube, spoil


@requires_kernel
@SETTINGS
@given(case=bad_layouts())
def test_compiled_layout_check_says_what_the_reference_says(case):
    origins, perms, rots, dhw, cube, spoil = case
    got = puzzle_module._kernel_module().layout_error(origins, perms, rots, dhw, cube)
    assert got == reference.layout_error(origins, perms, rots, dhw, cube)
    if spoil == "none":
        assert got == ""
    elif spoil != "repeat" or perms.shape[1] > 1:
        assert re.match(r"(perms|rots|origins): ", got), got


@requires_kernel
def test_compiled_layout_check_returns_shape_errors_instead_of_raising():
    C = puzzle_module._kernel_module()
    origins, perms, rots = puzzle_layout(2, (2, 1, 9, 9, 9), 2, 4, 0)
    assert C.layout_error(origins, perms, rots, (9, 9, 9), (4, 4, 4)) == ""
    cases = [
        ((origins[..., :2].copy(), perms, rots, (9, 9, 9), (4, 4, 4)), "origins: expected shape"),
        ((origins, perms[:1].copy(), rots, (9, 9, 9), (4, 4, 4)), r"perms: expected shape \(B, M\)"),
        ((origins, perms, rots[:, :3].copy(), (9, 9, 9), (4, 4, 4)), "rots: expected shape"),
        ((origins[:, :0].copy(), perms[:, :0].copy(), rots[:, :0].copy(), (9, 9, 9), (4, 4, 4)),
         "origins: need at least one cube"),
        ((origins, perms, rots, (9, 9, 9), (4, 0, 4)), "cube_size: every entry must be >= 1"),
        ((origins, perms, rots, (9, -1, 9), (4, 4, 4)), "volume_shape: sizes must be >= 0"),
    ]  # fmt: skip
    for args, match in cases:
        assert re.match(match, C.layout_error(*args)), args
    with pytest.raises(TypeError):  # int64 C-contiguous only, like the kernels
        C.layout_error(origins.astype(np.int32), perms, rots, (9, 9, 9), (4, 4, 4))


def test_bad_out_raises_naming_out():
    vols, origins, cube, perms, rots = _args()
    shape = (2, 8, 1, cube, cube, cube)
    bad = [
        (np.empty(shape, np.float64), TypeError, "out: dtype"),
        (np.empty((2, 8, 1, cube, cube, cube + 1), np.float32), ValueError, "out: expected shape"),
        (np.empty(shape[::-1], np.float32).T, ValueError, "out: must be C-contiguous"),
        (torch.empty(shape), TypeError, "out: volumes is a numpy array"),
    ]
    ro = np.empty(shape, np.float32)
    ro.flags.writeable = False
    bad.append((ro, ValueError, "out: array is read-only"))
    for out, error, match in bad:
        with pytest.raises(error, match=match):
            puzzle(vols, origins, cube, perms, rots, out=out)
    # out aliasing the volumes
    big = np.zeros(2 * 8 * 4**3 + 2 * 9**3, np.float32)
    v = big[: 2 * 9**3].reshape(2, 1, 9, 9, 9)
    with pytest.raises(ValueError, match="out: shares memory"):
        puzzle(v, origins, cube, perms, rots, out=big[: 2 * 8 * 4**3].reshape(shape))
    tv = torch.from_numpy(vols)
    with pytest.raises(TypeError, match="out: volumes is a tensor"):
        puzzle(tv, origins, cube, perms, rots, out=np.empty(shape, np.float32))
    with pytest.raises(ValueError, match="out: must be C-contiguous"):
        puzzle(
            tv, origins, cube, perms, rots, out=torch.empty(shape[::-1]).permute(5, 4, 3, 2, 1, 0)
        )
    with pytest.raises(TypeError, match="out: dtype"):
        puzzle(tv, origins, cube, perms, rots, out=torch.empty(shape, dtype=torch.float64))
    grad = torch.zeros(shape, requires_grad=True)
    with pytest.raises(ValueError, match="out: requires grad"):
        puzzle(tv, origins, cube, perms, rots, out=grad)
    assert not grad.any()  # refused before a write


def test_unpuzzle_bad_arguments():
    vols, origins, cube, perms, rots = _args()
    cubes = puzzle(vols, origins, cube, perms, rots)
    with pytest.raises(TypeError, match="cubes"):
        unpuzzle(cubes.tolist(), origins, perms, rots, vols.shape)
    with pytest.raises(ValueError, match="cubes: expected 6"):
        unpuzzle(cubes[0], origins, perms, rots, vols.shape)
    with pytest.raises(ValueError, match="volume_shape"):
        unpuzzle(cubes, origins, perms, rots, (9, 9))
    with pytest.raises(ValueError, match="origins: .* out of bounds"):
        unpuzzle(cubes, origins, perms, rots, (5, 5, 5))
    with pytest.raises(ValueError, match="perms"):
        unpuzzle(cubes, origins[:, :4], perms, rots, vols.shape)
    with pytest.raises(TypeError, match="cubes: unsupported dtype"):
        unpuzzle(torch.zeros(cubes.shape, dtype=torch.uint16), origins, perms, rots, vols.shape)


# --- errors (C++ layer, called directly) -------------------------------------------------------


@requires_kernel
def test_cpp_layer_checks_its_arguments():
    # First in a child process: where C++ exceptions cannot unwind, the calls below would kill
    # this test run instead of failing this test.
    ok, detail = _ext.errors_raise()
    assert ok, detail
    C = puzzle_module._kernel_module()
    vols, origins, cube, perms, rots = _args()
    cube3 = (cube, cube, cube)
    out = np.empty((2, 8, 1, *cube3), np.float32)
    C.puzzle_cpu(vols, origins, perms, rots, cube3, out)  # the good call works
    np.testing.assert_array_equal(out, reference.puzzle(vols, origins, cube3, perms, rots))
    before = out.copy()

    def call(**kw):
        a = {
            "volumes": vols,
            "origins": origins,
            "perms": perms,
            "rots": rots,
            "cube_size": cube3,
            "out": out,
        }
        a.update(kw)
        return C.puzzle_cpu(**a)

    far = origins.copy()
    far[1, 5] = (0, 0, 6)
    neg = origins.copy()
    neg[0, 0, 0] = -1
    dup = perms.copy()
    dup[1, 1] = dup[1, 0]
    big = perms.copy()
    big[0, 0] = 8
    cases = [
        ({"origins": far}, "origins: the cube of cell 5 in sample 1"),
        ({"origins": neg}, "origins: the cube of cell 0 in sample 0"),
        ({"origins": origins[:1].copy()}, "origins: expected shape"),
        ({"perms": dup}, r"perms: row 1 = .* \(it repeats cell"),
        ({"perms": big}, r"perms: row 0 = .* \(entry \[0, 0\] = 8 is outside"),
        ({"perms": perms[:, :4].copy()}, "perms: expected shape"),
        ({"rots": np.full((2, 8), 4, np.int64)}, "rots: entry \\[0, 0\\] = 4"),
        ({"rots": np.full((2, 8), -2, np.int64)}, "rots: entry"),
        ({"cube_size": (0, 4, 4)}, "cube_size: every entry must be >= 1"),
        ({"cube_size": (-3, 4, 4)}, "cube_size"),
        ({"volumes": vols[0]}, "volumes: expected 5 dimensions"),
        ({"volumes": vols.astype(np.complex128)}, "volumes: unsupported item size 16"),
        ({"out": out[:1]}, "out: expected shape"),
        ({"out": out.astype(np.float64)}, "out: item size"),
        ({"out": np.empty((1, 8, 2, 8, 4, 4), np.float32)[..., ::2, :]}, "out: expected shape"),
        ({"out": np.empty(out.shape[::-1], np.float32).T}, "out: must be C-contiguous"),
    ]
    ro = out.copy()
    ro.flags.writeable = False
    cases.append(({"out": ro}, "out: buffer is read-only"))
    # out inside the volumes' memory
    alias = np.zeros(2 * 9**3 + out.size, np.float32)
    cases.append(
        (
            {"volumes": alias[: 2 * 9**3].reshape(2, 1, 9, 9, 9), "out": alias[9:][: out.size].reshape(out.shape)},
            "out: shares memory",
        )
    )  # fmt: skip
    for kw, match in cases:
        with pytest.raises(ValueError, match=match):
            call(**kw)
    # Index arrays must be int64 and C-contiguous: pybind11 refuses anything else (no conversion).
    for kw in (
        {"origins": origins.astype(np.int32)},
        {"perms": np.asfortranarray(perms)},
        {"rots": rots.astype(np.float64)},
        {"volumes": vols.tolist()},
    ):
        with pytest.raises(TypeError):
            call(**kw)
    np.testing.assert_array_equal(out, before)  # failed calls leave the output alone


@requires_kernel
def test_error_probe_tells_a_crash_from_a_raise(monkeypatch):
    assert _ext.errors_raise.__wrapped__()[0]  # this build: C++ errors become ValueError
    crash = "import os, signal\nprint('libstdc++: none mapped', flush=True)\nos.kill(os.getpid(), signal.SIGSEGV)"
    monkeypatch.setattr(_ext, "_ERROR_PROBE", crash)
    ok, detail = _ext.errors_raise.__wrapped__()
    assert not ok and "died with SIGSEGV" in detail and "none mapped" in detail
    monkeypatch.setattr(_ext, "_ERROR_PROBE", "print('libstdc++: x')")
    ok, detail = _ext.errors_raise.__wrapped__()
    assert not ok and "status 0 without raising ValueError" in detail


def _dynamic_symbols(path, which):
    out = subprocess.run(["nm", "-D", which, path], capture_output=True, text=True, check=True)
    return {line.split()[-1] for line in out.stdout.splitlines() if line.strip()}


@requires_kernel
@pytest.mark.skipif(
    not sys.platform.startswith("linux") or not (shutil.which("ldd") and shutil.which("nm")),
    reason="needs Linux ldd and nm",
)
def test_extension_has_one_cxx_runtime_of_its_own_choosing():
    # Linked by the C driver (`gcc -shared`, as some Pythons' sysconfig asks) without naming
    # libstdc++, the module depends on whatever libstdc++ the process already holds, if any; a
    # toolchain with only libstdc++.a links a copy in, which must stay private (and so must
    # libcudart_static.a's symbols): left visible, another extension's C++ runtime or CUDA
    # runtime can bind to it, or it to theirs.
    path = puzzle_module._kernel_module().__file__
    ldd = subprocess.run(["ldd", path], capture_output=True, text=True, check=True).stdout
    needs = _dynamic_symbols(path, "--undefined-only")
    assert "libstdc++" in ldd or "__cxa_throw" not in needs, (
        f"{path} throws through a libstdc++ it does not depend on:\n{ldd}"
    )
    exported = _dynamic_symbols(path, "--defined-only")
    leaked = sorted(s for s in exported if s.startswith(("__cxa_", "__gxx_", "cuda", "__cuda")))
    assert not leaked, f"{path} exports runtime symbols: {leaked[:5]}"


# The CUDA entry point checks its arguments before it touches a pointer, so a bad call raises the
# same way on a machine without a GPU, given a build with the CUDA kernels (nvcc is enough). Each
# call runs in a child process (a crash fails one case and names it), once with no torch loaded
# and once with torch loaded first: a module linked without libstdc++ may still import and even
# raise where torch brought a libstdc++ along, and crash where nothing did.
_CUDA_ENTRY_CALL = """
import sys
if sys.argv[2] == "torch":
    import torch
import numpy as np
from puzzle_inputs import puzzle_layout
from rubikkit import _ext

C = _ext.extension()
origins, perms, rots = puzzle_layout(2, (2, 1, 9, 9, 9), 2, 4, 0)
numel, itemsize = 2 * 8 * 4**3, 4
if sys.argv[1] == "origins":
    origins = origins + 6
elif sys.argv[1] == "out":
    numel = 7
else:
    itemsize = 3
try:
    # Aligned stand-in pointers: every check fails before one would be read.
    C.puzzle_cuda(256, [2, 1, 9, 9, 9], [729, 729, 81, 9, 1], itemsize, origins, perms, rots,
                  (4, 4, 4), 4096, numel, 0, 0)
except ValueError as exc:
    print("ValueError:", exc)
else:
    print("no error")
print("torch loaded:", "torch" in sys.modules)
"""


@pytest.mark.skipif(not _ext.cuda_compiled(), reason="rubikkit._C has no CUDA kernels (no nvcc)")
@pytest.mark.parametrize("loaded", ["bare", "torch"])
@pytest.mark.parametrize(
    "case, match",
    [
        ("origins", "ValueError: origins: the cube of cell 4 in sample 0 at .* = \\(10, 6, 6\\)"),
        ("out", "ValueError: out: has 7 elements"),
        ("itemsize", "ValueError: volumes: unsupported item size 3"),
    ],
)
def test_cuda_entry_point_checks_its_arguments_without_a_gpu(case, match, loaded):
    what = f"puzzle_cuda with a bad {case!r} ({loaded})"
    out = run_direct_call(_CUDA_ENTRY_CALL, case, loaded, what=what)
    assert re.search(match, out), out
    assert f"torch loaded: {loaded == 'torch'}" in out


@requires_kernel
def test_cpp_layer_handles_empty_batch_and_channels():
    C = puzzle_module._kernel_module()
    vols = np.zeros((2, 0, 6, 6, 6), np.float32)
    origins, perms, rots = puzzle_layout(2, vols.shape, 2, 3, 0)
    out = np.empty((2, 8, 0, 3, 3, 3), np.float32)
    C.puzzle_cpu(vols, origins, perms, rots, (3, 3, 3), out)
    assert puzzle(vols, origins, 3, perms, rots).shape == (2, 8, 0, 3, 3, 3)


def test_cuda_kernels_compiled_when_nvcc_is_present():
    # CI proof that the CUDA sources compile: `make build` found nvcc, so _C must carry them.
    if os.environ.get("RUBIKKIT_CUDA", "").strip() == "0":
        pytest.skip("RUBIKKIT_CUDA=0 skips the CUDA kernels on purpose")
    if shutil.which("nvcc") is None:
        pytest.skip("nvcc not on PATH: the CUDA kernels are not built here")
    if not HAVE_KERNEL:
        pytest.skip("rubikkit._C is not built (run `make build`)")
    assert _ext.cuda_compiled(), "nvcc is on PATH but rubikkit._C was built without CUDA"
    assert hasattr(puzzle_module._kernel_module(), "puzzle_cuda")
