"""Small fabricated files in the formats rubikkit.data reads (NIfTI, npz, LIDC, BraTS, MSD, xlsx).

Builders return the paths they wrote; they are shared by the tests of rubikkit.data and of
data_scripts/, so every reader is exercised without the real datasets or a network.
"""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd


def write_nifti(path: Path, data_ijk: np.ndarray, zooms=(1.0, 1.0, 1.0)) -> Path:
    """Write ``data_ijk`` exactly as stored on disk (index order i, j, k[, c])."""
    path.parent.mkdir(parents=True, exist_ok=True)
    affine = np.diag([*zooms, 1.0])
    data = np.asarray(data_ijk)
    if data.dtype == np.int64:
        data = data.astype(np.int32)  # nibabel refuses int64 without an explicit header
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


def truncate(path: Path, keep: float = 0.5) -> Path:
    """Cut a file to ``keep`` of its bytes (a truncated download)."""
    data = path.read_bytes()
    path.write_bytes(data[: max(1, int(len(data) * keep))])
    return path


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_lidc(root: Path, n_patients: int = 6, seed: int = 0) -> Path:
    """A LIDC VOI folder: 2 nodules per patient, malignancy scores cycling 1..5."""
    rng = np.random.default_rng(seed)
    rows = []
    k = 0
    for p in range(n_patients):
        pid = f"LIDC-IDRI-{p + 1:04d}"
        for nod in (1, 2):
            name = f"{pid}_R_{nod}.nii.gz"
            shape = (int(rng.integers(12, 20)), int(rng.integers(12, 20)), int(rng.integers(3, 8)))
            img = rng.integers(-1000, 200, shape).astype(np.int16)
            mask = np.zeros(shape, dtype=np.uint8)
            c = [s // 2 for s in shape]
            mask[c[0] - 2 : c[0] + 2, c[1] - 2 : c[1] + 2, c[2] - 1 : c[2] + 1] = 1
            write_nifti(root / "image" / name, img, (0.7, 0.7, 2.5))
            write_nifti(root / "nodule_mask" / name, mask, (0.7, 0.7, 2.5))
            score = k % 5 + 1
            rows.append(
                {
                    "file": name,
                    "patient_id": pid,
                    "nodule_id": nod,
                    "Diagnosis": "Malign" if score >= 4 else "Benign",
                    "Malignancy_value": score,
                }
            )
            k += 1
    pd.DataFrame(rows).to_csv(root / "metadata.csv", index=False)
    return root


def make_brats_cases(root: Path, shape_ijk=(20, 22, 18), seed: int = 0) -> Path:
    """BraTS case folders train/ (2 cases) and validation/ (1 case): FLAIR, T1c, labels, mask."""
    rng = np.random.default_rng(seed)
    for split, cases in (("train", ("pat1", "pat2")), ("validation", ("pat3",))):
        for case in cases:
            d = root / split / case
            brain = np.zeros(shape_ijk, dtype=np.float64)
            brain[3:-3, 3:-3, 3:-3] = 1
            for mod in ("Flair", "T1c"):
                img = rng.normal(0, 1, shape_ijk).astype(np.float32) * brain - 4 * (1 - brain)
                write_nifti(d / f"{mod}_subtrMeanDivStd.nii.gz", img.astype(np.float32))
            lab = np.zeros(shape_ijk, dtype=np.float32)
            lab[8:12, 8:12, 7:11] = 2
            lab[9:11, 9:11, 8:10] = 4
            lab[9, 9, 8] = 1
            write_nifti(d / "OTMultiClass.nii.gz", lab)
            write_nifti(d / "brainmask.nii.gz", brain)
    return root


def make_msd(root: Path, n: int = 4, shape_ijk=(16, 18, 14), seed: int = 0) -> Path:
    """MSD Task01 layout: imagesTr/BRATS_00k.nii.gz (i, j, k, 4) and labelsTr (1, 2, 3)."""
    rng = np.random.default_rng(seed)
    for k in range(n):
        name = f"BRATS_{k + 1:03d}.nii.gz"
        img = np.zeros((*shape_ijk, 4), dtype=np.float32)
        img[2:-2, 2:-2, 2:-2] = rng.uniform(0.5, 1.0, (*(s - 4 for s in shape_ijk), 4))
        for c in range(4):
            img[..., c] += c  # channel c has mean ~c + 0.75: the order can be checked
        lab = np.zeros(shape_ijk, dtype=np.uint8)
        lab[5:10, 5:10, 5:9] = 1
        lab[6:9, 6:9, 6:8] = 2
        lab[7, 7, 6] = 3
        write_nifti(root / "imagesTr" / name, img)
        write_nifti(root / "labelsTr" / name, lab)
    return root


def make_medmnist(path: Path, n=(10, 4, 6), size: int = 28, n_classes: int = 2) -> Path:
    """An npz in the MedMNIST layout with uint8 images {0, 255} and (N, 1) labels."""
    rng = np.random.default_rng(0)
    arrays = {}
    for split, count in zip(("train", "val", "test"), n):
        arrays[f"{split}_images"] = (rng.random((count, size, size, size)) > 0.5).astype(
            np.uint8
        ) * 255
        arrays[f"{split}_labels"] = (np.arange(count) % n_classes).astype(np.uint8)[:, None]
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)
    return path


def _col(j: int) -> str:
    s = ""
    j += 1
    while j:
        j, r = divmod(j - 1, 26)
        s = chr(ord("A") + r) + s
    return s


def write_xlsx(path: Path, table: pd.DataFrame) -> Path:
    """A minimal .xlsx (one sheet, shared strings for text, numbers inline) without openpyxl."""
    strings: list[str] = []
    rows_xml = []
    records = [list(table.columns)] + table.astype(object).values.tolist()
    for i, rec in enumerate(records):
        cells = []
        for j, v in enumerate(rec):
            ref = f"{_col(j)}{i + 1}"
            if isinstance(v, str):
                strings.append(v)
                cells.append(f'<c r="{ref}" t="s"><v>{len(strings) - 1}</v></c>')
            else:
                cells.append(f'<c r="{ref}"><v>{v}</v></c>')
        rows_xml.append(f'<row r="{i + 1}">{"".join(cells)}</row>')
    ns = 'xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"'
    sheet = f'<?xml version="1.0"?><worksheet {ns}><sheetData>{"".join(rows_xml)}</sheetData></worksheet>'
    sst = "".join(f"<si><t>{s}</t></si>" for s in strings)
    shared = f'<?xml version="1.0"?><sst {ns} count="{len(strings)}">{sst}</sst>'
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("xl/worksheets/sheet1.xml", sheet)
        zf.writestr("xl/sharedStrings.xml", shared)
    return path
