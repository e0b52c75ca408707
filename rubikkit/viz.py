"""Pictures of volumes, puzzles, supervoxels and training runs.

Axis order is (C, D, H, W), D the slice axis. The three orthogonal planes through a voxel
``(d, h, w)`` are named after the axis they fix:

* ``D`` plane: ``volume[d, :, :]``, an (H, W) image (axial for an axial acquisition);
* ``H`` plane: ``volume[:, h, :]``, a (D, W) image;
* ``W`` plane: ``volume[:, :, w]``, a (D, H) image.

The H and W planes are drawn with D increasing upwards.

Every ``show_*`` function draws with matplotlib and returns the :class:`~matplotlib.figure.Figure`
(created through pyplot, so a notebook shows it once when the call is assigned, ``fig = ...``).
:func:`slice_viewer` is the interactive version (ipywidgets): three planes, one slider per axis, a
label overlay switch; the static functions are what a built book shows.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

__all__ = [
    "SliceViewer",
    "label_cmap",
    "montage",
    "montage_slices",
    "plot_log",
    "read_log",
    "show_cube_path",
    "show_cubes",
    "show_puzzle",
    "show_slices",
    "show_supervoxels",
    "slice_viewer",
]

PLANES = ("D", "H", "W")
# Planes with D vertical are drawn with D increasing upwards (slice 0 at the bottom: for a scan
# ordered inferior to superior, the head is up).
ORIGINS = ("upper", "lower", "lower")
ROTATION_NAMES = ("none", "horizontal", "vertical", "both")
_LABEL_COLOURS = (
    "#e6194b",
    "#3cb44b",
    "#ffe119",
    "#4363d8",
    "#f58231",
    "#911eb4",
    "#46f0f0",
    "#f032e6",
    "#bcf60c",
    "#fabebe",
)


def _to_numpy(x, name: str) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor, on any device
        x = x.detach().cpu().numpy()
    try:
        return np.asarray(x)
    except Exception as exc:  # noqa: BLE001 - report as a TypeError naming the argument
        raise TypeError(f"{name}: expected an array or tensor, got {type(x).__name__}") from exc


def _as_3d(volume, channel: int = 0, name: str = "volume") -> np.ndarray:
    """(D, H, W) float array from a (D, H, W) or (C, D, H, W) array or tensor."""
    v = _to_numpy(volume, name)
    if v.ndim == 4:
        if not -v.shape[0] <= channel < v.shape[0]:
            raise ValueError(f"channel: {channel} out of range for {v.shape[0]} channels")
        v = v[channel]
    if v.ndim != 3:
        raise ValueError(f"{name}: expected a (D, H, W) or (C, D, H, W) array, got shape {v.shape}")
    if v.dtype == bool or not np.issubdtype(v.dtype, np.number):
        v = v.astype(np.float32)
    return v


def _check_mask(mask, shape, name: str = "mask") -> np.ndarray | None:
    if mask is None:
        return None
    m = _to_numpy(mask, name)
    if m.ndim == 4 and m.shape[0] == 1:
        m = m[0]
    if m.shape != tuple(shape):
        raise ValueError(f"{name}: shape {m.shape} does not match the volume's {tuple(shape)}")
    if m.dtype.kind == "f" and not np.array_equal(m, np.round(m)):
        raise ValueError(
            f"{name}: expected integer labels, got non-integer values (a probability map? "
            f"threshold it first, e.g. {name} > 0.5, or take the argmax over classes)"
        )
    return m.astype(np.int64, copy=False)


def _index(index, shape, mask) -> tuple[int, int, int]:
    """The voxel the planes go through: given, else the centre of the mask's labelled voxels, else
    the centre of the volume."""
    if index is None:
        if mask is not None and (mask > 0).any():
            idx = np.argwhere(mask > 0)
            return tuple(int(round(c)) for c in idx.mean(axis=0))
        return tuple(s // 2 for s in shape)
    if len(index) != 3:
        raise ValueError(f"index: expected (d, h, w), got {index!r}")
    out = []
    for axis, (i, s) in enumerate(zip(index, shape)):
        i = int(i)
        if not 0 <= i < s:
            raise ValueError(f"index: {PLANES[axis]} = {i} outside 0..{s - 1}")
        out.append(i)
    return tuple(out)


def _planes(v: np.ndarray, idx) -> list[np.ndarray]:
    d, h, w = idx
    return [v[d], v[:, h], v[:, :, w]]


def _aspects(spacing) -> list[float]:
    if spacing is None:
        return [1.0, 1.0, 1.0]
    if len(spacing) != 3 or any(float(s) <= 0 for s in spacing):
        raise ValueError(f"spacing: expected three positive voxel sizes (D, H, W), got {spacing!r}")
    sd, sh, sw = (float(s) for s in spacing)
    # imshow aspect = height of a pixel / width of a pixel.
    return [sh / sw, sd / sw, sd / sh]


def label_cmap(n_labels: int = 10):
    """A listed colormap for labels 1..n_labels (label 0, the background, is left transparent)."""
    from matplotlib.colors import ListedColormap

    colours = [_LABEL_COLOURS[i % len(_LABEL_COLOURS)] for i in range(max(1, n_labels))]
    return ListedColormap(colours, name="rubikkit_labels")


def _overlay(ax, m2d: np.ndarray, n_labels: int, alpha: float, aspect: float, origin="upper"):
    shown = np.ma.masked_where(m2d <= 0, m2d)
    ax.imshow(
        shown,
        cmap=label_cmap(n_labels),
        vmin=0.5,
        vmax=n_labels + 0.5,
        alpha=alpha,
        interpolation="nearest",
        aspect=aspect,
        origin=origin,
    )


def _draw_planes(axes, v, m, idx, *, cmap, vmin, vmax, alpha, aspects, n_labels, show_mask=True):
    names = [f"D = {idx[0]}  (H, W)", f"H = {idx[1]}  (D, W)", f"W = {idx[2]}  (D, H)"]
    planes = _planes(v, idx)
    mplanes = _planes(m, idx) if m is not None else [None] * 3
    for ax, img, mimg, title, aspect, origin in zip(axes, planes, mplanes, names, aspects, ORIGINS):
        ax.clear()
        ax.imshow(
            img,
            cmap=cmap,
            vmin=vmin,
            vmax=vmax,
            interpolation="nearest",
            aspect=aspect,
            origin=origin,
        )
        if mimg is not None and show_mask:
            _overlay(ax, mimg, n_labels, alpha, aspect, origin)
        ax.set_title(title, fontsize=8)
        ax.set_axis_off()


def _intensity_range(v: np.ndarray, vmin, vmax) -> tuple[float, float]:
    if vmin is None or vmax is None:
        lo, hi = np.percentile(v, [0.5, 99.5]) if v.size else (0.0, 1.0)
        if hi <= lo:
            lo, hi = float(v.min()), float(v.max()) + 1e-6
        vmin = lo if vmin is None else vmin
        vmax = hi if vmax is None else vmax
    return float(vmin), float(vmax)


def show_slices(
    volume,
    mask=None,
    *,
    index: Sequence[int] | None = None,
    channel: int = 0,
    spacing: Sequence[float] | None = None,
    cmap: str = "gray",
    vmin: float | None = None,
    vmax: float | None = None,
    alpha: float = 0.4,
    title: str | None = None,
    figsize: tuple[float, float] = (7.5, 2.8),
    dpi: int = 64,
):
    """Three orthogonal planes of a volume through one voxel, with an optional label overlay.

    Parameters
    ----------
    volume : (D, H, W) or (C, D, H, W) array or tensor
        The image; for several channels, ``channel`` picks the one shown.
    mask : (D, H, W) int array or tensor, optional
        Labels drawn in colour over the image (0 = background, transparent).
    index : (d, h, w), optional
        The voxel the planes pass through. Default: the centre of the labelled voxels of ``mask``,
        else the centre of the volume.
    spacing : (sd, sh, sw), optional
        Voxel size along (D, H, W) in mm, so that anisotropic volumes are drawn to scale.
    cmap, vmin, vmax : display of the image (default range: 0.5 and 99.5 percentiles).
    alpha : float
        Opacity of the label overlay.
    title : str, optional
    figsize, dpi : figure size in inches and resolution (small by default: book pages stay light).

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt

    v = _as_3d(volume, channel)
    m = _check_mask(mask, v.shape)
    idx = _index(index, v.shape, m)
    lo, hi = _intensity_range(v, vmin, vmax)
    n_labels = int(m.max()) if m is not None and m.size and m.max() > 0 else 1
    fig, axes = plt.subplots(1, 3, figsize=figsize, dpi=dpi)
    _draw_planes(
        axes,
        v,
        m,
        idx,
        cmap=cmap,
        vmin=lo,
        vmax=hi,
        alpha=alpha,
        aspects=_aspects(spacing),
        n_labels=n_labels,
    )
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


class SliceViewer:
    """Interactive three-plane viewer (ipywidgets): one slider per axis and a label overlay switch.

    Build it with :func:`slice_viewer`. ``viewer.widget`` is the ipywidgets box to display;
    ``viewer.index`` the current voxel; ``viewer.figure`` the matplotlib figure drawn last. The
    widgets are created without needing a running kernel (they render once displayed in Jupyter).
    """

    def __init__(
        self,
        volume,
        mask=None,
        *,
        index=None,
        channel: int = 0,
        spacing=None,
        cmap: str = "gray",
        vmin=None,
        vmax=None,
        alpha: float = 0.4,
        figsize=(7.5, 2.8),
        dpi: int = 64,
    ):
        import ipywidgets as widgets

        self.volume = _as_3d(volume, channel)
        self.mask = _check_mask(mask, self.volume.shape)
        self._cmap, self._alpha, self._figsize, self._dpi = cmap, alpha, figsize, dpi
        self._range = _intensity_range(self.volume, vmin, vmax)
        self._aspects = _aspects(spacing)
        self._n_labels = (
            int(self.mask.max()) if self.mask is not None and self.mask.max() > 0 else 1
        )
        start = _index(index, self.volume.shape, self.mask)
        self.sliders = [
            widgets.IntSlider(
                value=start[a],
                min=0,
                max=self.volume.shape[a] - 1,
                description=PLANES[a],
                continuous_update=False,
                layout=widgets.Layout(width="32%"),
            )
            for a in range(3)
        ]
        self.overlay = widgets.Checkbox(
            value=self.mask is not None,
            description="labels",
            disabled=self.mask is None,
            indent=False,
        )
        self.output = widgets.Output()
        for w in (*self.sliders, self.overlay):
            w.observe(self._on_change, names="value")
        self.widget = widgets.VBox([widgets.HBox([*self.sliders, self.overlay]), self.output])
        self.figure = None
        self.render()

    @property
    def index(self) -> tuple[int, int, int]:
        return tuple(int(s.value) for s in self.sliders)

    def _on_change(self, _change) -> None:
        self.render()

    def render(self):
        """Redraw the three planes at the sliders' voxel into the output area; return the figure."""
        from matplotlib.figure import Figure

        # A pyplot-free figure: nothing is shown twice and nothing piles up in pyplot's registry.
        fig = Figure(figsize=self._figsize, dpi=self._dpi)
        axes = fig.subplots(1, 3)
        _draw_planes(
            axes,
            self.volume,
            self.mask,
            self.index,
            cmap=self._cmap,
            vmin=self._range[0],
            vmax=self._range[1],
            alpha=self._alpha,
            aspects=self._aspects,
            n_labels=self._n_labels,
            show_mask=self.overlay.value,
        )
        fig.tight_layout()
        self.figure = fig
        self.output.clear_output(wait=True)
        with self.output:
            from IPython.display import display

            display(fig)
        return fig

    def _repr_mimebundle_(self, include=None, exclude=None):
        """The widget for Jupyter, plus a PNG of the current planes for static renderers.

        JupyterLab shows the interactive widget; a built book (whose configuration prefers PNG)
        and other static viewers show the picture.
        """
        import io

        bundle = dict(self.widget._repr_mimebundle_() or {})
        buf = io.BytesIO()
        self.figure.savefig(buf, format="png")
        bundle["image/png"] = buf.getvalue()
        return bundle


def slice_viewer(volume, mask=None, **kwargs) -> SliceViewer:
    """Interactive viewer of ``volume`` (and labels ``mask``); see :class:`SliceViewer`.

    Takes the arguments of :func:`show_slices`. In JupyterLab the sliders move the three planes; a
    static page (the built book) shows a picture of the first view instead.
    """
    return SliceViewer(volume, mask, **kwargs)


def montage(
    images: Sequence,
    *,
    ncols: int | None = None,
    titles: Sequence[str] | None = None,
    masks: Sequence | None = None,
    cmap: str = "gray",
    vmin: float | None = None,
    vmax: float | None = None,
    alpha: float = 0.4,
    panel_size: float = 1.6,
    dpi: int = 64,
    suptitle: str | None = None,
):
    """A grid of 2D images (shared intensity range unless vmin/vmax are given).

    Parameters
    ----------
    images : sequence of (h, w) arrays or tensors
    ncols : int, optional
        Columns of the grid (default: up to 8).
    titles : sequence of str, optional
        One per image.
    masks : sequence of (h, w) int arrays, optional
        Label overlays, one per image (None entries allowed).

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt

    imgs = [_to_numpy(im, "images") for im in images]
    if not imgs:
        raise ValueError("images: need at least one image")
    for i, im in enumerate(imgs):
        if im.ndim != 2:
            raise ValueError(f"images: image {i} has shape {im.shape}, expected (h, w)")
    if titles is not None and len(titles) != len(imgs):
        raise ValueError(f"titles: {len(titles)} titles for {len(imgs)} images")
    if masks is not None and len(masks) != len(imgs):
        raise ValueError(f"masks: {len(masks)} masks for {len(imgs)} images")
    n = len(imgs)
    ncols = min(n, 8) if ncols is None else int(ncols)
    if ncols < 1:
        raise ValueError(f"ncols: must be >= 1, got {ncols}")
    nrows = math.ceil(n / ncols)
    allv = np.concatenate([im.astype(np.float64).ravel() for im in imgs])
    lo, hi = _intensity_range(allv, vmin, vmax)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(panel_size * ncols, panel_size * nrows + 0.3), dpi=dpi, squeeze=False
    )
    n_labels = 1
    if masks is not None:
        n_labels = max([1] + [int(_to_numpy(m, "masks").max()) for m in masks if m is not None])
    for k, ax in enumerate(axes.ravel()):
        ax.set_axis_off()
        if k >= n:
            continue
        ax.imshow(imgs[k], cmap=cmap, vmin=lo, vmax=hi, interpolation="nearest")
        if masks is not None and masks[k] is not None:
            _overlay(ax, _to_numpy(masks[k], "masks").astype(np.int64), n_labels, alpha, 1.0)
        if titles is not None:
            ax.set_title(titles[k], fontsize=7)
    if suptitle:
        fig.suptitle(suptitle, fontsize=9)
    fig.tight_layout()
    return fig


def montage_slices(volume, n: int = 8, *, axis: int = 0, channel: int = 0, mask=None, **kwargs):
    """``n`` evenly spaced slices of a volume along ``axis`` (0 = D, 1 = H, 2 = W) as a montage.

    Extra keyword arguments go to :func:`montage`.
    """
    v = _as_3d(volume, channel)
    m = _check_mask(mask, v.shape)
    if axis not in (0, 1, 2):
        raise ValueError(f"axis: must be 0 (D), 1 (H) or 2 (W), got {axis!r}")
    if n < 1:
        raise ValueError(f"n: must be >= 1, got {n}")
    size = v.shape[axis]
    positions = np.unique(np.linspace(0, size - 1, min(n, size) + 2).round().astype(int)[1:-1])
    if positions.size == 0:
        positions = np.array([size // 2])
    images = [np.take(v, p, axis=axis) for p in positions]
    masks = [np.take(m, p, axis=axis) for p in positions] if m is not None else None
    titles = [f"{PLANES[axis]} = {p}" for p in positions]
    return montage(images, titles=titles, masks=masks, **kwargs)


def show_puzzle(
    cubes,
    perms=None,
    rots=None,
    *,
    channel: int = 0,
    plane: str = "D",
    ncols: int | None = None,
    dpi: int = 64,
    panel_size: float = 1.5,
    suptitle: str | None = None,
):
    """The cubes of one puzzle in slot order: the middle slice of each cube.

    Parameters
    ----------
    cubes : (M, C, d, h, w) or (M, d, h, w) array or tensor
        The cubes of one puzzle, as ``rubikkit.ops.puzzle`` returns them for one volume.
    perms : (M,) ints, optional
        Slot m holds the cube of grid cell ``perms[m]`` (shown in the titles).
    rots : (M,) ints in 0..3, optional
        Rotation code of each slot (0 none, 1 horizontal, 2 vertical, 3 both).
    plane : {"D", "H", "W"}
        Which middle plane of each cube is drawn.
    ncols : int, optional
        Columns (default: M // 2 for an even M, so a 2x2x2 grid gives 2 rows of 4).

    Returns
    -------
    matplotlib.figure.Figure
    """
    c = _to_numpy(cubes, "cubes")
    if c.ndim == 5:
        c = c[:, channel]
    if c.ndim != 4:
        raise ValueError(f"cubes: expected (M, C, d, h, w) or (M, d, h, w), got shape {c.shape}")
    if plane not in PLANES:
        raise ValueError(f"plane: must be one of {PLANES}, got {plane!r}")
    M = c.shape[0]
    axis = PLANES.index(plane) + 1
    images = [np.take(c[m], c.shape[axis] // 2, axis=axis - 1) for m in range(M)]
    p = None if perms is None else _to_numpy(perms, "perms").reshape(-1)
    r = None if rots is None else _to_numpy(rots, "rots").reshape(-1)
    for name, arr in (("perms", p), ("rots", r)):
        if arr is not None and arr.shape != (M,):
            raise ValueError(f"{name}: expected {M} entries (one per cube), got {arr.shape}")
    titles = []
    for m in range(M):
        t = f"slot {m}"
        if p is not None:
            t += f": cell {int(p[m])}"
        if r is not None:
            t += f"\n{ROTATION_NAMES[int(r[m])]}" if 0 <= int(r[m]) < 4 else f"\nrot {int(r[m])}"
        titles.append(t)
    if ncols is None:
        ncols = M // 2 if M % 2 == 0 and M > 2 else M
    return montage(
        images, ncols=ncols, titles=titles, dpi=dpi, panel_size=panel_size, suptitle=suptitle
    )


def _cube3(cube_size) -> tuple[int, int, int]:
    if isinstance(cube_size, (int, np.integer)):
        cube_size = (int(cube_size),) * 3
    cs = tuple(int(c) for c in cube_size)
    if len(cs) != 3 or min(cs) < 1:
        raise ValueError(
            f"cube_size: expected an int or (d, h, w) of positive ints, got {cube_size!r}"
        )
    return cs


def show_cubes(
    volume,
    origins,
    cube_size,
    *,
    index: Sequence[int] | None = None,
    channel: int = 0,
    spacing: Sequence[float] | None = None,
    figsize: tuple[float, float] = (7.5, 2.8),
    dpi: int = 64,
    title: str | None = None,
):
    """Outlines of the cubes cut from a volume, on three orthogonal planes.

    Parameters
    ----------
    volume : (D, H, W) or (C, D, H, W) array or tensor
    origins : (M, 3) ints
        Corner (d, h, w) of each cube, e.g. from ``rubikkit.ops.cell_origins`` (one volume).
    cube_size : int or (d, h, w)
    index : (d, h, w), optional
        Voxel the planes pass through. Default: the centre of cube 0, so each plane cuts cube 0
        and its neighbours.

    Each plane outlines the cubes it cuts, numbered by their row in ``origins`` (the grid cell).

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    v = _as_3d(volume, channel)
    o = _to_numpy(origins, "origins")
    if o.ndim != 2 or o.shape[1] != 3:
        raise ValueError(f"origins: expected an (M, 3) array, got shape {o.shape}")
    o = o.astype(np.int64)
    cs = np.asarray(_cube3(cube_size))
    if index is None:
        index = tuple(int(x) for x in np.minimum(o[0] + cs // 2, np.asarray(v.shape) - 1))
    idx = _index(index, v.shape, None)
    lo, hi = _intensity_range(v, None, None)
    fig, axes = plt.subplots(1, 3, figsize=figsize, dpi=dpi)
    _draw_planes(
        axes, v, None, idx, cmap="gray", vmin=lo, vmax=hi, alpha=0.0,
        aspects=_aspects(spacing), n_labels=1,
    )  # fmt: skip
    for a, ax in enumerate(axes):
        rows, cols = [ax_ for ax_ in range(3) if ax_ != a]  # image axes: (rows, cols)
        for m, (org, end) in enumerate(zip(o, o + cs)):
            if not org[a] <= idx[a] < end[a]:
                continue
            colour = _LABEL_COLOURS[m % len(_LABEL_COLOURS)]
            ax.add_patch(
                Rectangle(
                    (org[cols] - 0.5, org[rows] - 0.5),
                    cs[cols],
                    cs[rows],
                    fill=False,
                    edgecolor=colour,
                    linewidth=1.5,
                )
            )
            ax.text(
                org[cols] + 1, org[rows] + cs[rows] / 2, str(m), color=colour, fontsize=8,
                fontweight="bold", va="center",
                bbox={"facecolor": "black", "alpha": 0.6, "pad": 1, "linewidth": 0},
            )  # fmt: skip
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def show_supervoxels(
    volume,
    labels,
    *,
    index: Sequence[int] | None = None,
    channel: int = 0,
    centres=None,
    figsize: tuple[float, float] = (7.5, 2.8),
    dpi: int = 64,
    title: str | None = None,
):
    """Supervoxel boundaries on the three planes through ``index`` (default: volume centre).

    Parameters
    ----------
    volume : (D, H, W) or (C, D, H, W) array or tensor
    labels : (D, H, W) int array
        Supervoxel labels (e.g. from ``rubikkit.slic.slic3d``).
    centres : (k, 3) int array, optional
        Voxels (d, h, w) to mark, e.g. lesion candidates; drawn on the planes they lie in.

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt
    from skimage.segmentation import find_boundaries

    v = _as_3d(volume, channel)
    lab = _check_mask(labels, v.shape, name="labels")
    idx = _index(index, v.shape, None)
    lo, hi = _intensity_range(v, None, None)
    fig, axes = plt.subplots(1, 3, figsize=figsize, dpi=dpi)
    names = [f"D = {idx[0]}  (H, W)", f"H = {idx[1]}  (D, W)", f"W = {idx[2]}  (D, H)"]
    cen = None if centres is None else _to_numpy(centres, "centres").reshape(-1, 3).astype(int)
    for a, (ax, img, limg) in enumerate(zip(axes, _planes(v, idx), _planes(lab, idx))):
        ax.imshow(img, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest", origin=ORIGINS[a])
        edges = find_boundaries(limg, mode="inner")
        ax.imshow(
            np.ma.masked_where(~edges, edges), cmap=label_cmap(1), alpha=0.8, origin=ORIGINS[a]
        )
        if cen is not None:
            keep = cen[:, a] == idx[a]
            pts = np.delete(cen[keep], a, axis=1)
            if len(pts):
                ax.scatter(pts[:, 1], pts[:, 0], s=25, marker="x", c="#ffe119")
        ax.set_title(names[a], fontsize=8)
        ax.set_axis_off()
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def show_cube_path(
    volume,
    origins,
    cube_size,
    *,
    plane: int | None = None,
    channel: int = 0,
    margin: int | None = None,
    ax=None,
    figsize: tuple[float, float] = (2.8, 2.8),
    dpi: int = 64,
    title: str | None = None,
):
    """The cubes of one contrastive-predictive-coding sub-volume: support path and target.

    Draws the plane through the centre of the target cube, outlines the support cubes in orange,
    numbered in reading order and joined by arrows, and fills the target cube in green (the
    colours of TCPC's Fig. 2).

    Parameters
    ----------
    volume : (D, H, W) or (C, D, H, W) array or tensor
    origins : (P, 3) ints
        Corners (d, h, w) of the P cubes of one sub-volume: the support cubes in reading order,
        then the target, as a CPC task's ``build_batch`` lists them (``batch["origins"][b]``
        holds ``n_crops`` such groups one after the other).
    cube_size : int or (d, h, w)
    plane : {0, 1, 2}, optional
        Axis held fixed (0 = D plane). Default: the axis along which the origins vary least
        (the first such axis), so that the path lies in the drawn plane.
    margin : int, optional
        Zoom in: show only the cubes' bounding box and ``margin`` voxels around it (default: the
        whole plane).
    ax : matplotlib Axes, optional
        Axes to draw into (default: a new figure).

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    v = _as_3d(volume, channel)
    o = _to_numpy(origins, "origins")
    if o.ndim != 2 or o.shape[1] != 3 or o.shape[0] < 2:
        raise ValueError(f"origins: expected a (P, 3) array with P >= 2, got shape {o.shape}")
    o = o.astype(np.int64)
    cs = np.asarray(_cube3(cube_size))
    if plane is None:
        plane = int(np.argmin(np.ptp(o, axis=0)))
    if plane not in (0, 1, 2):
        raise ValueError(f"plane: must be 0 (D), 1 (H) or 2 (W), got {plane!r}")
    centres = o + cs / 2.0 - 0.5  # voxel coordinates of the cube centres
    # The plane through the target's middle voxel (as show_cubes picks it for cube 0).
    idx = _index(
        tuple(int(x) for x in np.minimum(o[-1] + cs // 2, np.asarray(v.shape) - 1)), v.shape, None
    )
    rows, cols = [a for a in range(3) if a != plane]
    if ax is None:
        fig, ax = plt.subplots(figsize=figsize, dpi=dpi)
    else:
        fig = ax.figure
    lo, hi = _intensity_range(v, None, None)
    ax.imshow(
        _planes(v, idx)[plane], cmap="gray", vmin=lo, vmax=hi, interpolation="nearest",
        origin=ORIGINS[plane],
    )  # fmt: skip
    support, target = "#f58231", "#3cb44b"
    for m, org in enumerate(o):
        is_target = m == len(o) - 1
        ax.add_patch(
            Rectangle(
                (org[cols] - 0.5, org[rows] - 0.5),
                cs[cols],
                cs[rows],
                fill=is_target,
                facecolor=target if is_target else "none",
                alpha=0.45 if is_target else 1.0,
                edgecolor=target if is_target else support,
                linewidth=2.0 if is_target else 1.2,
            )
        )
        if not is_target:
            ax.text(
                centres[m, cols], centres[m, rows], str(m), color=support, fontsize=8,
                fontweight="bold", ha="center", va="center",
                bbox={"facecolor": "black", "alpha": 0.6, "pad": 1, "linewidth": 0},
            )  # fmt: skip
    for a, b in zip(centres[:-2], centres[1:-1]):
        ax.annotate(
            "",
            xy=(b[cols], b[rows]),
            xytext=(a[cols], a[rows]),
            arrowprops={"arrowstyle": "->", "color": support, "shrinkA": 6, "shrinkB": 6},
        )
    if margin is not None:
        if isinstance(margin, bool) or not isinstance(margin, (int, np.integer)) or margin < 0:
            raise ValueError(f"margin: expected an int >= 0, got {margin!r}")
        lo_box = o.min(axis=0) - margin - 0.5
        hi_box = (o + cs).max(axis=0) + margin - 0.5
        ax.set_xlim(lo_box[cols], hi_box[cols])
        top_down = ORIGINS[plane] == "upper"  # row 0 at the top
        ylim = (hi_box[rows], lo_box[rows])
        ax.set_ylim(ylim if top_down else ylim[::-1])
    ax.set_title(f"{PLANES[plane]} = {idx[plane]}  ({PLANES[rows]}, {PLANES[cols]})", fontsize=8)
    ax.set_axis_off()
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


# --- training logs ---------------------------------------------------------------------------


def read_log(run) -> list[dict]:
    """Records of a run's ``log.jsonl`` (one JSON object per line).

    Parameters
    ----------
    run : path to a run folder (holding ``log.jsonl``), to a ``.jsonl`` file, or a list of dicts.
    """
    if isinstance(run, (str, os.PathLike)):
        path = Path(run)
        if path.is_dir():
            path = path / "log.jsonl"
        if not path.is_file():
            raise ValueError(f"run: no log file at {path}")
        records = []
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise ValueError(f"run: {path}:{i}: not JSON ({exc.msg})") from exc
        return records
    if isinstance(run, Iterable):
        records = list(run)
        if not all(isinstance(r, dict) for r in records):
            raise TypeError("run: expected a path or a list of dicts")
        return records
    raise TypeError(f"run: expected a path or a list of dicts, got {type(run).__name__}")


def plot_log(
    run,
    keys: Sequence[str] | None = None,
    *,
    x: str | None = None,
    group: str | None = None,
    ax=None,
    logy: bool = False,
    figsize: tuple[float, float] = (4.8, 3.0),
    dpi: int = 64,
    title: str | None = None,
):
    """Curves of numeric fields of a run's log (loss, accuracies) against steps or epochs.

    Parameters
    ----------
    run : run folder, ``log.jsonl`` path, or list of dicts (see :func:`read_log`).
    keys : names of the fields to plot. Default: every numeric field whose name contains ``loss``.
    x : field for the horizontal axis. Default: ``step`` if present, else ``epoch``, else the
        record number.
    group : field splitting records into separate curves (default: ``split`` or ``phase`` when
        present, e.g. train / val).
    ax : matplotlib Axes to draw into (default: a new figure).
    logy : log scale for the vertical axis.

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt

    records = read_log(run)
    if not records:
        raise ValueError("run: the log holds no records")
    fields = {k for r in records for k, v in r.items() if isinstance(v, (int, float))}
    if keys is None:
        keys = sorted(k for k in fields if "loss" in k)
        if not keys:
            raise ValueError(
                f"keys: no field named like 'loss' in the log; fields: {sorted(fields)}"
            )
    for k in keys:
        if k not in fields:
            raise ValueError(
                f"keys: {k!r} is not a numeric field of the log; fields: {sorted(fields)}"
            )
    if x is None:
        x = next((c for c in ("step", "epoch") if c in fields), None)
    if group is None:
        group = next((g for g in ("split", "phase") if any(g in r for r in records)), None)
    if ax is None:
        fig, ax = plt.subplots(figsize=figsize, dpi=dpi)
    else:
        fig = ax.figure
    groups: dict[str, list[dict]] = {}
    for r in records:
        groups.setdefault(str(r.get(group, "")) if group else "", []).append(r)
    for gname, recs in groups.items():
        for k in keys:
            pts = [
                (r[x] if x else i, r[k])
                for i, r in enumerate(recs)
                if isinstance(r.get(k), (int, float)) and (x is None or x in r)
            ]
            if not pts:
                continue
            xs, ys = zip(*pts)
            label = f"{k} ({gname})" if gname else k
            ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, markersize=3, label=label)
    ax.set_xlabel(x or "record")
    ax.set_ylabel(", ".join(keys) if len(keys) < 3 else "value")
    if logy:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig
