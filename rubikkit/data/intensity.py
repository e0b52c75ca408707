"""Intensity normalisations and resampling (numpy in, numpy out; torch tensors also accepted).

The papers' normalisations:

* :func:`minmax_to_unit`: TCPC (Zhou et al., Sec. 2.1) "the voxels are first normalized to [-1, 1]
  by using the minimum and maximum intensity": ``y = 2 (x - min) / (max - min) - 1``.
* :func:`meanmax_to_unit`: Rubik's cube recovery (Zhuang et al., Sec. 2.1) "the cube intensities
  are normalized to [-1, 1] by using the mean and maximum intensity". The paper gives no formula; we
  centre on the mean and divide by the largest deviation from it,
  ``y = (x - mean) / max|x - mean|``, which lies in [-1, 1], has mean 0, and reaches +1 or -1 at the
  brightest or darkest voxel (for bright-lesion CT the maximum is the extreme, so ``max -> 1``).
* :func:`window_ct`: a CT window in Hounsfield units, ``[level - width/2, level + width/2] -> [-1, 1]``
  with clipping.
* :func:`zscore`: ``(x - mean) / std`` over the whole volume or over a mask (e.g. the brain).

Resampling uses :func:`torch.nn.functional.interpolate`: trilinear for images, nearest for label maps.
All functions work per volume; arrays are (D, H, W) or (C, D, H, W) (channels normalised separately
where said).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "bounding_box",
    "crop_or_pad",
    "meanmax_to_unit",
    "minmax_to_unit",
    "resample_to_shape",
    "resample_to_spacing",
    "window_ct",
    "zscore",
]


def _float(x, name: str = "x") -> np.ndarray:
    try:
        import torch

        if isinstance(x, torch.Tensor):
            x = x.detach().cpu().numpy()
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    a = np.asarray(x)
    if a.dtype.kind not in "biuf":
        raise TypeError(f"{name}: expected a numeric array, got dtype {a.dtype}")
    return a.astype(np.float32, copy=False)


def minmax_to_unit(x, eps: float = 1e-8) -> np.ndarray:
    """Map to [-1, 1] by the minimum and maximum (TCPC, Zhou et al., Sec. 2.1).

    Parameters
    ----------
    x : (D, H, W) or any-shape array
        Intensities.
    eps : float
        A constant volume (max == min) maps to all zeros instead of dividing by zero.

    Returns
    -------
    float32 ndarray of the same shape, ``2 (x - min) / (max - min) - 1``.
    """
    a = _float(x)
    if a.size == 0:
        raise ValueError("x: empty array")
    lo, hi = float(a.min()), float(a.max())
    if hi - lo < eps:
        return np.zeros_like(a)
    return (2.0 * (a - lo) / (hi - lo) - 1.0).astype(np.float32)


def meanmax_to_unit(x, eps: float = 1e-8) -> np.ndarray:
    """Map to [-1, 1] by the mean and the maximum deviation (Rubik's cube, Zhuang et al., Sec. 2.1).

    ``y = (x - mean(x)) / max(|x - mean(x)|)``: mean 0, range within [-1, 1], the most extreme voxel
    at exactly +1 or -1. A constant volume gives zeros.

    Parameters
    ----------
    x : array of any shape
    eps : float
        Threshold below which the volume counts as constant.

    Returns
    -------
    float32 ndarray of the same shape.
    """
    a = _float(x)
    if a.size == 0:
        raise ValueError("x: empty array")
    centred = a - np.float32(a.mean(dtype=np.float64))
    scale = float(np.abs(centred).max())
    if scale < eps:
        return np.zeros_like(a)
    return (centred / scale).astype(np.float32)


def window_ct(x, level: float = 40.0, width: float = 400.0) -> np.ndarray:
    """CT windowing: clip Hounsfield units to ``[level - width/2, level + width/2]``, map to [-1, 1].

    Common windows: brain (40, 80), subdural (75, 215), soft tissue (40, 400), lung (-600, 1500),
    bone (400, 1800).

    Parameters
    ----------
    x : array of any shape
        Intensities in HU.
    level, width : float
        Window centre and width in HU; ``width`` must be positive.
    """
    if not np.isfinite(level):
        raise ValueError(f"level: must be finite, got {level}")
    if not (np.isfinite(width) and width > 0):
        raise ValueError(f"width: must be a positive number of HU, got {width}")
    a = _float(x)
    lo = level - width / 2.0
    return np.clip((a - lo) * (2.0 / width) - 1.0, -1.0, 1.0).astype(np.float32)


def zscore(x, mask=None, eps: float = 1e-8) -> np.ndarray:
    """Zero mean, unit variance, over the whole array or over ``mask``.

    Parameters
    ----------
    x : (D, H, W) array
    mask : (D, H, W) bool array, optional
        Statistics come from ``x[mask]`` (e.g. the brain); every voxel is transformed.
    eps : float
        A constant region gives ``x - mean`` (std taken as 1).
    """
    a = _float(x)
    if mask is not None:
        m = np.asarray(mask).astype(bool)
        if m.shape != a.shape:
            raise ValueError(f"mask: shape {m.shape} differs from x's {a.shape}")
        if not m.any():
            raise ValueError("mask: selects no voxel")
        vals = a[m]
    else:
        vals = a
    if vals.size == 0:
        raise ValueError("x: empty array")
    mean = float(vals.mean(dtype=np.float64))
    std = float(vals.std(dtype=np.float64))
    return ((a - mean) / (std if std > eps else 1.0)).astype(np.float32)


def _shape3(shape, name: str) -> tuple[int, int, int]:
    """An int or 3 ints as 3 positive ints (D, H, W), or a ValueError naming ``name``."""
    try:
        s = (
            (int(shape),) * 3
            if isinstance(shape, (int, np.integer))
            else tuple(int(v) for v in shape)
        )
    except (TypeError, ValueError):  # "abc", or not a sequence
        s = ()
    if len(s) != 3 or min(s) < 1:
        raise ValueError(f"{name}: expected an int or 3 positive ints (D, H, W), got {shape!r}")
    return s  # type: ignore[return-value]


def resample_to_shape(x, shape, *, order: str = "linear") -> np.ndarray:
    """Resample a (D, H, W) or (C, D, H, W) array to ``shape`` (D, H, W).

    Parameters
    ----------
    x : (D, H, W) or (C, D, H, W) array
    shape : int or (D, H, W)
    order : {"linear", "nearest"}
        ``"linear"`` (trilinear, ``align_corners=False``) for images; ``"nearest"`` for label maps,
        which keeps the input dtype.

    Returns
    -------
    ndarray of shape ``shape`` (or ``(C,) + shape``); float32 for ``"linear"``.
    """
    import torch
    import torch.nn.functional as F

    shape = _shape3(shape, "shape")
    if order not in ("linear", "nearest"):
        raise ValueError(f"order: expected 'linear' or 'nearest', got {order!r}")
    a = np.asarray(x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else x)
    if a.ndim not in (3, 4):
        raise ValueError(f"x: expected (D, H, W) or (C, D, H, W), got shape {a.shape}")
    squeeze = a.ndim == 3
    if tuple(a.shape[-3:]) == shape:
        return a.astype(np.float32) if order == "linear" else a.copy()
    dtype = a.dtype
    t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
    t = t[None, None] if squeeze else t[None]
    if order == "linear":
        out = F.interpolate(t, size=shape, mode="trilinear", align_corners=False)
        res = out[0, 0] if squeeze else out[0]
        return res.numpy().astype(np.float32)
    out = F.interpolate(t, size=shape, mode="nearest-exact")
    res = out[0, 0] if squeeze else out[0]
    return res.numpy().astype(dtype)


def resample_to_spacing(x, spacing, new_spacing, *, order: str = "linear") -> np.ndarray:
    """Resample a (D, H, W) or (C, D, H, W) array from ``spacing`` to ``new_spacing`` (mm, D/H/W).

    The output shape is ``round(shape * spacing / new_spacing)`` (at least 1 per axis); the field of
    view is kept. ``order`` as in :func:`resample_to_shape`.
    """
    a = np.asarray(x)
    if a.ndim not in (3, 4):
        raise ValueError(f"x: expected (D, H, W) or (C, D, H, W), got shape {a.shape}")
    sp = np.asarray(_spacing3(spacing, "spacing"))
    nsp = np.asarray(_spacing3(new_spacing, "new_spacing"))
    shape = np.maximum(1, np.round(np.asarray(a.shape[-3:]) * sp / nsp)).astype(int)
    return resample_to_shape(a, tuple(shape), order=order)


def _spacing3(spacing, name: str) -> tuple[float, float, float]:
    if isinstance(spacing, (int, float, np.integer, np.floating)):
        spacing = (float(spacing),) * 3
    sp = tuple(float(s) for s in spacing)
    if len(sp) != 3 or not all(np.isfinite(s) and s > 0 for s in sp):
        raise ValueError(f"{name}: expected 3 positive spacings in mm (D, H, W), got {spacing!r}")
    return sp  # type: ignore[return-value]


def bounding_box(mask, margin: int | Sequence[int] = 0) -> tuple[slice, slice, slice]:
    """Slices of the smallest box holding every true voxel of a (D, H, W) mask, grown by ``margin``.

    Raises ValueError when the mask is empty.
    """
    m = np.asarray(mask).astype(bool)
    if m.ndim != 3:
        raise ValueError(f"mask: expected (D, H, W), got shape {m.shape}")
    if not m.any():
        raise ValueError("mask: is empty, no bounding box")
    margins = (margin,) * 3 if isinstance(margin, (int, np.integer)) else tuple(margin)
    out = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        idx = np.flatnonzero(m.any(axis=other))
        lo = max(0, int(idx[0]) - int(margins[axis]))
        hi = min(m.shape[axis], int(idx[-1]) + 1 + int(margins[axis]))
        out.append(slice(lo, hi))
    return tuple(out)  # type: ignore[return-value]


def crop_or_pad(x, shape, *, centre=None, pad_value: float = 0.0) -> np.ndarray:
    """Cut a ``shape`` box out of a (D, H, W) or (C, D, H, W) array, padding where it leaves the array.

    Parameters
    ----------
    x : (D, H, W) or (C, D, H, W) array
    shape : int or (D, H, W)
    centre : 3 ints, optional
        Voxel at the box centre (default: the array centre).
    pad_value : float
        Value outside the array (e.g. -1000 HU for air).
    """
    a = np.asarray(x)
    if a.ndim not in (3, 4):
        raise ValueError(f"x: expected (D, H, W) or (C, D, H, W), got shape {a.shape}")
    shape = _shape3(shape, "shape")
    spatial = a.shape[-3:]
    if centre is None:
        centre = tuple(s // 2 for s in spatial)
    out = np.full(a.shape[:-3] + shape, pad_value, dtype=a.dtype)
    src, dst = [], []
    for n, s, c in zip(shape, spatial, centre):
        start = int(c) - n // 2
        lo, hi = max(0, start), min(s, start + n)
        if hi <= lo:
            return out
        src.append(slice(lo, hi))
        dst.append(slice(lo - start, hi - start))
    out[(..., *dst)] = a[(..., *src)]
    return out
