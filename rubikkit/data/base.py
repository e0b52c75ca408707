"""The dataset contract every rubikkit dataset follows, and split helpers.

An item is a dict::

    {"image": float32 tensor (C, D, H, W),
     "label": int64 scalar tensor        # classification datasets
     "mask":  int64 tensor (D, H, W)     # segmentation datasets (and on request elsewhere)
     "id":    str}

and every dataset has ``class_names`` (list of str), ``num_channels`` (int), ``task``
(``"classification"``, ``"segmentation"`` or ``"unlabeled"``), ``labels`` (an int64 array of the
class of every item without loading images, or None), ``class_counts()`` and an optional
``transform`` applied to the item dict.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = ["SPLITS", "VolumeDataset", "group_split", "merge_labels", "split_fractions"]

SPLITS = ("train", "val", "test", "all")
TASKS = ("classification", "segmentation", "unlabeled")


class VolumeDataset(Dataset):
    """Base class: subclasses set the attributes and implement ``__len__`` and ``_item(index)``.

    ``_item`` returns numpy arrays (``image`` (C, D, H, W), ``label`` int or ``mask`` (D, H, W)) and an
    ``id``; the base converts them to tensors with the contract's dtypes and applies ``transform``.
    """

    task: str = "unlabeled"
    class_names: list[str] = []
    num_channels: int = 1
    labels: np.ndarray | None = None
    transform: Callable | None = None
    name: str = "volumes"
    split: str = "all"

    def __len__(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def _item(self, index: int) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError

    def __getitem__(self, index: int) -> dict:
        n = len(self)
        if isinstance(index, (np.integer, torch.Tensor)):
            index = int(index)
        if not isinstance(index, int):
            raise TypeError(f"index: expected an int, got {type(index).__name__}")
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError(f"index: {index} out of range for {n} items")
        raw = self._item(index)
        item = {"image": torch.from_numpy(np.ascontiguousarray(raw["image"], dtype=np.float32))}
        if "label" in raw and raw["label"] is not None and self.task == "classification":
            item["label"] = torch.tensor(int(raw["label"]), dtype=torch.int64)
        if raw.get("mask") is not None:
            item["mask"] = torch.from_numpy(np.ascontiguousarray(raw["mask"], dtype=np.int64))
        item["id"] = str(raw["id"])
        if self.transform is not None:
            item = self.transform(item)
        return item

    def class_counts(self) -> dict[str, int]:
        """Items per class (classification), voxels per class (segmentation; loads every item), or {}.

        Returns
        -------
        dict of class name to count, in ``class_names`` order.
        """
        if self.task == "classification" and self.labels is not None:
            counts = np.bincount(self.labels, minlength=len(self.class_names))
            return {name: int(c) for name, c in zip(self.class_names, counts)}
        if self.task == "segmentation":
            total = np.zeros(len(self.class_names), dtype=np.int64)
            for i in range(len(self)):
                m = self._item(i)["mask"]
                total += np.bincount(np.asarray(m).ravel(), minlength=len(total))[: len(total)]
            return {name: int(c) for name, c in zip(self.class_names, total)}
        return {}

    def __repr__(self) -> str:
        counts = self.class_counts() if self.task == "classification" else None
        extra = f", class_counts={counts}" if counts else ""
        return (
            f"{type(self).__name__}({self.name!r}, split={self.split!r}, n={len(self)}, "
            f"task={self.task!r}, num_channels={self.num_channels}, "
            f"class_names={self.class_names}{extra})"
        )


def mm3(value, name: str, signed: bool) -> tuple[float, float, float]:
    """A float or 3 floats of mm (D, H, W) as a 3-tuple; finite, and >= 0 unless ``signed``."""
    v3 = (value,) * 3 if np.isscalar(value) else tuple(value)
    try:
        v3 = tuple(float(v) for v in v3)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected mm as a float or 3 floats, got {value!r}") from None
    kind = "finite" if signed else "non-negative"
    if len(v3) != 3 or not all(np.isfinite(v) and (signed or v >= 0) for v in v3):
        raise ValueError(f"{name}: expected mm as a {kind} float or 3 of them, got {value!r}")
    return v3


def split_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    """Validate (train, val, test) fractions: 3 non-negative numbers summing to 1."""
    f = tuple(float(x) for x in fractions)
    if len(f) != 3 or min(f) < 0 or abs(sum(f) - 1.0) > 1e-6:
        raise ValueError(
            f"fractions: expected 3 non-negative numbers summing to 1, got {fractions!r}"
        )
    return f  # type: ignore[return-value]


def group_split(
    groups: Sequence, split: str, fractions=(0.7, 0.1, 0.2), seed: int = 0
) -> np.ndarray:
    """Indices of the items in ``split`` when whole groups (e.g. patients) go to one split.

    The sorted unique groups are shuffled with ``numpy.random.default_rng(seed)`` and cut at the
    cumulative fractions (rounded to whole groups), so a group is never in two splits and the result
    depends only on the set of groups and the seed, not on the item order.

    Parameters
    ----------
    groups : sequence of hashable, length N
        The group of each item.
    split : {"train", "val", "test", "all"}
    fractions : 3 floats
        Fractions of the **groups** for train, val, test.
    seed : int

    Returns
    -------
    (n,) int64 ndarray of item indices, ascending.
    """
    if split not in SPLITS:
        raise ValueError(f"split: expected one of {SPLITS}, got {split!r}")
    f = split_fractions(fractions)
    groups = np.asarray([str(g) for g in groups])
    if split == "all":
        return np.arange(len(groups), dtype=np.int64)
    unique = np.unique(groups)
    order = np.random.default_rng(seed).permutation(len(unique))
    n = len(unique)
    n_train = int(round(f[0] * n))
    n_val = int(round((f[0] + f[1]) * n)) - n_train
    cuts = {"train": (0, n_train), "val": (n_train, n_train + n_val), "test": (n_train + n_val, n)}
    lo, hi = cuts[split]
    chosen = set(unique[order[lo:hi]].tolist())
    return np.flatnonzero([g in chosen for g in groups]).astype(np.int64)


# Tumour label conventions: raw value -> region membership.
#   "brats": BraTS 2013-2015 (1 necrosis, 2 oedema, 3 non-enhancing, 4 enhancing) and BraTS 2017+
#            (1 necrotic/non-enhancing core, 2 oedema, 4 enhancing).
#   "msd":   Medical Segmentation Decathlon Task01 (1 oedema, 2 non-enhancing, 3 enhancing).
#   "phantom": rubikkit phantoms (1 necrotic core, 2 oedema, 3 enhancing).
_REGIONS = {
    "brats": {"whole": (1, 2, 3, 4), "core": (1, 3, 4), "enhancing": (4,)},
    "msd": {"whole": (1, 2, 3), "core": (2, 3), "enhancing": (3,)},
    "phantom": {"whole": (1, 2, 3), "core": (1, 3), "enhancing": (3,)},
}
RAW_CLASS_NAMES = {
    "brats": ["background", "necrosis", "oedema", "non-enhancing", "enhancing"],
    "msd": ["background", "oedema", "non-enhancing", "enhancing"],
    "phantom": ["background", "necrosis", "oedema", "enhancing"],
}
LABEL_MODES = ("raw", "whole", "core", "enhancing")


def merge_labels(mask: np.ndarray, mode: str, convention: str) -> np.ndarray:
    """Turn a raw tumour label map into ``mode``: ``"raw"`` (values kept) or a binary region map.

    Parameters
    ----------
    mask : (D, H, W) int array
    mode : {"raw", "whole", "core", "enhancing"}
        Whole tumour (every tumour label), tumour core (necrosis + non-enhancing + enhancing), or
        enhancing tumour, as defined by BraTS (Menze et al. 2015).
    convention : {"brats", "msd", "phantom"}
        Meaning of the raw values (see ``_REGIONS``).
    """
    if mode not in LABEL_MODES:
        raise ValueError(f"labels: expected one of {LABEL_MODES}, got {mode!r}")
    if convention not in _REGIONS:
        raise ValueError(f"label_convention: expected one of {tuple(_REGIONS)}, got {convention!r}")
    m = np.asarray(mask)
    if mode == "raw":
        return m.astype(np.int64)
    return np.isin(m, _REGIONS[convention][mode]).astype(np.int64)


def label_class_names(mode: str, convention: str) -> list[str]:
    """Class names of :func:`merge_labels`'s output."""
    if mode == "raw":
        return list(RAW_CLASS_NAMES[convention])
    return ["background", {"whole": "whole tumour", "core": "tumour core"}.get(mode, mode)]
