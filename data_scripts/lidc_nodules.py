#!/usr/bin/env python
"""Get the LIDC-IDRI lung-nodule VOIs (image/, nodule_mask/, metadata.csv) for ``lidc:PATH``.

Two sources:

* default: the public VOI set of the ML4PM course (GitHub ``PabloLION/ct-slicing``, pinned commit),
  799 nodule crops from 436 patients, every file checked against ``lidc_vois.sha256`` beside this
  script; the spreadsheet of radiologists' ratings is converted to ``metadata.csv``;
* ``--source PATH``: your own export, a folder or a .zip / .tar(.gz) archive holding ``image/``,
  ``nodule_mask/`` and ``metadata.csv`` (or an .xlsx with ``patient_id`` and ``nodule_id``).

Examples::

    python data_scripts/lidc_nodules.py --dest ~/.cache/rubikkit/lidc_nodule_vois
    python data_scripts/lidc_nodules.py --source my_lidc_export.zip --dest lidc

Re-running skips verified files and resumes partial downloads. Licence: LIDC-IDRI is CC BY 3.0
(TCIA); cite Armato et al. 2011 and Clark et al. 2013.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import _common  # noqa: F401
from _common import extract_source

from rubikkit.data.download import (
    copy_file,
    download,
    read_manifest,
    run_script,
    verify_file,
)
from rubikkit.data.io import atomic_path, is_nifti
from rubikkit.data.lidc import read_xlsx, voi_metadata
from rubikkit.data.spec import data_root

COMMIT = "07d32abf6d8b8f1c61a0dccb685affa29b1512af"
BASE_URL = f"https://raw.githubusercontent.com/PabloLION/ct-slicing/{COMMIT}/data"
VOI_DIR = "VOIs"  # image/ and nodule_mask/ live under <base>/VOIs/
SPREADSHEET = "MetadatabyNoduleMaxVoting.xlsx"
MANIFEST = Path(__file__).resolve().parent / "lidc_vois.sha256"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--dest", default=None, help="output folder (default $RUBIKKIT_DATA/lidc_nodule_vois)"
    )
    p.add_argument("--source", default=None, help="your own export: a folder or an archive")
    p.add_argument("--base-url", default=BASE_URL, help="where the public set is downloaded from")
    p.add_argument("--manifest", default=str(MANIFEST), help="sha256sum file of the public set")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _write_metadata(table, dest: Path) -> int:
    meta = voi_metadata(table, dest / "image")
    with atomic_path(dest / "metadata.csv") as tmp:
        meta.to_csv(tmp, index=False)
    return len(meta)


def fetch_public(dest: Path, base_url: str, manifest: Path, progress: bool) -> None:
    from tqdm.auto import tqdm

    wanted = read_manifest(manifest)
    skipped = 0
    for rel, digest in tqdm(sorted(wanted.items()), desc="LIDC VOIs", disable=not progress):
        out = dest / rel
        if verify_file(out, sha256=digest):
            skipped += 1
            continue
        if out.exists():
            print(f"{out}: SHA-256 mismatch (incomplete or corrupt), downloading it again")
        download(f"{base_url.rstrip('/')}/{VOI_DIR}/{rel}", out, sha256=digest, progress=False)
    print(f"{dest}: {len(wanted) - skipped} files downloaded, {skipped} already verified")
    if not (dest / "metadata.csv").is_file():
        sheet = dest / SPREADSHEET
        # The spreadsheet has no published checksum: it is checked by converting it and matching
        # its rows with the verified image files.
        download(f"{base_url.rstrip('/')}/{SPREADSHEET}", sheet, progress=progress)
        try:
            n = _write_metadata(read_xlsx(sheet), dest)
        except ValueError as exc:
            sheet.unlink()  # unverified, so a damaged copy must not be trusted by the next run
            raise ValueError(f"{exc}; it was removed, run the command again") from None
        print(f"{dest / 'metadata.csv'}: {n} nodules")


def import_export(source: Path, dest: Path, progress: bool) -> None:
    from tqdm.auto import tqdm

    if not source.exists():
        raise FileNotFoundError(f"--source: {source} does not exist")
    if source.is_file():
        staging = dest / ".source"
        extract_source(source, staging)
        source = staging
    roots = [p.parent for p in source.rglob("image") if p.is_dir()]
    root = next((r for r in roots if (r / "nodule_mask").is_dir()), None)
    if root is None:
        raise FileNotFoundError(f"--source: no folder with image/ and nodule_mask/ in {source}")
    files = [p for sub in ("image", "nodule_mask") for p in sorted((root / sub).iterdir())]
    files = [p for p in files if is_nifti(p.name)]
    copied = sum(
        copy_file(p, dest / p.parent.name / p.name)
        for p in tqdm(files, desc="LIDC VOIs", disable=not progress)
    )
    print(f"{dest}: {copied} files copied, {len(files) - copied} already up to date")
    import pandas as pd

    csv, sheets = root / "metadata.csv", sorted(root.glob("*.xlsx"))
    if csv.is_file():
        table = pd.read_csv(csv)
    elif sheets:
        table = read_xlsx(sheets[0])
    else:
        raise FileNotFoundError(f"--source: {root} has no metadata.csv or .xlsx table")
    n = _write_metadata(table, dest)
    masks = {p.name for p in (dest / "nodule_mask").iterdir()}
    listed = pd.read_csv(dest / "metadata.csv")["file"].astype(str)
    missing = [f for f in listed if f not in masks]
    if missing:
        raise FileNotFoundError(f"nodule_mask: no mask for {missing[:5]} ({len(missing)} in all)")
    print(f"{dest / 'metadata.csv'}: {n} nodules")
    if (dest / ".source").exists():
        shutil.rmtree(dest / ".source")


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    dest = Path(args.dest).expanduser() if args.dest else data_root() / "lidc_nodule_vois"
    if not args.source and not Path(args.manifest).is_file():
        raise FileNotFoundError(f"--manifest: {args.manifest} does not exist")
    if args.source:
        import_export(Path(args.source).expanduser(), dest, not args.no_progress)
    else:
        fetch_public(dest, args.base_url, Path(args.manifest), not args.no_progress)
    print(f'open with open_dataset("lidc:{dest}")')
    return 0


if __name__ == "__main__":
    sys.exit(run_script(main))
