"""Volume readers and atomic writers: NIfTI (through nibabel), ``.npy`` and ``.npz``.

Axis convention
---------------
A NIfTI file stores its voxels in index order ``(i, j, k)`` (nibabel's ``get_fdata()`` returns an
array indexed ``[i, j, k]``; ``k`` is the slice index of an axial acquisition, ``i`` usually runs
left-right and ``j`` anterior-posterior). rubikkit works in ``(D, H, W)`` with ``D`` the slice axis, so
every reader here **transposes** ``(i, j, k) -> (k, j, i)``::

    D = k (slices),  H = j (rows),  W = i (columns)

and the voxel spacing ``(si, sj, sk)`` of the header becomes ``spacing = (sk, sj, si)`` in mm, in the
same ``(D, H, W)`` order. This is the order SimpleITK's ``GetArrayFromImage`` uses too. A 4D file
``(i, j, k, c)`` (e.g. the Medical Segmentation Decathlon's multi-modal BraTS) becomes
``(C, D, H, W)``. Voxels are kept as stored (no reorientation) unless ``canonical=True``, which first
reorients to the closest RAS+ orientation with :func:`nibabel.as_closest_canonical`.

Writers never leave a half-written file: they write a temporary file in the destination folder and
``os.replace`` it onto the final name.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import tempfile
import threading
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "Volume",
    "atomic_path",
    "load_nifti",
    "load_npy",
    "load_npz",
    "load_volume",
    "save_nifti",
    "save_npy",
    "save_npz",
]

NIFTI_SUFFIXES = (".nii", ".nii.gz")


@dataclass
class Volume:
    """A volume read from disk.

    Attributes
    ----------
    array : (D, H, W) or (C, D, H, W) ndarray
        Voxels in rubikkit's axis order (see the module docstring for the NIfTI mapping).
    spacing : tuple of float
        Voxel size in mm along (D, H, W); ``(1.0, 1.0, 1.0)`` when the format stores none.
    affine : (4, 4) ndarray or None
        The NIfTI affine (voxel ``(i, j, k)`` to world mm), kept for writing results back.
    path : Path or None
        The file it came from.
    """

    array: np.ndarray
    spacing: tuple[float, float, float]
    affine: np.ndarray | None = None
    path: Path | None = None


def is_nifti(path: str | os.PathLike) -> bool:
    """True when the file name ends in ``.nii`` or ``.nii.gz``."""
    return str(path).lower().endswith(NIFTI_SUFFIXES)


def nifti_stem(path: str | os.PathLike) -> str:
    """File name without ``.nii`` / ``.nii.gz``."""
    name = Path(path).name
    for suffix in (".nii.gz", ".nii"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def load_nifti(
    path: str | os.PathLike, *, dtype=None, canonical: bool = False, mmap: bool = False
) -> Volume:
    """Read a NIfTI file into (D, H, W) (3D) or (C, D, H, W) (4D) order, spacing kept.

    Parameters
    ----------
    path : str or Path
        ``.nii`` or ``.nii.gz`` file.
    dtype : numpy dtype, optional
        Convert the voxels to this dtype (default: the stored dtype, scaling applied when the header
        has a slope/intercept, in which case float64 comes back).
    canonical : bool
        Reorient to the closest RAS+ orientation before transposing.
    mmap : bool
        Let nibabel memory-map an uncompressed file.

    Returns
    -------
    Volume
        ``array`` is ``(D, H, W)`` = ``(k, j, i)``, or ``(C, D, H, W)`` for a 4D file; ``spacing`` is
        ``(sk, sj, si)`` in mm.

    Raises
    ------
    FileNotFoundError
        The file does not exist.
    ValueError
        The file is not a readable NIfTI (corrupt, truncated) or not 3D/4D; the message names it.
    """
    import nibabel as nib

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"path: no such NIfTI file: {path}")
    try:
        img = nib.load(str(path), mmap=mmap)
        if canonical:
            img = nib.as_closest_canonical(img)
        data = np.asanyarray(img.dataobj)
        if dtype is not None:
            data = data.astype(dtype, copy=False)
        zooms = tuple(float(z) for z in img.header.get_zooms())
    except (OSError, EOFError, ValueError, zlib.error, gzip.BadGzipFile) as exc:  # nibabel, gzip
        raise ValueError(
            f"path: cannot read NIfTI file {path} (corrupt or truncated?): {exc}"
        ) from exc
    except Exception as exc:  # nibabel raises its own ImageFileError / HeaderDataError
        raise ValueError(f"path: cannot read NIfTI file {path}: {exc}") from exc
    if data.ndim == 3:
        array = np.ascontiguousarray(data.transpose(2, 1, 0))
    elif data.ndim == 4:
        array = np.ascontiguousarray(data.transpose(3, 2, 1, 0))
    else:
        raise ValueError(f"path: {path} holds a {data.ndim}D image; expected 3D or 4D")
    spacing = (zooms[2], zooms[1], zooms[0]) if len(zooms) >= 3 else (1.0, 1.0, 1.0)
    return Volume(array=array, spacing=spacing, affine=np.asarray(img.affine), path=path)


def load_npy(path: str | os.PathLike, *, mmap: bool = False) -> np.ndarray:
    """Read a ``.npy`` array (no pickles); errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"path: no such file: {path}")
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise ValueError(
            f"path: cannot read .npy file {path} (corrupt or truncated?): {exc}"
        ) from exc


def load_npz(path: str | os.PathLike, keys=None) -> dict[str, np.ndarray]:
    """Read a ``.npz`` archive fully into memory (no pickles).

    Parameters
    ----------
    path : str or Path
        The archive.
    keys : iterable of str, optional
        Keys that must be present; only these are read. Default: every key.

    Returns
    -------
    dict of str to ndarray

    Raises
    ------
    ValueError
        Corrupt or truncated archive, or a required key missing; the message names the file and key.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"path: no such file: {path}")
    try:
        with np.load(path, allow_pickle=False) as z:
            names = list(z.files)
            wanted = names if keys is None else list(keys)
            missing = [k for k in wanted if k not in names]
            if missing:
                raise KeyError(missing)
            return {k: z[k] for k in wanted}
    except KeyError as exc:
        raise ValueError(
            f"path: {path} lacks the key(s) {exc.args[0]}; it has {sorted(names)}"
        ) from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise ValueError(
            f"path: cannot read .npz file {path} (corrupt or truncated?): {exc}"
        ) from exc


def load_volume(path: str | os.PathLike, **kwargs) -> Volume:
    """Read a volume by extension: NIfTI, ``.npy`` or ``.npz`` (key ``image``, optional ``spacing``)."""
    path = Path(path)
    if is_nifti(path):
        return load_nifti(path, **kwargs)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return Volume(array=load_npy(path), spacing=(1.0, 1.0, 1.0), path=path)
    if suffix == ".npz":
        z = load_npz(path)
        if "image" not in z:
            raise ValueError(f"path: {path} has no 'image' array; it has {sorted(z)}")
        spacing = tuple(float(s) for s in z.get("spacing", (1.0, 1.0, 1.0)))
        return Volume(array=z["image"], spacing=spacing, path=path)  # type: ignore[arg-type]
    raise ValueError(
        f"path: unsupported volume format {path.name!r} (use .nii, .nii.gz, .npy, .npz)"
    )


_UMASK_LOCK = threading.Lock()


def _umask() -> int:
    """The process's umask.

    Linux reports it in ``/proc/self/status``, read without touching it. Elsewhere it can only be
    read by setting it and setting it straight back: a file another thread creates in between
    gets the stand-in mask, so that path is a fallback (and serialised among our own writers).
    """
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` atomically.

    On an exception the temporary file is removed and ``path`` is left as it was.
    ``suffix`` is appended to the temporary name (some writers choose the format by it). The file
    gets the mode any new file gets (``0o666`` less the umask), not mkstemp's private ``0o600``,
    so a run or a dataset in a shared folder stays readable by the group.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        os.chmod(tmp_path, 0o666 & ~_umask())
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def save_npy(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Write a ``.npy`` file atomically."""
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, np.asarray(array), allow_pickle=False)
    return path


def save_npz(path: str | os.PathLike, compress: bool = True, **arrays: np.ndarray) -> Path:
    """Write a ``.npz`` archive atomically (compressed by default)."""
    path = Path(path)
    writer = np.savez_compressed if compress else np.savez
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        writer(fh, **{k: np.asarray(v) for k, v in arrays.items()})
    return path


def save_nifti(
    path: str | os.PathLike,
    array: np.ndarray,
    spacing=(1.0, 1.0, 1.0),
    affine: np.ndarray | None = None,
) -> Path:
    """Write a (D, H, W) or (C, D, H, W) array as NIfTI, atomically; the inverse of :func:`load_nifti`.

    Parameters
    ----------
    path : str or Path
        Destination ending in ``.nii`` or ``.nii.gz``.
    array : (D, H, W) or (C, D, H, W) ndarray
        Transposed back to ``(i, j, k)`` / ``(i, j, k, c)`` on disk.
    spacing : tuple of 3 float
        Voxel size in mm along (D, H, W); used when ``affine`` is None.
    affine : (4, 4) ndarray, optional
        World affine of the ``(i, j, k)`` grid (e.g. ``Volume.affine`` of the source).
    """
    import nibabel as nib

    path = Path(path)
    if not is_nifti(path):
        raise ValueError(f"path: a NIfTI file name must end in .nii or .nii.gz, got {path.name!r}")
    array = np.asarray(array)
    if array.ndim == 3:
        data = array.transpose(2, 1, 0)
    elif array.ndim == 4:
        data = array.transpose(3, 2, 1, 0)
    else:
        raise ValueError(f"array: expected (D, H, W) or (C, D, H, W), got shape {array.shape}")
    if len(tuple(spacing)) != 3:
        raise ValueError(f"spacing: expected 3 values (D, H, W), got {spacing!r}")
    if affine is None:
        sd, sh, sw = (float(s) for s in spacing)
        affine = np.diag([sw, sh, sd, 1.0])
    if data.dtype == np.bool_:
        data = data.astype(np.uint8)
    elif data.dtype.kind in "iu" and data.dtype.itemsize == 8:
        # NIfTI tools rarely read 64-bit integers (nibabel refuses them): store int32 when it fits
        lo, hi = (int(data.min()), int(data.max())) if data.size else (0, 0)
        info = np.iinfo(np.int32)
        if lo < info.min or hi > info.max:
            raise ValueError(f"array: 64-bit integers outside the int32 range ({lo}..{hi})")
        data = data.astype(np.int32)
    img = nib.Nifti1Image(np.ascontiguousarray(data), affine)
    suffix = ".nii.gz" if str(path).lower().endswith(".gz") else ".nii"
    with atomic_path(path, suffix=suffix) as tmp:
        nib.save(img, str(tmp))
    return path
