"""``rubikkit info``: what is installed, built and usable on this machine."""

from __future__ import annotations

import importlib
import os
import platform


def _version(name: str) -> str:
    try:
        mod = importlib.import_module(name)
    except Exception as exc:  # noqa: BLE001 - report any import failure as text
        return f"not importable ({type(exc).__name__})"
    return str(getattr(mod, "__version__", "installed"))


def info_dict() -> dict:
    """Versions, extension state, threads and devices as a dict (stable keys, for tests and logs)."""
    import rubikkit
    from rubikkit import _ext

    d: dict = {
        "rubikkit": rubikkit.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
    }
    for name in ("numpy", "torch", "numba", "skimage", "nibabel", "matplotlib"):
        d[name] = _version(name)
    ext, reason = _ext.load()
    d["cpp_extension"] = "built" if ext is not None else f"missing: {reason}"
    if ext is not None:
        d["openmp_threads"] = (
            int(ext.openmp_max_threads()) if hasattr(ext, "openmp_max_threads") else None
        )
        d["cuda_kernels_compiled"] = _ext.cuda_compiled()
        ok, detail = _ext.errors_raise()
        d["cpp_errors_raise"] = True if ok else f"NO: {detail}"
    else:
        d["openmp_threads"] = None
        d["cuda_kernels_compiled"] = False
        d["cpp_errors_raise"] = None
    d["OMP_NUM_THREADS"] = os.environ.get("OMP_NUM_THREADS", "unset")
    d["cpu_count"] = os.cpu_count()
    try:
        import torch

        d["torch_threads"] = torch.get_num_threads()
        d["cuda_available"] = torch.cuda.is_available()
        d["cuda_devices"] = [
            torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())
        ]
    except Exception:  # noqa: BLE001
        d["cuda_available"] = False
        d["cuda_devices"] = []
    d["cuda_kernels_usable"] = bool(d["cuda_kernels_compiled"] and d["cuda_available"])
    return d


def info_text() -> str:
    d = info_dict()
    width = max(len(k) for k in d)
    return "\n".join(f"{k:<{width}} : {v}" for k, v in d.items())


def main(args=None) -> int:  # noqa: ARG001 - signature shared by all sub-commands
    print(info_text())
    return 0
