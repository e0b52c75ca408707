"""Small argument normalisers shared by rubikkit.ops (messages name the argument)."""

from __future__ import annotations

import numbers

import numpy as np


def as_triple(value, name: str, *, minimum: int = 1) -> tuple[int, int, int]:
    """An int or a sequence of 3 ints -> a tuple (d, h, w) of Python ints >= ``minimum``."""
    if isinstance(value, (bool, str, bytes)):
        raise TypeError(f"{name}: expected an int or 3 ints, got {type(value).__name__}")
    if isinstance(value, numbers.Integral):
        vals = (int(value),) * 3
    else:
        try:
            seq = list(value)
        except TypeError:
            raise TypeError(
                f"{name}: expected an int or 3 ints, got {type(value).__name__}"
            ) from None
        if len(seq) != 3:
            raise ValueError(f"{name}: expected 3 values (d, h, w), got {len(seq)}")
        for v in seq:
            if isinstance(v, bool) or not isinstance(v, numbers.Integral):
                raise TypeError(f"{name}: expected integers, got {seq!r}")
        vals = tuple(int(v) for v in seq)
    if min(vals) < minimum:
        raise ValueError(f"{name}: every entry must be >= {minimum}, got {vals}")
    return vals  # type: ignore[return-value]


def spatial_shape(volume_shape, name: str = "volume_shape") -> tuple[int, int, int]:
    """(D, H, W) from a shape whose last three entries are (D, H, W)."""
    try:
        shape = tuple(volume_shape)
    except TypeError:
        raise TypeError(
            f"{name}: expected a shape ending in (D, H, W), got {type(volume_shape).__name__}"
        ) from None
    if len(shape) < 3:
        raise ValueError(f"{name}: expected a shape ending in (D, H, W), got {shape}")
    return as_triple(shape[-3:], name)


def int_array(value, name: str, ndim) -> np.ndarray:
    """Any array-like (numpy, torch on any device, lists) of integers -> int64 numpy array.

    ``ndim`` is the required number of dimensions, or a tuple of allowed ones.
    """
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # torch tensor, maybe on a GPU
        value = value.detach().cpu().numpy()
    arr = np.asarray(value)
    if arr.dtype.kind not in "iu" and not (arr.size == 0 and arr.dtype.kind != "b"):
        raise TypeError(f"{name}: expected an integer array, got dtype {arr.dtype}")
    allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
    if arr.ndim not in allowed:
        want = " or ".join(str(n) for n in allowed)
        raise ValueError(f"{name}: expected {want} dimensions, got shape {arr.shape}")
    if arr.dtype == np.uint64 and arr.size and arr.max() > np.iinfo(np.int64).max:
        # the int64 cast below would wrap them to negatives, which later messages would quote
        raise ValueError(f"{name}: values must fit in int64, got {int(arr.max())}")
    return np.ascontiguousarray(arr, dtype=np.int64)
