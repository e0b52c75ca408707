"""The four cube rotations of Rubik's cube recovery and their algebra.

Zhuang et al. (MICCAI 2019, Sec. 2.1.4, "cube orientation") allow only two rotations of a cube, each by
180 degrees: *horizontal* and *vertical*. Both may happen to the same cube, so a cube carries one of
four rotation codes. With axis order (D, H, W) inside a cube:

====  ==============  ==========================================  ================
code  name            what happens                                axes reversed
====  ==============  ==========================================  ================
0     none            nothing                                     -
1     horizontal      180 degrees in the (H, W) plane             H and W
2     vertical        180 degrees in the (D, H) plane             D and H
3     both            horizontal then vertical (either order)     D and W
====  ==============  ==========================================  ================

A 180-degree rotation reverses the two axes of its plane, so every code is a set of reversed axes
and composing two rotations is the symmetric difference of those sets. The codes therefore form the
Klein four-group, and in this numbering composition is a bitwise XOR: ``1 o 1 = 0``,
``1 o 2 = 3``, ``2 o 3 = 1``. Every code is its own inverse, which is why
:func:`rubikkit.ops.unpuzzle` undoes a rotation by applying it again.

The paper's rotation targets are two bits per cube, "was it rotated horizontally" and "was it
rotated vertically": ``code & 1`` and ``code >> 1`` (:func:`rotation_bits`).
"""

from __future__ import annotations

import numbers

import numpy as np

ROT_NONE = 0
ROT_HORIZONTAL = 1
ROT_VERTICAL = 2
ROT_BOTH = 3
ROTATIONS = (ROT_NONE, ROT_HORIZONTAL, ROT_VERTICAL, ROT_BOTH)
ROTATION_NAMES = {
    ROT_NONE: "none",
    ROT_HORIZONTAL: "horizontal",
    ROT_VERTICAL: "vertical",
    ROT_BOTH: "both",
}

# Reversed cube axes (0 = d, 1 = h, 2 = w) for each code.
_REVERSED_AXES = {
    ROT_NONE: (),
    ROT_HORIZONTAL: (1, 2),
    ROT_VERTICAL: (0, 1),
    ROT_BOTH: (0, 2),
}


def reversed_axes(code: int) -> tuple[int, ...]:
    """Cube axes (0 = d, 1 = h, 2 = w) that rotation ``code`` reverses.

    Parameters
    ----------
    code : int
        A rotation code in 0..3.

    Returns
    -------
    tuple of int
        ``()`` for 0, ``(1, 2)`` for 1, ``(0, 1)`` for 2, ``(0, 2)`` for 3.
    """
    if isinstance(code, bool) or not isinstance(code, numbers.Integral):
        raise TypeError(f"code: expected an int rotation code 0..3, got {code!r}")
    code = int(code)
    if code not in _REVERSED_AXES:
        raise ValueError(f"code: rotation codes are 0..3, got {code}")
    return _REVERSED_AXES[code]


def compose_rotations(a, b):
    """The single rotation equal to rotating by ``a`` and then by ``b`` (the Klein four-group).

    Works elementwise on integer arrays. Composition is commutative and every code is its own
    inverse, so ``compose_rotations(a, a) == 0``.
    """
    a_arr, b_arr = np.asarray(a), np.asarray(b)
    for name, v in (("a", a_arr), ("b", b_arr)):
        if not np.issubdtype(v.dtype, np.integer):
            raise TypeError(f"{name}: rotation codes must be integers, got dtype {v.dtype}")
        if v.size and (v.min() < 0 or v.max() > 3):
            raise ValueError(f"{name}: rotation codes are 0..3")
    out = np.bitwise_xor(a_arr, b_arr)
    return int(out) if out.ndim == 0 else out


def rotation_bits(rots):
    """Split rotation codes into the paper's two targets per cube.

    Parameters
    ----------
    rots : (..., M) int array
        Rotation codes in 0..3.

    Returns
    -------
    horizontal, vertical : (..., M) int64 arrays of 0/1
        ``rots & 1`` and ``rots >> 1``.
    """
    r = np.asarray(rots)
    if not np.issubdtype(r.dtype, np.integer):
        raise TypeError(f"rots: rotation codes must be integers, got dtype {r.dtype}")
    if r.size and (r.min() < 0 or r.max() > 3):
        raise ValueError("rots: rotation codes are 0..3")
    r = r.astype(np.int64)
    return r & 1, r >> 1
