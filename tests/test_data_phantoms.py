"""The built-in phantoms: determinism, shapes, nested tumour labels, and a difficulty check."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from rubikkit.data import PhantomDataset, make_phantom, open_dataset

KINDS = ("hemorrhage", "tumour", "nodule")


@pytest.mark.parametrize("kind", KINDS)
def test_same_seed_same_arrays_other_seed_differs(kind):
    a = make_phantom(kind, seed=5, size=24)
    b = make_phantom(kind, seed=5, size=24)
    c = make_phantom(kind, seed=6, size=24)
    np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(a["mask"], b["mask"])
    assert not np.array_equal(a["image"], c["image"])


@pytest.mark.parametrize("kind", KINDS)
def test_dataset_items(kind):
    ds = open_dataset(f"phantoms:{kind}", split="val", n=8, size=(16, 20, 24), seed=3)
    item = ds[2]
    c = 4 if kind == "tumour" else 1
    assert ds.num_channels == c and item["image"].shape == (c, 16, 20, 24)
    assert item["image"].dtype == torch.float32
    assert -1.0 <= float(item["image"].min()) and float(item["image"].max()) <= 1.0
    assert item["id"] == f"{kind}-val-00002"
    again = PhantomDataset(kind, n=8, size=(16, 20, 24), seed=3, split="val", cache=False)[2]
    assert torch.equal(again["image"], item["image"])  # independent of caching and order
    if kind == "tumour":
        assert ds.task == "segmentation" and ds.labels is None
        assert item["mask"].dtype == torch.int64 and item["mask"].shape == (16, 20, 24)
    else:
        assert ds.task == "classification" and item["label"].dtype == torch.int64
        counts = ds.class_counts()
        assert list(counts) == ds.class_names and sum(counts.values()) == 8
        assert max(counts.values()) - min(counts.values()) <= 1  # balanced


def test_class_names_and_counts():
    assert PhantomDataset("hemorrhage", n=8, size=8).class_names == [
        "aneurysm",
        "avm",
        "moyamoya",
        "hypertension",
    ]
    assert PhantomDataset("nodule", n=8, size=8).class_counts() == {"benign": 4, "malignant": 4}


def test_splits_use_disjoint_seeds():
    tr = PhantomDataset("nodule", n=4, size=16, split="train")
    te = PhantomDataset("nodule", n=4, size=16, split="test")
    assert not set(map(tr.seed_of, range(4))) & set(map(te.seed_of, range(4)))
    assert not torch.equal(tr[0]["image"], te[0]["image"])


def test_tumour_labels_are_nested():
    raw = make_phantom("tumour", seed=2, size=32)["mask"]
    assert set(np.unique(raw)) <= {0, 1, 2, 3} and (raw == 3).any() and (raw == 2).any()
    ds = {m: PhantomDataset("tumour", n=1, size=32, seed=2, labels=m) for m in ("whole", "core")}
    whole, core = ds["whole"][0]["mask"].bool(), ds["core"][0]["mask"].bool()
    enh = PhantomDataset("tumour", n=1, size=32, seed=2, labels="enhancing")[0]["mask"].bool()
    assert (core & ~whole).sum() == 0 and (enh & ~core).sum() == 0
    assert whole.sum() > core.sum() > enh.sum() > 0
    assert ds["whole"].class_names == ["background", "whole tumour"]


def test_label_and_difficulty_options():
    p = make_phantom("hemorrhage", seed=1, size=16, label=2)
    assert p["label"] == 2 and p["image"].shape == (1, 16, 16, 16)
    hu = make_phantom("nodule", seed=1, size=16, normalize=False)["image"]
    assert hu.min() < -500  # lung parenchyma in HU
    easy = make_phantom("nodule", seed=1, size=16, difficulty=0.0)["image"]
    hard = make_phantom("nodule", seed=1, size=16, difficulty=1.0)["image"]
    assert not np.array_equal(easy, hard)


@pytest.mark.parametrize(("kind", "air"), [("tumour", 0.2), ("hemorrhage", -500.0)])
def test_offset_moves_the_head(kind, air):
    """``offset`` moves the head by that many voxels and draws everything else as before."""
    centred = make_phantom(kind, seed=3, size=32, normalize=False)
    moved = make_phantom(kind, seed=3, size=32, normalize=False, offset=(2, 0, -3))
    # Air far from both heads holds only the scanner noise, the generator's last draws: equal
    # there only when the offset adds or skips no draw before them.
    corner = (slice(None), slice(0, 3), slice(0, 3), slice(-3, None))
    np.testing.assert_array_equal(moved["image"][corner], centred["image"][corner])
    assert not np.array_equal(moved["image"], centred["image"])
    a = np.argwhere(centred["image"][0] > air).mean(axis=0)
    b = np.argwhere(moved["image"][0] > air).mean(axis=0)
    np.testing.assert_allclose(b - a, [2.0, 0.0, -3.0], atol=0.5)


def test_offset_moves_the_nodule():
    a = make_phantom("nodule", seed=2, size=32)["mask"]
    b = make_phantom("nodule", seed=2, size=32, offset=(0, 4, -3))["mask"]
    assert a.sum() == b.sum() > 0
    np.testing.assert_allclose(np.argwhere(b).mean(0) - np.argwhere(a).mean(0), [0, 4, -3])


def test_offset_breaks_the_heads_symmetry_for_the_cube_puzzle():
    """A centred head is nearly symmetric about the volume's centre, so a half-turned cube looks
    like the cube across the centre; moved off the centre, it mostly does not."""
    from rubikkit.tasks import get_task

    task = get_task("rubik")
    share = {}
    for off in (0, (0, 4, 4)):
        ds = PhantomDataset("tumour", n=6, size=32, split="test", labels="whole", offset=off)
        vols = np.stack([ds[i]["image"].numpy() for i in range(len(ds))])
        share[off] = task.turn_confusion(vols)["turn_mirror_nearest"]
    assert share[0] > 0.95 and share[(0, 4, 4)] < 0.6, share


def test_phantom_errors():
    with pytest.raises(ValueError, match="kind: unknown phantom kind"):
        make_phantom("liver")
    with pytest.raises(ValueError, match="size"):
        make_phantom("nodule", size=4)
    with pytest.raises(ValueError, match="difficulty"):
        make_phantom("nodule", difficulty=1.5)
    with pytest.raises(ValueError, match="seed"):
        make_phantom("nodule", seed=-1)
    with pytest.raises(ValueError, match="label: tumour"):
        make_phantom("tumour", label=1)
    with pytest.raises(ValueError, match="label: expected 0..1"):
        make_phantom("nodule", label=2)
    with pytest.raises(ValueError, match="n: expected a positive int"):
        PhantomDataset("nodule", n=0)
    with pytest.raises(ValueError, match="split"):
        PhantomDataset("nodule", split="holdout")
    with pytest.raises(ValueError, match="labels"):
        PhantomDataset("tumour", labels="oedema")
    with pytest.raises(ValueError, match="offset: expected the centre to stay inside"):
        make_phantom("tumour", size=16, offset=(0, 8, 0))
    with pytest.raises(ValueError, match="offset: expected mm"):
        PhantomDataset("tumour", size=16, offset="left")
    with pytest.raises(ValueError, match="offset: expected mm"):
        make_phantom("nodule", size=16, offset=(1, 2))


def _histograms(ds) -> tuple[np.ndarray, np.ndarray]:
    """Log-counts of 24 intensity bins inside (-0.98, 0.98): air and bone saturate outside."""
    feats, labels = [], []
    for i in range(len(ds)):
        item = ds._item(i)
        v = item["image"].ravel()
        h, _ = np.histogram(v[(v > -0.98) & (v < 0.98)], bins=24, range=(-0.98, 0.98))
        feats.append(np.log1p(h))
        labels.append(item["label"])
    return np.asarray(feats), np.asarray(labels)


@pytest.mark.parametrize(
    ("kind", "low", "high"),
    # chance is 0.25 (4 classes) and 0.5 (2 classes); measured at seed 0: 0.35 and 0.70
    [("hemorrhage", 0.29, 0.75), ("nodule", 0.58, 0.90)],
)
def test_histogram_baseline_is_above_chance_but_far_from_perfect(kind, low, high):
    """Default difficulty: intensities alone say something, but far from everything."""
    train = PhantomDataset(kind, n=240, size=32, seed=0, split="train", cache=False)
    test = PhantomDataset(kind, n=240, size=32, seed=0, split="test", cache=False)
    x_tr, y_tr = _histograms(train)
    x_te, y_te = _histograms(test)
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=3000))
    acc = clf.fit(x_tr, y_tr).score(x_te, y_te)
    assert low < acc < high, f"{kind}: held-out accuracy {acc:.3f} outside ({low}, {high})"
