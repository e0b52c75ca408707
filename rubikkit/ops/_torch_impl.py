"""The puzzle written the way one would in plain torch (slice + flip per cube).

Two uses: the fallback for CUDA tensors when ``rubikkit._C`` lacks the CUDA kernel (it runs on the
tensors' device), and the "idiomatic torch" line of ``benchmarks/puzzle.py``. Arguments are
assumed validated (see :func:`rubikkit.ops.puzzle`).
"""

from __future__ import annotations

from rubikkit.ops.rotations import reversed_axes


def puzzle_torch(volumes, origins, cube_size, perms, rots, out=None):
    """(B, C, D, H, W) tensor -> (B, M, C, d, h, w) tensor; origins/perms/rots int numpy arrays."""
    import torch

    d, h, w = cube_size
    B, C = volumes.shape[:2]
    M = perms.shape[1]
    if out is None:
        out = torch.empty((B, M, C, d, h, w), dtype=volumes.dtype, device=volumes.device)
    for b in range(B):
        for m in range(M):
            d0, h0, w0 = (int(v) for v in origins[b, perms[b, m]])
            cube = volumes[b, :, d0 : d0 + d, h0 : h0 + h, w0 : w0 + w]
            axes = [1 + a for a in reversed_axes(int(rots[b, m]))]
            out[b, m] = torch.flip(cube, axes) if axes else cube
    return out


def unpuzzle_torch(cubes, origins, perms, rots, volume_shape):
    """Inverse of :func:`puzzle_torch` (uncovered voxels 0; later slots win on overlap)."""
    import torch

    B, M, C, d, h, w = cubes.shape
    D, H, W = volume_shape
    volumes = torch.zeros((B, C, D, H, W), dtype=cubes.dtype, device=cubes.device)
    for b in range(B):
        for m in range(M):
            d0, h0, w0 = (int(v) for v in origins[b, perms[b, m]])
            axes = [1 + a for a in reversed_axes(int(rots[b, m]))]
            cube = cubes[b, m]
            volumes[b, :, d0 : d0 + d, h0 : h0 + h, w0 : w0 + w] = (
                torch.flip(cube, axes) if axes else cube
            )
    return volumes
