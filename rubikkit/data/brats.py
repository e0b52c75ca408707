"""Brain-tumour MRI segmentation: BraTS case folders, the MSD Task01 layout, or preprocessed crops.

Layouts recognised under ``root``:

* **case folders** (BraTS 2013-2015 as shipped with DeepMedic, or BraTS 2017+): ``root/<split>/<case>/``
  with one NIfTI per modality (file names containing ``flair``, ``t1c``/``t1ce``/``t1gd``, ``t2``,
  ``t1``), a label map (``OTMultiClass``, ``seg``, ``label``) and optionally a ``brainmask``. Split
  folders: ``train``/``training``, ``val``/``validation``, ``test``/``testing``.
* **MSD Task01** (Medical Segmentation Decathlon, ``Task01_BrainTumour``): ``imagesTr/*.nii.gz``
  4D (i, j, k, 4) with modalities FLAIR, T1w, T1gd, T2w and ``labelsTr/*.nii.gz``
  (1 oedema, 2 non-enhancing, 3 enhancing). Splits are drawn per case (deterministic for a seed).
* **preprocessed** (written by ``data_scripts/brats.py``): ``root/<split>/<case>.npz`` with
  ``image`` (C, D, H, W) float32, ``mask`` (D, H, W), ``modalities`` and ``convention``.

Each case is cropped to the brain's bounding box (padded to a cube when ``keep_aspect``), resampled
to ``size`` (trilinear for images, nearest for labels), and each channel z-scored inside the brain.
Preprocessed cases are kept in memory (and on disk under ``$RUBIKKIT_DATA/cache``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rubikkit.data.base import (
    LABEL_MODES,
    VolumeDataset,
    group_split,
    label_class_names,
    merge_labels,
)
from rubikkit.data.cache import cached_arrays, file_fingerprint
from rubikkit.data.intensity import bounding_box, minmax_to_unit, resample_to_shape, zscore
from rubikkit.data.io import is_nifti, load_nifti, load_npz, nifti_stem

__all__ = ["BraTS", "MODALITIES", "classify_file", "preprocess_case"]

MODALITIES = ("t1", "t1c", "t2", "flair")
MSD_MODALITIES = ("flair", "t1", "t1c", "t2")
SPLIT_DIRS = {
    "train": ("train", "training", "Training"),
    "val": ("val", "validation", "Validation"),
    "test": ("test", "testing", "Testing"),
}
_VERSION = 1


def classify_file(name: str) -> str | None:
    """Role of a case file from its name: a modality, ``"label"``, ``"brainmask"`` or None."""
    if not is_nifti(name):
        return None
    s = nifti_stem(name).lower()
    if "brainmask" in s or "brain_mask" in s:
        return "brainmask"
    if any(t in s for t in ("seg", "otmulticlass", "label", "truth")) or s.endswith("_gt"):
        return "label"
    if "flair" in s:
        return "flair"
    if any(t in s for t in ("t1c", "t1ce", "t1gd", "t1-gd", "t1_gd", "t1post")):
        return "t1c"
    if "t2" in s:
        return "t2"
    if "t1" in s:
        return "t1"
    return None


def _case_files(case: Path) -> dict[str, Path]:
    files: dict[str, Path] = {}
    for p in sorted(case.iterdir()):
        role = classify_file(p.name)
        if role is not None:
            if role in files:
                raise ValueError(f"case: {case} has two {role} files: {files[role].name}, {p.name}")
            files[role] = p
    return files


def preprocess_case(
    image: np.ndarray,
    mask: np.ndarray | None,
    brain: np.ndarray | None,
    size=(64, 64, 64),
    *,
    keep_aspect: bool = True,
    normalize: str | None = "zscore",
    margin: int = 2,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Crop a case to the brain, resample to ``size``, normalise each channel.

    Parameters
    ----------
    image : (C, D, H, W) float array
    mask : (D, H, W) int array or None
    brain : (D, H, W) bool array or None
        Brain mask; default: voxels where any channel differs from its minimum (the background).
    size : int or (D, H, W), or None to keep the cropped shape
    keep_aspect : bool
        Grow the box to a cube (within the volume, padding with the background) before resampling so
        the anatomy is not stretched.
    normalize : {"zscore", "minmax", None}
        Per channel: z-score inside the brain, or min/max to [-1, 1].
    margin : int
        Voxels added around the brain's bounding box.

    Returns
    -------
    image : (C, *size) float32, mask : (*size) int64 or None
    """
    img = np.asarray(image, dtype=np.float32)
    if img.ndim != 4:
        raise ValueError(f"image: expected (C, D, H, W), got shape {img.shape}")
    if mask is not None and tuple(mask.shape) != img.shape[1:]:
        raise ValueError(
            f"mask: shape {tuple(mask.shape)} differs from the image's {img.shape[1:]}"
        )
    if brain is None:
        brain = np.any(img > img.reshape(len(img), -1).min(axis=1)[:, None, None, None], axis=0)
    brain = np.asarray(brain).astype(bool)
    if brain.shape != img.shape[1:]:
        raise ValueError(f"brain: shape {brain.shape} differs from the image's {img.shape[1:]}")
    if not brain.any():
        brain = np.ones_like(brain)
    box = bounding_box(brain, margin)
    if keep_aspect:
        side = max(s.stop - s.start for s in box)
        centre = [(s.start + s.stop) // 2 for s in box]
        from rubikkit.data.intensity import crop_or_pad

        bg = img.reshape(len(img), -1).min(axis=1)
        img_c = np.stack(
            [crop_or_pad(ch, side, centre=centre, pad_value=float(b)) for ch, b in zip(img, bg)]
        )
        brain_c = crop_or_pad(brain, side, centre=centre, pad_value=False)
        mask_c = None if mask is None else crop_or_pad(np.asarray(mask), side, centre=centre)
    else:
        img_c = img[(slice(None), *box)]
        brain_c = brain[box]
        mask_c = None if mask is None else np.asarray(mask)[box]
    if size is not None:
        img_c = resample_to_shape(img_c, size)
        brain_c = resample_to_shape(brain_c.astype(np.uint8), size, order="nearest").astype(bool)
        if mask_c is not None:
            mask_c = resample_to_shape(mask_c.astype(np.int16), size, order="nearest")
    if normalize == "zscore":
        img_c = np.stack([zscore(ch, brain_c if brain_c.any() else None) for ch in img_c])
    elif normalize == "minmax":
        img_c = np.stack([minmax_to_unit(ch) for ch in img_c])
    elif normalize is not None:
        raise ValueError(f"normalize: expected 'zscore', 'minmax' or None, got {normalize!r}")
    out_mask = None if mask_c is None else np.rint(mask_c).astype(np.int64)
    return img_c.astype(np.float32), out_mask


class BraTS(VolumeDataset):
    """Brain-tumour segmentation volumes (see the module docstring for the layouts).

    Parameters
    ----------
    root : str or Path
    split : {"train", "val", "test", "all"}
    channels : sequence of str, optional
        Modalities in order, from ``("t1", "t1c", "t2", "flair")``; default: those present in every
        case, in that order. A requested modality missing from a case raises ValueError naming both.
    labels : {"raw", "whole", "core", "enhancing"}
        Raw label values, or a binary region (whole tumour, tumour core, enhancing tumour).
    label_convention : {"auto", "brats", "msd"}
        Meaning of the raw values; auto: ``msd`` for the MSD layout, else ``brats``.
    size : int or (D, H, W) or None
        Working size after cropping to the brain (default 64^3 for CPU); None keeps the crop.
    keep_aspect, normalize : see :func:`preprocess_case`.
    fractions, seed : split of MSD cases (no split folders) by case.
    cache_dir : str, Path, None or False
        On-disk cache of preprocessed cases (default ``$RUBIKKIT_DATA/cache``; False: memory only).
    transform : callable, optional
    """

    def __init__(
        self,
        root,
        split: str = "train",
        *,
        channels=None,
        labels: str = "raw",
        label_convention: str = "auto",
        size=64,
        keep_aspect: bool = True,
        normalize: str | None = "zscore",
        fractions=(0.7, 0.1, 0.2),
        seed: int = 0,
        cache_dir=None,
        progress: bool = True,
        transform=None,
    ):
        from rubikkit.data.spec import data_root

        root = Path(root).expanduser()
        if not root.is_dir():
            raise FileNotFoundError(
                f"root: {root} is not a folder. Prepare BraTS with `python data_scripts/brats.py`."
            )
        if split not in ("train", "val", "test", "all"):
            raise ValueError(f"split: expected 'train', 'val', 'test' or 'all', got {split!r}")
        if labels not in LABEL_MODES:
            raise ValueError(f"labels: expected one of {LABEL_MODES}, got {labels!r}")
        self.root = root
        self.split = split
        self.size = size
        self.keep_aspect = keep_aspect
        self.normalize = normalize
        self.transform = transform
        self.task = "segmentation"
        self.labels = None
        self.label_mode = labels
        self.name = f"brats:{root}"
        self._progress = progress

        if (root / "imagesTr").is_dir():
            self.layout = "msd"
            imgs = sorted(p for p in (root / "imagesTr").iterdir() if is_nifti(p.name))
            imgs = [p for p in imgs if not p.name.startswith(".")]
            if not imgs:
                raise FileNotFoundError(f"root: {root / 'imagesTr'} holds no NIfTI file")
            idx = group_split([nifti_stem(p) for p in imgs], split, fractions, seed)
            self._cases = [
                {
                    "id": nifti_stem(imgs[i]),
                    "image4d": imgs[i],
                    "label": root / "labelsTr" / imgs[i].name,
                }
                for i in idx
            ]
            available = set(MSD_MODALITIES)
        else:
            split_dirs = [d for d in self._split_dirs(split)]
            npz = [p for d in split_dirs for p in sorted(d.glob("*.npz"))]
            if npz:
                self.layout = "preprocessed"
                self._cases = [{"id": p.stem, "npz": p} for p in npz]
                first = load_npz(npz[0], keys=["modalities"])
                available = {str(m) for m in first["modalities"]}
            else:
                self.layout = "cases"
                case_dirs = [c for d in split_dirs for c in sorted(d.iterdir()) if c.is_dir()]
                if not case_dirs:
                    raise FileNotFoundError(
                        f"root: no case folder under {[str(d) for d in split_dirs]}"
                    )
                self._cases = []
                available = set(MODALITIES)
                for c in case_dirs:
                    files = _case_files(c)
                    if "label" not in files:
                        raise ValueError(f"case: {c} has no label map (OTMultiClass / *seg*)")
                    available &= set(files)
                    self._cases.append({"id": c.name, "files": files, "dir": c})
        if label_convention == "auto":
            label_convention = "msd" if self.layout == "msd" else "brats"
            if self.layout == "preprocessed":
                label_convention = str(
                    load_npz(self._cases[0]["npz"], keys=["convention"])["convention"]
                )
        if label_convention not in ("brats", "msd"):
            raise ValueError(
                f"label_convention: expected 'auto', 'brats' or 'msd', got {label_convention!r}"
            )
        self.convention = label_convention
        if channels is None:
            channels = [m for m in MODALITIES if m in available]
            if not channels:
                raise ValueError(f"root: {root} cases share no modality among {MODALITIES}")
        if isinstance(channels, str):
            channels = [channels]
        channels = [str(c).lower() for c in channels]
        for c in channels:
            if c not in MODALITIES:
                raise ValueError(f"channels: unknown modality {c!r}; choose from {MODALITIES}")
        self.channels = channels
        for case in self._cases:
            if self.layout == "cases":
                for c in channels:
                    if c not in case["files"]:
                        raise ValueError(f"channels: case {case['dir']} has no {c!r} modality file")
        if self.layout == "preprocessed":
            for c in channels:
                if c not in available:
                    raise ValueError(
                        f"channels: preprocessed cases have {sorted(available)}, not {c!r}"
                    )
        self.num_channels = len(channels)
        self.class_names = label_class_names(labels, self.convention)
        self._cache_dir = data_root() / "cache" if cache_dir is None else cache_dir
        self._items: dict[int, dict] = {}

    def _split_dirs(self, split: str) -> list[Path]:
        names = [
            n
            for s in (("train", "val", "test") if split == "all" else (split,))
            for n in SPLIT_DIRS[s]
        ]
        dirs = [self.root / n for n in dict.fromkeys(names) if (self.root / n).is_dir()]
        if not dirs:
            have = sorted(p.name for p in self.root.iterdir() if p.is_dir())
            raise ValueError(
                f"split: {self.root} has no folder for split {split!r} (looked for "
                f"{list(dict.fromkeys(names))}; found {have})"
            )
        return dirs

    def __len__(self) -> int:
        return len(self._cases)

    def _load_raw(self, case: dict):
        if self.layout == "msd":
            vol = load_nifti(case["image4d"]).array
            if vol.ndim != 4 or vol.shape[0] != 4:
                raise ValueError(
                    f"image: {case['image4d']} should be 4D with 4 modalities, got {vol.shape}"
                )
            image = np.stack([vol[MSD_MODALITIES.index(c)] for c in self.channels])
            label_path = case["label"]
            if not label_path.is_file():
                raise FileNotFoundError(f"label: {label_path} not found for case {case['id']}")
            mask = load_nifti(label_path).array
            brain = None
        else:
            files = case["files"]
            chans = []
            for c in self.channels:
                arr = load_nifti(files[c], dtype=np.float32).array
                if arr.ndim != 3:
                    raise ValueError(f"image: {files[c]} should be 3D, got shape {arr.shape}")
                if chans and arr.shape != chans[0].shape:
                    raise ValueError(
                        f"image: {files[c]} has shape {arr.shape}, but "
                        f"{files[self.channels[0]].name} has {chans[0].shape}"
                    )
                chans.append(arr)
            image = np.stack(chans)
            label_path = files["label"]
            mask = load_nifti(label_path).array
            brain = None
            if "brainmask" in files:
                brain = load_nifti(files["brainmask"]).array > 0
                if brain.shape != image.shape[1:]:
                    raise ValueError(
                        f"brainmask: {files['brainmask']} has shape {brain.shape}, the images "
                        f"{image.shape[1:]}"
                    )
        if mask.shape != image.shape[1:]:
            raise ValueError(
                f"label: the label map {label_path} has shape {mask.shape}, the images of case "
                f"{case['id']} {image.shape[1:]}"
            )
        return image, np.rint(mask).astype(np.int16), brain

    def _compute(self, case: dict) -> dict[str, np.ndarray]:
        if self.layout == "preprocessed":
            z = load_npz(case["npz"])
            mods = [str(m) for m in z["modalities"]]
            image = np.stack([z["image"][mods.index(c)] for c in self.channels])
            return {"image": image.astype(np.float32), "mask": z["mask"].astype(np.int16)}
        image, mask, brain = self._load_raw(case)
        img, msk = preprocess_case(
            image, mask, brain, self.size, keep_aspect=self.keep_aspect, normalize=self.normalize
        )
        return {"image": img, "mask": msk.astype(np.int16)}

    def _item(self, index: int) -> dict:
        if index not in self._items:
            case = self._cases[index]
            if self.layout == "preprocessed":
                arrays = self._compute(case)
            else:
                srcs = (
                    [case["image4d"], case["label"]]
                    if self.layout == "msd"
                    else list(case["files"].values())
                )
                key = {
                    "version": _VERSION,
                    "case": str(case.get("dir", case.get("image4d"))),
                    "files": file_fingerprint(srcs),
                    "channels": self.channels,
                    "size": self.size,
                    "keep_aspect": self.keep_aspect,
                    "normalize": self.normalize,
                }
                cache = None if self._cache_dir is False else self._cache_dir
                arrays = cached_arrays("brats", key, lambda: self._compute(case), cache)
            self._items[index] = arrays
        arrays = self._items[index]
        return {
            "image": arrays["image"],
            "mask": merge_labels(arrays["mask"], self.label_mode, self.convention),
            "id": self._cases[index]["id"],
        }

    @property
    def case_ids(self) -> list[str]:
        """Case identifiers, in item order."""
        return [c["id"] for c in self._cases]
