"""Cube operations of Rubik's cube recovery (Zhuang et al., MICCAI 2019, Sec. 2).

Axis order is (C, D, H, W), D the slice axis; a batch adds a leading B.

* :func:`hamming_permutations`: the permutation set of the cube-ordering task.
* :func:`cell_origins`, :func:`sample_origins`: where the cubes are cut (one per grid cell, with a
  gap).
* :func:`sample_permutations`, :func:`sample_rotations`: random puzzles.
* :func:`puzzle`, :func:`unpuzzle`: cut + rearrange + rotate, and back; C++ and CUDA kernels, with
  the numpy definition in :mod:`rubikkit.ops.reference`.
* Rotation codes :data:`ROT_NONE` (0), :data:`ROT_HORIZONTAL` (1), :data:`ROT_VERTICAL` (2),
  :data:`ROT_BOTH` (3) and their algebra in :mod:`rubikkit.ops.rotations`.
"""

from __future__ import annotations

from rubikkit.ops import reference
from rubikkit.ops.grid import cell_origins, sample_origins
from rubikkit.ops.hamming import (
    hamming_permutations,
    min_pairwise_distance,
    pairwise_hamming,
    sample_permutations,
    sample_rotations,
)
from rubikkit.ops.puzzle import backend_for, puzzle, unpuzzle
from rubikkit.ops.rotations import (
    ROT_BOTH,
    ROT_HORIZONTAL,
    ROT_NONE,
    ROT_VERTICAL,
    ROTATION_NAMES,
    ROTATIONS,
    compose_rotations,
    reversed_axes,
    rotation_bits,
)

__all__ = [
    "ROTATIONS",
    "ROTATION_NAMES",
    "ROT_BOTH",
    "ROT_HORIZONTAL",
    "ROT_NONE",
    "ROT_VERTICAL",
    "backend_for",
    "cell_origins",
    "compose_rotations",
    "hamming_permutations",
    "min_pairwise_distance",
    "pairwise_hamming",
    "puzzle",
    "reference",
    "reversed_axes",
    "rotation_bits",
    "sample_origins",
    "sample_permutations",
    "sample_rotations",
    "unpuzzle",
]
