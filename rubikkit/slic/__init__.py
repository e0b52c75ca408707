"""SLIC supervoxels and TCPC's candidate-lesion sub-volumes (Zhou et al., TCPC, Sec. 2.1).

Axis order is (C, D, H, W), D the slice axis; single-channel volumes may be (D, H, W).

* :func:`slic3d`: SLIC supervoxels (scikit-image ``slic`` semantics, numba kernels).
* :func:`supervoxel_stats`: per-supervoxel count, centroid, mean, std and bounding box.
* :func:`lesion_candidates`: the supervoxels that stand out from their surroundings, best first.
* :func:`crop_subvolumes`: fixed-size crops centred on voxels, padded at the borders.
* :func:`body_mask`: a body or brain mask to keep candidates inside.
* Quality metrics :func:`asa`, :func:`boundary_recall`, :func:`undersegmentation_error`.
"""

from __future__ import annotations

from rubikkit.slic.slic import (
    asa,
    body_mask,
    boundary_recall,
    crop_subvolumes,
    grid_steps,
    lesion_candidates,
    slic3d,
    supervoxel_stats,
    undersegmentation_error,
)

__all__ = [
    "asa",
    "body_mask",
    "boundary_recall",
    "crop_subvolumes",
    "grid_steps",
    "lesion_candidates",
    "slic3d",
    "supervoxel_stats",
    "undersegmentation_error",
]
