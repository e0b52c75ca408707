"""numba kernels behind :mod:`rubikkit.slic.slic` (they compute; the Python layer validates).

Every kernel takes C-contiguous arrays of fixed dtypes (float32 images, float64 centres, int32
labels, uint8 masks) so that each compiles once and is cached on disk (``cache=True``).

Layout conventions
------------------
* ``img``: (C, D, H, W) float32, already rescaled to [0, 1] and divided by the compactness, so the
  squared colour distance is the colour term of SLIC's distance.
* ``centres``: (K, 3 + C) float64, rows (d, h, w, colour_0, ..., colour_{C-1}).
* Internal labels are 0-based centre indices, -1 meaning "unassigned" (or outside the mask).

Parallel scheme of the assignment step
--------------------------------------
The (D, H) plane is cut into tiles of about one grid step; a tile spans the whole W axis. Each
tile is owned by exactly one thread, which gathers the centres whose search window can reach the
tile (centres are binned by their (d, h) position first), and for every such centre sweeps the
intersection of its window with the tile, keeping the best distance and label in tile-local
buffers. Nothing is shared between threads, so the result does not depend on the thread count.
Right after a tile is labelled its voxels are added to per-chunk partial sums (coordinates,
colours, counts), which are reduced once per iteration to update the centres.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange, uint64

_INF32 = np.float32(np.inf)


@njit(cache=True)
def _bin_centres(centres, tz, ty, nbz, nby):
    """Counting sort of the centres into (d, h) bins of size (tz, ty): (starts, items)."""
    k = centres.shape[0]
    nb = nbz * nby
    counts = np.zeros(nb + 1, np.int64)
    which = np.empty(k, np.int64)
    for i in range(k):
        bz = int(centres[i, 0] // tz)
        by = int(centres[i, 1] // ty)
        bz = min(max(bz, 0), nbz - 1)
        by = min(max(by, 0), nby - 1)
        b = bz * nby + by
        which[i] = b
        counts[b + 1] += 1
    for b in range(nb):
        counts[b + 1] += counts[b]
    fill = counts[:-1].copy()
    items = np.empty(k, np.int64)
    for i in range(k):  # increasing i, so each bin lists its centres in increasing order
        b = which[i]
        items[fill[b]] = i
        fill[b] += 1
    return counts, items


@njit(cache=True, inline="always")
def _sweep_row(flat, ioff, dist, doff, lab, n, base, fsx, fcx0, fsw, c0, kk, use_col):
    """One row of a window: ``n`` voxels from ``flat[ioff]`` / ``dist[doff]`` on.

    Unsigned indices and a zero-based loop let LLVM vectorise the loop (no negative-index
    wrap-around checks); the selects keep it branch-free.
    """
    for x in range(n):
        dx = fsx * (fcx0 - np.float32(x))
        d = base + dx * dx * fsw
        if use_col:
            t = flat[uint64(ioff + x)] - c0
            d += t * t
        di = uint64(doff + x)
        old = dist[di]
        better = d < old
        dist[di] = d if better else old
        lab[di] = kk if better else lab[di]


@njit(cache=True)
def _sweep_tile(
    img,
    centres,
    cand,
    n_cand,
    ncol,
    window,
    sz,
    sy,
    sx,
    sw,
    z_lo,
    z_hi,
    y_lo,
    y_hi,
    dist,
    lab,
):
    """Label one tile: every candidate centre sweeps its window clipped to the tile."""
    depth = img.shape[1]
    height = img.shape[2]
    width = img.shape[3]
    plane = depth * height * width
    flat = img.reshape(-1)
    ty = y_hi - y_lo
    fsx = np.float32(sx)
    fsw = np.float32(sw)
    for ci in range(n_cand):
        k = cand[ci]
        cz = centres[k, 0]
        cy = centres[k, 1]
        cx = centres[k, 2]
        # Window [c - window, c + window] in voxels, clipped to the volume as SLIC does.
        z0 = max(int(max(cz - window, 0.0)), z_lo)
        z1 = min(int(min(cz + window + 1.0, depth)), z_hi)
        y0 = max(int(max(cy - window, 0.0)), y_lo)
        y1 = min(int(min(cy + window + 1.0, height)), y_hi)
        x0 = int(max(cx - window, 0.0))
        x1 = int(min(cx + window + 1.0, width))
        if z0 >= z1 or y0 >= y1 or x0 >= x1:
            continue
        n = x1 - x0
        fcx0 = np.float32(cx - x0)  # centre position relative to the row start
        kk = np.int32(k)
        for z in range(z0, z1):
            dz = sz * (cz - z)
            for y in range(y0, y1):
                dy = sy * (cy - y)
                base = np.float32((dz * dz + dy * dy) * sw)
                doff = ((z - z_lo) * ty + (y - y_lo)) * width + x0
                ioff = (z * height + y) * width + x0
                if ncol == 0:
                    _sweep_row(flat, ioff, dist, doff, lab, n, base, fsx, fcx0, fsw, 0.0, kk, False)
                elif ncol == 1:
                    c0 = np.float32(centres[k, 3])
                    _sweep_row(flat, ioff, dist, doff, lab, n, base, fsx, fcx0, fsw, c0, kk, True)
                else:
                    for x in range(n):
                        dx = fsx * (fcx0 - np.float32(x))
                        d = base + dx * dx * fsw
                        for c in range(ncol):
                            t = flat[c * plane + ioff + x] - np.float32(centres[k, 3 + c])
                            d += t * t
                        if d < dist[doff + x]:
                            dist[doff + x] = d
                            lab[doff + x] = kk


@njit(cache=True, parallel=True)
def slic_iterate(
    img,
    mask,
    use_mask,
    centres,
    labels,
    n_iter,
    ncol,
    window,
    spacing,
    step,
    tz,
    ty,
    n_chunks,
):
    """Run up to ``n_iter`` SLIC iterations (assign, then update the centres) in place.

    Parameters
    ----------
    img : (C, D, H, W) float32
    mask : (D, H, W) uint8, used when ``use_mask``
    centres : (K, 3 + C) float64, updated in place (the centres of the last assignment's update)
    labels : (D, H, W) int32, in: previous assignment (-1: none), out: last assignment
    n_iter : int, maximum number of assignment steps
    ncol : int, colour channels used in the distance (0: spatial-only k-means, as maskSLIC's seeding)
    window : float, half-width of each centre's search window, in voxels
    spacing : (3,) float64 voxel spacing weighting the spatial distance
    step : float, grid step S; the spatial term is divided by S**2
    tz, ty : int, tile size along D and H
    n_chunks : int, number of partial-sum buffers (>= the number of threads for a good balance)

    Returns
    -------
    int, the number of assignment steps run (fewer than ``n_iter`` when the labels stopped changing)
    """
    n_ch = img.shape[0]
    depth = img.shape[1]
    height = img.shape[2]
    width = img.shape[3]
    k_tot = centres.shape[0]
    nbz = (depth + tz - 1) // tz
    nby = (height + ty - 1) // ty
    n_tiles = nbz * nby
    n_chunks = max(1, min(n_chunks, n_tiles))
    nf = 3 + n_ch + 1  # d, h, w, colours, count
    sz = spacing[0]
    sy = spacing[1]
    sx = spacing[2]
    sw = 1.0 / (step * step)
    # How many bins away a centre may sit and still reach a tile with its window.
    rz = int(window // tz) + 2
    ry = int(window // ty) + 2
    partial = np.zeros((n_chunks, k_tot, nf), np.float64)
    changes = np.zeros(n_chunks, np.int64)
    iters = 0
    for it in range(n_iter):
        starts, items = _bin_centres(centres, tz, ty, nbz, nby)
        partial[:] = 0.0
        changes[:] = 0
        for ch in prange(n_chunks):
            t_begin = ch * n_tiles // n_chunks
            t_end = (ch + 1) * n_tiles // n_chunks
            cand = np.empty(k_tot, np.int64)
            dist = np.empty(tz * ty * width, np.float32)
            lab = np.empty(tz * ty * width, np.int32)
            for t in range(t_begin, t_end):
                bz = t // nby
                by = t - bz * nby
                z_lo = bz * tz
                z_hi = min(z_lo + tz, depth)
                y_lo = by * ty
                y_hi = min(y_lo + ty, height)
                n_tz = z_hi - z_lo
                n_ty = y_hi - y_lo
                # Candidate centres, in increasing index so that ties go to the lowest index.
                n_cand = 0
                for qz in range(max(bz - rz, 0), min(bz + rz + 1, nbz)):
                    for qy in range(max(by - ry, 0), min(by + ry + 1, nby)):
                        q = qz * nby + qy
                        for j in range(starts[q], starts[q + 1]):
                            cand[n_cand] = items[j]
                            n_cand += 1
                cand[:n_cand].sort()
                # Voxels outside the mask get a distance no centre can beat.
                for z in range(n_tz):
                    for y in range(n_ty):
                        off = (z * n_ty + y) * width
                        for x in range(width):
                            lab[off + x] = labels[z_lo + z, y_lo + y, x]
                            if use_mask and mask[z_lo + z, y_lo + y, x] == 0:
                                dist[off + x] = -1.0
                            else:
                                dist[off + x] = _INF32
                _sweep_tile(
                    img,
                    centres,
                    cand,
                    n_cand,
                    ncol,
                    window,
                    sz,
                    sy,
                    sx,
                    sw,
                    z_lo,
                    z_hi,
                    y_lo,
                    y_hi,
                    dist,
                    lab,
                )
                # Write back, count changes and add the tile to this chunk's partial sums.
                for z in range(n_tz):
                    for y in range(n_ty):
                        off = (z * n_ty + y) * width
                        for x in range(width):
                            k = lab[off + x]
                            if k != labels[z_lo + z, y_lo + y, x]:
                                changes[ch] += 1
                                labels[z_lo + z, y_lo + y, x] = k
                            if k < 0:
                                continue
                            partial[ch, k, 0] += z_lo + z
                            partial[ch, k, 1] += y_lo + y
                            partial[ch, k, 2] += x
                            for c in range(n_ch):
                                partial[ch, k, 3 + c] += img[c, z_lo + z, y_lo + y, x]
                            partial[ch, k, nf - 1] += 1.0
        iters += 1
        if changes.sum() == 0 or it == n_iter - 1:
            # Unchanged labels would give the same centres again; the last update is unused.
            break
        for k in range(k_tot):
            cnt = 0.0
            for ch in range(n_chunks):
                cnt += partial[ch, k, nf - 1]
            if cnt == 0.0:
                continue  # an empty cluster keeps its centre
            for f in range(3 + n_ch):
                s = 0.0
                for ch in range(n_chunks):
                    s += partial[ch, k, f]
                centres[k, f] = s / cnt
    return iters


@njit(cache=True, parallel=True)
def update_centres(img, labels, centres, n_chunks):
    """Set every non-empty centre to the mean position and colour of its voxels (labels >= 0)."""
    n_ch = img.shape[0]
    depth = img.shape[1]
    height = img.shape[2]
    width = img.shape[3]
    k_tot = centres.shape[0]
    nf = 3 + n_ch + 1
    n_chunks = max(1, min(n_chunks, depth))
    partial = np.zeros((n_chunks, k_tot, nf), np.float64)
    for ch in prange(n_chunks):
        for z in range(ch * depth // n_chunks, (ch + 1) * depth // n_chunks):
            for y in range(height):
                for x in range(width):
                    k = labels[z, y, x]
                    if k < 0:
                        continue
                    partial[ch, k, 0] += z
                    partial[ch, k, 1] += y
                    partial[ch, k, 2] += x
                    for c in range(n_ch):
                        partial[ch, k, 3 + c] += img[c, z, y, x]
                    partial[ch, k, nf - 1] += 1.0
    for k in range(k_tot):
        cnt = 0.0
        for ch in range(n_chunks):
            cnt += partial[ch, k, nf - 1]
        if cnt == 0.0:
            continue
        for f in range(3 + n_ch):
            s = 0.0
            for ch in range(n_chunks):
                s += partial[ch, k, f]
            centres[k, f] = s / cnt


@njit(cache=True, parallel=True)
def assign_leftovers(img, mask, use_mask, centres, labels, ncol, spacing, step):
    """Give every unlabelled voxel (inside the mask) its nearest centre over all centres.

    A voxel is unlabelled when no centre's window reached it, which the windows make rare; it then
    goes to the centre of least SLIC distance. Returns the number of voxels so labelled.
    """
    depth = labels.shape[0]
    height = labels.shape[1]
    width = labels.shape[2]
    k_tot = centres.shape[0]
    sw = 1.0 / (step * step)
    fixed = np.zeros(depth, np.int64)
    for z in prange(depth):
        for y in range(height):
            for x in range(width):
                if labels[z, y, x] >= 0 or (use_mask and mask[z, y, x] == 0):
                    continue
                best = np.inf
                best_k = 0
                for k in range(k_tot):
                    dz = spacing[0] * (centres[k, 0] - z)
                    dy = spacing[1] * (centres[k, 1] - y)
                    dx = spacing[2] * (centres[k, 2] - x)
                    d = (dz * dz + dy * dy + dx * dx) * sw
                    for c in range(ncol):
                        t = img[c, z, y, x] - centres[k, 3 + c]
                        d += t * t
                    if d < best:
                        best = d
                        best_k = k
                labels[z, y, x] = best_k
                fixed[z] += 1
    return fixed.sum()


@njit(cache=True)
def enforce_connectivity(labels, min_size, max_size, start_label):
    """Relabel 6-connected components of ``labels`` (>= 0; -1 stays outside) from ``start_label``.

    Scanning in raster order, each new component is grown breadth-first up to ``max_size`` voxels
    (a larger region is cut into several components). A component smaller than ``min_size`` joins
    the last already-numbered component it touches (Achanta et al.'s post-processing); one with no
    such neighbour keeps a label of its own. Every output label is therefore one connected
    component, and the labels run contiguously from ``start_label``; voxels at -1 get 0.

    Returns
    -------
    (D, H, W) int32
    """
    depth = labels.shape[0]
    height = labels.shape[1]
    width = labels.shape[2]
    out = np.full((depth, height, width), -1, np.int32)
    max_size = max(max_size, 1)
    queue = np.empty((max_size, 3), np.int64)
    # Neighbour order w, h, d (as scikit-image): it decides which neighbour a fragment joins.
    dz6 = (0, 0, 0, 0, 1, -1)
    dy6 = (0, 0, 1, -1, 0, 0)
    dx6 = (1, -1, 0, 0, 0, 0)
    new_label = start_label
    for z in range(depth):
        for y in range(height):
            for x in range(width):
                lab = labels[z, y, x]
                if lab < 0 or out[z, y, x] >= 0:
                    continue
                out[z, y, x] = new_label
                queue[0, 0] = z
                queue[0, 1] = y
                queue[0, 2] = x
                size = 1
                head = 0
                adjacent = -1
                while head < size and size < max_size:
                    qz = queue[head, 0]
                    qy = queue[head, 1]
                    qx = queue[head, 2]
                    head += 1
                    for i in range(6):
                        nz = qz + dz6[i]
                        ny = qy + dy6[i]
                        nx = qx + dx6[i]
                        if nz < 0 or nz >= depth or ny < 0 or ny >= height or nx < 0:
                            continue
                        if nx >= width:
                            continue
                        o = out[nz, ny, nx]
                        if o < 0 and labels[nz, ny, nx] == lab:
                            out[nz, ny, nx] = new_label
                            queue[size, 0] = nz
                            queue[size, 1] = ny
                            queue[size, 2] = nx
                            size += 1
                            if size >= max_size:
                                break
                        elif o >= 0 and o != new_label:
                            adjacent = o
                if size < min_size and adjacent >= 0:
                    for i in range(size):
                        out[queue[i, 0], queue[i, 1], queue[i, 2]] = adjacent
                else:
                    new_label += 1
    for z in range(depth):
        for y in range(height):
            for x in range(width):
                if out[z, y, x] < 0:
                    out[z, y, x] = 0
    return out


@njit(cache=True)
def compact_labels(labels, k_tot, start_label):
    """Number the used centre indices (>= 0) contiguously from ``start_label``; -1 becomes 0."""
    used = np.zeros(k_tot, np.int64)
    flat = labels.ravel()
    for i in range(flat.size):
        if flat[i] >= 0:
            used[flat[i]] = 1
    new = np.empty(k_tot, np.int32)
    nxt = start_label
    for k in range(k_tot):
        new[k] = nxt
        nxt += used[k]
    out = np.empty(flat.size, np.int32)
    for i in range(flat.size):
        out[i] = new[flat[i]] if flat[i] >= 0 else 0
    return out.reshape(labels.shape)


@njit(cache=True)
def label_stats(img, labels, n_labels):
    """One pass over the voxels: per label count, coordinate sums, colour sums and squares, boxes.

    Parameters
    ----------
    img : (C, D, H, W) float64
    labels : (D, H, W) int32 with values in [0, n_labels)

    Returns
    -------
    count (L,) int64, coord_sum (L, 3) float64, col_sum (L, C), col_sq (L, C), lo (L, 3), hi (L, 3)
    (``hi`` exclusive), where L = n_labels.
    """
    n_ch = img.shape[0]
    depth = labels.shape[0]
    height = labels.shape[1]
    width = labels.shape[2]
    count = np.zeros(n_labels, np.int64)
    coord = np.zeros((n_labels, 3), np.float64)
    csum = np.zeros((n_labels, n_ch), np.float64)
    csq = np.zeros((n_labels, n_ch), np.float64)
    lo = np.full((n_labels, 3), np.iinfo(np.int64).max, np.int64)
    hi = np.full((n_labels, 3), -1, np.int64)
    for z in range(depth):
        for y in range(height):
            for x in range(width):
                k = labels[z, y, x]
                count[k] += 1
                coord[k, 0] += z
                coord[k, 1] += y
                coord[k, 2] += x
                for c in range(n_ch):
                    v = img[c, z, y, x]
                    csum[k, c] += v
                    csq[k, c] += v * v
                lo[k, 0] = min(lo[k, 0], z)
                lo[k, 1] = min(lo[k, 1], y)
                lo[k, 2] = min(lo[k, 2], x)
                hi[k, 0] = max(hi[k, 0], z + 1)
                hi[k, 1] = max(hi[k, 1], y + 1)
                hi[k, 2] = max(hi[k, 2], x + 1)
    return count, coord, csum, csq, lo, hi


@njit(cache=True)
def face_contacts(labels):
    """Pairs of different labels sharing a voxel face: (a, b) int64 arrays with a < b, one per face."""
    depth = labels.shape[0]
    height = labels.shape[1]
    width = labels.shape[2]
    n = 0
    for z in range(depth):
        for y in range(height):
            for x in range(width):
                v = labels[z, y, x]
                if z + 1 < depth and labels[z + 1, y, x] != v:
                    n += 1
                if y + 1 < height and labels[z, y + 1, x] != v:
                    n += 1
                if x + 1 < width and labels[z, y, x + 1] != v:
                    n += 1
    a = np.empty(n, np.int64)
    b = np.empty(n, np.int64)
    i = 0
    for z in range(depth):
        for y in range(height):
            for x in range(width):
                v = labels[z, y, x]
                for j in range(3):
                    if j == 0:
                        if z + 1 >= depth:
                            continue
                        u = labels[z + 1, y, x]
                    elif j == 1:
                        if y + 1 >= height:
                            continue
                        u = labels[z, y + 1, x]
                    else:
                        if x + 1 >= width:
                            continue
                        u = labels[z, y, x + 1]
                    if u != v:
                        a[i] = min(u, v)
                        b[i] = max(u, v)
                        i += 1
    return a, b


@njit(cache=True, parallel=True)
def crop_bytes(src, starts, size_d, size_h, size_w_bytes, itemsize, out):
    """Copy the in-volume part of each crop; ``out`` is pre-filled with the padding value.

    Works on raw bytes so that one compiled kernel serves every dtype.

    Parameters
    ----------
    src : (C, D, H, W * itemsize) uint8, the volume's bytes
    starts : (N, 3) int64, the first voxel (d, h, w) of each crop (may lie outside the volume)
    out : (N, C, size_d, size_h, size_w_bytes) uint8
    """
    n = starts.shape[0]
    n_ch = src.shape[0]
    depth = src.shape[1]
    height = src.shape[2]
    row = src.shape[3]
    for i in prange(n * n_ch):
        j = i // n_ch
        c = i - j * n_ch
        d0 = starts[j, 0]
        h0 = starts[j, 1]
        w0 = starts[j, 2] * itemsize
        b0 = max(0, -w0)
        b1 = min(size_w_bytes, row - w0)
        if b1 <= b0:
            continue
        for z in range(max(0, -d0), min(size_d, depth - d0)):
            for y in range(max(0, -h0), min(size_h, height - h0)):
                for b in range(b0, b1):
                    out[j, c, z, y, b] = src[c, d0 + z, h0 + y, w0 + b]
