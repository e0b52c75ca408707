"""The CUDA puzzle kernel == numpy reference, on the GPU (skipped with a reason elsewhere).

Same cases as test_puzzle.py: random shapes, dtypes, layouts (non-contiguous included), out=,
plus what only a GPU has: the caller's current stream, another device, the torch fallback.
"""

from __future__ import annotations

import importlib
import re

import numpy as np
import pytest
import torch
from conftest import requires_cuda, run_direct_call
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from puzzle_inputs import TORCH_DTYPES, TORCH_LAYOUTS, as_numpy, puzzle_layout, torch_volumes

import rubikkit
from rubikkit import _ext
from rubikkit.ops import backend_for, puzzle, reference, unpuzzle

pytestmark = [pytest.mark.cuda, requires_cuda]

puzzle_module = importlib.import_module("rubikkit.ops.puzzle")
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _check(vols, origins, cube, perms, rots, got):
    assert got.is_cuda and got.device == vols.device and got.dtype == vols.dtype
    assert got.is_contiguous()
    want = reference.puzzle(as_numpy(vols), origins, cube, perms, rots)
    np.testing.assert_array_equal(as_numpy(got), want)


@SETTINGS
@given(
    grid=st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(1, 3)),
    cube=st.tuples(st.integers(1, 40), st.integers(1, 9), st.integers(1, 70)),
    gap=st.tuples(st.integers(0, 3), st.integers(0, 3), st.integers(0, 3)),
    B=st.integers(1, 3),
    C=st.integers(1, 3),
    dtype=st.sampled_from(TORCH_DTYPES),
    layout=st.sampled_from(TORCH_LAYOUTS),
    seed=st.integers(0, 2**32 - 1),
)
def test_cuda_kernel_matches_reference(grid, cube, gap, B, C, dtype, layout, seed):
    rng = np.random.default_rng(seed)
    shape = (B, C, *(g * c + p for g, c, p in zip(grid, cube, gap)))
    vols = torch_volumes(shape, dtype, layout, rng, device="cuda")
    origins, perms, rots = puzzle_layout(B, shape, grid, cube, rng)
    assert backend_for(vols) == "cuda"
    got = puzzle(vols, origins, cube, perms, rots)
    _check(vols, origins, cube, perms, rots, got)


@pytest.mark.parametrize("layout", TORCH_LAYOUTS)
def test_cuda_benchmark_sized_input(layout):
    rng = np.random.default_rng(0)
    vols = torch_volumes((2, 1, 80, 80, 80), "float32", layout, rng, device="cuda")
    origins, perms, rots = puzzle_layout(2, vols.shape, 2, 32, rng)
    _check(vols, origins, (32, 32, 32), perms, rots, puzzle(vols, origins, 32, perms, rots))


def test_cuda_out_is_reused_and_unpuzzle_inverts():
    rng = np.random.default_rng(1)
    vols = torch_volumes((2, 2, 20, 22, 24), "float16", "contiguous", rng, device="cuda")
    origins, perms, rots = puzzle_layout(2, vols.shape, 2, 10, rng)
    out = torch.full((2, 8, 2, 10, 10, 10), -1.0, dtype=torch.float16, device="cuda")
    assert puzzle(vols, origins, 10, perms, rots, out=out) is out
    _check(vols, origins, (10, 10, 10), perms, rots, out)
    back = unpuzzle(out, origins, perms, rots, vols.shape)
    assert back.is_cuda
    want = reference.unpuzzle(as_numpy(out), origins, perms, rots, vols.shape[2:])
    np.testing.assert_array_equal(as_numpy(back), want)


def test_cuda_kernel_runs_on_the_current_stream():
    # The volumes are filled on a side stream after a long sleep; a kernel that ran on any other
    # stream would read them before the fill lands. torch's pool streams are non-blocking, so the
    # legacy default stream would not wait for them either.
    rng = np.random.default_rng(2)
    src = torch_volumes((2, 1, 40, 40, 40), "float32", "contiguous", rng, device="cuda")
    origins, perms, rots = puzzle_layout(2, src.shape, 2, 16, rng)
    vols = torch.zeros_like(src)
    torch.cuda.synchronize()
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        torch.cuda._sleep(100_000_000)
        vols.copy_(src)
        out = puzzle(vols, origins, 16, perms, rots)
    side.synchronize()
    _check(src, origins, (16, 16, 16), perms, rots, out)


def test_cuda_call_does_not_wait_for_the_stream():
    # The slot table rides in the kernel's parameters: no copy from pageable host memory, which
    # may wait for the work queued before it. So the call returns while the stream still sleeps.
    rng = np.random.default_rng(5)
    vols = torch_volumes((16, 1, 28, 28, 28), "float32", "contiguous", rng, device="cuda")
    origins, perms, rots = puzzle_layout(16, vols.shape, 2, 12, rng)
    puzzle(vols, origins, 12, perms, rots)  # warm (first call loads the module's kernels)
    torch.cuda.synchronize()
    torch.cuda._sleep(2_000_000_000)  # about a second of GPU time, queued first
    out = puzzle(vols, origins, 12, perms, rots)
    assert not torch.cuda.current_stream().query(), "the call waited for the stream"
    _check(vols, origins, (12, 12, 12), perms, rots, out)


@pytest.mark.parametrize("B", [8, 9, 121, 250])
def test_cuda_slot_table_in_several_launches(B):
    # 64 slots fit the small parameter chunk, 72 the large one; 968 and 2000 need two and three
    # launches of the large chunk (960 slots with CUDA >= 12.1, 112 before).
    rng = np.random.default_rng(B)
    vols = torch_volumes((B, 2, 9, 8, 10), "int16", "strided", rng, device="cuda")
    origins, perms, rots = puzzle_layout(B, vols.shape, 2, (4, 3, 5), rng)
    _check(vols, origins, (4, 3, 5), perms, rots, puzzle(vols, origins, (4, 3, 5), perms, rots))


@pytest.mark.parametrize("index", ["32-bit", "64-bit"])
@pytest.mark.parametrize("cw", [1, 5, 12, 16, 31, 32, 33, 70])
def test_cuda_rows_per_warp(cw, index, monkeypatch):
    # A row shorter than a warp shares it with 32 // cw - 1 others (cw = 12: two rows, 5: six);
    # a row of 17 or more takes a warp of its own. 9 slots of 15 rows each: 135 rows leave the
    # last block partial for every cw here, and the last warp too where it holds several rows
    # (cw <= 16). The kernel does its row arithmetic on 32 bits unless told otherwise (outputs of
    # 2^32 rows are beyond a test's memory).
    if index == "64-bit":
        monkeypatch.setenv("RUBIKKIT_PUZZLE_WIDE_INDEX", "1")
    rng = np.random.default_rng(cw)
    cube = (3, 5, cw)
    vols = torch_volumes((3, 1, 7, 16, cw + 2), "uint8", "strided", rng, device="cuda")
    origins, perms, rots = puzzle_layout(3, vols.shape, (1, 3, 1), cube, rng)
    rots[:] = np.arange(rots.size).reshape(rots.shape) % 4  # every rotation code
    _check(vols, origins, cube, perms, rots, puzzle(vols, origins, cube, perms, rots))


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_cuda_kernel_on_another_device_keeps_current_device():
    rng = np.random.default_rng(3)
    torch.cuda.set_device(0)
    vols = torch_volumes((1, 1, 20, 20, 20), "float32", "permuted", rng, device="cuda:1")
    origins, perms, rots = puzzle_layout(1, vols.shape, 2, 8, rng)
    got = puzzle(vols, origins, 8, perms, rots)
    assert torch.cuda.current_device() == 0
    _check(vols, origins, (8, 8, 8), perms, rots, got)


def test_cuda_empty_output_launches_nothing():
    vols = torch.zeros((2, 0, 8, 8, 8), device="cuda")
    origins, perms, rots = puzzle_layout(2, vols.shape, 2, 4, 0)
    assert puzzle(vols, origins, 4, perms, rots).shape == (2, 8, 0, 4, 4, 4)


def test_cuda_torch_fallback_warns_and_matches(monkeypatch):
    monkeypatch.setattr(puzzle_module, "_kernel_module", lambda: None)
    monkeypatch.setattr(_ext, "_warned", set())
    rng = np.random.default_rng(4)
    vols = torch_volumes((2, 2, 12, 13, 14), "bfloat16", "strided", rng, device="cuda")
    origins, perms, rots = puzzle_layout(2, vols.shape, 2, 5, rng)
    assert backend_for(vols) == "torch"
    with pytest.warns(rubikkit.RubikkitWarning, match="torch slicing on the GPU"):
        got = puzzle(vols, origins, 5, perms, rots)
    _check(vols, origins, (5, 5, 5), perms, rots, got)


def test_cuda_bad_arguments():
    vols = torch.zeros((2, 1, 9, 9, 9), device="cuda")
    origins, perms, rots = puzzle_layout(2, vols.shape, 2, 4, 0)
    with pytest.raises(ValueError, match="out: on cpu"):
        puzzle(vols, origins, 4, perms, rots, out=torch.empty((2, 8, 1, 4, 4, 4)))
    with pytest.raises(ValueError, match="origins: .* out of bounds"):
        puzzle(vols, origins + 6, 4, perms, rots)


# One bad direct call of the C++ layer per child process: on an H200 (2026-11-30) the first of
# these crashed the interpreter (segmentation fault) instead of raising, which took the rest of
# the test run with it. In a child, a crash fails this test alone and says which call it was.
_DIRECT_CALL = """
import importlib, sys
import torch
from puzzle_inputs import puzzle_layout

C = importlib.import_module("rubikkit.ops.puzzle")._kernel_module()
vols = torch.zeros((2, 1, 9, 9, 9), device="cuda")
origins, perms, rots = puzzle_layout(2, vols.shape, 2, 4, 0)
out = torch.empty((2, 8, 1, 4, 4, 4), device="cuda")
itemsize, numel = 4, out.numel()
case = sys.argv[1]
if case == "origins":
    origins = origins + 6
elif case == "out":
    numel = 7
elif case == "itemsize":
    itemsize = 3
try:
    C.puzzle_cuda(vols.data_ptr(), list(vols.shape), list(vols.stride()), itemsize, origins,
                  perms, rots, (4, 4, 4), out.data_ptr(), numel, 0,
                  torch.cuda.current_stream().cuda_stream)
except ValueError as exc:
    print("ValueError:", exc)
else:
    print("no error")
"""


@pytest.mark.parametrize(
    "case, match",
    [
        ("origins", "ValueError: origins: the cube of cell"),
        ("out", "ValueError: out: has"),
        ("itemsize", "ValueError: volumes: unsupported item size"),
    ],
)
def test_cuda_cpp_layer_checks_its_arguments(case, match):
    """The C++ layer checks again when called directly, bypassing the Python checks."""
    out = run_direct_call(_DIRECT_CALL, case, what=f"direct call with a bad {case!r}")
    assert re.search(match, out), out
