"""LIDC-IDRI lung-nodule volumes of interest (VOIs): fixed cubes around each nodule.

Layout (as in ``shared/data/lidc_nodule_vois``, the ML4PM course export of LIDC-IDRI)::

    PATH/image/LIDC-IDRI-XXXX_R_N.nii.gz        int16 HU crop around nodule N
    PATH/nodule_mask/LIDC-IDRI-XXXX_R_N.nii.gz  {0, 1} nodule mask on the same grid
    PATH/metadata.csv                           one row per nodule: file, patient_id,
                                                Malignancy_value (1-5), Diagnosis, ...

Each VOI is resampled once to a cube (default 32^3 voxels of 1 mm, trilinear) centred on the
centroid of its nodule mask (or, with ``shift`` or ``offset``, a few mm off it), padding with air
(-1000 HU) where the VOI is smaller than the cube; HU are kept in the cache and normalised per item
(default: lung window level -600, width 1500 to [-1, 1]). Labels follow NoduleMNIST3D: malignant
when ``Malignancy_value >= 4``, benign when ``<= 2``, score 3 dropped (thresholds configurable), or
the ``Diagnosis`` column. Splits are by ``patient_id`` (never by nodule), drawn over all patients
before any nodule is dropped, deterministic for a seed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rubikkit.data.base import VolumeDataset, group_split, mm3
from rubikkit.data.cache import cached_arrays, file_fingerprint
from rubikkit.data.intensity import _shape3, meanmax_to_unit, minmax_to_unit, window_ct
from rubikkit.data.io import load_nifti

__all__ = ["LIDCNodules", "read_xlsx", "resample_around", "voi_metadata"]

_VERSION = 2
LUNG_WINDOW = (-600.0, 1500.0)


def resample_around(
    volume: np.ndarray,
    spacing,
    centre,
    shape=(32, 32, 32),
    new_spacing=(1.0, 1.0, 1.0),
    *,
    pad_value: float = -1000.0,
    order: str = "linear",
) -> np.ndarray:
    """Sample a ``shape`` cube of ``new_spacing`` mm voxels centred on ``centre`` from ``volume``.

    Parameters
    ----------
    volume : (D, H, W) array
    spacing : 3 floats
        Voxel size of ``volume`` in mm (D, H, W).
    centre : 3 floats
        Cube centre in ``volume``'s voxel coordinates (fractional allowed).
    shape : 3 ints
    new_spacing : 3 floats
    pad_value : float
        Value outside ``volume`` (air for CT).
    order : {"linear", "nearest"}

    Returns
    -------
    (shape) float32 ndarray.
    """
    import torch
    import torch.nn.functional as F

    vol = np.asarray(volume, dtype=np.float32)
    if vol.ndim != 3:
        raise ValueError(f"volume: expected (D, H, W), got shape {vol.shape}")
    if len(tuple(shape)) != 3 or len(tuple(spacing)) != 3 or len(tuple(new_spacing)) != 3:
        raise ValueError("shape, spacing, new_spacing: expected 3 values each (D, H, W)")
    if len(tuple(centre)) != 3:
        raise ValueError(f"centre: expected 3 voxel coordinates (d, h, w), got {centre!r}")
    norm = []
    for a in range(3):
        n, size = int(shape[a]), vol.shape[a]
        pos = centre[a] + (np.arange(n, dtype=np.float64) - (n - 1) / 2) * (
            new_spacing[a] / spacing[a]
        )
        # align_corners=False convention: voxel i spans [i - 0.5, i + 0.5], so a one-slice volume
        # works too and the cube fades to pad_value within half a voxel of the edge.
        norm.append(((2.0 * pos + 1.0) / size - 1.0).astype(np.float32))
    gd, gh, gw = np.meshgrid(*norm, indexing="ij")
    grid = torch.from_numpy(np.stack([gw, gh, gd], axis=-1))[None]  # grid_sample wants (W, H, D)
    t = torch.from_numpy(vol - pad_value)[None, None]
    mode = "bilinear" if order == "linear" else "nearest"
    out = F.grid_sample(t, grid, mode=mode, padding_mode="zeros", align_corners=False)
    return (out[0, 0].numpy() + pad_value).astype(np.float32)


class LIDCNodules(VolumeDataset):
    """LIDC nodule VOIs as fixed cubes, labelled benign / malignant (or unlabeled).

    Parameters
    ----------
    root : str or Path
        Folder with ``image/``, ``nodule_mask/`` and ``metadata.csv``.
    split : {"train", "val", "test", "all"}
    size : int or (D, H, W)
        Cube shape in voxels (default 32).
    spacing : float or 3 floats
        Output voxel size in mm (default 1 mm isotropic).
    labels : {"malignancy", "diagnosis"}
        ``Malignancy_value`` thresholds, or the ``Diagnosis`` column (``Malign`` / ``Benign``).
    benign_max, malignant_min : int
        Malignancy scores ``<= benign_max`` are benign, ``>= malignant_min`` malignant, others dropped.
    unlabeled : bool
        Keep every nodule of the split (score 3 too), ``task="unlabeled"``, for pre-training.
    fractions : 3 floats
        Fractions of **patients** in train / val / test (default 0.7 / 0.1 / 0.2).
    seed : int
        Seed of the patient split.
    normalize : {"window", "minmax", "meanmax", None}
        ``"window"``: CT window ``window`` -> [-1, 1]; ``"minmax"`` / ``"meanmax"`` as in
        :mod:`rubikkit.data.intensity`; None keeps HU.
    window : (level, width)
        HU window for ``normalize="window"`` (default lung: -600, 1500).
    return_mask : bool
        Also return the resampled nodule mask as ``mask`` (D, H, W).
    shift : float or 3 floats
        Move each cube's centre off its nodule's centroid by up to ``shift`` mm on each axis
        (D, H, W): one uniform draw per nodule, fixed by ``shift_seed``, so the nodule sits off
        the cube's centre (default 0: centred). A centred, roughly round nodule looks much the
        same after a half turn about the centre, which confounds the Rubik's cube's turns with
        its places; off-centre crops for pre-training break that symmetry. The draws are in
        :attr:`offsets_mm` (rows of the metadata table, in mm).
    shift_seed : int
        Seed of the ``shift`` draws.
    offset : float or 3 floats
        Move every cube's centre by the same ``offset`` mm (D, H, W; any sign) off its nodule's
        centroid, on top of ``shift`` (default 0). Unlike ``shift``, which points each nodule a
        different way, this gives every crop the same layout: the nodule in one octant, so each
        octant of the data set has a look of its own and a turned cube looks unlike the unturned
        cubes of its place on average (:meth:`rubikkit.tasks.rubik.CubePuzzleTask.template_probe`).
    cache_dir : str or Path or None
        Folder of the on-disk cache of resampled cubes (default ``$RUBIKKIT_DATA/cache``);
        ``False`` disables the disk cache (the in-memory one stays).
    progress : bool
        Progress bar while resampling.
    transform : callable, optional
    """

    REQUIRED = ("file", "patient_id")

    def __init__(
        self,
        root,
        split: str = "train",
        *,
        size=32,
        spacing=1.0,
        labels: str = "malignancy",
        benign_max: int = 2,
        malignant_min: int = 4,
        unlabeled: bool = False,
        fractions=(0.7, 0.1, 0.2),
        seed: int = 0,
        normalize: str | None = "window",
        window=LUNG_WINDOW,
        return_mask: bool = False,
        shift=0.0,
        shift_seed: int = 0,
        offset=0.0,
        cache_dir=None,
        progress: bool = True,
        transform=None,
    ):
        import pandas as pd

        from rubikkit.data.spec import data_root

        root = Path(root).expanduser()
        meta_path = root / "metadata.csv"
        if not meta_path.is_file():
            raise FileNotFoundError(
                f"root: {meta_path} not found; a LIDC VOI folder holds image/, nodule_mask/ and "
                "metadata.csv. Prepare one with `python data_scripts/lidc_nodules.py`."
            )
        try:
            meta = pd.read_csv(meta_path)
        except Exception as exc:
            raise ValueError(f"root: cannot read {meta_path}: {exc}") from exc
        if labels not in ("malignancy", "diagnosis"):
            raise ValueError(f"labels: expected 'malignancy' or 'diagnosis', got {labels!r}")
        column = "Malignancy_value" if labels == "malignancy" else "Diagnosis"
        needed = list(self.REQUIRED) + ([] if unlabeled else [column])
        for col in needed:
            if col not in meta.columns:
                raise ValueError(f"metadata: {meta_path} has no column {col!r}")
        if normalize not in ("window", "minmax", "meanmax", None):
            raise ValueError(
                f"normalize: expected 'window', 'minmax', 'meanmax' or None, got {normalize!r}"
            )
        if not benign_max < malignant_min:
            raise ValueError(
                f"benign_max, malignant_min: need benign_max < malignant_min, got "
                f"{benign_max}, {malignant_min}"
            )
        self.root = root
        self.shape = _shape3(size, "size")
        sp = (float(spacing),) * 3 if np.isscalar(spacing) else tuple(float(s) for s in spacing)
        if len(sp) != 3 or min(sp) <= 0:
            raise ValueError(f"spacing: expected a positive float or 3 of them, got {spacing!r}")
        self.spacing = sp
        sh = mm3(shift, "shift", signed=False)
        if isinstance(shift_seed, bool) or not isinstance(shift_seed, (int, np.integer)):
            raise ValueError(f"shift_seed: expected an int, got {shift_seed!r}")
        if shift_seed < 0:
            raise ValueError(f"shift_seed: expected a non-negative int, got {shift_seed}")
        off = mm3(offset, "offset", signed=True)
        self.shift = sh
        self.offset = off
        self.normalize = normalize
        self.window = tuple(window)
        self.return_mask = bool(return_mask)
        self.transform = transform
        self.split = split
        self.name = f"lidc:{root}"
        self.num_channels = 1
        self.class_names = ["benign", "malignant"]

        rows = np.arange(len(meta))
        chosen = group_split(meta["patient_id"].astype(str), split, fractions, seed)
        keep = np.zeros(len(meta), dtype=bool)
        keep[chosen] = True
        y = np.full(len(meta), -1, dtype=np.int64)
        if not unlabeled:
            if labels == "malignancy":
                score = pd.to_numeric(meta[column], errors="coerce").to_numpy()
                y[score <= benign_max] = 0
                y[score >= malignant_min] = 1
            else:
                diag = meta[column].astype(str).str.strip().str.lower()
                y[diag.str.startswith("malign").to_numpy()] = 1
                y[diag.str.startswith("benign").to_numpy()] = 0
            keep &= y >= 0
        self._rows = rows[keep]
        self.task = "unlabeled" if unlabeled else "classification"
        self.labels = None if unlabeled else y[self._rows]
        self.metadata = meta.iloc[self._rows].reset_index(drop=True)
        self.files = meta["file"].astype(str).tolist()
        #: (N, 3) offset of each cube's centre from its nodule's centroid, mm (D, H, W), per
        #: metadata row: the ``shift`` draw plus ``offset``.
        self.offsets_mm = np.random.default_rng(int(shift_seed)).uniform(
            -1.0, 1.0, size=(len(self.files), 3)
        ) * np.asarray(sh) + np.asarray(off)

        cache = data_root() / "cache" if cache_dir is None else cache_dir
        cache = None if cache is False else cache
        images = [root / "image" / f for f in self.files]
        masks = [root / "nodule_mask" / f for f in self.files]
        for p in images[:1] + masks[:1]:
            if not p.is_file():
                raise FileNotFoundError(f"metadata: {meta_path} lists {p.name}, not found at {p}")
        key = {
            "version": _VERSION,
            "root": str(root.resolve()),
            "shape": self.shape,
            "spacing": self.spacing,
            "meta": file_fingerprint([meta_path]),
            "n": len(self.files),
        }
        if any(sh):  # centred cubes keep the key (and cache) they had before shift existed
            key.update(shift=sh, shift_seed=int(shift_seed))
        if any(off):
            key.update(offset=off)
        self._arrays = cached_arrays(
            "lidc", key, lambda: self._resample_all(images, masks, progress), cache
        )

    def _resample_all(self, images, masks, progress: bool) -> dict[str, np.ndarray]:
        from tqdm.auto import tqdm

        n = len(images)
        cubes = np.empty((n, *self.shape), dtype=np.int16)
        cube_masks = np.empty((n, *self.shape), dtype=np.uint8)
        for i in tqdm(range(n), desc="LIDC VOIs", disable=not progress):
            vol = load_nifti(images[i])
            if not masks[i].is_file():
                raise FileNotFoundError(f"nodule_mask: {masks[i]} not found (listed in metadata)")
            m = load_nifti(masks[i]).array
            if m.shape != vol.array.shape:
                raise ValueError(
                    f"nodule_mask: {masks[i].name} has shape {m.shape}, its image {vol.array.shape}"
                )
            if vol.array.ndim != 3:
                raise ValueError(f"image: {images[i].name} is not 3D (shape {vol.array.shape})")
            nz = np.argwhere(m > 0)
            centre = nz.mean(axis=0) if len(nz) else (np.asarray(m.shape) - 1) / 2.0
            centre = centre + self.offsets_mm[i] / np.asarray(vol.spacing, dtype=np.float64)
            hu = resample_around(vol.array, vol.spacing, centre, self.shape, self.spacing)
            mk = resample_around(
                m.astype(np.float32), vol.spacing, centre, self.shape, self.spacing, pad_value=0.0
            )
            cubes[i] = np.clip(np.rint(hu), -32768, 32767).astype(np.int16)
            cube_masks[i] = mk >= 0.5
        return {"hu": cubes, "mask": cube_masks}

    def __len__(self) -> int:
        return len(self._rows)

    def _item(self, index: int) -> dict:
        row = int(self._rows[index])
        hu = self._arrays["hu"][row].astype(np.float32)
        if self.normalize == "window":
            img = window_ct(hu, *self.window)
        elif self.normalize == "minmax":
            img = minmax_to_unit(hu)
        elif self.normalize == "meanmax":
            img = meanmax_to_unit(hu)
        else:
            img = hu
        item = {"image": img[None], "id": Path(self.files[row]).name.split(".nii")[0]}
        if self.labels is not None:
            item["label"] = int(self.labels[index])
        if self.return_mask:
            item["mask"] = self._arrays["mask"][row]
        return item

    @property
    def patient_ids(self) -> np.ndarray:
        """Patient of each item."""
        return self.metadata["patient_id"].astype(str).to_numpy()


_XLSX_NS = {"m": "http://schemas.openxmlformats.org/spreadsheetml/2006/main"}


def _column_index(ref: str) -> int:
    """``"C7"`` -> 2: the zero-based column of a spreadsheet cell reference."""
    col = 0
    for ch in ref:
        if not ch.isalpha():
            break
        col = col * 26 + (ord(ch.upper()) - ord("A") + 1)
    return col - 1


def read_xlsx(path):
    """Read the first sheet of an ``.xlsx`` workbook into a DataFrame (first row = header).

    A small reader for plain tables (shared and inline strings, numbers), so converting the LIDC
    VOI spreadsheet needs no extra dependency. Formulas give their cached values; styles are ignored.

    Raises
    ------
    ValueError
        The file is not a readable workbook; the message names it.
    """
    import xml.etree.ElementTree as ET
    import zipfile

    import pandas as pd

    path = Path(path)
    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
            shared: list[str] = []
            if "xl/sharedStrings.xml" in names:
                root = ET.fromstring(zf.read("xl/sharedStrings.xml"))
                for si in root.findall("m:si", _XLSX_NS):
                    shared.append("".join(t.text or "" for t in si.iter(f"{{{_XLSX_NS['m']}}}t")))
            sheets = sorted(n for n in names if n.startswith("xl/worksheets/sheet"))
            if not sheets:
                raise ValueError("no worksheet")
            sheet = ET.fromstring(zf.read(sheets[0]))
    except (zipfile.BadZipFile, ET.ParseError, KeyError, ValueError, OSError) as exc:
        raise ValueError(f"path: cannot read the spreadsheet {path}: {exc}") from exc
    rows: list[dict[int, object]] = []
    for row in sheet.iter(f"{{{_XLSX_NS['m']}}}row"):
        cells: dict[int, object] = {}
        for i, c in enumerate(row.findall("m:c", _XLSX_NS)):
            col = _column_index(c.get("r", "")) if c.get("r") else i
            kind = c.get("t", "n")
            v = c.find("m:v", _XLSX_NS)
            if kind == "inlineStr":
                value: object = "".join(t.text or "" for t in c.iter(f"{{{_XLSX_NS['m']}}}t"))
            elif v is None or v.text is None:
                value = None
            elif kind == "s":
                value = shared[int(v.text)]
            elif kind in ("str", "e"):
                value = v.text
            elif kind == "b":
                value = v.text == "1"
            else:
                f = float(v.text)
                value = int(f) if f.is_integer() else f
            cells[col] = value
        rows.append(cells)
    if not rows:
        raise ValueError(f"path: the spreadsheet {path} is empty")
    width = max((max(r) + 1 for r in rows if r), default=0)
    header = [str(rows[0].get(j, f"column_{j}")) for j in range(width)]
    body = [[r.get(j) for j in range(width)] for r in rows[1:]]
    return pd.DataFrame(body, columns=header)


def voi_metadata(table, image_dir=None):
    """Normalise a per-nodule table into ``metadata.csv`` form: a ``file`` column first.

    The VOI files are named ``<patient_id>_R_<nodule_id>.nii.gz``; a table without a ``file``
    column (the source spreadsheet) gets one built from ``patient_id`` and ``nodule_id``. With
    ``image_dir``, rows whose image is absent are dropped.

    Raises
    ------
    ValueError
        ``metadata``: a required column is missing (named).
    """
    df = table.copy()
    if "file" not in df.columns:
        for col in ("patient_id", "nodule_id"):
            if col not in df.columns:
                raise ValueError(
                    f"metadata: the table has no {col!r} column (nor 'file'); "
                    f"it has {list(df.columns)}"
                )
        df.insert(
            0,
            "file",
            [f"{p}_R_{int(n)}.nii.gz" for p, n in zip(df["patient_id"], df["nodule_id"])],
        )
    for col in ("patient_id", "Malignancy_value"):
        if col not in df.columns:
            raise ValueError(
                f"metadata: the table has no {col!r} column; it has {list(df.columns)}"
            )
    if image_dir is not None:
        present = {p.name for p in Path(image_dir).iterdir()}
        df = df[df["file"].astype(str).isin(present)].reset_index(drop=True)
    return df
