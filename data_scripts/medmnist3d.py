#!/usr/bin/env python
"""Download MedMNIST v2 3D datasets (official Zenodo files, MD5-checked) into the data root.

Examples::

    python data_scripts/medmnist3d.py --flag adrenal --size 28 64
    python data_scripts/medmnist3d.py --flag all --root ~/data/medmnist3d

Files land as ``<root>/<flag>mnist3d.npz`` (28^3) and ``<flag>mnist3d_64.npz`` (64^3), the names
``open_dataset("medmnist3d:<flag>", size=...)`` reads. Re-running skips verified files and resumes a
partial download. Licence: CC BY 4.0 (cite Yang et al., Scientific Data 2023).
"""

from __future__ import annotations

import argparse
import sys

import _common  # noqa: F401

from rubikkit.data.download import download, run_script, verify_file
from rubikkit.data.medmnist import (
    MEDMNIST3D,
    canonical_flag,
    medmnist_filename,
    medmnist_md5,
    medmnist_url,
)
from rubikkit.data.spec import data_root


def build_parser() -> argparse.ArgumentParser:
    short = [k[: -len("mnist3d")] for k in MEDMNIST3D]
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--flag", nargs="+", default=["adrenal"], help=f"datasets: {', '.join(short)} or all"
    )
    p.add_argument("--size", nargs="+", type=int, default=[28], choices=[28, 64])
    p.add_argument(
        "--root",
        "--dest",
        dest="root",
        default=None,
        help="destination folder (default $RUBIKKIT_DATA/medmnist3d)",
    )
    p.add_argument(
        "--base-url",
        default=None,
        help="mirror to download from instead of Zenodo (files named as on Zenodo)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from pathlib import Path

    root = Path(args.root).expanduser() if args.root else data_root() / "medmnist3d"
    flags = list(MEDMNIST3D) if "all" in args.flag else [canonical_flag(f) for f in args.flag]
    for flag in flags:
        for size in args.size:
            name = medmnist_filename(flag, size)
            md5 = medmnist_md5(flag, size)
            dest = root / name
            if verify_file(dest, md5=md5):
                print(f"{dest}: already there, MD5 verified")
                continue
            if dest.exists():  # download() replaces it; say why, or a file put there by hand
                # would vanish without a word
                print(f"{dest}: MD5 mismatch (incomplete or corrupt), downloading it again")
            url = medmnist_url(flag, size)
            if args.base_url:
                url = args.base_url.rstrip("/") + "/" + name
            download(url, dest, md5=md5, progress=not args.no_progress)
            print(f"{dest}: downloaded, MD5 verified")
    return 0


if __name__ == "__main__":
    sys.exit(run_script(main))
