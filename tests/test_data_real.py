"""The real datasets of ../shared/data, with the shapes and counts its README gives."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from rubikkit.data import BraTS, LIDCNodules, MedMNIST3D, load_nifti, open_dataset

pytestmark = pytest.mark.shared_data

MEDMNIST_COUNTS = {"train": (929, 259), "val": (76, 22), "test": (229, 69)}
BRATS_COUNTS = {  # voxels of labels 1, 2, 3, 4 per case (README section 3)
    "pat0003": (1252, 148264, 3162, 21250),
    "pat0004": (12956, 45203, 44699, 17816),
    "pat0005": (23030, 35416, 3882, 18354),
    "pat0006": (41838, 109935, 22228, 43379),
}


@pytest.mark.parametrize("size", [28, 64])
def test_adrenalmnist3d(shared_data, size):
    root = shared_data / "medmnist3d"
    for split, (normal, hyper) in MEDMNIST_COUNTS.items():
        ds = open_dataset("medmnist3d:adrenal", split=split, size=size, root=root)
        assert isinstance(ds, MedMNIST3D) and len(ds) == normal + hyper
        assert ds.class_counts() == {"normal": normal, "hyperplasia": hyper}
        assert ds.images.shape == (normal + hyper, size, size, size)
        assert ds.images.dtype == np.uint8
        item = ds[0]
        assert item["image"].shape == (1, size, size, size) and item["image"].dtype == torch.float32
        assert set(item["image"].unique().tolist()) <= {0.0, 1.0}  # masks {0, 255} / 255


@pytest.fixture(scope="module")
def lidc_root(shared_data):
    return shared_data / "lidc_nodule_vois"


@pytest.fixture(scope="module")
def lidc_all(lidc_root):
    """All 799 VOIs resampled once (about 3 s), kept in memory for the module."""
    return LIDCNodules(lidc_root, "all", unlabeled=True, cache_dir=False, progress=False)


def test_lidc_metadata_counts(lidc_root):
    meta = pd.read_csv(lidc_root / "metadata.csv")
    assert len(meta) == 799 and meta.patient_id.nunique() == 436
    assert meta.Diagnosis.value_counts().to_dict() == {"Benign": 527, "Malign": 272}
    assert meta.Malignancy_value.value_counts().sort_index().to_dict() == {
        1: 132,
        2: 175,
        3: 297,
        4: 91,
        5: 104,
    }
    assert len(list((lidc_root / "image").glob("*.nii.gz"))) == 799
    assert len(list((lidc_root / "nodule_mask").glob("*.nii.gz"))) == 799


def test_lidc_raw_files(lidc_root):
    meta = pd.read_csv(lidc_root / "metadata.csv")
    for name in meta.file[::100]:
        img = load_nifti(lidc_root / "image" / name)
        mask = load_nifti(lidc_root / "nodule_mask" / name)
        assert img.array.dtype == np.int16 and img.array.shape == mask.array.shape
        assert set(np.unique(mask.array)) <= {0, 1}
        assert 0.4 < min(img.spacing) and max(img.spacing) <= 2.5


def test_lidc_labels_and_cubes(lidc_root, lidc_all):
    assert len(lidc_all) == 799 and lidc_all.task == "unlabeled"
    ds = LIDCNodules(lidc_root, "all", cache_dir=False, progress=False)
    assert ds.class_counts() == {"benign": 132 + 175, "malignant": 91 + 104}
    diag = LIDCNodules(lidc_root, "all", labels="diagnosis", cache_dir=False, progress=False)
    assert diag.class_counts() == {"benign": 527, "malignant": 272}
    item = ds[0]
    assert item["image"].shape == (1, 32, 32, 32) and item["image"].dtype == torch.float32
    cubes = lidc_all._arrays
    assert cubes["hu"].shape == (799, 32, 32, 32)
    # every cube is centred on its nodule: the nodule covers the centre in nearly all of them
    centre = cubes["mask"][:, 15:17, 15:17, 15:17].reshape(799, -1).any(axis=1)
    assert centre.mean() > 0.95


def test_lidc_patient_split(lidc_root, lidc_all):
    parts = {
        s: LIDCNodules(lidc_root, s, cache_dir=False, progress=False)
        for s in ("train", "val", "test")
    }
    pats = {s: set(d.patient_ids) for s, d in parts.items()}
    assert not (pats["train"] & pats["val"] or pats["train"] & pats["test"])
    assert not pats["val"] & pats["test"]
    assert sum(len(d) for d in parts.values()) == 132 + 175 + 91 + 104
    again = LIDCNodules(lidc_root, "test", cache_dir=False, progress=False)
    assert list(again.patient_ids) == list(parts["test"].patient_ids)  # deterministic
    other = LIDCNodules(lidc_root, "test", seed=1, cache_dir=False, progress=False)
    assert set(other.patient_ids) != pats["test"]
    unl = [LIDCNodules(lidc_root, s, unlabeled=True, cache_dir=False) for s in parts]
    assert sum(len(d) for d in unl) == 799  # unlabeled mode keeps score 3 too


def test_brats_raw_label_counts(shared_data):
    root = shared_data / "brats2015_deepmedic"
    for case in sorted(root.glob("*/brats_2013_pat*_1")):
        gt = load_nifti(case / "OTMultiClass.nii.gz").array
        assert gt.shape == (155, 240, 240) and gt.dtype == np.float32  # (D, H, W) of 240x240x155
        counts = np.bincount(gt.astype(np.int64).ravel(), minlength=5)[1:]
        assert tuple(counts) == BRATS_COUNTS[case.name[len("brats_2013_") : -2]]


def test_brats_dataset(shared_data):
    root = shared_data / "brats2015_deepmedic"
    # cropping to the brain keeps every tumour voxel
    val = BraTS(root, "val", size=None, keep_aspect=False, normalize=None, cache_dir=False)
    assert val.case_ids == ["brats_2013_pat0003_1", "brats_2013_pat0004_1"]
    assert val.channels == ["t1c", "flair"] and val.num_channels == 2
    for i, case in enumerate(val.case_ids):
        m = val[i]["mask"].numpy()
        counts = np.bincount(m.ravel(), minlength=5)[1:]
        assert tuple(counts) == BRATS_COUNTS[case[len("brats_2013_") : -2]]
    train = open_dataset(f"brats:{root}", "train", labels="whole", cache_dir=False)
    item = train[0]
    assert item["image"].shape == (2, 64, 64, 64) and item["mask"].shape == (64, 64, 64)
    assert set(item["mask"].unique().tolist()) == {0, 1}
    brain = item["image"][0] > item["image"][0].min()
    assert abs(float(item["image"][0][brain].mean())) < 0.2  # z-scored inside the brain
