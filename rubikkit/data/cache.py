"""A small cache for preprocessed arrays: in memory for the process, and as an npz on disk.

Keys are dicts of everything that determines the result (parameters, a code version, the source
files' names, sizes and modification times); their SHA-1 names the file
``<cache_dir>/<prefix>-<sha1[:16]>.npz``, written atomically. A cache folder that cannot be
written (a read-only data root) is warned about once per file and the arrays stay in memory.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

from rubikkit.data.io import load_npz, save_npz

__all__ = ["cached_arrays", "file_fingerprint"]

_MEMORY: dict[str, dict[str, np.ndarray]] = {}


def file_fingerprint(paths) -> list:
    """``[name, size, mtime]`` of each file, for cache keys."""
    out = []
    for p in paths:
        st = os.stat(p)
        out.append([Path(p).name, st.st_size, int(st.st_mtime)])
    return out


def cached_arrays(
    prefix: str,
    key: dict,
    compute: Callable[[], dict[str, np.ndarray]],
    cache_dir: str | os.PathLike | None,
) -> dict[str, np.ndarray]:
    """Return ``compute()``'s arrays, from memory or ``cache_dir`` when computed before.

    ``cache_dir=None`` keeps the result in memory only. A corrupt cache file is recomputed; one
    that cannot be written is warned about (the result is still returned).
    """
    digest = hashlib.sha1(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
    name = f"{prefix}-{digest}"
    if name in _MEMORY:
        return _MEMORY[name]
    path = Path(cache_dir) / f"{name}.npz" if cache_dir is not None else None
    arrays = None
    if path is not None and path.is_file():
        try:
            arrays = load_npz(path)
        except ValueError:
            arrays = None  # corrupt: recompute and overwrite
    if arrays is None:
        arrays = compute()
        if path is not None:
            try:
                save_npz(path, compress=False, **arrays)
            except OSError as exc:
                warnings.warn(
                    f"cache_dir: cannot write {path} ({exc}); the arrays stay in memory only "
                    "(pass a writable cache_dir, or cache_dir=False)",
                    stacklevel=3,
                )
    _MEMORY[name] = arrays
    return arrays


def clear_memory_cache() -> None:
    """Forget arrays cached in this process."""
    _MEMORY.clear()
