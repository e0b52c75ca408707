#!/usr/bin/env python
"""Write a rubikkit phantom dataset to disk as NIfTI volumes + labels.csv (no download needed).

Examples::

    python data_scripts/phantoms.py --kind hemorrhage --dest ~/data/phantoms_hemorrhage
    python data_scripts/phantoms.py --kind tumour --n 70 10 20 --size 64 --seed 1

Read it back with ``open_dataset("nifti:DEST")``. Re-running with the same options skips the files
already written (an interrupted run resumes); other options rewrite them.
"""

from __future__ import annotations

import argparse
import sys

import _common  # noqa: F401

from rubikkit.data.download import run_script
from rubikkit.data.phantoms import KINDS, save_phantom_folder
from rubikkit.data.spec import data_root


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--kind", default="hemorrhage", choices=sorted(KINDS))
    p.add_argument(
        "--dest", default=None, help="output folder (default $RUBIKKIT_DATA/phantoms_<kind>)"
    )
    p.add_argument("--n", nargs="+", type=int, default=[70, 10, 20], help="items: TRAIN [VAL TEST]")
    p.add_argument("--size", type=int, default=64, help="cube side in voxels (>= 8)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--difficulty", type=float, default=0.5, help="0 (easy) to 1 (hard)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from pathlib import Path

    if len(args.n) not in (1, 3):
        raise ValueError(f"--n: give TRAIN or TRAIN VAL TEST, got {args.n}")
    n = args.n[0] if len(args.n) == 1 else tuple(args.n)
    dest = Path(args.dest).expanduser() if args.dest else data_root() / f"phantoms_{args.kind}"
    out = save_phantom_folder(
        dest, args.kind, n, args.size, args.seed, args.difficulty, progress=not args.no_progress
    )
    print(
        f"{dest}: {out['written']} volumes written, {out['skipped']} already there; "
        f'open with open_dataset("nifti:{dest}")'
    )
    return 0


if __name__ == "__main__":
    sys.exit(run_script(main))
