"""Where the cubes are cut: one cube per cell of a regular grid over the volume.

Zhuang et al. (MICCAI 2019, Sec. 2.1) partition a volume into a grid of cubes (2x2x2 for the
"2nd-order Rubik's cube") and leave a gap of about 10 voxels between adjacent cubes, so that a
network cannot solve the puzzle from texture continuing across cube borders. Here the grid splits
each axis into nearly equal cells (cell ``i`` of ``g`` along an axis of length ``L`` spans
``[i*L//g, (i+1)*L//g)``) and a cube of size ``(d, h, w)`` sits inside each cell. What the cell
leaves around its cube is the gap: with ``jitter`` the cube sits at a random offset inside its cell
(training), without it is centred (evaluation). Cells are numbered in C order over (D, H, W), so for
a 2x2x2 grid cell ``k`` is at grid index ``(k // 4, (k // 2) % 2, k % 2)``.
"""

from __future__ import annotations

import numpy as np

from rubikkit.ops._checks import as_triple, spatial_shape
from rubikkit.ops._random import as_generator


def _cells(volume_shape, grid, cube_size):
    """Validated (D, H, W), grid, cube size, and per-axis cell starts and lengths."""
    shape = spatial_shape(volume_shape)
    grid = as_triple(grid, "grid")
    for axis, (L, g) in enumerate(zip(shape, grid)):
        if g > L:
            raise ValueError(
                f"grid: {g} cells along axis {'DHW'[axis]} do not fit its {L} voxels "
                f"(volume_shape (D, H, W) = {shape})"
            )
    smallest = tuple(L // g for L, g in zip(shape, grid))
    cube = smallest if cube_size is None else as_triple(cube_size, "cube_size")
    if any(c > s for c, s in zip(cube, smallest)):
        raise ValueError(
            f"cube_size: a cube of (d, h, w) = {cube} does not fit the grid cells of "
            f"(d, h, w) = {smallest} (volume (D, H, W) = {shape}, grid = {grid}); "
            "use a smaller cube or a coarser grid"
        )
    starts, lengths = [], []
    for L, g in zip(shape, grid):
        edges = (np.arange(g + 1, dtype=np.int64) * L) // g
        starts.append(edges[:-1])
        lengths.append(np.diff(edges))
    return shape, grid, cube, starts, lengths


def _cell_table(starts, lengths, cube):
    """(M, 3) cell starts and (M, 3) slack (cell length - cube), cells in C order over (D, H, W)."""
    mesh_s = np.meshgrid(*starts, indexing="ij")
    mesh_l = np.meshgrid(*lengths, indexing="ij")
    start = np.stack([m.ravel() for m in mesh_s], axis=1)
    slack = np.stack([m.ravel() for m in mesh_l], axis=1) - np.asarray(cube, dtype=np.int64)
    return start, slack


def sample_origins(
    batch: int,
    volume_shape,
    grid=(2, 2, 2),
    cube_size=None,
    jitter: bool = True,
    rng=None,
) -> np.ndarray:
    """Cube corners for a batch of puzzles (independent jitter per sample and cell).

    Parameters
    ----------
    batch : int
        Number of samples B (>= 1).
    volume_shape : tuple of ints
        A shape whose last three entries are (D, H, W), e.g. ``volumes.shape``.
    grid : int or tuple of 3 ints
        Cells along (D, H, W); M = product.
    cube_size : int or tuple of 3 ints, optional
        Cube size (d, h, w). Default: the largest cube that fits every cell (no gap).
    jitter : bool
        Random offset of each cube inside its cell (training); False centres it (evaluation).
    rng : None, int, numpy.random.Generator or torch.Generator
        Source of the jitter.

    Returns
    -------
    origins : (B, M, 3) int64 array
        Corner (d0, h0, w0) of the cube in each cell.

    Raises
    ------
    ValueError
        When the cube does not fit its cell (the message says the sizes).
    """
    if isinstance(batch, bool) or not isinstance(batch, (int, np.integer)) or batch < 1:
        raise ValueError(f"batch: expected an int >= 1, got {batch!r}")
    _, _, cube, starts, lengths = _cells(volume_shape, grid, cube_size)
    start, slack = _cell_table(starts, lengths, cube)
    M = start.shape[0]
    if jitter:
        gen = as_generator(rng)
        offset = gen.integers(0, slack + 1, size=(int(batch), M, 3), dtype=np.int64)
    else:
        offset = np.broadcast_to(slack // 2, (int(batch), M, 3))
    return np.ascontiguousarray(start + offset, dtype=np.int64)


def cell_origins(volume_shape, grid=(2, 2, 2), cube_size=None, jitter=True, rng=None) -> np.ndarray:
    """Cube corners for one puzzle: the corner (d0, h0, w0) of the cube in each grid cell.

    Parameters are those of :func:`sample_origins` without ``batch``.

    Returns
    -------
    origins : (M, 3) int64 array
        Cells in C order over (D, H, W).

    Examples
    --------
    >>> cell_origins((160, 160, 160), grid=2, cube_size=64, jitter=False)[:2]
    array([[ 8,  8,  8],
           [ 8,  8, 88]])
    """
    return sample_origins(1, volume_shape, grid, cube_size, jitter, rng)[0]
