"""SLIC supervoxels in 3D and TCPC's candidate-lesion sub-volumes (Zhou et al., TCPC, Sec. 2.1).

Axis order is (C, D, H, W) with D the slice axis; single-channel volumes may drop C. The heavy
lifting happens in numba kernels (:mod:`rubikkit.slic._kernels`); the functions here validate,
convert to contiguous arrays of a supported dtype and document shapes.

SLIC (Achanta et al., TPAMI 2012) is k-means on (position, intensity) with each centre searching
only a window around itself. :func:`slic3d` follows scikit-image's ``slic`` semantics, so results
and parameters carry over: intensities are rescaled to [0, 1] (inside the mask when there is one)
so that ``compactness`` does not depend on the intensity scale; seeds sit on a regular grid of
step S; the distance is ``|colour difference|**2 / compactness**2 + |spacing * offset|**2 / S**2``;
each centre searches +-2S voxels; the centres start with colour 0, so the first assignment is
purely spatial; a scalar ``sigma`` is divided by the spacing; small and oversized fragments are
fixed by the connectivity post-processing.
"""

from __future__ import annotations

import functools
import math
import numbers
import sys

import numba
import numpy as np
from numba import get_num_threads, parallel_chunksize

from rubikkit.slic import _kernels as K

# Half-width of each centre's search window, in grid steps (scikit-image uses 2: a 4S window).
WINDOW_STEPS = 2.0

_POLARITIES = ("bright", "dark", "both")


def _on_torch_threads(fn):
    """Run ``fn``'s numba kernels on torch's thread count, and leave torch's count as it was.

    numba's OpenMP threading layer shares libgomp with torch, and each parallel launch sets the
    OpenMP thread count to numba's own (every core by default, whatever ``OMP_NUM_THREADS``
    says), which torch then takes for its own. A process started with ``OMP_NUM_THREADS=1`` that
    ran SLIC once (a TCPC step, a TCPC proxy score) trained on with 2 threads, and beside a second
    run on a 2-core machine its epochs took 5-7 times as long. The kernels use the smaller of the
    two counts (``numba.set_num_threads`` still lowers it); without torch loaded, numba's alone.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        torch = sys.modules.get("torch")
        budget = torch.get_num_threads() if torch is not None else None
        before = numba.get_num_threads()
        if budget is not None:
            numba.set_num_threads(max(1, min(budget, before)))
        try:
            return fn(*args, **kwargs)
        finally:
            numba.set_num_threads(before)
            if budget is not None and torch.get_num_threads() != budget:
                torch.set_num_threads(budget)

    return wrapper


# --------------------------------------------------------------------------------------------
# argument checks (messages start with the argument name)


def _to_numpy(value):
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # a torch tensor, maybe on a GPU
        value = value.detach().cpu()
        if str(value.dtype) == "torch.bfloat16":  # numpy has no bfloat16; float32 holds it exactly
            value = value.float()
        value = value.numpy()
    return np.asarray(value)


def _as_volume(volume, name: str = "volume") -> tuple[np.ndarray, bool]:
    """(D, H, W) or (C, D, H, W) real array -> ((C, D, H, W) view, was_3d)."""
    arr = _to_numpy(volume)
    if arr.dtype == object or not (
        arr.dtype == np.bool_
        or np.issubdtype(arr.dtype, np.integer)
        or np.issubdtype(arr.dtype, np.floating)
    ):
        raise TypeError(f"{name}: unsupported dtype {arr.dtype} (expected bool, int or float)")
    if arr.ndim == 3:
        arr4, was_3d = arr[np.newaxis], True
    elif arr.ndim == 4:
        arr4, was_3d = arr, False
    else:
        raise ValueError(
            f"{name}: expected a (D, H, W) or (C, D, H, W) volume, got shape {arr.shape}"
        )
    if arr4.size == 0:
        raise ValueError(f"{name}: is empty (shape {arr.shape})")
    return arr4, was_3d


def _as_mask(mask, shape, name: str = "mask") -> np.ndarray:
    m = _to_numpy(mask)
    if m.shape != tuple(shape):
        raise ValueError(f"{name}: expected shape {tuple(shape)} (D, H, W), got {m.shape}")
    if m.dtype != np.bool_:
        if not (np.issubdtype(m.dtype, np.integer) or np.issubdtype(m.dtype, np.floating)):
            raise TypeError(f"{name}: expected a boolean array, got dtype {m.dtype}")
        m = m != 0
    return np.ascontiguousarray(m)


def _as_labels(labels, shape, name: str = "labels", allow_bool: bool = False) -> np.ndarray:
    lab = _to_numpy(labels)
    if allow_bool and lab.dtype == np.bool_:
        lab = lab.view(np.uint8)
    if lab.dtype == np.bool_ or not np.issubdtype(lab.dtype, np.integer):
        raise TypeError(f"{name}: expected an integer array, got dtype {lab.dtype}")
    if shape is not None and lab.shape != tuple(shape):
        raise ValueError(f"{name}: expected shape {tuple(shape)} (D, H, W), got {lab.shape}")
    if lab.ndim != 3:
        raise ValueError(f"{name}: expected a (D, H, W) array, got shape {lab.shape}")
    if lab.size and lab.min() < 0:
        raise ValueError(f"{name}: must be >= 0, got {lab.min()}")
    if lab.dtype == np.uint64 and lab.size and lab.max() > np.iinfo(np.int64).max:
        # the label values are returned as int64, which would wrap these to negatives
        raise ValueError(f"{name}: values must fit in int64, got {int(lab.max())}")
    return lab


def _positive_int(value, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name}: must be >= {minimum}, got {value}")
    return int(value)


def _real(value, name: str, *, positive: bool = False, nonneg: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a number, got {type(value).__name__}")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{name}: must be finite, got {v}")
    if positive and v <= 0:
        raise ValueError(f"{name}: must be > 0, got {v}")
    if nonneg and v < 0:
        raise ValueError(f"{name}: must be >= 0, got {v}")
    return v


def _triple(value, name: str, *, positive: bool) -> np.ndarray:
    try:
        arr = np.asarray(_to_numpy(value), dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(
            f"{name}: expected a number or 3 numbers (d, h, w), got {value!r}"
        ) from None
    if arr.shape != (3,):
        raise ValueError(f"{name}: expected a number or 3 numbers (d, h, w), got {value!r}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name}: must be finite, got {value!r}")
    if positive and (arr <= 0).any():
        raise ValueError(f"{name}: every entry must be > 0, got {value!r}")
    if not positive and (arr < 0).any():
        raise ValueError(f"{name}: every entry must be >= 0, got {value!r}")
    return arr


# --------------------------------------------------------------------------------------------
# seeding


def grid_steps(shape, n_points: int) -> tuple[np.ndarray, np.ndarray]:
    """Start and step of a regular grid of about ``n_points`` points in a (D, H, W) box.

    The grid is as close to cubic as possible: step ``(D*H*W / n_points) ** (1/3)`` on every
    axis, except that an axis shorter than the step holds a single point at its middle and the
    step is recomputed over the remaining axes (scikit-image's ``regular_grid`` rule, so seeds
    coincide with scikit-image's).

    Returns
    -------
    starts, steps : (3,) int64 arrays
    """
    n_points = _positive_int(n_points, "n_points")
    try:
        dims_t = tuple(shape)
    except TypeError:
        raise TypeError(f"shape: expected 3 ints (D, H, W), got {shape!r}") from None
    if len(dims_t) != 3 or not all(
        isinstance(n, numbers.Integral) and not isinstance(n, bool) and n >= 1 for n in dims_t
    ):
        raise ValueError(f"shape: expected 3 ints >= 1 (D, H, W), got {shape!r}")
    dims = np.asarray(dims_t, dtype=np.float64)
    total = float(np.prod(dims))
    if total <= n_points:
        return np.zeros(3, np.int64), np.ones(3, np.int64)
    steps = np.full(3, (total / n_points) ** (1.0 / 3.0))
    order = np.argsort(dims, kind="stable")
    sdims = dims[order]
    if (sdims < steps).any():
        s = steps.copy()
        for i in range(2):
            s[i] = sdims[i]  # this axis is too short for a step: one point in its middle
            rest = float(np.prod(sdims[i + 1 :]))
            s[i + 1 :] = (rest / n_points) ** (1.0 / (2 - i))
            if (sdims >= s).all():
                break
        steps = np.empty(3)
        steps[order] = s
    starts = (steps // 2).astype(np.int64)
    return starts, np.round(steps).astype(np.int64)


def _grid_centres(shape, n_segments: int) -> tuple[np.ndarray, float]:
    starts, steps = grid_steps(shape, n_segments)
    axes = [np.arange(starts[i], shape[i], steps[i], dtype=np.float64) for i in range(3)]
    zz, yy, xx = np.meshgrid(*axes, indexing="ij")
    centres = np.stack([zz.ravel(), yy.ravel(), xx.ravel()], axis=1)
    return centres, float(steps.max())


def _mask_centres(mask: np.ndarray, n_segments: int) -> tuple[np.ndarray, float]:
    """maskSLIC seeds: a regular grid over the mask's box, its step tuned so that about
    ``n_segments`` grid points fall inside the mask (Irving 2016 places seeds evenly inside the
    mask; the spatial-only k-means pass that follows evens them out)."""
    count = int(mask.sum())
    n = min(n_segments, count)
    idx = np.nonzero(mask)
    lo = np.array([a.min() for a in idx], np.float64)
    hi = np.array([a.max() for a in idx], np.float64) + 1.0
    step = (count / n) ** (1.0 / 3.0)
    best = None
    for _ in range(12):
        axes = [np.arange(lo[i] + step / 2.0, hi[i], step) for i in range(3)]
        zz, yy, xx = np.meshgrid(*axes, indexing="ij")
        pts = np.stack([zz.ravel(), yy.ravel(), xx.ravel()], axis=1)
        ip = np.minimum(np.floor(pts).astype(np.int64), np.asarray(mask.shape) - 1)
        inside = pts[mask[ip[:, 0], ip[:, 1], ip[:, 2]]]
        if best is None or abs(len(inside) - n) < abs(len(best[0]) - n):
            best = (inside, step)
        if abs(len(inside) - n) <= max(1, 0.05 * n):
            break
        step *= (max(len(inside), 0.5) / n) ** (1.0 / 3.0)
    centres, step = best
    if len(centres) == 0:  # a mask too thin for any grid point: seed at mask voxels
        pick = np.linspace(0, count - 1, n).astype(np.int64)
        centres = np.stack([a[pick] for a in idx], axis=1).astype(np.float64)
    return centres, float(step)


def _tiles(shape, step: float) -> tuple[int, int]:
    t = max(2, int(step))
    tz, ty = min(t, shape[0]), min(t, shape[1])
    want = 4 * get_num_threads()
    while -(-shape[0] // tz) * -(-shape[1] // ty) < want and max(tz, ty) > 2:
        if tz >= ty:
            tz = max(2, tz // 2)
        else:
            ty = max(2, ty // 2)
    return max(tz, 1), max(ty, 1)


# --------------------------------------------------------------------------------------------
# SLIC


@_on_torch_threads
def slic3d(
    volume,
    n_segments: int = 100,
    compactness: float = 0.1,
    max_num_iter: int = 10,
    sigma=0,
    spacing=None,
    enforce_connectivity: bool = True,
    min_size_factor: float = 0.5,
    max_size_factor: float = 3,
    start_label: int = 1,
    mask=None,
) -> np.ndarray:
    """SLIC supervoxels of a 3D volume (Achanta et al. 2012; TCPC Sec. 2.1).

    Semantics follow scikit-image's ``slic(..., channel_axis=None)`` for (D, H, W) input and
    ``slic(np.moveaxis(volume, 0, -1), channel_axis=-1, convert2lab=False)`` for (C, D, H, W)
    input.

    Parameters
    ----------
    volume : (D, H, W) or (C, D, H, W) array
        bool, integer or floating point; numpy, or a torch tensor (copied to the CPU). Must be
        free of NaN and inf (inside ``mask`` when given).
    n_segments : int
        Approximate number of supervoxels (seeds on a regular grid of step
        ``S = round((D*H*W / n_segments) ** (1/3))``).
    compactness : float
        Weight of space against intensity: the distance is
        ``|colour difference|**2 / compactness**2 + |spacing * offset|**2 / S**2`` on intensities
        rescaled to [0, 1]. Larger values give more cubic supervoxels. The default 0.1 suits
        MRI/CT (scikit-image's 10 makes nearly plain cubes of [0, 1] intensities).
    max_num_iter : int
        Maximum number of k-means iterations (fewer when the labels stop changing).
    sigma : float or 3 floats
        Width of the Gaussian smoothing applied first, per (d, h, w) axis; a scalar is divided by
        ``spacing``. 0 means no smoothing.
    spacing : None or 3 floats
        Voxel spacing (d, h, w) weighting the spatial distance; default isotropic 1.
    enforce_connectivity : bool
        Make every supervoxel one 6-connected component: fragments smaller than
        ``min_size_factor * N / K`` voxels join a neighbour, regions larger than
        ``max_size_factor * N / K`` are split (N voxels, in the mask when given; K seeds).
    min_size_factor, max_size_factor : float
        See ``enforce_connectivity``.
    start_label : int
        First label (>= 0; >= 1 with a mask, since 0 marks the voxels outside it). The labels
        are int32, so ``start_label + D*H*W - 1`` must fit in it.
    mask : None or (D, H, W) bool array
        maskSLIC (Irving 2016): seeds are spread over the mask, supervoxels only cover it, and
        voxels outside it get label 0. Intensities are rescaled over the mask only.

    Returns
    -------
    labels : (D, H, W) int32
        Supervoxel labels numbered contiguously from ``start_label``.

    Raises
    ------
    ValueError
        Wrong shape or ndim, NaN or inf values, ``n_segments < 1``, a mask of another shape or an
        empty mask, non-positive ``compactness`` or ``spacing``, ... (the message names the
        argument).
    TypeError
        An argument of the wrong type (e.g. a complex volume).

    Examples
    --------
    >>> vol = np.zeros((16, 16, 16), np.float32)
    >>> vol[8:] = 1.0
    >>> labels = slic3d(vol, n_segments=8)
    >>> labels.dtype, int(labels.min()), int(labels.max())
    (dtype('int32'), 1, 8)
    """
    vol, _ = _as_volume(volume)
    n_ch, depth, height, width = vol.shape
    shape = (depth, height, width)
    n_segments = _positive_int(n_segments, "n_segments")
    start_label = _positive_int(start_label, "start_label", minimum=0)
    highest = int(np.iinfo(np.int32).max) - vol[0].size + 1  # int32 labels, up to one per voxel
    if start_label > highest:
        raise ValueError(
            f"start_label: labels from {start_label} could overflow int32 (up to {vol[0].size} "
            f"supervoxels); use start_label <= {highest}"
        )
    compactness = _real(compactness, "compactness", positive=True)
    max_num_iter = _positive_int(max_num_iter, "max_num_iter")
    min_size_factor = _real(min_size_factor, "min_size_factor", nonneg=True)
    max_size_factor = _real(max_size_factor, "max_size_factor", positive=True)
    if not isinstance(enforce_connectivity, (bool, np.bool_)):
        raise TypeError(f"enforce_connectivity: expected a bool, got {enforce_connectivity!r}")
    if spacing is None:
        spacing_arr = np.ones(3)
    elif isinstance(spacing, numbers.Real) and not isinstance(spacing, bool):
        spacing_arr = _triple([spacing] * 3, "spacing", positive=True)
    else:
        spacing_arr = _triple(spacing, "spacing", positive=True)
    if isinstance(sigma, numbers.Real) and not isinstance(sigma, bool):
        sig = _real(sigma, "sigma", nonneg=True) / spacing_arr
    else:
        sig = _triple(sigma, "sigma", positive=False)
    m = None
    if mask is not None:
        m = _as_mask(mask, shape)
        if not m.any():
            raise ValueError("mask: is empty (no voxel is True)")
        if start_label < 1:
            raise ValueError("start_label: must be >= 1 with a mask (0 marks voxels outside it)")

    img = _rescale(vol, m, 1.0 / compactness)
    if (sig > 0).any():
        from scipy.ndimage import gaussian_filter

        for c in range(n_ch):
            img[c] = gaussian_filter(img[c], sigma=sig, mode="reflect", truncate=4.0)

    if m is None:
        seeds, step = _grid_centres(shape, n_segments)
        mask_u8 = np.ones((1, 1, 1), np.uint8)
        n_vox = depth * height * width
    else:
        seeds, step = _mask_centres(m, n_segments)
        mask_u8 = m.view(np.uint8)
        n_vox = int(m.sum())
    use_mask = m is not None
    n_seeds = seeds.shape[0]
    centres = np.zeros((n_seeds, 3 + n_ch), np.float64)
    centres[:, :3] = seeds  # colour 0 at first: the first assignment is purely spatial
    labels = np.full(shape, -1, np.int32)
    window = WINDOW_STEPS * step
    tz, ty = _tiles(shape, step)
    # Many small chunks handed out one at a time: a thread slowed down by other processes on a
    # shared machine then does less of the work instead of holding the others up. A fixed count
    # (not one per thread) keeps the sums, hence the labels, identical for any thread count.
    n_chunks = max(16, 2 * get_num_threads())
    run = (img, mask_u8, centres, labels, spacing_arr, step, window, tz, ty, n_chunks)
    with parallel_chunksize(1):
        if use_mask:
            # maskSLIC: spatial-only k-means inside the mask first, to even out the seeds.
            _kmeans(*run, True, max_num_iter, 0)
            if _count_unlabelled(labels, m):
                K.assign_leftovers(img, mask_u8, True, centres, labels, 0, spacing_arr, step)
            K.update_centres(img, labels, centres, n_chunks)
        _kmeans(*run, use_mask, max_num_iter, n_ch)
        if _count_unlabelled(labels, m):
            K.assign_leftovers(img, mask_u8, use_mask, centres, labels, n_ch, spacing_arr, step)

    if enforce_connectivity:
        segment_size = n_vox / n_seeds
        # No component has more than n_vox voxels, so larger limits change nothing; capping them
        # keeps them in int64 and the kernel's queue (max_size entries) within the volume's size.
        min_size = int(min(min_size_factor * segment_size, n_vox + 1))
        max_size = max(1, int(min(max_size_factor * segment_size, n_vox)))
        return K.enforce_connectivity(labels, min_size, max_size, start_label)
    return K.compact_labels(labels, n_seeds, start_label)


def _kmeans(
    img, mask_u8, centres, labels, spacing, step, window, tz, ty, n_chunks, use_mask, n_iter, ncol
):
    return K.slic_iterate(
        img, mask_u8, use_mask, centres, labels, n_iter, ncol, window, spacing, step, tz, ty,
        n_chunks,
    )  # fmt: skip


def _count_unlabelled(labels: np.ndarray, mask) -> int:
    missing = labels < 0
    if mask is not None:
        missing &= mask
    return int(np.count_nonzero(missing))


def _rescale(vol: np.ndarray, mask, ratio: float) -> np.ndarray:
    """(C, D, H, W) any real dtype -> float32 ``(vol - min) / (max - min) * ratio`` (min and max
    over the mask when given), checking for NaN and inf."""
    src = vol if vol.dtype in (np.float32, np.float64) else vol.astype(np.float64)
    values = src if mask is None else src[:, mask]
    lo = values.min()
    hi = values.max()
    where = " inside mask" if mask is not None else ""
    if np.isnan(lo) or np.isnan(hi):
        raise ValueError(f"volume: contains NaN{where}")
    if np.isinf(lo) or np.isinf(hi):
        raise ValueError(f"volume: contains inf{where}")
    lo = float(lo)
    span = float(hi) - lo
    scale = ratio / span if span > 0 else ratio
    out = np.empty(src.shape, np.float32)
    np.multiply(src - np.asarray(lo, src.dtype), scale, out=out, casting="unsafe")
    if mask is not None:
        outside = ~mask
        if outside.any():
            sub = out[:, outside]
            if not np.isfinite(sub).all():
                out[:, outside] = np.nan_to_num(sub, nan=0.0, posinf=0.0, neginf=0.0)
    return out


# --------------------------------------------------------------------------------------------
# statistics and candidates


def supervoxel_stats(volume, labels) -> dict:
    """Per-label statistics in one pass over the voxels.

    Parameters
    ----------
    volume : (D, H, W) or (C, D, H, W) array
        Intensities (any real dtype).
    labels : (D, H, W) int array
        Non-negative labels, e.g. from :func:`slic3d`.

    Returns
    -------
    dict with, for the L labels present (in increasing order):
        ``"label"`` (L,) int64; ``"count"`` (L,) int64 voxel counts; ``"centroid"`` (L, 3) float64
        (d, h, w); ``"mean"`` and ``"std"`` (L,) float64 for a (D, H, W) volume, (L, C) for
        (C, D, H, W) (population std); ``"bbox"`` (L, 6) int64 ``(d0, h0, w0, d1, h1, w1)`` with
        exclusive ends.
    """
    vol, was_3d = _as_volume(volume)
    lab = _as_labels(labels, vol.shape[1:])
    if vol.dtype.kind == "f" and not np.isfinite(vol).all():
        raise ValueError("volume: contains NaN or inf")
    img = np.ascontiguousarray(vol, dtype=np.float64)
    lab32, present = _compact(lab)
    count, coord, csum, csq, lo, hi = K.label_stats(img, lab32, len(present))
    n = count.astype(np.float64)[:, None]
    mean = csum / n
    std = np.sqrt(np.maximum(csq / n - mean * mean, 0.0))
    if was_3d:
        mean, std = mean[:, 0], std[:, 0]
    return {
        "label": present,
        "count": count,
        "centroid": coord / n,
        "mean": mean,
        "std": std,
        "bbox": np.concatenate([lo, hi], axis=1),
    }


def _compact(lab: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Labels -> (int32 indices 0..L-1 of the same shape, (L,) int64 label values present)."""
    top = int(lab.max()) if lab.size else 0
    if top < 4 * lab.size + 1024:
        used = np.bincount(lab.reshape(-1), minlength=top + 1) > 0
        present = np.flatnonzero(used).astype(np.int64)
        remap = np.cumsum(used, dtype=np.int64) - 1
        idx = remap[lab].astype(np.int32)
    else:
        present, inv = np.unique(lab, return_inverse=True)
        idx = inv.reshape(lab.shape).astype(np.int32)
        present = present.astype(np.int64)
    return np.ascontiguousarray(idx), present


def body_mask(volume, threshold=None, channel: int = 0) -> np.ndarray:
    """A body (CT) or brain (skull-stripped MRI) mask: the largest bright component, holes filled.

    Parameters
    ----------
    volume : (D, H, W) or (C, D, H, W) array
    threshold : None or float
        Voxels above it are foreground; default Otsu's threshold of the channel.
    channel : int
        Channel used for (C, D, H, W) input.

    Returns
    -------
    (D, H, W) bool
    """
    from scipy import ndimage

    vol, _ = _as_volume(volume)
    if isinstance(channel, bool) or not isinstance(channel, numbers.Integral):
        raise TypeError(f"channel: expected an int, got {type(channel).__name__}")
    if not 0 <= channel < vol.shape[0]:
        raise ValueError(f"channel: must be in [0, {vol.shape[0]}), got {channel}")
    v = np.asarray(vol[channel], dtype=np.float64)
    if not np.isfinite(v).all():
        raise ValueError("volume: contains NaN or inf")
    if threshold is None:
        from skimage.filters import threshold_otsu

        threshold = float(threshold_otsu(v)) if v.min() < v.max() else float(v.min())
    fg = v > _real(threshold, "threshold")
    comp, n = ndimage.label(fg)
    if n == 0:
        return fg
    sizes = np.bincount(comp.reshape(-1))
    sizes[0] = 0
    return ndimage.binary_fill_holes(comp == int(sizes.argmax()))


def lesion_candidates(
    volume,
    labels,
    k: int,
    *,
    polarity: str = "bright",
    mask=None,
    min_size: int = 8,
    max_size: int | None = None,
    min_inside: float = 0.5,
    channel: int = 0,
    return_scores: bool = False,
):
    """Centres of the ``k`` supervoxels that look most like lesions (TCPC Sec. 2.1).

    The lesion score of supervoxel s is its contrast to the surrounding tissue, in units of the
    tissue's intensity standard deviation::

        surround(s) = sum_t a(s, t) * mean(t) / sum_t a(s, t)
        score(s)    = (mean(s) - surround(s)) / std(tissue)      (polarity "bright")

    where t runs over the supervoxels touching s (sharing a voxel face, ``a(s, t)`` faces; with a
    mask only those mostly inside it), ``mean`` is the supervoxel's mean intensity and the tissue
    is the mask (the whole volume without one). ``"dark"`` negates the score (hypo-intense lesions,
    e.g. infarcts on CT), ``"both"`` takes its absolute value. Label 0 is background (maskSLIC's
    outside) and never a candidate nor a neighbour.

    Parameters
    ----------
    volume : (D, H, W) or (C, D, H, W) array
    labels : (D, H, W) int array
        Supervoxels, e.g. from :func:`slic3d` (labels >= 1; 0 is background).
    k : int
        Number of candidates wanted (>= 1).
    polarity : {"bright", "dark", "both"}
        Hyper-intense, hypo-intense or either.
    mask : None or (D, H, W) bool array
        Body or brain mask (e.g. :func:`body_mask`); a candidate must have at least
        ``min_inside`` of its voxels in it.
    min_size, max_size : int, None
        Size limits of a candidate, in voxels (None: no upper limit).
    min_inside : float
        Fraction of a supervoxel's voxels that must lie in ``mask``.
    channel : int
        Channel scored for (C, D, H, W) input.
    return_scores : bool
        Also return the scores and the labels of the candidates.

    Returns
    -------
    centres : (n, 3) int64
        Rounded centroids (d, h, w) of the best candidates, best first; ``n = min(k, number of
        eligible supervoxels)``.
    scores : (n,) float64
        Only with ``return_scores``.
    candidate_labels : (n,) int64
        Only with ``return_scores``.
    """
    vol, _ = _as_volume(volume)
    lab = _as_labels(labels, vol.shape[1:])
    k = _positive_int(k, "k")
    if polarity not in _POLARITIES:
        raise ValueError(f"polarity: expected one of {_POLARITIES}, got {polarity!r}")
    if isinstance(channel, bool) or not isinstance(channel, numbers.Integral):
        raise TypeError(f"channel: expected an int, got {type(channel).__name__}")
    if not 0 <= channel < vol.shape[0]:
        raise ValueError(f"channel: must be in [0, {vol.shape[0]}), got {channel}")
    min_size = _positive_int(min_size, "min_size", minimum=0)
    if max_size is not None:
        max_size = _positive_int(max_size, "max_size")
    min_inside = _real(min_inside, "min_inside", nonneg=True)
    if min_inside > 1:
        raise ValueError(f"min_inside: must be in [0, 1], got {min_inside}")
    m = None if mask is None else _as_mask(mask, lab.shape)
    v = vol[channel]
    if v.dtype.kind == "f" and not np.isfinite(v).all():
        raise ValueError("volume: contains NaN or inf")

    stats = supervoxel_stats(v, lab)
    present = stats["label"]
    n_lab = len(present)
    idx, _ = _compact(lab)
    means = stats["mean"]
    count = stats["count"]
    if m is not None:
        inside = np.bincount(idx[m], minlength=n_lab) / np.maximum(count, 1)
        tissue = np.asarray(v[m], dtype=np.float64)
    else:
        inside = np.ones(n_lab)
        tissue = np.asarray(v[lab != 0] if present[0] == 0 else v, dtype=np.float64)
    usable = (present != 0) & (inside >= min_inside)

    # Face contacts between usable supervoxels, weighted by the number of shared faces.
    a, b = K.face_contacts(idx)
    keep = usable[a] & usable[b]
    key = a[keep] * n_lab + b[keep]
    pairs, faces = np.unique(key, return_counts=True)
    pa, pb = pairs // n_lab, pairs % n_lab
    w = faces.astype(np.float64)
    wsum = np.bincount(pa, w, n_lab) + np.bincount(pb, w, n_lab)
    msum = np.bincount(pa, w * means[pb], n_lab) + np.bincount(pb, w * means[pa], n_lab)
    with np.errstate(invalid="ignore", divide="ignore"):
        surround = msum / wsum
    scale = float(tissue.std()) if tissue.size else 1.0
    contrast = (means - surround) / (scale if scale > 0 else 1.0)
    if polarity == "dark":
        score = -contrast
    elif polarity == "both":
        score = np.abs(contrast)
    else:
        score = contrast
    eligible = usable & (wsum > 0) & (count >= min_size)
    if max_size is not None:
        eligible &= count <= max_size
    cand = np.flatnonzero(eligible)
    order = cand[np.argsort(-score[cand], kind="stable")][:k]
    shape = np.asarray(lab.shape)
    centres = np.clip(np.rint(stats["centroid"][order]).astype(np.int64), 0, shape - 1)
    if return_scores:
        return centres, score[order].astype(np.float64), present[order]
    return centres


# --------------------------------------------------------------------------------------------
# sub-volumes


@_on_torch_threads
def crop_subvolumes(volume, centres, size, pad_value=0.0) -> np.ndarray:
    """Fixed-size sub-volumes centred on the given voxels, padded where they leave the volume.

    Crop i covers ``centres[i] - size // 2`` to ``centres[i] - size // 2 + size`` (exclusive) on
    each axis, so the centre voxel sits at index ``size // 2`` of the crop.

    Parameters
    ----------
    volume : (D, H, W) or (C, D, H, W) array
        Any real dtype; the crops keep it (a bfloat16 tensor gives float32 crops: numpy has no
        bfloat16).
    centres : (N, 3) int array
        Centre voxels (d, h, w); they may lie outside the volume (the crop is then padding).
    size : int or 3 ints
        Crop size (s_d, s_h, s_w), each >= 1.
    pad_value : number
        Value of voxels outside the volume; must be representable in the volume's dtype.

    Returns
    -------
    (N, s_d, s_h, s_w) array for (D, H, W) input, (N, C, s_d, s_h, s_w) for (C, D, H, W) input.
    """
    vol, was_3d = _as_volume(volume)
    cen = _to_numpy(centres)
    if cen.dtype == np.bool_ or not np.issubdtype(cen.dtype, np.integer):
        if cen.size and np.issubdtype(cen.dtype, np.floating) and np.all(cen == np.rint(cen)):
            cen = cen.astype(np.int64)
        elif cen.size:
            raise TypeError(f"centres: expected integer voxel coordinates, got dtype {cen.dtype}")
        else:
            cen = cen.astype(np.int64)
    if cen.ndim == 1 and cen.shape == (3,):
        raise ValueError("centres: expected shape (N, 3); wrap a single centre as [[d, h, w]]")
    if cen.ndim != 2 or cen.shape[1] != 3:
        raise ValueError(f"centres: expected shape (N, 3), got {cen.shape}")
    sz = _size_triple(size)
    pad = _pad_scalar(pad_value, vol.dtype)
    n, n_ch = cen.shape[0], vol.shape[0]
    out = np.full((n, n_ch, *sz), pad, dtype=vol.dtype)
    if n:
        # A centre farther than a crop from the volume gives pure padding wherever it is; pulling
        # it in keeps the kernel's int64 byte offsets (start * itemsize) from wrapping around.
        if cen.dtype.kind == "u":
            cen = np.minimum(cen, np.uint64(np.iinfo(np.int64).max))
        sz_a = np.asarray(sz, np.int64)
        cen = np.clip(cen.astype(np.int64), -sz_a, np.asarray(vol.shape[1:], np.int64) + sz_a)
        starts = np.ascontiguousarray(cen - sz_a // 2)
        src = np.ascontiguousarray(vol)
        item = src.dtype.itemsize
        src_b = src.view(np.uint8).reshape(n_ch, src.shape[1], src.shape[2], src.shape[3] * item)
        out_b = out.view(np.uint8).reshape(n, n_ch, sz[0], sz[1], sz[2] * item)
        K.crop_bytes(src_b, starts, sz[0], sz[1], sz[2] * item, item, out_b)
    return out[:, 0] if was_3d else out


def _size_triple(size) -> tuple[int, int, int]:
    if isinstance(size, numbers.Integral) and not isinstance(size, bool):
        vals = [int(size)] * 3
    else:
        try:
            vals = list(size)
        except TypeError:
            raise TypeError(f"size: expected an int or 3 ints, got {type(size).__name__}") from None
        if len(vals) != 3:
            raise ValueError(f"size: expected 3 values (d, h, w), got {len(vals)}")
        for s in vals:
            if isinstance(s, bool) or not isinstance(s, numbers.Integral):
                raise TypeError(f"size: expected integers, got {vals!r}")
        vals = [int(s) for s in vals]
    if min(vals) < 1:
        raise ValueError(f"size: every entry must be >= 1, got {tuple(vals)}")
    return tuple(vals)  # type: ignore[return-value]


def _pad_scalar(pad_value, dtype: np.dtype):
    if isinstance(pad_value, bool) and dtype != np.bool_:
        pad_value = int(pad_value)
    if not isinstance(pad_value, numbers.Number) or isinstance(pad_value, complex):
        raise TypeError(f"pad_value: expected a number, got {type(pad_value).__name__}")
    if dtype == np.bool_:
        if pad_value not in (0, 1):
            raise ValueError(f"pad_value: {pad_value!r} is not representable as bool")
        return bool(pad_value)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        if not (float(pad_value).is_integer() and info.min <= pad_value <= info.max):
            raise ValueError(f"pad_value: {pad_value!r} is not representable as {dtype}")
        return int(pad_value)
    value = float(pad_value)
    if math.isfinite(value) and abs(value) > float(np.finfo(dtype).max):  # would become inf
        raise ValueError(f"pad_value: {pad_value!r} is not representable as {dtype}")
    return value


# --------------------------------------------------------------------------------------------
# quality metrics (benchmarks and tests)


def _contingency(labels, truth) -> tuple[np.ndarray, int]:
    lab = _as_labels(labels, None, "labels")
    gt = _as_labels(truth, lab.shape, "truth", allow_bool=True)
    if lab.size == 0:
        raise ValueError(f"labels: is empty (shape {lab.shape})")
    li, _ = _compact(lab)
    gi, gp = _compact(gt)
    ng = len(gp)
    table = np.bincount(
        li.reshape(-1).astype(np.int64) * ng + gi.reshape(-1), minlength=(int(li.max()) + 1) * ng
    ).reshape(-1, ng)
    return table, lab.size


def asa(labels, truth) -> float:
    """Achievable segmentation accuracy: the fraction of voxels labelled correctly when every
    supervoxel takes its majority ground-truth class, ``sum_s max_g |s & g| / N``.

    Parameters
    ----------
    labels, truth : (D, H, W) non-negative int arrays (supervoxels, ground truth classes)

    Returns
    -------
    float in [0, 1] (1 is best)
    """
    table, n = _contingency(labels, truth)
    return float(table.max(axis=1).sum() / n)


def undersegmentation_error(labels, truth) -> float:
    """Under-segmentation error (Neubert and Protzel 2012): the leakage of supervoxels across
    ground-truth regions, ``sum_g sum_{s overlapping g} min(|s & g|, |s - g|) / N``.

    Parameters
    ----------
    labels, truth : (D, H, W) non-negative int arrays

    Returns
    -------
    float >= 0 (0 is best)
    """
    table, n = _contingency(labels, truth)
    sizes = table.sum(axis=1, keepdims=True)
    leak = np.minimum(table, sizes - table)
    return float(leak[table > 0].sum() / n)


def _boundaries(lab: np.ndarray) -> np.ndarray:
    """Voxels with a 6-neighbour of another label (both sides of each interface)."""
    b = np.zeros(lab.shape, bool)
    for ax in range(3):
        lo = [slice(None)] * 3
        hi = [slice(None)] * 3
        lo[ax] = slice(None, -1)
        hi[ax] = slice(1, None)
        diff = lab[tuple(lo)] != lab[tuple(hi)]
        b[tuple(lo)] |= diff
        b[tuple(hi)] |= diff
    return b


def boundary_recall(labels, truth, tolerance: int = 1) -> float:
    """Fraction of ground-truth boundary voxels within ``tolerance`` voxels (chessboard distance)
    of a supervoxel boundary.

    Parameters
    ----------
    labels, truth : (D, H, W) int arrays
    tolerance : int >= 0

    Returns
    -------
    float in [0, 1] (1 is best; 1 also when the truth has no boundary)
    """
    from scipy.ndimage import maximum_filter

    lab = _as_labels(labels, None, "labels")
    gt = _as_labels(truth, lab.shape, "truth", allow_bool=True)
    tolerance = _positive_int(tolerance, "tolerance", minimum=0)
    gb = _boundaries(gt)
    n_gb = int(gb.sum())
    if n_gb == 0:
        return 1.0
    sb = _boundaries(lab).view(np.uint8)
    if tolerance:
        sb = maximum_filter(sb, size=2 * tolerance + 1, mode="constant")
    return float(np.count_nonzero(sb[gb]) / n_gb)
