"""The papers' normalisations, resampling, crops (rubikkit.data.intensity, lidc.resample_around)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from rubikkit.data import (
    bounding_box,
    crop_or_pad,
    meanmax_to_unit,
    minmax_to_unit,
    resample_to_shape,
    resample_to_spacing,
    window_ct,
    zscore,
)
from rubikkit.data.lidc import resample_around


@pytest.fixture
def vol(rng):
    return (rng.normal(100, 40, (9, 10, 11)) ** 1).astype(np.float32)


def test_minmax_to_unit(vol):
    y = minmax_to_unit(vol)
    assert y.dtype == np.float32 and y.shape == vol.shape
    assert y.min() == pytest.approx(-1) and y.max() == pytest.approx(1)
    np.testing.assert_allclose(y, 2 * (vol - vol.min()) / (vol.max() - vol.min()) - 1, atol=1e-6)
    np.testing.assert_array_equal(minmax_to_unit(np.full((3, 3, 3), 7.0)), 0)
    np.testing.assert_allclose(minmax_to_unit(torch.from_numpy(vol)), y)


def test_meanmax_to_unit(vol):
    y = meanmax_to_unit(vol)
    assert abs(float(y.mean())) < 1e-5
    assert np.abs(y).max() == pytest.approx(1.0)
    assert y.min() >= -1 - 1e-6 and y.max() <= 1 + 1e-6
    # the extreme voxel maps to exactly +1 or -1
    i = np.unravel_index(np.abs(vol - vol.mean()).argmax(), vol.shape)
    assert abs(float(y[i])) == pytest.approx(1.0)


def test_window_ct():
    hu = np.array([-2000.0, -160.0, 40.0, 240.0, 3000.0])
    np.testing.assert_allclose(window_ct(hu, 40, 400), [-1, -1, 0, 1, 1])
    with pytest.raises(ValueError, match="width"):
        window_ct(hu, 40, 0)
    with pytest.raises(ValueError, match="level"):
        window_ct(hu, np.nan, 10)
    with pytest.raises(TypeError, match="x"):
        window_ct(np.array(["a"]))


def test_zscore_whole_and_masked(vol):
    z = zscore(vol)
    assert abs(float(z.mean())) < 1e-4 and float(z.std()) == pytest.approx(1, abs=1e-4)
    mask = np.zeros(vol.shape, bool)
    mask[2:6, 2:6, 2:6] = True
    zm = zscore(vol, mask)
    assert abs(float(zm[mask].mean())) < 1e-4 and float(zm[mask].std()) == pytest.approx(1, 1e-4)
    with pytest.raises(ValueError, match="mask: shape"):
        zscore(vol, mask[:-1])
    with pytest.raises(ValueError, match="mask: selects no voxel"):
        zscore(vol, np.zeros_like(mask))


@pytest.mark.parametrize("shape", [(4, 5, 6), (12, 3, 9), 7])
def test_resample_to_shape(vol, shape):
    out = resample_to_shape(vol, shape)
    want = (shape,) * 3 if isinstance(shape, int) else shape
    assert out.shape == want and out.dtype == np.float32
    assert vol.min() - 1e-3 <= out.min() and out.max() <= vol.max() + 1e-3
    four = resample_to_shape(np.stack([vol, vol * 2]), shape)
    assert four.shape == (2, *want)
    np.testing.assert_allclose(four[1], 2 * four[0], rtol=1e-5)


def test_resample_nearest_keeps_labels():
    lab = np.zeros((8, 8, 8), np.int16)
    lab[2:6, 2:6, 2:6] = 3
    lab[3:5, 3:5, 3:5] = 7
    for shape in [(16, 16, 16), (5, 9, 4)]:
        out = resample_to_shape(lab, shape, order="nearest")
        assert out.dtype == np.int16 and set(np.unique(out)) <= {0, 3, 7}
    with pytest.raises(ValueError, match="order"):
        resample_to_shape(lab, 4, order="cubic")
    with pytest.raises(ValueError, match="shape"):
        resample_to_shape(lab, (4, 4))
    with pytest.raises(ValueError, match="x"):
        resample_to_shape(np.zeros((4, 4)), 4)


def test_resample_to_spacing():
    a = np.zeros((10, 20, 20), np.float32)
    out = resample_to_spacing(a, (2.5, 0.7, 0.7), (1.0, 1.0, 1.0))
    assert out.shape == (25, 14, 14)
    with pytest.raises(ValueError, match="new_spacing"):
        resample_to_spacing(a, 1.0, (1.0, 0.0, 1.0))


def test_resample_around_identity_and_centre(rng):
    v = rng.random((7, 9, 8)).astype(np.float32)
    same = resample_around(v, (1, 1, 1), (3, 4, 3.5), v.shape, (1, 1, 1), pad_value=0)
    np.testing.assert_allclose(same, v, atol=1e-5)
    # a point of the source lands at the cube centre, at any spacing
    spot = np.zeros((20, 30, 30), np.float32)
    spot[12, 10, 17] = 1000.0
    for sp in [(2.5, 0.7, 0.7), (1.0, 1.0, 1.0), (0.5, 0.9, 0.6)]:
        cube = resample_around(spot, sp, (12, 10, 17), (9, 9, 9), (1, 1, 1), pad_value=0)
        assert np.unravel_index(cube.argmax(), cube.shape) == (4, 4, 4)
    # outside the VOI is padded with air
    far = resample_around(v, (1, 1, 1), (100, 100, 100), (4, 4, 4), pad_value=-1000)
    np.testing.assert_array_equal(far, -1000)
    with pytest.raises(ValueError, match="volume"):
        resample_around(v[0], (1, 1, 1), (0, 0, 0))


def test_crop_or_pad_and_bounding_box():
    a = np.arange(5 * 6 * 7).reshape(5, 6, 7)
    out = crop_or_pad(a, (3, 4, 5))
    np.testing.assert_array_equal(out, a[1:4, 1:5, 1:6])
    big = crop_or_pad(a, 9, pad_value=-1)
    assert big.shape == (9, 9, 9) and (big == -1).sum() == 9**3 - a.size
    for centre in itertools.product((0, 2, 4), (0, 5), (3, 6)):
        c = crop_or_pad(a, 3, centre=centre, pad_value=-1)
        assert c[1, 1, 1] == a[centre]
    m = np.zeros((6, 6, 6), bool)
    m[2:4, 1:3, 4] = True
    assert bounding_box(m) == (slice(2, 4), slice(1, 3), slice(4, 5))
    assert bounding_box(m, 1) == (slice(1, 5), slice(0, 4), slice(3, 6))
    with pytest.raises(ValueError, match="mask: is empty"):
        bounding_box(np.zeros((3, 3, 3)))
