"""3D contrastive predictive coding (CPC) along a straight path, a baseline of TCPC (Fig. 2(b)).

A sub-volume is cut into cubes with 50 % overlap (TCPC, Sec. 2.2.2). A backbone encodes each cube
(Eq. 2), a GRU reads the *support* cubes along a straight line and a linear head predicts the
feature of the next cube on the line, the *target* (Eq. 1). The InfoNCE loss (Eq. 3) asks the
prediction to pick its own target among all targets of the mini-batch (in-batch negatives);
``cpc_acc`` is the fraction of predictions whose highest score is their own target; each batch
also reports what its cubes allow (:func:`target_ceiling`): ``cpc_chance``, ``cpc_ceiling`` and
``constant_cubes``.

The sub-volume's position is uniform over the volume; ``n_crops`` sub-volumes are taken from each
volume per step, so a batch of B volumes gives ``B * n_crops`` predictions and each has
``B * n_crops - 1`` negatives. The path runs along ``axis`` (default 0, D: slices above predict the
slice below, the 3D reading of CPC's rows above predicting the rows below).

The same machinery (:class:`ContrastiveCubeTask`) serves TCPC (:mod:`rubikkit.tasks.tcpc`), which
changes where the sub-volumes are and the shape of the support path.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from rubikkit.models.cpc import CPCModel, info_nce
from rubikkit.ops import puzzle
from rubikkit.tasks.base import ProxyTask, check_fraction, check_int, check_volumes, numpy_rng


def target_ceiling(targets: torch.Tensor) -> dict[str, float]:
    """The best top-1 InfoNCE accuracy any model can reach on one batch of target cubes.

    Identical target cubes (empty background cubes of a shape mask, say) get identical features
    from any encoder, so every prediction scores them alike and the arg-max, which returns the
    first of equal scores, can be right for at most one prediction of each group of equal
    targets. The ceiling is the number of distinct targets over the number of predictions.

    Parameters
    ----------
    targets : Tensor or array
        (N, ...) the N target cubes of a batch, in the order of the predictions.

    Returns
    -------
    dict
        ``cpc_ceiling`` (distinct targets / N), ``cpc_chance`` (1 / N, a uniform guess) and
        ``constant_cubes`` (share of the targets that hold a single value).
    """
    if not isinstance(targets, torch.Tensor):
        targets = torch.from_numpy(np.array(targets))  # a copy: np.flip views have negative strides
    if targets.ndim < 2 or len(targets) == 0:
        raise ValueError(f"targets: expected (N, ...) with N >= 1, got {tuple(targets.shape)}")
    flat = targets.detach().reshape(len(targets), -1)
    n = len(flat)
    distinct = len(torch.unique(flat, dim=0))
    constant = (flat.amax(dim=1) == flat.amin(dim=1)).float().mean()
    return {
        "cpc_ceiling": distinct / n,
        "cpc_chance": 1.0 / n,
        "constant_cubes": float(constant),
    }


class ContrastiveCubeTask(ProxyTask):
    """Shared machinery of the CPC tasks: a grid of overlapping cubes, a support path, InfoNCE.

    Subclasses define :meth:`path_cells` ((S + 1, 3) grid cells, the target last) and
    :meth:`sample_corners` (where the sub-volumes are).

    Parameters
    ----------
    cube_size : int
        Edge of the cubic cubes (voxels).
    overlap : float
        Overlap of neighbouring cubes, in [0, 1) (TCPC: 0.5); the stride between cubes is
        ``max(1, round(cube_size * (1 - overlap)))``.
    n_crops : int
        Sub-volumes per volume and step.
    hidden : int
        GRU state size.
    """

    name = "contrastive"

    def __init__(self, *, cube_size: int, overlap: float, n_crops: int, hidden: int, **extra):
        self.cube = check_int(cube_size, "cube_size", 1)
        self.overlap = check_fraction(overlap, "overlap")
        self.n_crops = check_int(n_crops, "n_crops", 1)
        self.hidden = check_int(hidden, "hidden", 1)
        self.stride = max(1, int(round(self.cube * (1.0 - self.overlap))))
        super().__init__(
            cube_size=self.cube,
            overlap=self.overlap,
            n_crops=self.n_crops,
            hidden=self.hidden,
            **extra,
        )

    def path_cells(self) -> np.ndarray:  # pragma: no cover
        """(S + 1, 3) int grid cells (d, h, w) of the support path, in reading order, then the
        target."""
        raise NotImplementedError

    def sample_corners(self, volumes, rng, index) -> np.ndarray:  # pragma: no cover
        """(B, n_crops, 3) int corners of the sub-volumes."""
        raise NotImplementedError

    @property
    def subvolume_shape(self) -> tuple[int, int, int]:
        """(D, H, W) of a sub-volume: the bounding box of the path's cubes."""
        span = self.path_cells().max(axis=0)
        return tuple(int(self.cube + g * self.stride) for g in span)

    @property
    def min_volume_shape(self) -> tuple[int, int, int]:
        return self.subvolume_shape

    def build_model(self, backbone: nn.Module) -> nn.Module:
        return CPCModel(backbone, hidden=self.hidden)

    def build_batch(self, volumes: torch.Tensor, generator, index=None) -> dict:
        """Cut the support and target cubes of ``B * n_crops`` sub-volumes on the volumes' device.

        Returns
        -------
        dict
            ``"support"`` (B * n_crops, S, C, c, c, c) and ``"target"`` (B * n_crops, C, c, c, c)
            tensors; ``"corners"`` (B, n_crops, 3) sub-volume corners and ``"origins"``
            (B, n_crops * (S + 1), 3) cube corners (numpy), sub-volume by sub-volume in path order.
        """
        check_volumes(volumes, self.min_volume_shape)
        B = int(volumes.shape[0])
        rng = numpy_rng(generator)
        corners = np.asarray(self.sample_corners(volumes, rng, index), dtype=np.int64)
        offsets = self.path_cells() * self.stride  # (S + 1, 3)
        P = len(offsets)
        origins = (corners[:, :, None, :] + offsets[None, None]).reshape(B, self.n_crops * P, 3)
        ident = np.broadcast_to(np.arange(self.n_crops * P, dtype=np.int64), origins.shape[:2])
        cubes = puzzle(volumes.detach(), origins, self.cube, np.ascontiguousarray(ident))
        cubes = cubes.view(B * self.n_crops, P, *cubes.shape[2:])
        return {
            "support": cubes[:, :-1],
            "target": cubes[:, -1],
            "corners": corners,
            "origins": origins,
        }

    def loss(self, out: dict) -> tuple[torch.Tensor, dict[str, float]]:
        """InfoNCE with in-batch negatives (TCPC Eq. 3) and the top-1 accuracy of the positive."""
        loss, logits = info_nce(out["pred"].float(), out["target"].float())
        labels = torch.arange(len(logits), device=logits.device)
        acc = (logits.argmax(1) == labels).float().mean()
        return loss, {"loss": float(loss.detach()), "cpc_acc": float(acc)}

    def batch_ceiling(self, volumes: torch.Tensor, generator, index=None) -> dict[str, float]:
        """:func:`target_ceiling` of the batch that :meth:`step` would build from the same
        generator state, without a model (:func:`rubikkit.train.proxy_ceiling` runs it over a
        split)."""
        return target_ceiling(self.build_batch(volumes, generator, index)["target"])

    def step(self, model: nn.Module, volumes: torch.Tensor, generator, index=None):
        batch = self.build_batch(volumes, generator, index)
        loss, metrics = self.loss(model(batch["support"], batch["target"]))
        metrics.update(target_ceiling(batch["target"]))
        return loss, metrics


class CPC3DTask(ContrastiveCubeTask):
    """``cpc3d``: a straight support path in a randomly placed sub-volume (TCPC Fig. 2(b)).

    Parameters
    ----------
    cube_size : int
        Cube edge (voxels).
    overlap : float
        Overlap of consecutive cubes (default 0.5).
    path_length : int
        Number of support cubes S before the target.
    axis : {0, 1, 2}
        Axis of the path (0 = D).
    n_crops : int
        Sub-volumes per volume and step.
    hidden : int
        GRU state size.
    """

    name = "cpc3d"

    def __init__(
        self,
        cube_size: int = 32,
        overlap: float = 0.5,
        path_length: int = 3,
        axis: int = 0,
        n_crops: int = 4,
        hidden: int = 256,
    ):
        self.path_length = check_int(path_length, "path_length", 1)
        if axis not in (0, 1, 2) or isinstance(axis, bool):
            raise ValueError(f"axis: expected 0, 1 or 2 (D, H, W), got {axis!r}")
        self.axis = int(axis)
        super().__init__(
            cube_size=cube_size,
            overlap=overlap,
            n_crops=n_crops,
            hidden=hidden,
            path_length=self.path_length,
            axis=self.axis,
        )

    def path_cells(self) -> np.ndarray:
        cells = np.zeros((self.path_length + 1, 3), dtype=np.int64)
        cells[:, self.axis] = np.arange(self.path_length + 1)
        return cells

    def sample_corners(self, volumes, rng, index) -> np.ndarray:
        B = int(volumes.shape[0])
        room = np.asarray(volumes.shape[2:]) - np.asarray(self.subvolume_shape)
        return rng.integers(0, room + 1, size=(B, self.n_crops, 3), dtype=np.int64)
