"""rubikkit.slic: SLIC supervoxels against known answers and scikit-image, lesion candidates, crops.

scikit-image's ``slic`` is the reference; its default ``channel_axis=-1`` would read a (D, H, W)
volume as a 2D multichannel image, so every call here passes ``channel_axis=None`` (or moves the
channels last for (C, D, H, W) volumes).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import ndimage
from skimage.segmentation import slic as sk_slic
from skimage.util import regular_grid

from rubikkit.slic import (
    asa,
    body_mask,
    boundary_recall,
    crop_subvolumes,
    grid_steps,
    lesion_candidates,
    slic3d,
    supervoxel_stats,
    undersegmentation_error,
)

DTYPES = [
    np.uint8,
    np.uint16,
    np.uint32,
    np.uint64,
    np.int8,
    np.int16,
    np.int32,
    np.int64,
    np.float16,
    np.float32,
    np.float64,
]


# --------------------------------------------------------------------------------------------
# input builders (also used by benchmarks/slic.py)


def octants(shape=(20, 22, 24), noise=0.0, seed=0) -> tuple[np.ndarray, np.ndarray]:
    """A volume of 8 constant octants of distinct intensity, and its (D, H, W) octant index."""
    d, h, w = shape
    zz, yy, xx = np.meshgrid(
        np.arange(d) >= d // 2, np.arange(h) >= h // 2, np.arange(w) >= w // 2, indexing="ij"
    )
    index = (4 * zz + 2 * yy + xx).astype(np.int64)
    # Intensities 0, 1/7, ..., 1 in a scrambled order, so neighbours differ a lot.
    levels = np.array([0, 4, 2, 6, 1, 5, 3, 7]) / 7.0
    vol = levels[index]
    if noise:
        vol = vol + np.random.default_rng(seed).normal(0, noise, shape)
    return vol, index


def blobs(shape=(32, 32, 32), n=4, seed=0) -> tuple[np.ndarray, np.ndarray]:
    """Smooth noise with ``n`` brighter spheres; returns (volume float32, sphere mask as int)."""
    rng = np.random.default_rng(seed)
    vol = ndimage.gaussian_filter(rng.normal(0, 1, shape), 1.5)
    truth = np.zeros(shape, np.int64)
    grid = np.indices(shape)
    for i in range(n):
        lo = np.minimum(6.0, np.asarray(shape) / 2)
        c = rng.uniform(lo, np.maximum(np.asarray(shape) - 6.0, lo))
        r = rng.uniform(3, 6)
        inside = ((grid - c[:, None, None, None]) ** 2).sum(0) < r * r
        truth[inside] = i + 1
    vol = vol / vol.std() * 0.1 + 0.5 * (truth > 0)
    return vol.astype(np.float32), truth


def _sk(vol, **kw):
    kw.setdefault("compactness", 0.1)
    return sk_slic(vol, channel_axis=None, **kw)


def _components(labels) -> dict[int, int]:
    return {int(lab): ndimage.label(labels == lab)[1] for lab in np.unique(labels)}


# --------------------------------------------------------------------------------------------
# known answers


@pytest.mark.parametrize("dtype", DTYPES)
def test_octants_give_eight_supervoxels(dtype):
    vol, index = octants()
    if np.issubdtype(dtype, np.integer):
        vol = (vol * 7 * 9).round().astype(dtype)  # 0, 9, ..., 63: fits every integer type
    else:
        vol = vol.astype(dtype)
    labels = slic3d(vol, n_segments=8, compactness=0.1)
    assert labels.dtype == np.int32 and labels.shape == vol.shape
    assert sorted(np.unique(labels)) == list(range(1, 9))
    for o in range(8):  # each octant is exactly one supervoxel
        assert len(np.unique(labels[index == o])) == 1
    assert asa(labels, index) == 1.0


def test_octants_with_noise_like_skimage_gray_3d():
    vol, index = octants(shape=(20, 22, 24), noise=0.02)
    labels = slic3d(vol, n_segments=8, compactness=0.1)
    assert len(np.unique(labels)) == 8
    assert asa(labels, index) == 1.0
    np.testing.assert_array_equal(labels, _sk(vol, n_segments=8))


def test_bool_volume():
    vol = np.zeros((16, 16, 16), bool)
    vol[:, 8:] = True
    labels = slic3d(vol, n_segments=8, compactness=0.1)
    assert sorted(np.unique(labels)) == list(range(1, 9))
    assert asa(labels, vol) == 1.0


# --------------------------------------------------------------------------------------------
# agreement with scikit-image


@pytest.mark.parametrize(
    "shape, n_segments, compactness, connect",
    [
        ((24, 24, 24), 27, 0.1, True),
        ((20, 30, 17), 40, 0.05, True),
        ((32, 32, 32), 64, 1.0, False),
        ((9, 40, 40), 30, 0.1, True),
        ((10, 10, 10), 2000, 0.1, True),  # more segments than voxels: every voxel a seed
    ],
)
def test_agrees_with_skimage(shape, n_segments, compactness, connect):
    vol, truth = blobs(shape)
    ours = slic3d(vol, n_segments, compactness, enforce_connectivity=connect)
    ref = _sk(vol, n_segments=n_segments, compactness=compactness, enforce_connectivity=connect)
    # Same seeds, windows and distance: the partitions coincide up to float rounding.
    assert asa(ours, ref) > 0.98 and asa(ref, ours) > 0.98
    assert abs(asa(ours, truth) - asa(ref, truth)) <= 0.01
    assert abs(boundary_recall(ours, truth) - boundary_recall(ref, truth)) <= 0.02
    assert abs(len(np.unique(ours)) - len(np.unique(ref))) <= max(2, 0.05 * len(np.unique(ref)))


@pytest.mark.parametrize("max_num_iter", [1, 3, 10])
def test_matches_skimage_voxel_for_voxel_on_float32(max_num_iter):
    vol, _ = blobs((28, 30, 26), seed=3)
    ours = slic3d(vol, 50, 0.1, max_num_iter=max_num_iter)
    ref = _sk(vol, n_segments=50, max_num_iter=max_num_iter)
    assert (ours == ref).mean() > 0.999


@pytest.mark.parametrize("shape", [(10, 20, 30), (3, 40, 50), (1, 1, 100), (7, 7, 7), (64, 2, 9)])
@pytest.mark.parametrize("n", [1, 5, 64, 1000])
def test_grid_steps_as_skimage_regular_grid(shape, n):
    starts, steps = grid_steps(shape, n)
    ref = regular_grid(shape, n)
    for i, s in enumerate(ref):
        assert (s.start or 0) == starts[i]
        assert (s.step or 1) == steps[i]


# --------------------------------------------------------------------------------------------
# labels, connectivity, mask, spacing, sigma, channels


@pytest.mark.parametrize("start_label", [0, 1, 5])
@pytest.mark.parametrize("connect", [True, False])
def test_labels_contiguous_from_start_label(start_label, connect):
    vol, _ = blobs((24, 26, 20), seed=1)
    labels = slic3d(vol, 60, enforce_connectivity=connect, start_label=start_label)
    values = np.unique(labels)
    np.testing.assert_array_equal(values, np.arange(start_label, start_label + len(values)))


def test_each_label_one_connected_component():
    rng = np.random.default_rng(0)
    vol = ndimage.gaussian_filter(rng.random((24, 24, 24)), 1)  # SLIC alone leaves fragments
    loose = slic3d(vol, 40, 0.1, enforce_connectivity=False)
    assert max(_components(loose).values()) > 1
    labels = slic3d(vol, 40, 0.1, enforce_connectivity=True)
    assert set(_components(labels).values()) == {1}
    # Connectivity fixes only the fragments: most voxels keep their supervoxel.
    assert asa(labels, loose) > 0.8


def test_mask():
    vol, truth = blobs((30, 30, 30), seed=2)
    mask = np.zeros(vol.shape, bool)
    mask[4:26, 3:27, 5:28] = True
    mask[10:20, 10:20, 10:20] = False  # a hole
    vol = vol.copy()
    vol[~mask] = np.nan  # never read: values outside the mask are ignored
    labels = slic3d(vol, 50, mask=mask)
    assert (labels[~mask] == 0).all() and (labels[mask] >= 1).all()
    values = np.unique(labels[mask])
    np.testing.assert_array_equal(values, np.arange(1, len(values) + 1))
    assert 35 <= len(values) <= 65
    comps = _components(labels)
    assert all(comps[v] == 1 for v in values)
    clean = np.where(mask, np.nan_to_num(vol), 0)
    ref = sk_slic(clean, n_segments=50, compactness=0.1, mask=mask, channel_axis=None)
    assert abs(asa(labels, truth * mask) - asa(ref, truth * mask)) <= 0.01
    with pytest.raises(ValueError, match="start_label"):
        slic3d(vol, 50, mask=mask, start_label=0)


def _spread(labels) -> np.ndarray:
    """Mean over supervoxels of the standard deviation of their voxels' (d, h, w) coordinates."""
    lab = labels.ravel()
    n = np.bincount(lab)
    out = []
    for coord in np.indices(labels.shape).reshape(3, -1):
        mean = np.bincount(lab, coord) / np.maximum(n, 1)
        var = np.bincount(lab, (coord - mean[lab]) ** 2) / np.maximum(n, 1)
        out.append(np.sqrt(var[n > 0]).mean())
    return np.array(out)


def test_spacing_squeezes_the_coarse_axis():
    rng = np.random.default_rng(4)
    vol = ndimage.gaussian_filter(rng.random((32, 32, 32)), 1.5)
    iso = _spread(slic3d(vol, 64, 0.1))
    aniso_labels = slic3d(vol, 64, 0.1, spacing=(3, 1, 1))
    aniso = _spread(aniso_labels)
    assert iso.max() < 1.2 * iso.min()  # isotropic: round supervoxels
    assert aniso[0] < 0.6 * aniso[1:].min()  # 3x the distance per slice: thinner along d
    ref = _sk(vol, n_segments=64, spacing=(3, 1, 1))
    assert asa(aniso_labels, ref) > 0.98
    with pytest.raises(ValueError, match="spacing"):
        slic3d(vol, 64, spacing=(1, 1))
    with pytest.raises(ValueError, match="spacing"):
        slic3d(vol, 64, spacing=(1, 0, 1))


def test_sigma_scaled_by_spacing():
    vol, truth = blobs((24, 28, 30), seed=5)
    for sigma, spacing in [(1.0, None), (2.0, (2, 1, 1)), ((0.5, 1.0, 0.0), None)]:
        ours = slic3d(vol, 40, sigma=sigma, spacing=spacing)
        ref = _sk(vol, n_segments=40, sigma=sigma, spacing=spacing)
        assert asa(ours, ref) > 0.97, (sigma, spacing)
    with pytest.raises(ValueError, match="sigma"):
        slic3d(vol, 40, sigma=-1)


def test_multichannel():
    d = h = w = 24
    vol = np.zeros((2, d, h, w), np.float32)
    vol[0, d // 2 :] = 1  # channel 0 splits d, channel 1 splits h
    vol[1, :, h // 2 :] = 1
    vol += np.random.default_rng(0).normal(0, 0.05, vol.shape).astype(np.float32)
    truth = (np.arange(d)[:, None, None] >= d // 2) * 2 + (np.arange(h)[None, :, None] >= h // 2)
    truth = np.broadcast_to(truth, (d, h, w))
    labels = slic3d(vol, 27, 0.1)
    assert labels.shape == (d, h, w)
    assert asa(labels, truth) == 1.0  # every supervoxel respects both channels' edges
    assert asa(slic3d(vol[0], 27, 0.1), truth) < 0.9  # one channel alone cannot
    ref = sk_slic(np.moveaxis(vol, 0, -1), 27, 0.1, channel_axis=-1, convert2lab=False)
    assert asa(labels, ref) > 0.97


def test_torch_tensor_input():
    torch = pytest.importorskip("torch")
    vol, _ = blobs((16, 16, 16))
    np.testing.assert_array_equal(slic3d(torch.from_numpy(vol), 8), slic3d(vol, 8))


# --------------------------------------------------------------------------------------------
# bad input


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"volume": np.zeros((4, 4))}, "volume"),
        ({"volume": np.zeros((1, 1, 4, 4, 4))}, "volume"),
        ({"volume": np.zeros((0, 4, 4))}, "volume"),
        ({"n_segments": 0}, "n_segments"),
        ({"n_segments": -3}, "n_segments"),
        ({"mask": np.ones((4, 4, 5), bool)}, "mask"),
        ({"mask": np.zeros((8, 8, 8), bool)}, "mask"),
        ({"compactness": 0}, "compactness"),
        ({"max_num_iter": 0}, "max_num_iter"),
        ({"start_label": -1}, "start_label"),
        ({"sigma": (1, 1)}, "sigma"),
        ({"max_size_factor": 0}, "max_size_factor"),
        # int32 labels: 2**31 - 8 plus 512 voxels used to wrap to negative labels
        ({"start_label": 2**31 - 8}, "start_label"),
        ({"start_label": 2**40}, "start_label"),
    ],
)
def test_bad_arguments_raise_value_error(kwargs, match):
    args = {"volume": np.random.default_rng(0).random((8, 8, 8)), "n_segments": 8, **kwargs}
    with pytest.raises(ValueError, match=f"^{match}"):
        slic3d(**args)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_and_inf_raise(bad):
    vol = np.random.default_rng(0).random((8, 8, 8))
    vol[3, 4, 5] = bad
    with pytest.raises(ValueError, match="^volume: contains (NaN|inf)"):
        slic3d(vol, 8)


def test_bad_types_raise_type_error():
    with pytest.raises(TypeError, match="^volume"):
        slic3d(np.zeros((4, 4, 4), np.complex64), 8)
    with pytest.raises(TypeError, match="^n_segments"):
        slic3d(np.zeros((4, 4, 4)), 8.5)
    for spacing in ("abc", (1, "a", 2)):  # was numpy's "could not convert string to float"
        with pytest.raises(TypeError, match="^spacing"):
            slic3d(np.zeros((4, 4, 4)), 8, spacing=spacing)


def test_huge_size_factors_change_nothing():
    # A component has at most D*H*W voxels; larger limits used to overflow int64 in numba or ask
    # for a queue of max_size entries (MemoryError).
    vol = np.random.default_rng(0).random((8, 8, 8))
    plain = slic3d(vol, 8, min_size_factor=100, max_size_factor=100)
    for factor in (1e12, 1e30):
        np.testing.assert_array_equal(
            slic3d(vol, 8, min_size_factor=factor, max_size_factor=factor), plain
        )


def test_bfloat16_tensors_are_read_as_float32():
    torch = pytest.importorskip("torch")
    vol = torch.rand(8, 8, 8).bfloat16()
    exact = vol.float().numpy()  # every bfloat16 is a float32
    np.testing.assert_array_equal(slic3d(vol, 8), slic3d(exact, 8))
    labels = slic3d(exact, 8)
    np.testing.assert_array_equal(supervoxel_stats(vol, labels)["mean"],
                                  supervoxel_stats(exact, labels)["mean"])  # fmt: skip
    np.testing.assert_array_equal(crop_subvolumes(vol, [[1, 2, 3]], 3),
                                  crop_subvolumes(exact, [[1, 2, 3]], 3))  # fmt: skip
    np.testing.assert_array_equal(body_mask(vol), body_mask(exact))


def test_grid_steps_bad_arguments():
    with pytest.raises(ValueError, match="^n_points"):  # was ZeroDivisionError
        grid_steps((8, 8, 8), 0)
    with pytest.raises(TypeError, match="^n_points"):
        grid_steps((8, 8, 8), 2.5)
    with pytest.raises(ValueError, match="^shape"):  # was a numpy broadcasting error
        grid_steps((8, 8), 4)
    with pytest.raises(ValueError, match="^shape"):
        grid_steps((8, 0, 8), 4)


# --------------------------------------------------------------------------------------------
# statistics and lesion candidates


def test_supervoxel_stats_match_numpy():
    rng = np.random.default_rng(0)
    vol = rng.normal(size=(2, 9, 10, 11))
    labels = rng.integers(0, 5, size=(9, 10, 11))
    labels[labels == 3] = 7  # gaps in the label values
    st = supervoxel_stats(vol, labels)
    np.testing.assert_array_equal(st["label"], [0, 1, 2, 4, 7])
    for i, lab in enumerate(st["label"]):
        sel = labels == lab
        idx = np.argwhere(sel)
        assert st["count"][i] == sel.sum()
        np.testing.assert_allclose(st["centroid"][i], idx.mean(0))
        np.testing.assert_allclose(st["mean"][i], vol[:, sel].mean(1))
        np.testing.assert_allclose(st["std"][i], vol[:, sel].std(1), atol=1e-12)
        np.testing.assert_array_equal(st["bbox"][i], [*idx.min(0), *(idx.max(0) + 1)])
    st3 = supervoxel_stats(vol[0], labels)
    assert st3["mean"].shape == (5,)
    with pytest.raises(ValueError, match="^labels"):
        supervoxel_stats(vol, labels[:-1])


def _planted(polarity_sign=1.0, seed=0):
    rng = np.random.default_rng(seed)
    vol = ndimage.gaussian_filter(rng.normal(0, 1, (48, 48, 48)), 1) * 0.3
    grid = np.indices(vol.shape)
    centre = np.array([30, 14, 22])
    blob = ((grid - centre[:, None, None, None]) ** 2).sum(0) < 5**2
    vol[blob] += polarity_sign * 2.0
    return vol.astype(np.float32), blob, centre


@pytest.mark.parametrize("polarity, sign", [("bright", 1.0), ("dark", -1.0), ("both", -1.0)])
def test_lesion_candidates_find_planted_blob(polarity, sign):
    vol, blob, centre = _planted(sign)
    labels = slic3d(vol, 200, 0.1)
    centres, scores, cand = lesion_candidates(vol, labels, 3, polarity=polarity, return_scores=True)
    assert centres.shape == (3, 3) and centres.dtype == np.int64
    assert blob[tuple(centres[0])]
    assert np.abs(centres[0] - centre).max() <= 3
    assert scores[0] > 2 * scores[1] and np.all(np.diff(scores) <= 0)
    assert (labels[blob] == cand[0]).mean() > 0.5
    other = "dark" if polarity == "bright" else "bright"
    if polarity != "both":
        assert not blob[tuple(lesion_candidates(vol, labels, 1, polarity=other)[0])]


def test_lesion_candidates_mask_and_size_limits():
    vol, blob, _ = _planted()
    labels = slic3d(vol, 200, 0.1)
    body = np.zeros(vol.shape, bool)
    body[:, 24:] = True  # the blob (h = 14) lies outside this "body"
    centres = lesion_candidates(vol, labels, 5, mask=body)
    assert (centres[:, 1] >= 20).all() and not blob[tuple(centres.T)].any()
    size = int((labels == labels[30, 14, 22]).sum())
    top = lesion_candidates(vol, labels, 1, max_size=size - 1)[0]
    assert not blob[tuple(top)]
    few = lesion_candidates(vol, labels, 1000, min_size=10**9)
    assert few.shape == (0, 3)
    many = lesion_candidates(vol, labels, 1000)
    assert len(many) <= labels.max()
    with pytest.raises(ValueError, match="^polarity"):
        lesion_candidates(vol, labels, 1, polarity="up")
    with pytest.raises(ValueError, match="^k"):
        lesion_candidates(vol, labels, 0)
    with pytest.raises(ValueError, match="^mask"):
        lesion_candidates(vol, labels, 1, mask=body[:-1])


def test_body_mask():
    grid = np.indices((30, 30, 30))
    ball = ((grid - 15) ** 2).sum(0) < 10**2
    vol = np.where(ball, 1.0, 0.0)
    vol[15, 15, 15] = 0.0  # a dark hole inside the body is filled
    vol[0, 0, 0] = 1.0  # a bright speck outside is dropped
    np.testing.assert_array_equal(body_mask(vol), ball)


# --------------------------------------------------------------------------------------------
# crops


def _crop_reference(vol4, centre, size, pad):
    s = np.asarray(size)
    lo = np.asarray(centre) - s // 2
    reach = int(max(np.abs(lo).max(), np.abs(lo + s).max())) + 1
    padded = np.pad(vol4, [(0, 0)] + [(reach, reach)] * 3, constant_values=pad)
    sl = tuple(slice(lo[i] + reach, lo[i] + reach + s[i]) for i in range(3))
    return padded[(slice(None), *sl)]


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.float32, np.float64, np.bool_])
@pytest.mark.parametrize("size", [5, (4, 6, 3)])
def test_crops_match_reference_and_pad_at_corners(dtype, size):
    shape = (2, 10, 11, 12)
    vol = (np.arange(np.prod(shape)).reshape(shape) % 97 + 3).astype(dtype)
    pad = 1 if dtype == np.bool_ else 2
    corners = list(itertools.product([0, 9], [0, 10], [0, 11]))
    centres = np.array(corners + [(5, 5, 5), (-4, 3, 3), (12, 14, 20), (100, 0, 0)])
    crops = crop_subvolumes(vol, centres, size, pad_value=pad)
    sz = (size,) * 3 if isinstance(size, int) else size
    assert crops.shape == (len(centres), 2, *sz) and crops.dtype == vol.dtype
    for c, crop in zip(centres, crops):
        np.testing.assert_array_equal(crop, _crop_reference(vol, c, sz, pad))
    # At the corner (0, 0, 0) the crop's low half is padding, the rest is the volume's corner.
    first = crops[0, 0]
    h = np.asarray(sz) // 2
    assert (first[: h[0]] == pad).all() and (first[:, : h[1]] == pad).all()
    np.testing.assert_array_equal(
        first[h[0] :, h[1] :, h[2] :], vol[0, : sz[0] - h[0], : sz[1] - h[1], : sz[2] - h[2]]
    )
    crops3 = crop_subvolumes(vol[1], centres, size, pad_value=pad)
    np.testing.assert_array_equal(crops3, crops[:, 1])


def test_crop_bad_input():
    vol = np.zeros((6, 6, 6), np.uint8)
    with pytest.raises(ValueError, match="^centres"):
        crop_subvolumes(vol, [1, 2, 3], 3)
    with pytest.raises(ValueError, match="^size"):
        crop_subvolumes(vol, [[1, 2, 3]], 0)
    with pytest.raises(ValueError, match="^pad_value"):
        crop_subvolumes(vol, [[1, 2, 3]], 3, pad_value=-1)
    with pytest.raises(ValueError, match="^volume"):
        crop_subvolumes(np.zeros((6, 6)), [[1, 2, 3]], 3)
    assert crop_subvolumes(vol, np.zeros((0, 3), int), 3).shape == (0, 3, 3, 3)
    with pytest.raises(ValueError, match="^pad_value"):  # was silently inf
        crop_subvolumes(vol.astype(np.float16), [[1, 2, 3]], 3, pad_value=1e6)
    with pytest.raises(ValueError, match="^pad_value"):
        crop_subvolumes(vol.astype(np.float32), [[1, 2, 3]], 3, pad_value=1e300)


def test_crops_far_outside_are_padding():
    # start * itemsize used to wrap around int64, so these crops held voxels of the volume.
    vol = np.arange(1, 1 + 8**3, dtype=np.float32).reshape(8, 8, 8)
    big, top = 2**62, np.iinfo(np.int64).max
    centres = [[0, 0, big], [0, 0, big + 1], [0, 0, -big], [0, 0, top], [0, 0, -top - 1]]
    assert not crop_subvolumes(vol, centres, 3).any()
    far = np.array([[0, 0, 2**64 - 1]], np.uint64)  # cast to int64 it was -1, next to the volume
    assert not crop_subvolumes(vol, far, 3).any()


def test_candidates_feed_crops():
    vol, blob, centre = _planted()
    labels = slic3d(vol, 200, 0.1)
    crops = crop_subvolumes(vol, lesion_candidates(vol, labels, 4), 16, pad_value=-1.0)
    assert crops.shape == (4, 16, 16, 16)
    assert crops[0, 8, 8, 8] > 1.0  # the blob sits in the middle of the first crop


# --------------------------------------------------------------------------------------------
# quality metrics


def test_metrics_known_answers():
    truth = np.zeros((4, 4, 4), np.int64)
    truth[:, :, 2:] = 1
    assert asa(truth, truth) == 1.0
    assert undersegmentation_error(truth, truth) == 0.0
    assert boundary_recall(truth, truth, tolerance=0) == 1.0
    one = np.zeros_like(truth)  # one supervoxel over two halves
    assert asa(one, truth) == 0.5
    assert undersegmentation_error(one, truth) == 1.0  # each half leaks the other half
    assert boundary_recall(one, truth) == 0.0
    shifted = np.zeros_like(truth)
    shifted[:, :, 3:] = 1  # boundary one voxel off: found with tolerance 1 only
    assert boundary_recall(shifted, truth, tolerance=1) == 1.0
    assert boundary_recall(shifted, truth, tolerance=0) == 0.5
    assert asa(shifted, truth) == 0.75


def test_metrics_and_body_mask_bad_input():
    empty = np.zeros((0, 4, 4), np.int64)
    for metric in (asa, undersegmentation_error):  # was "zero-size array to reduction ..."
        with pytest.raises(ValueError, match="^labels: is empty"):
            metric(empty, empty)
    huge = np.full((2, 2, 2), 2**63 + 1, np.uint64)  # was returned as negative label values
    with pytest.raises(ValueError, match="^labels: values must fit in int64"):
        supervoxel_stats(np.zeros((2, 2, 2)), huge)
    with pytest.raises(TypeError, match="^channel"):  # was an IndexError from numpy
        body_mask(np.zeros((4, 4, 4)), channel=0.5)


def test_same_labels_for_any_thread_count():
    numba = pytest.importorskip("numba")
    vol, _ = blobs((30, 40, 50), seed=6)
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = slic3d(vol, 80)
    finally:
        numba.set_num_threads(before)
    np.testing.assert_array_equal(one, slic3d(vol, 80))


@pytest.mark.skipif(
    __import__("numba").config.NUMBA_NUM_THREADS < 2, reason="one core: numba's count is torch's"
)
def test_slic_leaves_torch_on_its_thread_count():
    # numba's OpenMP layer shares libgomp with torch and set its own count (every core) on each
    # launch: a TCPC run started with OMP_NUM_THREADS=1 trained on with 2 threads after SLIC.
    import os
    import subprocess
    import sys

    code = """
import numba, numpy as np, torch
from rubikkit.slic import crop_subvolumes, slic3d
vol = np.random.default_rng(0).random((16, 16, 16)).astype(np.float32)
seen = []
for threads in (None, 2):  # from OMP_NUM_THREADS=1 (as a lane starts), then set by hand
    if threads is not None:
        torch.set_num_threads(threads)
    slic3d(vol, n_segments=8)
    crop_subvolumes(vol, np.array([[8, 8, 8]]), 4)
    seen.append(torch.get_num_threads())
print(seen, numba.get_num_threads() == numba.config.NUMBA_NUM_THREADS)
"""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[-2] == "[1, 2] True"
