"""Loading of the compiled extension ``rubikkit._C``: the one place that knows whether it exists.

A missing extension is announced once with a :class:`rubikkit.RubikkitWarning` naming the fallback,
and is visible in ``rubikkit info``; it is never a silent fallback.
"""

from __future__ import annotations

import functools
import importlib
import warnings

from rubikkit import RubikkitWarning

_warned: set[str] = set()


@functools.cache
def load() -> tuple[object | None, str | None]:
    """Return ``(module, None)`` when ``rubikkit._C`` imports, else ``(None, reason)``."""
    try:
        return importlib.import_module("rubikkit._C"), None
    except ImportError as exc:  # not built, or built for another Python
        return None, f"{type(exc).__name__}: {exc}"


def extension():
    """The ``rubikkit._C`` module, or None."""
    return load()[0]


def cuda_compiled() -> bool:
    """True when ``rubikkit._C`` was built with the CUDA kernels."""
    ext = extension()
    return bool(ext is not None and getattr(ext, "with_cuda", lambda: False)())


def warn_fallback(op: str, fallback: str) -> None:
    """Warn once per op that the compiled kernel is missing and which fallback runs instead."""
    if op in _warned:
        return
    _warned.add(op)
    reason = load()[1] or "the extension lacks this kernel"
    warnings.warn(
        f"rubikkit: compiled kernel for {op!r} unavailable ({reason}); using {fallback}. "
        "Build it with `make build` (or `pip install -e .`); `rubikkit info` shows the state.",
        RubikkitWarning,
        stacklevel=3,
    )
