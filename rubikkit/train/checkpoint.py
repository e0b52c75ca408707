"""Checkpoints: written atomically, read with ``torch.load(weights_only=True)``, resumable.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts (nothing that needs
unpickling arbitrary classes)::

    {"model": state_dict, "optimizer": state_dict, "scaler": state_dict | None,
     "step": int,              # optimiser steps done
     "epoch": int,             # epochs completed
     "batch": int,             # batches done in the epoch under way (0 at an epoch boundary)
     "config": dict,           # the run's config.json (config["backbone"] rebuilds the backbone)
     "rng": dict,              # generator states (see :func:`rng_state`)
     "best": dict, "world_size": int}

Writing goes to a temporary file in the same folder which then replaces the target with
``os.replace`` (atomic on POSIX and Windows): a crash or a full disk during a save leaves the
previous checkpoint intact, never a truncated one.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch

from rubikkit.data.io import atomic_path

__all__ = [
    "load_checkpoint",
    "restore_rng_state",
    "rng_state",
    "save_checkpoint",
]


def save_checkpoint(state: dict, path: str | os.PathLike) -> Path:
    """Write ``state`` to ``path`` atomically (temporary file + ``os.replace``).

    Parameters
    ----------
    state : dict
        Tensors, numbers, strings, lists and dicts only, so that it loads with
        ``weights_only=True``.
    path : path-like
        Target file; its folder is created if needed.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    if not isinstance(state, dict):
        raise TypeError(f"state: expected a dict, got {type(state).__name__}")
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        torch.save(state, fh)
        fh.flush()
        os.fsync(fh.fileno())
    return path


def load_checkpoint(path: str | os.PathLike, map_location="cpu", name: str = "checkpoint") -> dict:
    """Read a checkpoint with ``torch.load(weights_only=True)`` (no arbitrary code on load).

    Parameters
    ----------
    path : path-like
    map_location : device or str
        Where tensors go (default CPU).
    name : str
        Argument name used in error messages (``init``, ``resume``, ``checkpoint``).

    Raises
    ------
    FileNotFoundError
        No file at ``path``.
    ValueError
        The file is not a rubikkit checkpoint (unreadable, or not a dict with a ``model``).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{name}: no checkpoint file at {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - unreadable or unsafe pickle, reported uniformly
        # torch's own message can be as bare as a number (KeyError: 174812789 for a text file).
        raise ValueError(
            f"{name}: cannot read {path} as a weights-only checkpoint (a torch.save file, such as "
            f"a run's best.pt): {type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(state, dict) or "model" not in state:
        raise ValueError(f"{name}: {path} is not a rubikkit checkpoint (no 'model' entry)")
    return state


def _generator_state(gen: torch.Generator | None):
    return None if gen is None else gen.get_state()


def rng_state(generators: dict[str, torch.Generator] | None = None) -> dict:
    """Every random state a training step may touch, in a weights-only-loadable form.

    Parameters
    ----------
    generators : dict of name -> torch.Generator, optional
        The run's own generators (task sampling, data order); saved as byte tensors.

    Returns
    -------
    dict
        ``torch`` (global CPU state), ``cuda`` (list, one per device, when CUDA is initialised),
        ``numpy`` (legacy global MT19937 key and position), ``python`` (``random`` state) and
        ``generators``.
    """
    # The legacy global generator is saved on purpose: library code (augmentations, third-party
    # transforms) may still draw from it, and a resumed run must see the same numbers.
    np_state = np.random.get_state()  # noqa: NPY002
    py_version, py_internal, py_gauss = random.getstate()
    out = {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
        "numpy": {
            "key": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": {
            "version": int(py_version),
            "internal": torch.tensor(py_internal, dtype=torch.int64),
            "gauss": py_gauss,
        },
        "generators": {k: _generator_state(g) for k, g in (generators or {}).items()},
    }
    return out


def restore_rng_state(state: dict, generators: dict[str, torch.Generator] | None = None) -> None:
    """Undo :func:`rng_state`: set the global states and those of ``generators`` (by name).

    A CUDA state saved on a machine with a different number of devices is skipped for the
    devices that are missing.
    """
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available():
        for i, s in enumerate(cuda[: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(s, i)
    np_s = state["numpy"]
    np.random.set_state(  # noqa: NPY002
        (
            "MT19937",
            np_s["key"].numpy().astype(np.uint32),
            int(np_s["pos"]),
            int(np_s["has_gauss"]),
            float(np_s["cached_gaussian"]),
        )
    )
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["internal"].tolist()), py["gauss"]))
    saved = state.get("generators") or {}
    for name, gen in (generators or {}).items():
        if saved.get(name) is not None:
            gen.set_state(saved[name])
