"""Data for rubikkit: volume I/O, the papers' normalisations, datasets and built-in phantoms.

``open_dataset(spec, split="train", **options)`` is the one entry point (see
:mod:`rubikkit.data.spec`). Items are dicts ``{"image": float32 (C, D, H, W), "label": int64 scalar
| "mask": int64 (D, H, W), "id": str}``; datasets have ``class_names``, ``num_channels``, ``task``,
``labels`` and ``class_counts()``. Axis order is (C, D, H, W), D the slice axis; NIfTI files are
read as ``(k, j, i)`` (see :mod:`rubikkit.data.io`).
"""

from __future__ import annotations

from rubikkit.data.base import VolumeDataset, group_split, merge_labels
from rubikkit.data.brats import BraTS
from rubikkit.data.intensity import (
    bounding_box,
    crop_or_pad,
    meanmax_to_unit,
    minmax_to_unit,
    resample_to_shape,
    resample_to_spacing,
    window_ct,
    zscore,
)
from rubikkit.data.io import (
    Volume,
    load_nifti,
    load_npy,
    load_npz,
    load_volume,
    save_nifti,
    save_npy,
    save_npz,
)
from rubikkit.data.lidc import LIDCNodules
from rubikkit.data.medmnist import MedMNIST3D
from rubikkit.data.nifti import NiftiFolder
from rubikkit.data.phantoms import PhantomDataset, make_phantom
from rubikkit.data.spec import data_root, open_dataset, parse_spec

__all__ = [
    "BraTS",
    "LIDCNodules",
    "MedMNIST3D",
    "NiftiFolder",
    "PhantomDataset",
    "Volume",
    "VolumeDataset",
    "bounding_box",
    "crop_or_pad",
    "data_root",
    "group_split",
    "load_nifti",
    "load_npy",
    "load_npz",
    "load_volume",
    "make_phantom",
    "meanmax_to_unit",
    "merge_labels",
    "minmax_to_unit",
    "open_dataset",
    "parse_spec",
    "resample_to_shape",
    "resample_to_spacing",
    "save_nifti",
    "save_npy",
    "save_npz",
    "window_ct",
    "zscore",
]
