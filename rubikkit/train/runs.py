"""Helpers shared by pretrain, finetune and evaluate: data, options, precision and run records.

``metrics.json`` of a run has the fields of a :mod:`rubikkit.results` record (``dataset``,
``method``, ``backbone``, ``head``, ``label_fraction``, ``seed``, ``epochs``, ``commit``,
``device``, ``wall_s``) plus ``splits`` (metrics per split) and ``best``; :func:`to_record` turns it
into a record for :func:`rubikkit.results.append_record`.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import warnings
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset, default_collate

__all__ = [
    "IndexedDataset",
    "collate",
    "eval_loader",
    "open_split",
    "open_val_split",
    "resolve_amp",
    "run_summary",
    "to_record",
]


class IndexedDataset(Dataset):
    """``dataset`` whose items also carry their position, ``item["index"]`` (an int)."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i):
        item = dict(self.dataset[i])
        item["index"] = int(i)
        return item

    def __getattr__(self, name):
        # Attributes such as class_names, num_channels or task come from the wrapped dataset.
        if name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)


def open_split(
    data: str, split: str, options: dict | None, *, progress: bool = True, hint: str = ""
):
    """``rubikkit.data.open_dataset(data, split, **options)`` with errors naming ``data``.

    ``progress=False`` also silences the dataset's own bar (LIDC and BraTS resampling), unless
    ``options`` set ``progress`` themselves. ``hint`` ends the message of an empty split.

    Raises
    ------
    ValueError
        A bad spec or option, or a split without items (message starts with ``data:``).
    FileNotFoundError
        The dataset is not on disk.
    """
    from rubikkit.data import open_dataset
    from rubikkit.data.spec import takes_option

    if not isinstance(data, str):
        raise TypeError(f"data: expected a dataset spec string, got {type(data).__name__}")
    opts = dict(options or {})
    try:
        if not progress and "progress" not in opts and takes_option(data, "progress"):
            opts["progress"] = False
        dataset = open_dataset(data, split, **opts)
    except (ValueError, TypeError) as exc:
        raise type(exc)(f"data: {data!r} (split {split!r}): {exc}") from exc
    if len(dataset) == 0:
        # e.g. 3 volumes split 0.7 / 0.1 / 0.2: the validation share rounds to none
        raise ValueError(f"data: {data!r} (split {split!r}): the split holds no items{hint}")
    return dataset


def open_val_split(data: str, split: str | None, options: dict | None, *, progress: bool = True):
    """The validation split of a training run: :func:`open_split`, or None when ``split`` is
    None; an empty one is an error that says how to train without it."""
    if not split:
        return None
    hint = "; train without validation (--val-split none) or use more volumes"
    return open_split(data, split, options, progress=progress, hint=hint)


def resolve_amp(amp: bool | None, device: torch.device) -> bool:
    """Mixed precision on CUDA by default; off on CPU (asking for it there is warned about)."""
    if amp is None:
        return device.type == "cuda"
    if amp and device.type != "cuda":
        warnings.warn("amp: mixed precision needs CUDA; training in float32", stacklevel=3)
        return False
    return bool(amp)


def collate(items: list) -> dict:
    """``default_collate`` of item dicts; volumes of different shapes are named, not stacked.

    Raises
    ------
    ValueError
        Two items' ``image`` (or ``mask``) shapes differ (e.g. a ``nifti:`` folder opened without
        the ``size`` option); the message names both items and the option.
    """
    for key in ("image", "mask"):
        shaped = [
            (it.get("id"), tuple(it[key].shape))
            for it in items
            if isinstance(it, dict) and isinstance(it.get(key), torch.Tensor)
        ]
        other = next((p for p in shaped if p[1] != shaped[0][1]), None)
        if other is not None:
            raise ValueError(
                f"data: cannot batch volumes of different shapes: {shaped[0][0]!r} "
                f"{shaped[0][1]} and {other[0]!r} {other[1]}; resample them to one shape with "
                "the data option size (--data-option size=D,H,W), or use --batch-size 1"
            )
    return default_collate(items)


def eval_loader(dataset, batch_size: int, workers: int, device: torch.device) -> DataLoader:
    """A DataLoader over ``dataset`` in order; it leaves the global random state untouched."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        collate_fn=collate,
        shuffle=False,
        num_workers=int(workers),
        pin_memory=device.type == "cuda",
        generator=torch.Generator().manual_seed(0),
    )


def git_commit(root=None) -> str | None:
    """The commit of the rubikkit checkout (or of the git checkout ``root``), when it is one.

    None when it is not the top of a checkout: an installed copy in a virtual environment kept
    inside some other checkout must not take that checkout's commit.

    A checkout whose code (``rubikkit/``, ``csrc/``, ``setup.py``; changed or new files that git
    does not ignore) differs from that commit gets ``+dirty`` after the hash, as ``git describe
    --dirty`` marks it: the record then says that the commit alone does not reproduce it.
    """
    root = Path(__file__).resolve().parents[2] if root is None else Path(root)

    def git(*args: str) -> str | None:
        try:
            res = subprocess.run(
                ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=5
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return res.stdout.strip() if res.returncode == 0 else None

    top = git("rev-parse", "--show-toplevel")
    if not top or Path(top).resolve() != root.resolve():
        return None  # an installed copy (site-packages), even inside some other checkout
    head = git("rev-parse", "HEAD")
    if not head:
        return None
    changed = git("status", "--porcelain", "--", "rubikkit", "csrc", "setup.py")
    return f"{head}+dirty" if changed else head


def options_dict(options, name: str) -> dict:
    """Validate a dict of options (``None`` is empty)."""
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise TypeError(f"{name}: expected a dict, got {type(options).__name__}")
    return dict(options)


def finite_metrics(metrics: dict) -> dict:
    """The finite numeric entries of ``metrics`` (records hold no NaN)."""
    return {
        k: float(v)
        for k, v in metrics.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    }


def to_record(metrics, split: str = "val") -> dict:
    """A :mod:`rubikkit.results` record from a run's ``metrics.json`` (a path or the dict).

    Parameters
    ----------
    metrics : path-like or dict
        ``metrics.json`` of pretrain, finetune or evaluate (or the folder holding it).
    split : str
        Whose metrics go into the record (``metrics["splits"][split]``).

    Returns
    -------
    dict with the fields of :data:`rubikkit.results.RECORD_FIELDS`; NaN metrics are left out.
    """
    from rubikkit.results import RECORD_FIELDS

    if isinstance(metrics, (str, os.PathLike)):
        p = Path(metrics)
        if p.is_dir():
            p = p / "metrics.json"
        metrics = json.loads(p.read_text(encoding="utf-8"))
    splits = metrics.get("splits", {})
    if split not in splits:
        raise ValueError(f"split: {split!r} not in this run's metrics (have {sorted(splits)})")
    rec = {k: metrics.get(k) for k in RECORD_FIELDS if k not in ("split", "metrics")}
    rec["split"] = split
    rec["metrics"] = finite_metrics(splits[split])
    return rec


def run_summary(config: dict, result: dict, *, method: str) -> dict:
    """metrics.json: the record fields plus ``splits``, ``best`` and ``last``."""
    best = result.get("best") or {}
    last = result.get("last") or {}
    splits = {}
    if "train" in last:
        splits["train"] = last["train"]
    if best.get("metrics") is not None and best.get("split"):
        splits[best["split"]] = best["metrics"]
    return {
        "kind": config["kind"],
        "dataset": config["data"],
        "method": method,
        "backbone": config["backbone"]["name"] if config.get("backbone") else None,
        "head": config["head"],
        "label_fraction": config.get("label_fraction"),
        "seed": config["seed"],
        "epochs": round(float(result.get("epochs_run", result["epoch"])), 4),
        "steps": result["step"],
        "commit": config.get("commit") or git_commit(),
        "device": config["device"],
        "world_size": config.get("world_size", 1),
        "wall_s": result["wall_s"],
        "best": {k: v for k, v in best.items() if k != "metrics"},
        "splits": splits,
        "last": last,
    }
