"""Input builders for the puzzle op, shared by the tests and ``benchmarks/puzzle.py``.

Everything here builds inputs only; no assertions. Volumes are filled with random values so that
every voxel is (almost surely) distinguishable and a kernel that reads the wrong voxel shows.
"""

from __future__ import annotations

import numpy as np

from rubikkit.ops import hamming_permutations, sample_origins, sample_rotations

NUMPY_DTYPES = (
    "float32",
    "float16",
    "float64",
    "int8",
    "uint8",
    "int16",
    "uint16",
    "int32",
    "int64",
)
TORCH_DTYPES = (
    "float32",
    "float16",
    "bfloat16",
    "float64",
    "int8",
    "uint8",
    "int16",
    "int32",
    "int64",
)
# How a volume is laid out in memory: C order, a step of 2 along W (so W is not unit-stride), the
# channel axis moved last (a transposed view), an offset into a larger buffer, and (numpy only)
# negative strides along D and W.
LAYOUTS = ("contiguous", "strided", "permuted", "offset", "reversed")
TORCH_LAYOUTS = ("contiguous", "strided", "permuted", "offset")


def random_values(shape, dtype: str, rng: np.random.Generator) -> np.ndarray:
    """A C-contiguous numpy array of ``shape`` with random values of ``dtype`` (no NaN)."""
    shape = tuple(int(s) for s in shape)
    dt = np.dtype(dtype)
    if np.issubdtype(dt, np.floating):
        return (rng.standard_normal(shape) * 100).astype(dt)
    info = np.iinfo(dt)
    return rng.integers(info.min, info.max, size=shape, endpoint=True, dtype=dt)


def with_layout(data: np.ndarray, layout: str) -> np.ndarray:
    """A view with the values of ``data`` (B, C, D, H, W) but the memory layout ``layout``."""
    if layout == "contiguous":
        return np.ascontiguousarray(data)
    if layout == "strided":
        buf = np.zeros((*data.shape[:-1], 2 * data.shape[-1] + 1), dtype=data.dtype)
        buf[..., 1::2] = data
        return buf[..., 1::2]
    if layout == "permuted":
        # Axes (B, C, D, H, W) stored as (B, W, D, H, C); swapping 1 and 4 is its own inverse.
        return np.ascontiguousarray(data.transpose(0, 4, 2, 3, 1)).transpose(0, 4, 2, 3, 1)
    if layout == "offset":
        buf = np.zeros(tuple(s + 1 for s in data.shape), dtype=data.dtype)
        buf[1:, 1:, 1:, 1:, 1:] = data
        return buf[1:, 1:, 1:, 1:, 1:]
    if layout == "reversed":
        return np.ascontiguousarray(data[:, :, ::-1, :, ::-1])[:, :, ::-1, :, ::-1]
    raise ValueError(f"layout: unknown {layout!r}")


def torch_with_layout(data, layout: str):
    """Torch version of :func:`with_layout` for a tensor ``data`` (no negative strides in torch)."""
    import torch

    if layout == "contiguous":
        return data.contiguous()
    if layout == "strided":
        buf = torch.zeros(
            (*data.shape[:-1], 2 * data.shape[-1] + 1), dtype=data.dtype, device=data.device
        )
        buf[..., 1::2] = data
        return buf[..., 1::2]
    if layout == "permuted":
        return data.permute(0, 4, 2, 3, 1).contiguous().permute(0, 4, 2, 3, 1)
    if layout == "offset":
        buf = torch.zeros(tuple(s + 1 for s in data.shape), dtype=data.dtype, device=data.device)
        buf[1:, 1:, 1:, 1:, 1:] = data
        return buf[1:, 1:, 1:, 1:, 1:]
    raise ValueError(f"layout: unknown {layout!r} for a tensor")


def numpy_volumes(shape, dtype="float32", layout="contiguous", rng=None) -> np.ndarray:
    """Random (B, C, D, H, W) numpy volumes with the given dtype and memory layout."""
    rng = np.random.default_rng(rng)
    return with_layout(random_values(shape, dtype, rng), layout)


def torch_volumes(shape, dtype="float32", layout="contiguous", rng=None, device="cpu"):
    """Random (B, C, D, H, W) torch volumes with the given dtype, layout and device."""
    import torch

    rng = np.random.default_rng(rng)
    if dtype == "bfloat16":
        t = torch.from_numpy(random_values(shape, "float32", rng)).to(torch.bfloat16)
    else:
        t = torch.from_numpy(random_values(shape, dtype, rng))
    return torch_with_layout(t.to(device), layout)


def as_numpy(x) -> np.ndarray:
    """A numpy copy of an array or tensor (any device); 2-byte floats as their int16 bits.

    Comparing bits makes "equal" mean bit-identical, and works for bfloat16, which numpy lacks.
    """
    if isinstance(x, np.ndarray):
        return x
    import torch

    t = x.detach().cpu()
    if t.dtype in (torch.float16, torch.bfloat16):
        t = t.view(torch.int16)
    return t.numpy()


def puzzle_layout(
    batch, volume_shape, grid, cube_size, rng=None, *, jitter=True, codes=(0, 1, 2, 3)
):
    """Random origins (B, M, 3), perms (B, M) and rots (B, M) for a puzzle of ``volume_shape``.

    Perms are uniform random permutations of all M cells (not a Hamming set), so every slot sees
    every cell over enough draws.
    """
    rng = np.random.default_rng(rng)
    origins = sample_origins(batch, volume_shape, grid, cube_size, jitter=jitter, rng=rng)
    M = origins.shape[1]
    perms = np.stack([rng.permutation(M) for _ in range(batch)]).astype(np.int64)
    rots = sample_rotations(batch, M, codes=codes, rng=rng)
    return origins, perms, rots


def benchmark_inputs(batch=8, channels=1, size=160, cube=64, grid=2, seed=0):
    """The benchmark's case: float32 volumes (B, C, S, S, S), a 2x2x2 grid of cubes, random
    origins, perms from the 100-permutation Hamming set, and random rotation codes.

    Returns ``(volumes, origins, perms, rots, cube_size)``; volumes is a numpy array.
    """
    rng = np.random.default_rng(seed)
    vols = random_values((batch, channels, size, size, size), "float32", rng)
    origins = sample_origins(batch, vols.shape, grid, cube, jitter=True, rng=rng)
    perm_set = hamming_permutations(origins.shape[1], 100, seed=seed)
    perms = perm_set[rng.integers(0, len(perm_set), size=batch)]
    rots = sample_rotations(batch, origins.shape[1], rng=rng)
    return vols, origins, perms, rots, (cube, cube, cube)
