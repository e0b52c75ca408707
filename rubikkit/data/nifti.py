"""A folder of NIfTI volumes, optionally labelled by a CSV.

``root/*.nii[.gz]`` (searched recursively), and optionally ``root/labels.csv`` (or ``labels_csv=``)
with columns ``file`` (a path relative to ``root``) and ``label`` (a class name or index), and an
optional ``split`` column (``train``/``val``/``test``). Without a ``split`` column, files are split
deterministically (fractions, seed). Without a CSV the dataset is ``"unlabeled"``. This is the layout
``data_scripts/phantoms.py`` writes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rubikkit.data.base import VolumeDataset, group_split
from rubikkit.data.intensity import meanmax_to_unit, minmax_to_unit, resample_to_shape, zscore
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
        Resample every volume to this shape (trilinear); default: keep (then volumes of different
        shapes cannot be batched).
    normalize : {"minmax", "meanmax", "zscore", None}
        Per channel (see :mod:`rubikkit.data.intensity`); None keeps the stored values.
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
        self.root, self.split, self.size, self.normalize = root, split, size, normalize
        self.transform = transform
        self.name = f"nifti:{root}"
        csv = Path(labels_csv) if labels_csv is not None else root / "labels.csv"
        if labels_csv is not None and not csv.is_file():
            raise FileNotFoundError(f"labels_csv: {csv} not found")
        if csv.is_file():
            table = pd.read_csv(csv)
            for col in ("file", "label"):
                if col not in table.columns:
                    raise ValueError(f"labels_csv: {csv} has no column {col!r}")
            files = [root / str(f) for f in table["file"]]
            for f in files:
                if not f.is_file():
                    raise FileNotFoundError(f"labels_csv: {csv} lists {f.name}, not found at {f}")
            raw = table["label"].tolist()
            if all(isinstance(v, (int, np.integer)) for v in raw):
                n_cls = int(max(raw)) + 1 if raw else 0
                names = [str(i) for i in range(n_cls)]
                if "class_name" in table.columns:
                    for v, nm in zip(raw, table["class_name"]):
                        names[int(v)] = str(nm)
                y = np.asarray(raw, dtype=np.int64)
            else:
                names = sorted({str(v) for v in raw})
                y = np.asarray([names.index(str(v)) for v in raw], dtype=np.int64)
            if "split" in table.columns and split != "all":
                if split not in ("train", "val", "test"):
                    raise ValueError(
                        f"split: expected 'train', 'val', 'test' or 'all', got {split!r}"
                    )
                idx = np.flatnonzero(table["split"].astype(str).to_numpy() == split)
            else:
                idx = group_split([str(f) for f in table["file"]], split, fractions, seed)
            self.files = [files[i] for i in idx]
            self.labels = y[idx]
            self.class_names = names
            self.task = "classification"
        else:
            all_files = sorted(p for p in root.rglob("*") if is_nifti(p.name) and p.is_file())
            if not all_files:
                raise FileNotFoundError(f"root: {root} holds no .nii / .nii.gz file")
            idx = group_split([str(p) for p in all_files], split, fractions, seed)
            self.files = [all_files[i] for i in idx]
            self.labels = None
            self.class_names = []
            self.task = "unlabeled"
        self._cache: dict[int, np.ndarray] | None = {} if cache else None
        self.num_channels = self._load(0).shape[0] if self.files else 1

    def __len__(self) -> int:
        return len(self.files)

    def _load(self, index: int) -> np.ndarray:
        if self._cache is not None and index in self._cache:
            return self._cache[index]
        arr = load_nifti(self.files[index]).array.astype(np.float32)
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

    def _item(self, index: int) -> dict:
        item = {"image": self._load(index), "id": nifti_stem(self.files[index])}
        if self.labels is not None:
            item["label"] = int(self.labels[index])
        return item
