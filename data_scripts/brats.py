#!/usr/bin/env python
"""Preprocess a user-supplied BraTS or MSD Task01 dataset into crops for ``brats:PATH``.

BraTS data needs a registration (BraTS) or comes as a large archive (Medical Segmentation
Decathlon ``Task01_BrainTumour.tar``), so this script does not download: point ``--source`` at

* a folder of BraTS case folders, split into ``train``/``val``/``test`` (or ``training``/
  ``validation``/``testing``) folders, one NIfTI per modality and a label map per case;
* the MSD Task01 folder (``imagesTr/``, ``labelsTr/``) or its .tar / .zip archive.

Each case is cropped to the brain, resampled to ``--size`` and z-scored inside the brain, then
saved as ``DEST/<split>/<case>.npz`` (``image`` (C, D, H, W) float32, ``mask`` raw labels,
``modalities``, ``convention``). Re-running with the same options skips finished cases.

Examples::

    python data_scripts/brats.py --source ~/Downloads/Task01_BrainTumour.tar --dest brats_msd
    python data_scripts/brats.py --source ../shared/data/brats2015_deepmedic --size 96

Licences: BraTS data is CC BY-NC-SA (non-commercial); MSD is CC BY-SA 4.0. Keep the notices.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import _common  # noqa: F401
import numpy as np
from _common import extract_source

from rubikkit.data.brats import MODALITIES, BraTS
from rubikkit.data.download import run_script
from rubikkit.data.io import atomic_path, save_npz
from rubikkit.data.spec import data_root


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--source", required=True, help="BraTS / MSD Task01 folder or archive")
    p.add_argument("--dest", default=None, help="output folder (default $RUBIKKIT_DATA/brats)")
    p.add_argument("--size", type=_positive_int, default=64, help="cube side of the crops (voxels)")
    p.add_argument(
        "--channels", nargs="+", type=str.lower, choices=MODALITIES, default=None, help="modalities"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the MSD case split")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _positive_int(text: str) -> int:
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


def _find_root(source: Path) -> Path:
    candidates = [source] + sorted(p for p in source.rglob("*") if p.is_dir())
    for c in candidates:
        if (c / "imagesTr").is_dir() or any(
            (c / n).is_dir() for n in ("train", "training", "Training", "val", "validation")
        ):
            return c
    raise FileNotFoundError(
        f"--source: {source} holds neither an MSD imagesTr/ folder nor BraTS split folders"
    )


def main(argv=None) -> int:
    from tqdm.auto import tqdm

    args = build_parser().parse_args(argv)
    source = Path(args.source).expanduser()
    dest = Path(args.dest).expanduser() if args.dest else data_root() / "brats"
    if not source.exists():
        raise FileNotFoundError(f"--source: {source} does not exist")
    opt_path = dest / "preprocess.json"
    crops = [p for split in ("train", "val", "test") for p in (dest / split).glob("*.npz")]
    if crops and not opt_path.is_file():
        raise ValueError(
            f"--dest: {dest} holds .npz files that this script did not write (no preprocess.json); "
            "choose a new or empty folder"
        )
    if source.is_file():
        staging = dest / ".source"
        extract_source(source, staging)
        source = staging
    root = _find_root(source)
    # Open every split before touching the crops: options the data cannot satisfy (a modality it
    # lacks) must fail before the crops made with other options are dropped.
    splits = []
    for split in ("train", "val", "test"):
        try:
            ds = BraTS(
                root,
                split,
                channels=args.channels,
                size=args.size,
                seed=args.seed,
                cache_dir=False,
                progress=False,
            )
        except ValueError as exc:
            if str(exc).startswith("split:"):
                continue  # this layout has no such split
            raise
        splits.append((split, ds))
    if not any(len(ds) for _, ds in splits):
        raise FileNotFoundError(f"--source: no case found under {root}")
    options = {"size": args.size, "channels": args.channels, "seed": args.seed, "version": 1}
    same = opt_path.is_file() and json.loads(opt_path.read_text()) == options
    if not same:  # other options: drop crops made with them, then record the new ones first so
        # an interrupted run resumes with these options
        for old in crops:
            old.unlink()
        with atomic_path(opt_path) as tmp:
            tmp.write_text(json.dumps(options))
        same = True
    done = skipped = 0
    for split, ds in splits:
        for i in tqdm(range(len(ds)), desc=f"BraTS {split}", disable=args.no_progress):
            out = dest / split / f"{ds.case_ids[i]}.npz"
            if same and out.is_file():
                skipped += 1
                continue
            raw = ds._compute(ds._cases[i])  # cropped, resampled, normalised; raw labels
            save_npz(
                out,
                image=raw["image"].astype(np.float32),
                mask=raw["mask"].astype(np.int16),
                modalities=np.asarray(ds.channels),
                convention=np.asarray(ds.convention),
            )
            done += 1
    if (dest / ".source").exists():  # the unpacked archive: the crops are what is kept
        shutil.rmtree(dest / ".source")
    if done + skipped == 0:
        raise FileNotFoundError(f"--source: no case found under {root}")
    print(f"{dest}: {done} cases preprocessed, {skipped} already there")
    print(f'open with open_dataset("brats:{dest}")')
    return 0


if __name__ == "__main__":
    sys.exit(run_script(main))
