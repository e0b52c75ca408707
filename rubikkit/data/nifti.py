"""A folder of NIfTI volumes, optionally labelled by a CSV.

``root/*.nii[.gz]`` (searched recursively), and optionally ``root/labels.csv`` (or ``labels_csv=``)
with a column ``file`` (a path relative to ``root``) and any of:

* ``label``: a class name or index (classification);
* ``mask``: a label map on the same grid (segmentation when there is no ``label``; with a ``label``
  it is returned beside it);
* ``split``: ``train`` / ``val`` / ``test``; without it, files are split deterministically
  (``fractions``, ``seed``);
* ``class_name``: the name of an integer ``label``.

An optional ``root/dataset.json`` may give ``class_names`` (the names of the classes or mask
values). Without a CSV the dataset is ``"unlabeled"``. This is the layout ``data_scripts/phantoms.py``
writes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from rubikkit.data.base import SPLITS, VolumeDataset, group_split
from rubikkit.data.intensity import (
    _shape3,
    meanmax_to_unit,
    minmax_to_unit,
    resample_to_shape,
    zscore,
)
from rubikkit.data.io import is_nifti, load_nifti, nifti_stem

__all__ = ["NiftiFolder"]

_NORMS = ("minmax", "meanmax", "zscore", None)


class NiftiFolder(VolumeDataset):
    """NIfTI volumes from a folder (see the module docstring).

    Parameters
    ----------
    root : str or Path
    split : {"train", "val", "test", "all"}
    labels_csv : str or Path, optional
        Default ``root/labels.csv`` when it exists.
    size : int or (D, H, W), optional
        Resample every volume to this shape (trilinear; masks nearest); default: keep (then volumes
        of different shapes cannot be batched).
    normalize : {"minmax", "meanmax", "zscore", None}
        Per channel (see :mod:`rubikkit.data.intensity`); None keeps the stored values.
    class_names : list of str, optional
        Override the class names (default: ``dataset.json``, the CSV's ``class_name`` column, the
        label strings, or the mask values).
    fractions, seed : split when the CSV has no ``split`` column.
    cache : bool
        Keep decoded volumes in memory.
    transform : callable, optional
    """

    def __init__(
        self,
        root,
        split: str = "train",
        *,
        labels_csv=None,
        size=None,
        normalize: str | None = "minmax",
        class_names=None,
        fractions=(0.7, 0.1, 0.2),
        seed: int = 0,
        cache: bool = True,
        transform=None,
    ):
        import pandas as pd

        root = Path(root).expanduser()
        if not root.is_dir():
            raise FileNotFoundError(f"root: {root} is not a folder of NIfTI files")
        if normalize not in _NORMS:
            raise ValueError(f"normalize: expected one of {_NORMS}, got {normalize!r}")
        if split not in SPLITS:
            raise ValueError(f"split: expected one of {SPLITS}, got {split!r}")
        if size is not None:
            size = _shape3(size, "size")
        self.root, self.split, self.size, self.normalize = root, split, size, normalize
        self.transform = transform
        self.name = f"nifti:{root}"
        meta = {}
        meta_path = root / "dataset.json"
        if meta_path.is_file():
            try:
                meta = json.loads(meta_path.read_text())
            except ValueError as exc:
                raise ValueError(f"root: {meta_path} is not valid JSON: {exc}") from exc
        csv = Path(labels_csv) if labels_csv is not None else root / "labels.csv"
        if labels_csv is not None and not csv.is_file():
            raise FileNotFoundError(f"labels_csv: {csv} not found")
        self.mask_files: list[Path] | None = None
        all_masks: list[Path] = []  # of every split
        if csv.is_file():
            try:
                table = pd.read_csv(csv)
            except Exception as exc:  # pandas raises several parser errors
                raise ValueError(f"labels_csv: cannot read {csv}: {exc}") from exc
            if "file" not in table.columns:
                raise ValueError(f"labels_csv: {csv} has no column 'file'")
            if "label" not in table.columns and "mask" not in table.columns:
                raise ValueError(f"labels_csv: {csv} has neither a 'label' nor a 'mask' column")
            files = [root / str(f) for f in table["file"]]
            for f in files:
                if not f.is_file():
                    raise FileNotFoundError(f"labels_csv: {csv} lists {f.name}, not found at {f}")
            if "split" in table.columns and split != "all":
                idx = np.flatnonzero(table["split"].astype(str).to_numpy() == split)
            else:
                idx = group_split([str(f) for f in table["file"]], split, fractions, seed)
            self.files = [files[i] for i in idx]
            if "mask" in table.columns:
                masks = [root / str(m) for m in table["mask"]]
                for m in masks:
                    if not m.is_file():
                        raise FileNotFoundError(
                            f"labels_csv: {csv} lists the mask {m.name}, not found at {m}"
                        )
                all_masks = masks
                self.mask_files = [masks[i] for i in idx]
            if "label" in table.columns:
                raw = table["label"].tolist()
                if table["label"].isna().any():
                    raise ValueError(f"labels_csv: {csv} has empty cells in column 'label'")
                if all(isinstance(v, (int, np.integer)) for v in raw):
                    if raw and min(raw) < 0:
                        raise ValueError(
                            f"labels_csv: {csv} has the negative label {min(raw)}; integer "
                            "labels are class indices 0, 1, ..."
                        )
                    n_cls = int(max(raw)) + 1 if raw else 0
                    names = [str(i) for i in range(n_cls)]
                    if "class_name" in table.columns:
                        for v, nm in zip(raw, table["class_name"]):
                            names[int(v)] = str(nm)
                    y = np.asarray(raw, dtype=np.int64)
                else:
                    names = sorted({str(v) for v in raw})
                    y = np.asarray([names.index(str(v)) for v in raw], dtype=np.int64)
                self.labels = y[idx]
                self.class_names = names
                self.task = "classification"
            else:
                self.labels = None
                self.class_names = []
                self.task = "segmentation"
        else:
            all_files = sorted(p for p in root.rglob("*") if is_nifti(p.name) and p.is_file())
            if not all_files:
                raise FileNotFoundError(f"root: {root} holds no .nii / .nii.gz file")
            idx = group_split([str(p) for p in all_files], split, fractions, seed)
            self.files = [all_files[i] for i in idx]
            self.labels = None
            self.class_names = []
            self.task = "unlabeled"
        if class_names is None:
            class_names = meta.get("class_names")
        if class_names is not None:
            class_names = [str(c) for c in class_names]
            if (
                self.labels is not None
                and len(self.labels)
                and self.labels.max() >= len(class_names)
            ):
                raise ValueError(
                    f"class_names: {len(class_names)} names for labels up to {self.labels.max()}"
                )
            self.class_names = class_names
        if self.task == "segmentation" and not self.class_names:
            # From the masks of every split, so that all splits have the same classes (a value
            # found only in a validation mask would be out of range for the trained model).
            top = max((int(_read_mask(m).max()) for m in all_masks), default=0)
            self.class_names = [str(i) for i in range(top + 1)]
        self._cache: dict[int, np.ndarray] | None = {} if cache else None
        self.num_channels = self._load(0).shape[0] if self.files else 1

    def __len__(self) -> int:
        return len(self.files)

    def _load(self, index: int) -> np.ndarray:
        if self._cache is not None and index in self._cache:
            return self._cache[index]
        arr = load_nifti(self.files[index]).array.astype(np.float32)
        bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
        if bad:
            # NaN would spread through the normalisation to the whole volume and the loss.
            raise ValueError(
                f"image: {self.files[index]} holds {bad} NaN or infinite voxels; replace them "
                "(e.g. numpy.nan_to_num) before training"
            )
        if arr.ndim == 3:
            arr = arr[None]
        if self.size is not None:
            arr = resample_to_shape(arr, self.size)
        norm = {"minmax": minmax_to_unit, "meanmax": meanmax_to_unit, "zscore": zscore}.get(
            self.normalize
        )
        if norm is not None:
            arr = np.stack([norm(c) for c in arr])
        if self._cache is not None:
            self._cache[index] = arr
        return arr

    def _mask(self, index: int) -> np.ndarray:
        assert self.mask_files is not None
        return _read_mask(self.mask_files[index])

    def _item(self, index: int) -> dict:
        image = self._load(index)
        item = {"image": image, "id": nifti_stem(self.files[index])}
        if self.labels is not None:
            item["label"] = int(self.labels[index])
        if self.mask_files is not None:
            m = self._mask(index)
            k = len(self.class_names)
            if self.task == "segmentation" and m.size and (m.min() < 0 or m.max() >= k):
                raise ValueError(
                    f"mask: {self.mask_files[index]} holds values {int(m.min())}..{int(m.max())}, "
                    f"outside the {k} classes {self.class_names}"
                )
            if self.size is not None:
                m = resample_to_shape(m, self.size, order="nearest")
            elif m.shape != image.shape[1:]:
                raise ValueError(
                    f"mask: {self.mask_files[index]} has shape {m.shape}, its image "
                    f"{self.files[index].name} {image.shape[1:]}"
                )
            item["mask"] = m
        return item


def _read_mask(path: Path) -> np.ndarray:
    m = load_nifti(path).array
    if m.ndim != 3:
        raise ValueError(f"mask: {path} should be 3D (D, H, W), got shape {m.shape}")
    return np.rint(m).astype(np.int64)
