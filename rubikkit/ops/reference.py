"""A plain numpy reference of the Rubik's cube puzzle, written to be read.

This is the definition the compiled kernels are tested against, and the version the tutorial
walks through. It does no argument checking: :func:`rubikkit.ops.puzzle` validates first and then
calls a compiled kernel, or this code when no kernel is built. :func:`layout_error` spells out the
checks of a layout's values, which the compiled module makes in one pass.

The puzzle (Zhuang et al., MICCAI 2019, Sec. 2.1) has three steps for every sample ``b``:

1. **Cut**: the volume is split into a grid of ``M`` cells; cell ``k`` holds one cube of size
   ``(d, h, w)`` whose corner is ``origins[b, k] = (d0, h0, w0)`` (see
   :func:`rubikkit.ops.cell_origins`; the space a cell leaves around its cube is the *gap*).
2. **Rearrange**: slot ``m`` of the output receives the cube of cell ``perms[b, m]``.
3. **Rotate**: the cube in slot ``m`` is rotated by ``rots[b, m]`` (0 none, 1 horizontal,
   2 vertical, 3 both; see :mod:`rubikkit.ops.rotations`). A 180-degree rotation is the same as
   reversing the two axes of its plane, so rotating is just reading backwards.

Axis order is (C, D, H, W); a batch adds a leading B.
"""

from __future__ import annotations

import numpy as np

from rubikkit.ops.rotations import reversed_axes


def rotate_cube(cube: np.ndarray, code: int) -> np.ndarray:
    """Rotate one cube ``(C, d, h, w)`` by rotation ``code`` (returns a view).

    The last three axes are the cube's (d, h, w); 180 degrees in a plane reverses both its axes.
    """
    axes = tuple(cube.ndim - 3 + a for a in reversed_axes(code))
    return np.flip(cube, axis=axes) if axes else cube


def puzzle(volumes, origins, cube_size, perms, rots):
    """Cut, rearrange and rotate cubes: the reference of :func:`rubikkit.ops.puzzle`.

    Parameters
    ----------
    volumes : (B, C, D, H, W) array
    origins : (B, M, 3) int array
        Corner (d0, h0, w0) of the cube in each grid cell, cells in C order over (D, H, W).
    cube_size : tuple of 3 ints
        Cube size (d, h, w).
    perms : (B, M) int array
        ``perms[b, m]`` is the cell whose cube goes to slot ``m``; each row is a permutation.
    rots : (B, M) int array
        Rotation code (0..3) of the cube in slot ``m``.

    Returns
    -------
    cubes : (B, M, C, d, h, w) array
        Same dtype as ``volumes``.
    """
    d, h, w = cube_size
    B, C = volumes.shape[:2]
    M = perms.shape[1]
    cubes = np.empty((B, M, C, d, h, w), dtype=volumes.dtype)
    for b in range(B):
        for m in range(M):
            cell = perms[b, m]  # 2. rearrange: slot m takes the cube of this cell
            d0, h0, w0 = origins[b, cell]
            cube = volumes[b, :, d0 : d0 + d, h0 : h0 + h, w0 : w0 + w]  # 1. cut
            cubes[b, m] = rotate_cube(cube, rots[b, m])  # 3. rotate
    return cubes


def unpuzzle(cubes, origins, perms, rots, volume_shape):
    """Put cubes back where they came from: the reference of :func:`rubikkit.ops.unpuzzle`.

    Every rotation is its own inverse, so undoing it means rotating again. Voxels that no cube
    covers (the gaps) are 0; where cubes overlap, the later slot wins.

    Parameters
    ----------
    cubes : (B, M, C, d, h, w) array
    origins, perms, rots
        As for :func:`puzzle`.
    volume_shape : tuple of 3 ints
        (D, H, W) of the volumes.

    Returns
    -------
    volumes : (B, C, D, H, W) array
    """
    B, M, C, d, h, w = cubes.shape
    D, H, W = volume_shape
    volumes = np.zeros((B, C, D, H, W), dtype=cubes.dtype)
    for b in range(B):
        for m in range(M):
            d0, h0, w0 = origins[b, perms[b, m]]
            volumes[b, :, d0 : d0 + d, h0 : h0 + h, w0 : w0 + w] = rotate_cube(
                cubes[b, m], rots[b, m]
            )
    return volumes


def layout_error(origins, perms, rots, volume_dhw, cube_size) -> str:
    """What is wrong with a puzzle layout: ``""``, or the message of the first bad entry.

    ``origins`` (B, M, 3), ``perms`` and ``rots`` (B, M) are int arrays of those shapes. Entries
    are visited in row order, slot by slot, and each slot is checked for: a cell in 0..M-1 not
    taken by an earlier slot of its row (rows are permutations), a rotation code in 0..3, and the
    cube of its cell inside the volume ``volume_dhw`` (D, H, W). The message starts with the name
    of the argument at fault, as :func:`rubikkit.ops.puzzle` raises it. ``rubikkit._C.layout_error``
    returns the same messages; this version is the fallback without it.
    """
    M = len(perms[0]) if len(perms) else 0
    corners = np.asarray(origins).tolist()
    cube = tuple(int(c) for c in cube_size)
    dhw = tuple(int(n) for n in volume_dhw)
    for b, (row, codes) in enumerate(zip(np.asarray(perms).tolist(), np.asarray(rots).tolist())):
        not_perm = f"perms: row {b} = {row} is not a permutation of 0..{M - 1}"
        seen = set()
        for m, (cell, code) in enumerate(zip(row, codes)):
            if not 0 <= cell < M:
                return f"{not_perm} (entry [{b}, {m}] = {cell} is outside 0..{M - 1})"
            if cell in seen:
                return f"{not_perm} (it repeats cell {cell})"
            seen.add(cell)
            if not 0 <= code <= 3:
                return (
                    f"rots: entry [{b}, {m}] = {code} is not a rotation code 0..3 "
                    "(none, horizontal, vertical, both)"
                )
            corner = tuple(corners[b][cell])
            if any(c < 0 or c + s > n for c, s, n in zip(corner, cube, dhw)):
                return (
                    f"origins: the cube of cell {cell} in sample {b} at (d, h, w) = {corner} "
                    f"with size {cube} is out of bounds of the volume (D, H, W) = {dhw}"
                )
    return ""
