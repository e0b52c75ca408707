"""MedMNIST v2 3D datasets (Yang et al., Scientific Data 10, 41, 2023), read from the official npz.

Files are those of the official release (Zenodo record 10519652): ``<flag>.npz`` (28^3) and
``<flag>_64.npz`` (64^3), with keys ``{train,val,test}_images`` (N, 28|64, 28|64, 28|64) uint8 and
``{train,val,test}_labels`` (N, 1). The three spatial axes are taken as (D, H, W) in stored order.
Images become float32 in [0, 1] (``uint8 / 255``); AdrenalMNIST3D holds binary shape masks {0, 255},
so its voxels are exactly 0 or 1.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from rubikkit.data.base import VolumeDataset
from rubikkit.data.io import load_npz

__all__ = ["MEDMNIST3D", "MedMNIST3D", "medmnist_filename"]

_RECORD = "https://zenodo.org/records/10519652/files/"
# Facts from medmnist's INFO (medmnist 3.0.2): class names, split sizes, file MD5s.
MEDMNIST3D: dict[str, dict] = {
    "organmnist3d": {
        "labels": [
            "liver",
            "kidney-right",
            "kidney-left",
            "femur-right",
            "femur-left",
            "bladder",
            "heart",
            "lung-right",
            "lung-left",
            "spleen",
            "pancreas",
        ],
        "n_samples": {"train": 971, "val": 161, "test": 610},
        "md5": {28: "a0c5a1ff56af4f155c46d46fbb45a2fe", 64: "58a2205adf14a9d0a189cb06dc78bf10"},
    },
    "nodulemnist3d": {
        "labels": ["benign", "malignant"],
        "n_samples": {"train": 1158, "val": 165, "test": 310},
        "md5": {28: "8755a7e9e05a4d9ce80a24c3e7a256f3", 64: "c47c5b7d457bf6332200d2ea6d64ecd8"},
    },
    "adrenalmnist3d": {
        "labels": ["normal", "hyperplasia"],
        "n_samples": {"train": 1188, "val": 98, "test": 298},
        "md5": {28: "bbd3c5a5576322bc4cdfea780653b1ce", 64: "17721accfe9fb005146a47d33bc54b2f"},
    },
    "fracturemnist3d": {
        "labels": ["buckle rib fracture", "nondisplaced rib fracture", "displaced rib fracture"],
        "n_samples": {"train": 1027, "val": 103, "test": 240},
        "md5": {28: "6aa7b0143a6b42da40027a9dda61302f", 64: "f01d7e6316aedf4210da0da5b7437b42"},
    },
    "vesselmnist3d": {
        "labels": ["vessel", "aneurysm"],
        "n_samples": {"train": 1335, "val": 191, "test": 382},
        "md5": {28: "b41fd4f7e7e2feedddb201585ecafa1b", 64: "6bb274a8846e1097066dcd64e2c4520f"},
    },
    "synapsemnist3d": {
        "labels": ["inhibitory synapse", "excitatory synapse"],
        "n_samples": {"train": 1230, "val": 177, "test": 352},
        "md5": {28: "1235b78a3cd6280881dd7850a78eadb6", 64: "43bd14ebf3af9d3dd072446fedc14d5e"},
    },
}
SIZES = (28, 64)


def canonical_flag(flag: str) -> str:
    """``"adrenal"`` / ``"AdrenalMNIST3D"`` / ``"adrenalmnist3d"`` -> ``"adrenalmnist3d"``."""
    if not isinstance(flag, str):
        raise TypeError(f"flag: expected a string, got {type(flag).__name__}")
    f = flag.lower().replace("_", "").replace("-", "")
    if not f.endswith("mnist3d"):
        f = f + "mnist3d"
    if f not in MEDMNIST3D:
        names = ", ".join(k[: -len("mnist3d")] for k in MEDMNIST3D)
        raise ValueError(f"flag: unknown MedMNIST 3D dataset {flag!r}; choose one of {names}")
    return f


def medmnist_filename(flag: str, size: int = 28) -> str:
    """Official file name: ``adrenalmnist3d.npz`` (28) or ``adrenalmnist3d_64.npz`` (64)."""
    f = canonical_flag(flag)
    if size not in SIZES:
        raise ValueError(f"size: MedMNIST 3D comes in sizes {SIZES}, got {size!r}")
    return f"{f}.npz" if size == 28 else f"{f}_{size}.npz"


def medmnist_url(flag: str, size: int = 28) -> str:
    """Zenodo download URL of the official file."""
    return _RECORD + medmnist_filename(flag, size) + "?download=1"


def medmnist_md5(flag: str, size: int = 28) -> str:
    """MD5 of the official file."""
    medmnist_filename(flag, size)
    return MEDMNIST3D[canonical_flag(flag)]["md5"][size]


_CACHE: dict[tuple, dict] = {}


class MedMNIST3D(VolumeDataset):
    """One split of a MedMNIST 3D dataset, loaded once into memory.

    Parameters
    ----------
    flag : str
        ``"adrenal"``, ``"organ"``, ``"nodule"``, ``"fracture"``, ``"vessel"``, ``"synapse"`` (or the
        full ``"adrenalmnist3d"``).
    split : {"train", "val", "test"}
    size : {28, 64}
    root : str or Path, optional
        Folder holding the npz (default ``$RUBIKKIT_DATA/medmnist3d``).
    download : bool
        Fetch the official file (Zenodo, MD5-checked) when missing.
    transform : callable, optional

    Items: ``image`` (1, S, S, S) float32 in [0, 1], ``label`` int64, ``id`` ``"<flag>-<split>-<i>"``.
    """

    def __init__(
        self,
        flag: str = "adrenal",
        split: str = "train",
        size: int = 28,
        root=None,
        *,
        download: bool = False,
        transform=None,
    ):
        from rubikkit.data.spec import data_root

        self.flag = canonical_flag(flag)
        if split not in ("train", "val", "test"):
            raise ValueError(f"split: MedMNIST has 'train', 'val', 'test', got {split!r}")
        size = int(size)
        fname = medmnist_filename(self.flag, size)
        self.root = Path(root).expanduser() if root is not None else data_root() / "medmnist3d"
        path = self.root / fname
        if not path.is_file():
            if download:
                from rubikkit.data.download import download as fetch

                fetch(medmnist_url(self.flag, size), path, md5=medmnist_md5(self.flag, size))
            else:
                raise FileNotFoundError(
                    f"root: {path} not found. Get it with `python data_scripts/medmnist3d.py "
                    f"--flag {self.flag[: -len('mnist3d')]} --size {size} --root {self.root}` "
                    "or pass download=True."
                )
        key = (str(path.resolve()), os.path.getmtime(path), os.path.getsize(path))
        if key not in _CACHE:
            _CACHE.clear()  # keep one file in memory at a time
            _CACHE[key] = load_npz(path)
        arrays = _CACHE[key]
        ik, lk = f"{split}_images", f"{split}_labels"
        if ik not in arrays or lk not in arrays:
            raise ValueError(f"path: {path} lacks {ik!r} or {lk!r}; it has {sorted(arrays)}")
        images, labels = arrays[ik], arrays[lk]
        if images.ndim != 4:
            raise ValueError(
                f"path: {path}[{ik!r}] has shape {images.shape}; expected (N, D, H, W)"
            )
        labels = np.asarray(labels).reshape(len(labels), -1)
        if labels.shape[1] != 1 or len(labels) != len(images):
            raise ValueError(
                f"path: {path}[{lk!r}] has shape {arrays[lk].shape}; expected ({len(images)}, 1)"
            )
        self.images = images
        self.labels = labels[:, 0].astype(np.int64)
        self.class_names = list(MEDMNIST3D[self.flag]["labels"])
        if self.labels.size and (
            self.labels.min() < 0 or self.labels.max() >= len(self.class_names)
        ):
            raise ValueError(
                f"path: {path}[{lk!r}] has labels outside 0..{len(self.class_names) - 1}"
            )
        self.size = size
        self.split = split
        self.task = "classification"
        self.num_channels = 1
        self.name = f"medmnist3d:{self.flag[: -len('mnist3d')]}"
        self.transform = transform
        self.path = path

    def __len__(self) -> int:
        return len(self.images)

    def _item(self, index: int) -> dict:
        img = self.images[index]
        scale = np.float32(1.0 / 255.0) if img.dtype == np.uint8 else np.float32(1.0)
        return {
            "image": (img.astype(np.float32) * scale)[None],
            "label": int(self.labels[index]),
            "id": f"{self.flag}-{self.split}-{index:05d}",
        }
