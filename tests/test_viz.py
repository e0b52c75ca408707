"""rubikkit.viz: static figures (matplotlib Agg) and the ipywidgets viewer built without a kernel."""

from __future__ import annotations

import json

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from rubikkit import viz  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture
def vol():
    # Distinct values everywhere, so each plane identifies the slice it came from.
    return np.arange(5 * 6 * 7, dtype=np.float32).reshape(5, 6, 7)


def _shown(ax, k=0):
    return np.asarray(ax.images[k].get_array())


def test_show_slices_draws_the_three_planes(vol):
    fig = viz.show_slices(vol, index=(1, 2, 3))
    axes = fig.axes
    assert len(axes) == 3
    np.testing.assert_array_equal(_shown(axes[0]), vol[1])
    np.testing.assert_array_equal(_shown(axes[1]), vol[:, 2])
    np.testing.assert_array_equal(_shown(axes[2]), vol[:, :, 3])
    assert [ax.get_title() for ax in axes] == ["D = 1  (H, W)", "H = 2  (D, W)", "W = 3  (D, H)"]
    # D runs upwards in the planes that contain it.
    assert [ax.images[0].origin for ax in axes] == ["upper", "lower", "lower"]


def test_show_slices_defaults_to_mask_centre_and_overlays_labels(vol):
    mask = np.zeros(vol.shape, dtype=np.int64)
    mask[3:5, 0:2, 5:7] = 2  # centre (3.5, 0.5, 5.5) rounds to (4, 0, 6) (round half to even)
    fig = viz.show_slices(vol, mask)
    a0 = fig.axes[0]
    assert len(a0.images) == 2, "image and label overlay"
    np.testing.assert_array_equal(_shown(a0), vol[4])
    overlay = a0.images[1].get_array()
    assert np.ma.is_masked(overlay) and overlay.mask[0, 0] and not overlay.mask[0, 6]
    # Without a mask: the centre of the volume, one image per plane.
    fig = viz.show_slices(vol)
    np.testing.assert_array_equal(_shown(fig.axes[0]), vol[2])
    assert all(len(ax.images) == 1 for ax in fig.axes)


def test_show_slices_accepts_tensors_channels_and_spacing(vol):
    two = np.stack([vol, -vol])
    fig = viz.show_slices(torch.from_numpy(two), channel=1, index=(0, 0, 0), spacing=(3, 1, 1))
    np.testing.assert_array_equal(_shown(fig.axes[0]), -vol[0])
    # Slices along D are 3 mm thick: the (D, W) and (D, H) planes are stretched vertically.
    assert [ax.get_aspect() for ax in fig.axes] == [1.0, 3.0, 3.0]
    fig = viz.show_slices(torch.zeros(1, 4, 4, 4, dtype=torch.bool))  # constant, bool
    assert len(fig.axes) == 3
    fig = viz.show_slices(vol, mask=(vol > 100).astype(np.float32))  # float-stored labels are fine
    assert len(fig.axes) == 3


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(volume=np.zeros((4, 4))), "volume: expected"),
        (dict(volume=np.zeros((2, 4, 4, 4)), channel=2), "channel: 2 out of range"),
        (dict(volume=np.zeros((4, 4, 4)), mask=np.zeros((4, 4, 3))), "mask: shape"),
        (dict(volume=np.zeros((4, 4, 4)), index=(0, 4, 0)), "index: H = 4 outside 0..3"),
        (dict(volume=np.zeros((4, 4, 4)), index=(0, 0)), "index: expected"),
        (dict(volume=np.zeros((4, 4, 4)), spacing=(1, 0, 1)), "spacing: "),
        # A probability map would be cast to all-zero labels and show no overlay.
        (dict(volume=np.zeros((4, 4, 4)), mask=np.full((4, 4, 4), 0.7)), "mask: expected integer"),
    ],
)
def test_show_slices_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        viz.show_slices(**kwargs)


def test_viewer_builds_without_kernel_and_follows_sliders(vol):
    mask = np.zeros(vol.shape, dtype=np.int64)
    mask[1, 1, 1] = 1
    v = viz.slice_viewer(vol, mask, index=(0, 0, 0))
    import ipywidgets

    assert isinstance(v.widget, ipywidgets.VBox)
    assert [(s.min, s.max) for s in v.sliders] == [(0, 4), (0, 5), (0, 6)]
    assert v.index == (0, 0, 0) and v.overlay.value and not v.overlay.disabled
    v.sliders[0].value = 3
    v.sliders[2].value = 6
    assert v.index == (3, 0, 6)
    axes = v.figure.axes
    np.testing.assert_array_equal(_shown(axes[0]), vol[3])
    np.testing.assert_array_equal(_shown(axes[2]), vol[:, :, 6])
    assert len(axes[0].images) == 2
    v.overlay.value = False
    assert all(len(ax.images) == 1 for ax in v.figure.axes)
    # The viewer's figures stay out of pyplot's registry (nothing shown twice in a notebook).
    assert plt.get_fignums() == []


def test_viewer_offers_widget_and_static_picture(vol):
    bundle = viz.slice_viewer(vol)._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert bundle["image/png"].startswith(b"\x89PNG")


def test_viewer_without_mask_disables_overlay(vol):
    v = viz.slice_viewer(torch.from_numpy(vol))
    assert v.overlay.disabled and not v.overlay.value
    assert v.index == (2, 3, 3)


def test_montage_grid_titles_and_errors():
    imgs = [np.full((3, 4), i, dtype=float) for i in range(5)]
    fig = viz.montage(imgs, ncols=3, titles=[f"t{i}" for i in range(5)])
    assert len(fig.axes) == 6
    assert [ax.get_title() for ax in fig.axes[:5]] == ["t0", "t1", "t2", "t3", "t4"]
    assert not fig.axes[5].images
    with pytest.raises(ValueError, match="images: need"):
        viz.montage([])
    with pytest.raises(ValueError, match="images: image 1"):
        viz.montage([np.zeros((2, 2)), np.zeros((2, 2, 2))])
    with pytest.raises(ValueError, match="titles: 1 titles for 2"):
        viz.montage([np.zeros((2, 2))] * 2, titles=["a"])
    with pytest.raises(ValueError, match="ncols"):
        viz.montage([np.zeros((2, 2))], ncols=0)


def test_montage_slices_picks_distinct_inner_slices(vol):
    fig = viz.montage_slices(vol, n=3, axis=2)
    titles = [ax.get_title() for ax in fig.axes if ax.images]
    assert titles == ["W = 2", "W = 3", "W = 4"]
    for ax in fig.axes:
        if ax.images:
            w = int(ax.get_title().split("= ")[1])
            np.testing.assert_array_equal(_shown(ax), vol[:, :, w])
    with pytest.raises(ValueError, match="axis"):
        viz.montage_slices(vol, axis=3)


def test_show_puzzle_in_slot_order():
    cubes = np.stack([np.full((1, 4, 4, 4), m, dtype=np.float32) for m in range(8)])
    perms = np.array([3, 1, 0, 2, 7, 6, 5, 4])
    rots = np.array([0, 1, 2, 3, 0, 0, 1, 1])
    fig = viz.show_puzzle(torch.from_numpy(cubes), perms, rots)
    shown = [ax for ax in fig.axes if ax.images]
    assert len(shown) == 8 and len(fig.axes) == 8  # 2 rows x 4 columns
    assert [float(_shown(ax).mean()) for ax in shown] == list(range(8))
    assert shown[0].get_title() == "slot 0: cell 3\nnone"
    assert shown[3].get_title() == "slot 3: cell 2\nboth"
    with pytest.raises(ValueError, match="perms: expected 8"):
        viz.show_puzzle(cubes, perms[:4])
    with pytest.raises(ValueError, match="cubes: expected"):
        viz.show_puzzle(np.zeros((8, 4, 4)))
    with pytest.raises(ValueError, match="plane"):
        viz.show_puzzle(cubes, plane="X")


def test_show_cubes_outlines_the_cubes_each_plane_cuts():
    vol = np.zeros((20, 20, 20), dtype=np.float32)
    origins = np.array([[1, 1, 1], [1, 1, 11], [11, 1, 1]])
    fig = viz.show_cubes(vol, origins, (6, 7, 8))
    # Planes through the centre of cube 0 = (4, 4, 5): the D plane cuts cubes 0 and 1, the H plane
    # all three, the W plane cubes 0 and 2.
    assert [len(ax.patches) for ax in fig.axes] == [2, 3, 2]
    assert [t.get_text() for t in fig.axes[2].texts] == ["0", "2"]
    rect = fig.axes[0].patches[1]  # cube 1 on the (H, W) plane: columns W from 11, width 8
    assert (rect.get_x(), rect.get_y(), rect.get_width(), rect.get_height()) == (10.5, 0.5, 8, 7)
    fig = viz.show_cubes(vol, origins, 6, index=(15, 0, 0))
    assert [len(ax.patches) for ax in fig.axes] == [1, 0, 0]
    with pytest.raises(ValueError, match="origins: expected"):
        viz.show_cubes(vol, origins[:, :2], 6)
    with pytest.raises(ValueError, match="cube_size"):
        viz.show_cubes(vol, origins, (6, 6))


def test_show_supervoxels_marks_boundaries_and_centres():
    vol = np.zeros((8, 8, 8), dtype=np.float32)
    labels = np.ones((8, 8, 8), dtype=np.int64)
    labels[:, :, 4:] = 2
    fig = viz.show_supervoxels(vol, labels, centres=[[4, 2, 2], [0, 0, 0]])
    edges = fig.axes[0].images[1].get_array()
    assert (~edges.mask).any(), "the boundary between the two halves is drawn"
    assert len(fig.axes[0].collections) == 1, "the centre on plane D = 4 is marked"
    with pytest.raises(ValueError, match="labels: shape"):
        viz.show_supervoxels(vol, labels[:4])


def test_show_cube_path_draws_support_path_and_target():
    vol = np.arange(12 * 12 * 12, dtype=np.float32).reshape(12, 12, 12)
    # A U path of four support cubes in the D = 2 plane around the target, then the target.
    origins = np.array([[2, 0, 0], [2, 4, 0], [2, 4, 4], [2, 0, 4], [2, 2, 2]])
    fig = viz.show_cube_path(vol, origins, 4)
    ax = fig.axes[0]
    # The path spreads over (H, W), so the D plane through the target's middle (d = 4) is drawn.
    np.testing.assert_array_equal(_shown(ax), vol[4])
    assert ax.get_title() == "D = 4  (H, W)"
    assert len(ax.patches) == 5
    assert [p.get_fill() for p in ax.patches] == [False] * 4 + [True], "only the target is filled"
    assert [t.get_text() for t in ax.texts if t.get_text()] == ["0", "1", "2", "3"]
    assert sum(1 for t in ax.texts if not t.get_text()) == 3, (
        "one arrow between consecutive supports"
    )
    # A straight path along D is drawn in the H plane (D vertical), into a given Axes.
    line = np.array([[0, 4, 4], [2, 4, 4], [4, 4, 4], [6, 4, 4]])
    _, ax2 = plt.subplots()
    fig2 = viz.show_cube_path(vol, line, 4, ax=ax2)
    assert fig2 is ax2.figure and ax2.get_title() == "H = 6  (D, W)"
    np.testing.assert_array_equal(_shown(ax2), vol[:, 6])
    with pytest.raises(ValueError, match="origins: expected"):
        viz.show_cube_path(vol, origins[:1], 4)
    with pytest.raises(ValueError, match="plane: must be"):
        viz.show_cube_path(vol, origins, 4, plane=3)
    # margin zooms in on the cubes' box (H and W from 0 to 8, 1 voxel around).
    ax3 = viz.show_cube_path(vol, origins, 4, margin=1).axes[0]
    assert ax3.get_xlim() == (-1.5, 8.5) and ax3.get_ylim() == (8.5, -1.5)
    with pytest.raises(ValueError, match="margin: expected"):
        viz.show_cube_path(vol, origins, 4, margin=-1)


def _write_log(path, records):
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n")


def test_plot_log_from_run_folder(tmp_path):
    recs = [{"step": s, "split": "train", "loss": 2.0 / (s + 1), "lr": 0.1} for s in range(5)]
    recs += [{"step": 4, "split": "val", "loss": 0.7, "order_acc": 0.5}]
    _write_log(tmp_path / "log.jsonl", recs)
    fig = viz.plot_log(tmp_path)
    lines = fig.axes[0].get_lines()
    assert [ln.get_label() for ln in lines] == ["loss (train)", "loss (val)"]
    np.testing.assert_allclose(lines[0].get_ydata(), [2.0 / (s + 1) for s in range(5)])
    fig = viz.plot_log(recs, keys=["order_acc"], title="acc")
    assert [ln.get_label() for ln in fig.axes[0].get_lines()] == ["order_acc (val)"]
    _, ax = plt.subplots()
    assert viz.plot_log(recs, ax=ax, logy=True) is ax.figure and ax.get_yscale() == "log"


def test_plot_log_errors(tmp_path):
    with pytest.raises(ValueError, match="run: no log file"):
        viz.read_log(tmp_path)
    (tmp_path / "log.jsonl").write_text('{"step": 1, "loss": 1}\nnot json\n')
    with pytest.raises(ValueError, match=r"log\.jsonl:2: not JSON"):
        viz.read_log(tmp_path)
    with pytest.raises(ValueError, match="keys: 'acc' is not a numeric field"):
        viz.plot_log([{"step": 1, "loss": 1.0}], keys=["acc"])
    with pytest.raises(ValueError, match="keys: no field named like 'loss'"):
        viz.plot_log([{"step": 1, "acc": 1.0}])
    with pytest.raises(ValueError, match="run: the log holds no records"):
        viz.plot_log([])
    with pytest.raises(TypeError, match="run: expected"):
        viz.read_log(3)


def test_label_cmap_has_one_colour_per_label():
    assert viz.label_cmap(3).N == 3
    assert viz.label_cmap(0).N == 1
