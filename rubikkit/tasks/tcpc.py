"""Task-related contrastive predictive coding (TCPC; Zhu et al., arXiv 2020, Sec. 2).

1. Candidate lesions (Sec. 2.1): each volume is rescaled to [-1, 1] by its minimum and maximum,
   clustered into supervoxels by SLIC (:func:`rubikkit.slic.slic3d`), and the supervoxels most
   likely to be lesions give ``n_candidates`` centres (:func:`rubikkit.slic.lesion_candidates`).
   This runs once per volume in :meth:`TCPCTask.prepare` and is cached in memory and, with
   ``cache_dir``, on disk; never in a training step.
2. Calibrated CPC (Sec. 2.2): a sub-volume centred on a candidate is cut into cubes with 50 %
   overlap (Sec. 2.2.2; ``overlap`` and ``cube_size`` are the hyper-parameters of Sec. 3.4.5). The
   support set follows a "U"-shaped path around the target cube (Fig. 2(c)): in a 3x3 grid of
   cubes over (H, W), down the left column, along the bottom row and up the right column, seven
   cubes around the target in the centre, so the context surrounds the lesion on three sides
   rather than lying on one line (3D CPC, :mod:`rubikkit.tasks.cpc3d`). A GRU reads the support
   features in that order and predicts the target's feature (Eq. 1); InfoNCE with in-batch
   negatives scores it (Eq. 3).

Fallback candidate rule (documented, announced by a warning): when SLIC yields no candidate for a
volume, the volume is divided into a 4x4x4 grid of cells and the centres of the ``n_candidates``
cells with the highest mean intensity are used (lesions such as haemorrhages are bright), see
:func:`grid_candidates`.

Sub-volumes whose box would leave the volume are shifted inside it. A volume with fewer candidates
than ``n_crops`` repeats a crop, and identical crops give identical targets, which no model can
tell apart (:func:`rubikkit.tasks.cpc3d.target_ceiling`); ``crop_jitter`` moves each sub-volume by
a random offset so that the repeats differ (on the binary masks of AdrenalMNIST3D, where SLIC finds
a single candidate in most volumes, this is what lifts the ceiling; the TCPC paper's CT has many).
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
import os
import re
import warnings

import numpy as np
import torch

from rubikkit import RubikkitWarning
from rubikkit.tasks.base import check_int
from rubikkit.tasks.cpc3d import ContrastiveCubeTask

#: (h, w) cells of the U-shaped support path in a 3x3 grid, in reading order; the target is (1, 1).
U_PATH = ((0, 0), (1, 0), (2, 0), (2, 1), (2, 2), (1, 2), (0, 2))
U_TARGET = (1, 1)
FALLBACK_GRID = 4


def grid_candidates(volume: np.ndarray, k: int, grid: int = FALLBACK_GRID) -> np.ndarray:
    """The fallback candidate rule: centres of the ``k`` brightest cells of a regular grid.

    Parameters
    ----------
    volume : (D, H, W) array
    k : int
        Number of centres (at most ``grid**3``; fewer cells than ``k`` repeat the brightest).
    grid : int
        Cells per axis.

    Returns
    -------
    centres : (k, 3) int64 array
        (d, h, w) centres, brightest cell first.
    """
    k = check_int(k, "k", 1)
    grid = check_int(grid, "grid", 1)
    v = np.asarray(volume, dtype=np.float64)
    if v.ndim != 3:
        raise ValueError(f"volume: expected (D, H, W), got shape {v.shape}")
    if v.size == 0:
        raise ValueError(f"volume: is empty (shape {v.shape})")
    edges = [np.linspace(0, s, min(grid, s) + 1).astype(np.int64) for s in v.shape]
    cells, scores = [], []
    for d0, d1 in zip(edges[0][:-1], edges[0][1:]):
        for h0, h1 in zip(edges[1][:-1], edges[1][1:]):
            for w0, w1 in zip(edges[2][:-1], edges[2][1:]):
                cells.append(((d0 + d1) // 2, (h0 + h1) // 2, (w0 + w1) // 2))
                scores.append(v[d0:d1, h0:h1, w0:w1].mean())
    order = np.argsort(-np.asarray(scores), kind="stable")
    picked = [cells[order[i % len(order)]] for i in range(k)]
    return np.asarray(picked, dtype=np.int64).reshape(k, 3)


def _safe_name(item_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(item_id))[:100]


class TCPCTask(ContrastiveCubeTask):
    """``tcpc``: CPC with a U-shaped support path on sub-volumes around SLIC lesion candidates.

    Parameters
    ----------
    cube_size : int
        Cube edge (voxels); the sub-volume is ``(c, c + 2s, c + 2s)`` for stride ``s``.
    overlap : float
        Overlap of neighbouring cubes (default 0.5).
    n_crops : int
        Sub-volumes per volume and step: distinct candidates drawn with the step's generator
        (with replacement only when a volume has fewer candidates).
    hidden : int
        GRU state size.
    n_segments : int
        SLIC supervoxels per volume.
    compactness : float, optional
        SLIC compactness (None: :func:`rubikkit.slic.slic3d`'s default).
    n_candidates : int
        Candidate centres kept per volume.
    slic_options : dict, optional
        Further keyword arguments of :func:`rubikkit.slic.slic3d`.
    cache_dir : str, optional
        Directory for the per-volume candidate files (``<id>-<hash>.npy``); the hash covers the
        SLIC options and the volume shape.
    crop_jitter : int
        Each sub-volume's centre moves by an integer offset drawn uniformly from
        ``[-crop_jitter, crop_jitter]`` along each axis (the step's generator) before the box is
        shifted inside the volume; 0 (default) centres it on its candidate.

    Notes
    -----
    :meth:`step` takes ``index`` as the batch's item ids (``batch["id"]``, a list of str; works
    for any dataset prepared or not) or as integer dataset indices, which refer to the dataset of
    the most recent :meth:`prepare` call. A volume whose candidates are not cached yet gets them
    computed once, then cached.
    """

    name = "tcpc"

    def __init__(
        self,
        cube_size: int = 32,
        overlap: float = 0.5,
        n_crops: int = 4,
        hidden: int = 256,
        n_segments: int = 100,
        compactness: float | None = None,
        n_candidates: int = 8,
        slic_options: dict | None = None,
        cache_dir: str | None = None,
        crop_jitter: int = 0,
    ):
        n_segments = check_int(n_segments, "n_segments", 1)
        crop_jitter = check_int(crop_jitter, "crop_jitter", 0)
        n_candidates = check_int(n_candidates, "n_candidates", 1)
        if compactness is not None and (
            isinstance(compactness, bool)
            or not isinstance(compactness, numbers.Real)
            or not 0 < float(compactness) < math.inf
        ):
            raise ValueError(f"compactness: expected a positive number, got {compactness!r}")
        if slic_options is not None and not isinstance(slic_options, dict):
            raise TypeError(f"slic_options: expected a dict, got {type(slic_options).__name__}")
        if cache_dir is not None and not isinstance(cache_dir, (str, os.PathLike)):
            raise TypeError(f"cache_dir: expected a path, got {type(cache_dir).__name__}")
        super().__init__(
            cube_size=cube_size,
            overlap=overlap,
            n_crops=n_crops,
            hidden=hidden,
            n_segments=n_segments,
            compactness=None if compactness is None else float(compactness),
            n_candidates=n_candidates,
            slic_options=dict(slic_options or {}),
            cache_dir=None if cache_dir is None else os.fspath(cache_dir),
            crop_jitter=crop_jitter,
        )
        #: item id -> (n_candidates, 3) int64 centres
        self.candidates: dict[str, np.ndarray] = {}
        #: how many volumes had their candidates computed (not loaded) by this task
        self.n_computed = 0
        self._index_ids: list[str] | None = None

    # --- the support path ------------------------------------------------------------------

    def path_cells(self) -> np.ndarray:
        cells = [(0, h, w) for h, w in U_PATH] + [(0, *U_TARGET)]
        return np.asarray(cells, dtype=np.int64)

    # --- candidates, once per volume -------------------------------------------------------

    def _hash(self, shape) -> str:
        o = self.options
        key = {
            "n_segments": o["n_segments"],
            "compactness": o["compactness"],
            "n_candidates": o["n_candidates"],
            "slic_options": o["slic_options"],
            "shape": [int(s) for s in shape],
        }
        return hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]

    def compute_candidates(self, volume) -> np.ndarray:
        """SLIC lesion candidates of one volume (TCPC Sec. 2.1), or the fallback rule.

        Parameters
        ----------
        volume : (C, D, H, W) or (D, H, W) array or tensor
            Channels are averaged.

        Returns
        -------
        centres : (n_candidates, 3) int64 array
        """
        from rubikkit.slic import body_mask, lesion_candidates, slic3d

        v = volume.detach().cpu().float().numpy() if isinstance(volume, torch.Tensor) else volume
        v = np.asarray(v, dtype=np.float32)
        if v.ndim == 4:
            v = v.mean(axis=0)
        if v.ndim != 3:
            raise ValueError(f"volume: expected (C, D, H, W) or (D, H, W), got shape {v.shape}")
        # NaN made the min-max rescaling below give a blank volume, hence made-up candidates
        if not np.isfinite(v).all():
            raise ValueError("volume: contains NaN or inf (as float32)")
        # SLIC's compactness trades intensity against space, so fix the intensity scale first
        # (TCPC Sec. 2.1 rescales to [-1, 1] by the minimum and maximum).
        lo, hi = float(v.min()), float(v.max())
        v = (2.0 * (v - lo) / (hi - lo) - 1.0).astype(np.float32) if hi > lo else np.zeros_like(v)
        k = self.options["n_candidates"]
        kwargs = dict(self.options["slic_options"])
        if self.options["compactness"] is not None:
            kwargs["compactness"] = self.options["compactness"]
        labels = slic3d(v, n_segments=self.options["n_segments"], **kwargs)
        centres = self._bright_candidates(v, labels, k, lesion_candidates, body_mask)
        self.n_computed += 1
        if len(centres) == 0:
            warnings.warn(
                "tcpc: SLIC gave no lesion candidate inside the body for a volume; using the "
                f"brightest cells of a {FALLBACK_GRID}^3 grid instead",
                RubikkitWarning,
                stacklevel=2,
            )
            return grid_candidates(v, k)
        return centres

    @staticmethod
    def _bright_candidates(v, labels, k, lesion_candidates, body_mask) -> np.ndarray:
        """Up to ``k`` centres of supervoxels brighter than their surroundings, body first.

        Without a body (or brain) mask, background supervoxels scoring about 0 fill the list in
        the corners of the volume; so candidates inside :func:`rubikkit.slic.body_mask` come
        first, then, when fewer than ``k`` qualify there (e.g. a small bright object on an empty
        background, whose "body" is the object itself), positive-score ones from the whole
        volume. A score <= 0 is never a candidate.
        """
        body = body_mask(v)
        found: list[np.ndarray] = []
        for mask in (body if body.any() else None, None):
            centres, scores, _ = lesion_candidates(v, labels, k, mask=mask, return_scores=True)
            centres = np.asarray(centres, dtype=np.int64).reshape(-1, 3)
            found.extend(c for c in centres[np.asarray(scores) > 0])
            if mask is None:
                break
        unique = list({tuple(c): c for c in found}.values())[:k]
        return np.asarray(unique, dtype=np.int64).reshape(-1, 3)

    def _lookup(self, item_id: str, volume) -> np.ndarray:
        item_id = str(item_id)
        if item_id in self.candidates:
            return self.candidates[item_id]
        path = None
        if self.options["cache_dir"] is not None:
            shape = tuple(volume.shape[-3:])
            name = f"{_safe_name(item_id)}-{self._hash(shape)}.npy"
            path = os.path.join(self.options["cache_dir"], name)
            if os.path.exists(path):
                centres = np.load(path)
                self.candidates[item_id] = centres
                return centres
        centres = self.compute_candidates(volume)
        self.candidates[item_id] = centres
        if path is not None:
            os.makedirs(self.options["cache_dir"], exist_ok=True)
            tmp = f"{path}.{os.getpid()}.tmp.npy"
            np.save(tmp, centres)
            os.replace(tmp, path)
        return centres

    def prepare(self, dataset) -> None:
        """Compute (or load) the candidates of every volume of ``dataset``, once.

        Items are read by index and keyed by their ``"id"``; integer indices passed to
        :meth:`step` afterwards refer to this dataset.
        """
        ids = []
        for i in range(len(dataset)):
            item = dataset[i]
            item_id = str(item.get("id", i))
            self._lookup(item_id, item["image"])
            ids.append(item_id)
        self._index_ids = ids

    def _ids_of(self, index, B: int) -> list[str]:
        if index is None:
            raise ValueError(
                "index: tcpc needs the batch's item ids (batch['id']) or dataset indices to find "
                "the cached lesion candidates"
            )
        if isinstance(index, torch.Tensor):
            index = index.tolist()
        index = list(np.asarray(index).tolist()) if isinstance(index, np.ndarray) else list(index)
        if len(index) != B:
            raise ValueError(f"index: expected {B} entries (one per volume), got {len(index)}")
        if all(isinstance(i, str) for i in index):
            return index
        if self._index_ids is None:
            raise ValueError("index: integer indices need prepare(dataset) first; or pass item ids")
        try:
            if any(int(i) < 0 for i in index):  # Python would read -1 as the last item
                raise IndexError
            return [self._index_ids[int(i)] for i in index]
        except IndexError:
            raise ValueError(
                f"index: {index} out of range of the prepared dataset ({len(self._index_ids)} items)"
            ) from None

    def sample_corners(self, volumes, rng, index) -> np.ndarray:
        B = int(volumes.shape[0])
        ids = self._ids_of(index, B)
        size = np.asarray(self.subvolume_shape)
        room = np.asarray(volumes.shape[2:]) - size
        corners = np.empty((B, self.n_crops, 3), dtype=np.int64)
        for b, item_id in enumerate(ids):
            centres = self._lookup(item_id, volumes[b])
            # distinct candidates where there are enough: a repeated crop would be its own negative
            pick = rng.choice(len(centres), size=self.n_crops, replace=len(centres) < self.n_crops)
            centre = centres[pick]
            j = self.options["crop_jitter"]
            if j:  # no draw at 0, so the default keeps the generator's sequence
                centre = centre + rng.integers(-j, j + 1, size=centre.shape, dtype=np.int64)
            corners[b] = np.clip(centre - size // 2, 0, room)
        return corners
