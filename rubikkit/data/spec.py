"""``open_dataset(spec, split, **options)``: one entry point for every dataset.

Specs (``scheme:argument``):

=============================  ====================================================================
``phantoms:hemorrhage``        built-in phantoms (also ``tumour``, ``nodule``); options ``n``,
                               ``size``, ``seed``, ``difficulty``, ``offset`` (:class:`~.phantoms.PhantomDataset`)
``medmnist3d:adrenal``         MedMNIST 3D (``organ``, ``nodule``, ``fracture``, ``vessel``,
                               ``synapse``); options ``size=28|64``, ``root``, ``download``
``lidc:PATH``                  LIDC nodule VOIs (:class:`~.lidc.LIDCNodules`)
``brats:PATH``                 BraTS folders or MSD Task01 (:class:`~.brats.BraTS`)
``nifti:PATH``                 a folder of NIfTI volumes, optional labels CSV
                               (:class:`~.nifti.NiftiFolder`)
=============================  ====================================================================

A relative ``PATH`` is resolved against the data root ``$RUBIKKIT_DATA`` (default
``~/.cache/rubikkit``); ``~`` is expanded. Options given as strings (from a command line,
``--data-option size=64``) are converted with :func:`parse_value`.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["SCHEMES", "data_root", "open_dataset", "parse_spec", "parse_value", "resolve_path"]

SCHEMES = ("phantoms", "medmnist3d", "lidc", "brats", "nifti")
_HOW_TO_GET = {
    "lidc": "Get it with `python data_scripts/lidc_nodules.py --dest {path}`.",
    "brats": "Get it with `python data_scripts/brats.py --source YOUR_BRATS_FOLDER_OR_ARCHIVE "
    "--dest {path}`.",
    "nifti": "Put your own NIfTI files there, or write phantoms there with "
    "`python data_scripts/phantoms.py --dest {path}`.",
}


def data_root() -> Path:
    """The data root: ``$RUBIKKIT_DATA`` or ``~/.cache/rubikkit``."""
    env = os.environ.get("RUBIKKIT_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "rubikkit"


def resolve_path(path: str | os.PathLike) -> Path:
    """Expand ``~``; a relative path is taken under :func:`data_root`."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else data_root() / p


def parse_spec(spec: str) -> tuple[str, str]:
    """``"lidc:some/path"`` -> ``("lidc", "some/path")``; validates the scheme."""
    if not isinstance(spec, str):
        raise TypeError(
            f"spec: expected a string like 'phantoms:hemorrhage', got {type(spec).__name__}"
        )
    scheme, sep, arg = spec.partition(":")
    scheme = scheme.strip().lower()
    if not sep or scheme not in SCHEMES or not arg.strip():
        raise ValueError(
            f"spec: {spec!r} is not a dataset spec; use one of "
            "'phantoms:hemorrhage|tumour|nodule', 'medmnist3d:adrenal', 'lidc:PATH', "
            "'brats:PATH', 'nifti:PATH'"
        )
    return scheme, arg.strip()


def parse_value(text: str):
    """Convert a command-line option value: int, float, bool, None, tuple (``64,64,32``) or str."""
    if not isinstance(text, str):
        return text
    t = text.strip()
    low = t.lower()
    if low in ("true", "yes"):
        return True
    if low in ("false", "no"):
        return False
    if low in ("none", "null"):
        return None
    if "," in t:
        return tuple(parse_value(p) for p in t.split(",") if p.strip())
    for conv in (int, float):
        try:
            return conv(t)
        except ValueError:
            pass
    return t


def open_dataset(spec: str, split: str = "train", **options):
    """Open a dataset by spec; see the module docstring for the specs.

    Parameters
    ----------
    spec : str
        ``scheme:argument``.
    split : {"train", "val", "test", "all"}
        (MedMNIST has no "all".)
    **options
        Passed to the dataset class (string values are converted by :func:`parse_value`).

    Returns
    -------
    torch.utils.data.Dataset
        Items ``{"image": (C, D, H, W) float32, "label" | "mask", "id"}``; attributes
        ``class_names``, ``num_channels``, ``task``, ``labels``, ``class_counts()``.

    Raises
    ------
    ValueError
        Unknown spec or option value.
    FileNotFoundError
        The dataset is not on disk; the message names the data_scripts command that gets it.
    """
    scheme, arg = parse_spec(spec)
    opts = {k: parse_value(v) for k, v in options.items()}
    cls = _dataset_class(scheme)
    _check_options(spec, cls, opts)
    if scheme in ("phantoms", "medmnist3d"):
        return cls(arg, split=split, **opts)
    path = resolve_path(arg)
    if not path.exists():
        how = _HOW_TO_GET[scheme].format(path=path)
        raise FileNotFoundError(f"spec: {spec!r}: {path} does not exist. {how}")
    return cls(path, split=split, **opts)


def _dataset_class(scheme: str):
    if scheme == "phantoms":
        from rubikkit.data.phantoms import PhantomDataset as cls
    elif scheme == "medmnist3d":
        from rubikkit.data.medmnist import MedMNIST3D as cls
    elif scheme == "lidc":
        from rubikkit.data.lidc import LIDCNodules as cls
    elif scheme == "brats":
        from rubikkit.data.brats import BraTS as cls
    else:
        from rubikkit.data.nifti import NiftiFolder as cls
    return cls


def takes_option(spec: str, name: str) -> bool:
    """Whether the dataset class of ``spec`` takes the option ``name`` (e.g. ``progress``)."""
    import inspect

    return name in inspect.signature(_dataset_class(parse_spec(spec)[0]).__init__).parameters


def _check_options(spec: str, cls, opts: dict) -> None:
    """Name an option the dataset does not take, with the ones it does."""
    import inspect

    names = list(inspect.signature(cls.__init__).parameters)
    valid = [n for n in names[2:] if n != "split"]  # skip self and the spec's own argument
    for name in opts:
        if name not in valid:
            raise ValueError(
                f"options: {spec!r} takes no option {name!r}; it takes {', '.join(valid)}"
            )
