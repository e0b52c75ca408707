"""Loading of the compiled extension ``rubikkit._C``: the one place that knows whether it exists.

A missing extension is announced once with a :class:`rubikkit.RubikkitWarning` naming the fallback,
and is visible in ``rubikkit info``; it is never a silent fallback.
"""

from __future__ import annotations

import functools
import importlib
import signal
import subprocess
import sys
import warnings
from pathlib import Path

from rubikkit import RubikkitWarning

_warned: set[str] = set()


@functools.cache
def load() -> tuple[object | None, str | None]:
    """Return ``(module, None)`` when ``rubikkit._C`` imports, else ``(None, reason)``."""
    try:
        return importlib.import_module("rubikkit._C"), None
    except ImportError as exc:  # not built, or built for another Python
        return None, missing_reason(exc, Path(__file__).parent)


def missing_reason(exc: ImportError, package_dir: Path) -> str:
    """Why ``rubikkit._C`` did not import, said so that a user knows what to do.

    "No module named 'rubikkit._C'" alone does not tell a module never built from one built for
    another Python (a ``_C.cpython-310-*.so`` that a 3.11 interpreter does not look for).
    """
    if not (isinstance(exc, ModuleNotFoundError) and exc.name == "rubikkit._C"):
        return f"{type(exc).__name__}: {exc}"  # the module is there but does not load
    others = sorted(p.name for p in Path(package_dir).glob("_C.*") if p.suffix in (".so", ".pyd"))
    if others:
        return (
            f"not built for Python {sys.version_info.major}.{sys.version_info.minor}: "
            f"{package_dir} holds only {', '.join(others)}"
        )
    return (
        f"not built: no compiled _C module in {package_dir} (installed with RUBIKKIT_NO_EXT=1, "
        "or a checkout where `make build` has not run)"
    )


def extension():
    """The ``rubikkit._C`` module, or None."""
    return load()[0]


def cuda_compiled() -> bool:
    """True when ``rubikkit._C`` was built with the CUDA kernels."""
    ext = extension()
    return bool(ext is not None and getattr(ext, "with_cuda", lambda: False)())


# A bad direct call: the C++ layer must raise ValueError (origins out of bounds) before it reads a
# byte. Printed: the outcome, then which libstdc++ the process mapped (the usual suspect).
_ERROR_PROBE = """
import numpy as np
import rubikkit._C as C
try:
    C.puzzle_cpu(np.zeros((1, 1, 4, 4, 4), np.float32), np.full((1, 8, 3), 9, np.int64),
                 np.zeros((1, 8), np.int64), np.zeros((1, 8), np.int64), (2, 2, 2),
                 np.zeros((1, 8, 1, 2, 2, 2), np.float32))
except ValueError:
    print("raised")
try:
    with open("/proc/self/maps") as fh:  # Linux only
        libs = ", ".join(sorted({ln.split()[-1] for ln in fh if "libstdc++" in ln})) or "none mapped"
except OSError:
    libs = "not known here"
print("libstdc++:", libs)
"""


@functools.cache
def errors_raise() -> tuple[bool, str]:
    """Whether a C++ error in ``rubikkit._C`` reaches Python as an exception, tried in a child.

    Returns ``(ok, detail)``. A build whose C++ exceptions cannot unwind (seen on one GPU machine:
    the module linked without libstdc++ and a bad direct call killed the interpreter) gives
    ``False`` and the way the child ended. The Python layer checks every argument before the
    kernels run, so such a build still computes correctly; only direct calls of ``rubikkit._C``
    with bad arguments crash.
    """
    if extension() is None:
        return False, "rubikkit._C is not built"
    proc = subprocess.run(
        [sys.executable, "-c", _ERROR_PROBE], capture_output=True, text=True, timeout=120
    )
    libs = next((ln for ln in proc.stdout.splitlines() if ln.startswith("libstdc++:")), "")
    if proc.returncode == 0 and proc.stdout.startswith("raised"):
        return True, libs
    if proc.returncode < 0:
        how = f"died with {signal.Signals(-proc.returncode).name}"
    else:
        how = f"ended with status {proc.returncode} without raising ValueError"
    tail = proc.stderr.strip().splitlines()[-1:] or [""]
    return False, f"a bad direct call of rubikkit._C.puzzle_cpu {how}; {libs} {tail[0]}".strip()


def warn_fallback(op: str, fallback: str) -> None:
    """Warn once per op that the compiled kernel is missing and which fallback runs instead."""
    if op in _warned:
        return
    _warned.add(op)
    reason = load()[1] or "the extension lacks this kernel"
    warnings.warn(
        f"rubikkit: compiled kernel for {op!r} unavailable ({reason}); using {fallback}. "
        "Build it with `make build` in a checkout, or reinstall rubikkit where a C++17 compiler "
        "(and nvcc, for the CUDA kernels) is found: see the README's Installation details; "
        "`rubikkit info` shows the state.",
        RubikkitWarning,
        stacklevel=3,
    )
