"""The Rubik's cube puzzle op: validate, then run the one kernel that fits the input.

:func:`puzzle` cuts ``M`` cubes out of every volume, rearranges them and rotates each (Zhuang et
al., MICCAI 2019, Sec. 2.1; the plain definition is :mod:`rubikkit.ops.reference`).
:func:`unpuzzle` puts them back. This module is the single place that decides which code runs
(:func:`backend_for`):

============================  ===========================  =====================================
input                         kernel                       when ``rubikkit._C`` is missing
============================  ===========================  =====================================
numpy array, CPU tensor       C++ (OpenMP), ``_C``         numpy reference, warned once
CUDA tensor                   CUDA, on the current stream  torch slicing on the GPU, warned once
============================  ===========================  =====================================

Python checks every argument and raises ValueError/TypeError naming it; the layout's values
(permutations, rotation codes, cube bounds) are checked in one compiled pass that returns its
message (``rubikkit._C.layout_error``, or :func:`rubikkit.ops.reference.layout_error` without the
extension). The C++ kernels' entry points check shapes and bounds again, so a bad direct call is
an exception, never an out-of-bounds read.

Non-contiguous volumes are passed to the kernels with their strides rather than made contiguous:
a puzzle reads only the cubes (for 64^3 cubes in a 160^3 volume, half of it), so copying the
whole volume first would cost more than the op. The output is always C-contiguous.
"""

from __future__ import annotations

import functools
import sys

import numpy as np

from rubikkit import _ext
from rubikkit.ops import reference
from rubikkit.ops._checks import as_triple, int_array, spatial_shape

# dtypes the kernels move (they copy elements of 1, 2, 4 or 8 bytes, whatever they mean).
NUMPY_DTYPES = tuple(
    np.dtype(t)
    for t in ("float16", "float32", "float64", "int8", "uint8", "int16", "uint16", "int32", "int64")
)
_TORCH_DTYPE_NAMES = (
    "float16",
    "bfloat16",
    "float32",
    "float64",
    "int8",
    "uint8",
    "int16",
    "int32",
    "int64",
)


def _torch():
    """The torch module if it was imported by anyone (we never import it just to look)."""
    return sys.modules.get("torch")


def _is_tensor(x) -> bool:
    torch = _torch()
    return torch is not None and isinstance(x, torch.Tensor)


@functools.cache
def _torch_dtypes() -> frozenset:
    """The torch dtypes the kernels take (only called once torch is imported)."""
    torch = _torch()
    return frozenset(getattr(torch, n) for n in _TORCH_DTYPE_NAMES)


def _kernel_module():
    """``rubikkit._C`` when it provides the puzzle kernels, else None."""
    ext = _ext.extension()
    return ext if ext is not None and hasattr(ext, "puzzle_cpu") else None


def backend_for(volumes) -> str:
    """Which implementation :func:`puzzle` runs for ``volumes``.

    Returns one of ``"cuda"`` (CUDA kernel), ``"cpp"`` (C++ kernel), ``"torch"`` (torch on the
    GPU, fallback) or ``"reference"`` (numpy, fallback).
    """
    ext = _kernel_module()
    if _is_tensor(volumes) and volumes.is_cuda:
        return "cuda" if ext is not None and _ext.cuda_compiled() else "torch"
    return "cpp" if ext is not None else "reference"


# --- validation --------------------------------------------------------------------------------


def _check_volumes(volumes, is_tensor: bool):
    if is_tensor:
        torch = _torch()
        if volumes.dtype not in _torch_dtypes():
            raise TypeError(
                f"volumes: unsupported dtype {volumes.dtype}; supported: {', '.join(_TORCH_DTYPE_NAMES)}"
            )
        if volumes.layout != torch.strided:
            raise TypeError(f"volumes: expected a dense (strided) tensor, got {volumes.layout}")
        if volumes.device.type not in ("cpu", "cuda"):
            raise ValueError(
                f"volumes: tensors on {volumes.device} are not supported (CPU or CUDA)"
            )
    elif isinstance(volumes, np.ndarray):
        if volumes.dtype not in NUMPY_DTYPES:
            raise TypeError(
                f"volumes: unsupported dtype {volumes.dtype}; supported: "
                + ", ".join(str(d) for d in NUMPY_DTYPES)
            )
    else:
        raise TypeError(
            f"volumes: expected a numpy array or a torch tensor, got {type(volumes).__name__}"
        )
    if volumes.ndim != 5:
        raise ValueError(
            f"volumes: expected 5 dimensions (B, C, D, H, W), got shape {tuple(volumes.shape)}"
        )


def _check_layout(origins, perms, rots, B: int, vol_dhw, cube):
    """Validated int64 (B, M, 3) origins, (B, M) perms and rots."""
    o = int_array(origins, "origins", (3, 2))
    if o.ndim == 2:  # one layout for every sample
        o = np.ascontiguousarray(np.broadcast_to(o, (B, *o.shape)))
    if o.shape[0] != B or o.shape[2:] != (3,):
        raise ValueError(
            f"origins: expected shape (B, M, 3) = ({B}, M, 3), got {o.shape} (B from volumes)"
        )
    M = o.shape[1]
    if M < 1:
        raise ValueError("origins: need at least one cube (M >= 1)")
    p = int_array(perms, "perms", 2)
    if p.shape != (B, M):
        raise ValueError(
            f"perms: expected shape (B, M) = ({B}, {M}) (B from volumes, M from origins), "
            f"got {p.shape}"
        )
    if rots is None:
        r = np.zeros((B, M), dtype=np.int64)
    else:
        r = int_array(rots, "rots", 2)
        if r.shape != (B, M):
            raise ValueError(f"rots: expected shape (B, M) = ({B}, {M}), got {r.shape}")
    # The values (permutations, rotation codes, cubes inside the volume) are checked in one pass
    # by the compiled module, which returns the message rather than raising it; in numpy the same
    # checks cost several small-array calls each, as much as a 28^3 puzzle.
    find_error = getattr(_kernel_module(), "layout_error", reference.layout_error)
    error = find_error(o, p, r, vol_dhw, cube)
    if error:
        raise ValueError(error)
    return o, p, r


def _check_out(out, volumes, shape, is_tensor: bool):
    if is_tensor:
        if not _is_tensor(out):
            raise TypeError(
                f"out: volumes is a tensor, so out must be one, got {type(out).__name__}"
            )
        if out.device != volumes.device:
            raise ValueError(f"out: on {out.device}, volumes on {volumes.device}")
        if out.requires_grad:
            # The kernel writes through a raw pointer, outside autograd: the written values would
            # join a graph that knows nothing of them (torch refuses out= with grad likewise).
            raise ValueError(
                "out: requires grad; puzzle writes it outside autograd, so pass a tensor "
                "without requires_grad (or no out)"
            )
        ok = out.is_contiguous()
    else:
        if not isinstance(out, np.ndarray):
            raise TypeError(
                f"out: volumes is a numpy array, so out must be one, got {type(out).__name__}"
            )
        if not out.flags.writeable:
            raise ValueError("out: array is read-only")
        ok = out.flags.c_contiguous
    if out.dtype != volumes.dtype:
        raise TypeError(f"out: dtype {out.dtype} differs from volumes' {volumes.dtype}")
    if tuple(out.shape) != shape:
        raise ValueError(
            f"out: expected shape (B, M, C, d, h, w) = {shape}, got {tuple(out.shape)}"
        )
    if not ok:
        raise ValueError("out: must be C-contiguous")
    if _overlaps(out, volumes, is_tensor):
        raise ValueError("out: shares memory with volumes")


def _overlaps(a, b, is_tensor: bool) -> bool:
    if is_tensor:
        if a.numel() == 0 or b.numel() == 0:
            return False
        a0, b0 = a.data_ptr(), b.data_ptr()
        a1 = a0 + a.numel() * a.element_size()  # out is contiguous
        b_span = sum((s - 1) * abs(st) for s, st in zip(b.shape, b.stride()))
        b1 = b0 + (b_span + 1) * b.element_size()
        return a0 < b1 and b0 < a1
    return bool(np.may_share_memory(a, b))


# --- the op ------------------------------------------------------------------------------------


def _numpy_view(t):
    """A numpy view of a CPU tensor; 2-byte floats travel as int16 (the kernel only moves bits)."""
    torch = _torch()
    t = t.detach()
    if t.dtype in (torch.bfloat16, torch.float16):
        t = t.view(torch.int16)
    return t.numpy()


def puzzle(volumes, origins, cube_size, perms, rots=None, *, out=None):
    """Cut one cube per grid cell, rearrange them and rotate each (the Rubik's cube puzzle).

    Slot ``m`` of sample ``b`` receives the cube of cell ``perms[b, m]``, cut at
    ``origins[b, perms[b, m]]``, then rotated by ``rots[b, m]`` (Zhuang et al., MICCAI 2019,
    Sec. 2.1). Rotation codes: 0 none; 1 horizontal, 180 degrees in the (H, W) plane (reverse H
    and W); 2 vertical, 180 degrees in the (D, H) plane (reverse D and H); 3 both (reverse D and
    W). See :mod:`rubikkit.ops.reference` for the plain definition.

    Parameters
    ----------
    volumes : (B, C, D, H, W) numpy array or torch tensor (CPU or CUDA)
        dtypes float16, bfloat16 (torch), float32, float64, int8, uint8, int16, uint16 (numpy),
        int32, int64; any strides.
    origins : (B, M, 3) int array, or (M, 3) for the same layout in every sample
        Corner (d0, h0, w0) of the cube of each grid cell (cells in C order over (D, H, W)),
        e.g. from :func:`rubikkit.ops.sample_origins`.
    cube_size : int or tuple of 3 ints
        Cube size (d, h, w).
    perms : (B, M) int array
        Each row a permutation of 0..M-1.
    rots : (B, M) int array of codes 0..3, optional
        None means no rotation.
    out : (B, M, C, d, h, w) array or tensor, optional
        C-contiguous buffer of the same kind, dtype and device to write into.

    Returns
    -------
    cubes : (B, M, C, d, h, w) array or tensor
        Same kind, dtype and device as ``volumes`` (``out`` when given). Gradients do not flow
        through the op (it builds proxy-task inputs).

    Raises
    ------
    ValueError, TypeError
        For bad arguments; the message names the argument.
    """
    is_tensor = _is_tensor(volumes)
    _check_volumes(volumes, is_tensor)
    cube = as_triple(cube_size, "cube_size")
    B, C = (int(s) for s in volumes.shape[:2])
    dhw = tuple(int(s) for s in volumes.shape[2:])
    o, p, r = _check_layout(origins, perms, rots, B, dhw, cube)
    shape = (B, o.shape[1], C, *cube)
    if out is None:
        if is_tensor:
            out = _torch().empty(shape, dtype=volumes.dtype, device=volumes.device)
        else:
            out = np.empty(shape, dtype=volumes.dtype)
    else:
        _check_out(out, volumes, shape, is_tensor)

    backend = backend_for(volumes)
    ext = _kernel_module()
    if backend == "cuda":
        torch = _torch()
        dev = volumes.device
        with torch.cuda.device(dev):
            stream = torch.cuda.current_stream(dev).cuda_stream
            ext.puzzle_cuda(
                volumes.data_ptr(),
                list(volumes.shape),
                list(volumes.stride()),
                volumes.element_size(),
                o,
                p,
                r,
                cube,
                out.data_ptr(),
                out.numel(),
                dev.index if dev.index is not None else torch.cuda.current_device(),
                stream,
            )
    elif backend == "cpp":
        if is_tensor:
            ext.puzzle_cpu(_numpy_view(volumes), o, p, r, cube, _numpy_view(out))
        else:
            ext.puzzle_cpu(volumes, o, p, r, cube, out)
    elif backend == "torch":
        _ext.warn_fallback("puzzle (CUDA)", "torch slicing on the GPU")
        from rubikkit.ops._torch_impl import puzzle_torch

        puzzle_torch(volumes.detach(), o, cube, p, r, out=out)
    else:
        _ext.warn_fallback("puzzle", "the numpy reference (rubikkit.ops.reference)")
        if is_tensor:
            res = reference.puzzle(_numpy_view(volumes), o, cube, p, r)
            _numpy_view(out)[...] = res
        else:
            out[...] = reference.puzzle(volumes, o, cube, p, r)
    return out


def unpuzzle(cubes, origins, perms, rots, volume_shape):
    """Put the cubes of :func:`puzzle` back in place, undoing the rotations.

    For pictures and tests: ``unpuzzle(puzzle(x, o, s, p, r), o, p, r, x.shape)`` equals ``x`` on
    every voxel a cube covers. Uncovered voxels (the gaps) are 0; where cubes overlap, the later
    slot wins.

    Parameters
    ----------
    cubes : (B, M, C, d, h, w) numpy array or torch tensor
    origins, perms, rots
        As for :func:`puzzle` (rots may be None).
    volume_shape : tuple of ints
        A shape ending in (D, H, W), e.g. the volumes' shape.

    Returns
    -------
    volumes : (B, C, D, H, W) array or tensor
        Same kind, dtype and device as ``cubes``.
    """
    if not (_is_tensor(cubes) or isinstance(cubes, np.ndarray)):
        raise TypeError(
            f"cubes: expected a numpy array or a torch tensor, got {type(cubes).__name__}"
        )
    if _is_tensor(cubes) and cubes.dtype not in _torch_dtypes():
        raise TypeError(
            f"cubes: unsupported dtype {cubes.dtype}; supported: {', '.join(_TORCH_DTYPE_NAMES)}"
        )
    if cubes.ndim != 6:
        raise ValueError(
            f"cubes: expected 6 dimensions (B, M, C, d, h, w), got shape {tuple(cubes.shape)}"
        )
    B, M = (int(s) for s in cubes.shape[:2])
    cube = tuple(int(s) for s in cubes.shape[3:])
    if min(cube) < 1:
        raise ValueError(f"cubes: empty cube size {cube}")
    dhw = spatial_shape(volume_shape)
    o, p, r = _check_layout(origins, perms, rots, B, dhw, cube)
    if o.shape[1] != M:
        raise ValueError(f"origins: {o.shape[1]} cells but cubes has M = {M}")
    if _is_tensor(cubes):
        from rubikkit.ops._torch_impl import unpuzzle_torch

        return unpuzzle_torch(cubes.detach(), o, p, r, dhw)
    return reference.unpuzzle(cubes, o, p, r, dhw)
