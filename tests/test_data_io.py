"""Readers, atomic writers, specs and every bad-input path of rubikkit.data (fabricated files)."""

from __future__ import annotations

import os
import re

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from data_fixtures import (
    make_brats_cases,
    make_lidc,
    make_medmnist,
    make_msd,
    truncate,
    write_nifti,
    write_xlsx,
)

from rubikkit.data import (
    BraTS,
    LIDCNodules,
    MedMNIST3D,
    NiftiFolder,
    group_split,
    load_nifti,
    load_npy,
    load_npz,
    load_volume,
    merge_labels,
    open_dataset,
    parse_spec,
    save_nifti,
    save_npy,
    save_npz,
)
from rubikkit.data.cache import cached_arrays, clear_memory_cache
from rubikkit.data.io import atomic_path
from rubikkit.data.lidc import read_xlsx, voi_metadata
from rubikkit.data.spec import data_root, parse_value, resolve_path, takes_option
from rubikkit.train.runs import open_split


# ----------------------------------------------------------------------------- readers / writers
def test_nifti_axis_convention_and_spacing(tmp_path):
    data = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)  # (i, j, k) on disk
    path = write_nifti(tmp_path / "v.nii.gz", data, zooms=(0.5, 0.7, 2.5))
    vol = load_nifti(path)
    assert vol.array.shape == (6, 5, 4)  # (D, H, W) = (k, j, i)
    assert vol.array[3, 2, 1] == data[1, 2, 3]
    assert vol.spacing == pytest.approx((2.5, 0.7, 0.5))
    assert vol.array.dtype == np.int16


def test_nifti_round_trip_3d_and_4d(tmp_path):
    a = np.random.default_rng(0).random((3, 4, 5, 6)).astype(np.float32)
    save_nifti(tmp_path / "a.nii.gz", a, spacing=(2.0, 1.0, 0.5))
    back = load_nifti(tmp_path / "a.nii.gz")
    np.testing.assert_array_equal(back.array, a)
    assert back.spacing == pytest.approx((2.0, 1.0, 0.5))
    save_nifti(tmp_path / "b.nii", a[0])
    np.testing.assert_array_equal(load_volume(tmp_path / "b.nii").array, a[0])
    raw = np.asanyarray(nib.load(str(tmp_path / "b.nii")).dataobj)
    assert raw.shape == (6, 5, 4)  # stored as (i, j, k)


def test_npy_npz_round_trip(tmp_path):
    a = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    save_npy(tmp_path / "a.npy", a)
    np.testing.assert_array_equal(load_npy(tmp_path / "a.npy"), a)
    save_npz(tmp_path / "a.npz", image=a, spacing=np.array([2.0, 1.0, 1.0]))
    vol = load_volume(tmp_path / "a.npz")
    np.testing.assert_array_equal(vol.array, a)
    assert vol.spacing == (2.0, 1.0, 1.0)
    assert set(load_npz(tmp_path / "a.npz")) == {"image", "spacing"}


def test_corrupt_and_truncated_nifti_name_the_file(tmp_path):
    bad = tmp_path / "garbage.nii.gz"
    bad.write_bytes(b"not a nifti at all" * 10)
    with pytest.raises(ValueError, match="garbage.nii.gz"):
        load_nifti(bad)
    good = write_nifti(tmp_path / "cut.nii.gz", np.ones((20, 20, 20), dtype=np.float32))
    truncate(good, 0.5)
    with pytest.raises(ValueError, match=r"cut\.nii\.gz.*(corrupt|truncated)"):
        load_nifti(good)
    raw = write_nifti(tmp_path / "cut.nii", np.ones((20, 20, 20), dtype=np.float32))
    truncate(raw, 0.3)
    with pytest.raises(ValueError, match=r"cut\.nii"):
        load_nifti(raw)
    with pytest.raises(FileNotFoundError, match="no such NIfTI file"):
        load_nifti(tmp_path / "absent.nii.gz")


def test_bad_npz_npy(tmp_path):
    save_npz(tmp_path / "a.npz", image=np.zeros((4, 4, 4)))
    truncate(tmp_path / "a.npz", 0.5)
    with pytest.raises(ValueError, match=r"a\.npz.*(corrupt|truncated)"):
        load_npz(tmp_path / "a.npz")
    save_npz(tmp_path / "b.npz", other=np.zeros(3))
    with pytest.raises(ValueError, match=r"b\.npz lacks the key\(s\) \['image'\]"):
        load_npz(tmp_path / "b.npz", keys=["image"])
    with pytest.raises(ValueError, match="no 'image' array"):
        load_volume(tmp_path / "b.npz")
    (tmp_path / "c.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(ValueError, match=r"c\.npy"):
        load_npy(tmp_path / "c.npy")
    with pytest.raises(ValueError, match="unsupported volume format"):
        load_volume(tmp_path / "x.mha")


def test_writers_are_atomic(tmp_path):
    target = tmp_path / "keep.npz"
    save_npz(target, image=np.ones(3))
    before = target.read_bytes()
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("crash while writing")
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["keep.npz"]  # no temporary left behind
    with pytest.raises(ValueError, match="array"):
        save_nifti(tmp_path / "x.nii.gz", np.zeros((2, 2)))
    with pytest.raises(ValueError, match="path"):
        save_nifti(tmp_path / "x.img", np.zeros((2, 2, 2)))
    assert not (tmp_path / "x.nii.gz").exists()


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640)])
def test_written_files_get_the_mode_of_any_new_file(tmp_path, umask, mode):
    # mkstemp alone makes a private 0600 file: a dataset, a checkpoint or a handout in a shared
    # folder would be unreadable by the group.
    from rubikkit.train.checkpoint import save_checkpoint

    old = os.umask(umask)
    try:
        written = [
            save_npz(tmp_path / "a.npz", image=np.ones(3)),
            save_npy(tmp_path / "a.npy", np.ones(3)),
            save_nifti(tmp_path / "a.nii.gz", np.zeros((2, 2, 2))),
            save_checkpoint({"step": 1}, tmp_path / "last.pt"),
        ]
    finally:
        os.umask(old)
    assert {p.name: p.stat().st_mode & 0o777 for p in written} == {p.name: mode for p in written}


def test_the_umask_is_read_without_setting_it(monkeypatch):
    from rubikkit.data import io as rio

    old = os.umask(0o027)
    try:
        assert rio._umask() == 0o027
        if os.path.exists("/proc/self/status"):  # Linux: read, never set (another thread may write)
            calls = []
            monkeypatch.setattr(rio.os, "umask", lambda m: calls.append(m) or 0o027)
            assert rio._umask() == 0o027 and calls == []
            monkeypatch.undo()
        # Without /proc the set-and-restore fallback answers the same and leaves the mask as it was.
        real_open = open

        def no_proc(file, *args, **kwargs):
            if file == "/proc/self/status":
                raise OSError(file)
            return real_open(file, *args, **kwargs)

        monkeypatch.setattr("builtins.open", no_proc)
        assert rio._umask() == 0o027
        monkeypatch.undo()
        assert os.umask(0o027) == 0o027
    finally:
        os.umask(old)


# ----------------------------------------------------------------------------- specs
def test_parse_spec_and_values():
    assert parse_spec("lidc:some/path") == ("lidc", "some/path")
    assert parse_value("64") == 64 and parse_value("0.5") == 0.5
    assert parse_value("true") is True and parse_value("64,64,32") == (64, 64, 32)
    for bad in ("nope:x", "phantoms", "phantoms:", "lidc"):
        with pytest.raises(ValueError, match="spec"):
            parse_spec(bad)
    with pytest.raises(TypeError, match="spec"):
        parse_spec(3)
    with pytest.raises(ValueError, match="kind: unknown phantom kind"):
        open_dataset("phantoms:unicorn")
    with pytest.raises(ValueError, match="flag: unknown MedMNIST"):
        open_dataset("medmnist3d:retina")


def test_unknown_option_is_named():
    with pytest.raises(ValueError, match="options: 'phantoms:nodule' takes no option 'sise'"):
        open_dataset("phantoms:nodule", sise=32)


def test_data_root_and_missing_dataset_messages(tmp_path, monkeypatch):
    monkeypatch.setenv("RUBIKKIT_DATA", str(tmp_path))
    assert data_root() == tmp_path
    assert resolve_path("lidc") == tmp_path / "lidc"
    lidc = tmp_path / "lidc"
    with pytest.raises(
        FileNotFoundError,
        match=re.escape(f"`python data_scripts/lidc_nodules.py --dest {lidc}`.") + "$",
    ):
        open_dataset("lidc:lidc")
    with pytest.raises(FileNotFoundError, match="data_scripts/brats.py"):
        open_dataset("brats:brats")
    with pytest.raises(FileNotFoundError, match="own NIfTI files there, or .*`[.]$"):
        open_dataset("nifti:mine")
    with pytest.raises(FileNotFoundError, match="data_scripts/medmnist3d.py --flag adrenal"):
        open_dataset("medmnist3d:adrenal")
    make_lidc(tmp_path / "lidc", n_patients=2)
    ds = open_dataset("lidc:lidc", split="all", cache_dir=False, progress=False)  # relative path
    assert len(ds) > 0


def test_group_split_is_by_group_and_deterministic():
    groups = [f"p{i // 3}" for i in range(60)]
    parts = {s: group_split(groups, s, seed=1) for s in ("train", "val", "test")}
    seen = [set(np.asarray(groups)[idx]) for idx in parts.values()]
    assert not (seen[0] & seen[1] or seen[0] & seen[2] or seen[1] & seen[2])
    assert sorted(np.concatenate(list(parts.values()))) == list(range(60))
    np.testing.assert_array_equal(group_split(groups, "train", seed=1), parts["train"])
    assert not np.array_equal(group_split(groups, "train", seed=2), parts["train"])
    with pytest.raises(ValueError, match="split"):
        group_split(groups, "holdout")
    with pytest.raises(ValueError, match="fractions"):
        group_split(groups, "train", fractions=(0.5, 0.5, 0.5))


def test_merge_labels():
    m = np.array([0, 1, 2, 3, 4])
    np.testing.assert_array_equal(merge_labels(m, "whole", "brats"), [0, 1, 1, 1, 1])
    np.testing.assert_array_equal(merge_labels(m, "core", "brats"), [0, 1, 0, 1, 1])
    np.testing.assert_array_equal(merge_labels(m, "enhancing", "brats"), [0, 0, 0, 0, 1])
    np.testing.assert_array_equal(merge_labels(m[:4], "core", "msd"), [0, 0, 1, 1])
    with pytest.raises(ValueError, match="labels"):
        merge_labels(m, "tumour", "brats")
    with pytest.raises(ValueError, match="label_convention"):
        merge_labels(m, "whole", "kaggle")


# ----------------------------------------------------------------------------- LIDC (fabricated)
def test_lidc_fabricated(tmp_path):
    root = make_lidc(tmp_path / "lidc", n_patients=10)
    ds = LIDCNodules(root, "all", cache_dir=False, progress=False, size=16)
    meta = pd.read_csv(root / "metadata.csv")
    assert len(ds) == int(((meta.Malignancy_value <= 2) | (meta.Malignancy_value >= 4)).sum())
    item = ds[0]
    assert item["image"].shape == (1, 16, 16, 16) and item["image"].dtype == torch.float32
    assert item["label"].dtype == torch.int64
    assert -1.0 <= float(item["image"].min()) and float(item["image"].max()) <= 1.0
    un = LIDCNodules(root, "all", unlabeled=True, cache_dir=False, progress=False, size=16)
    assert len(un) == len(meta) and un.task == "unlabeled" and "label" not in un[0]
    loose = LIDCNodules(
        root, "all", benign_max=3, cache_dir=False, progress=False, size=16, return_mask=True
    )
    assert len(loose) == len(meta)  # benign_max=3: no score is dropped
    assert loose[0]["mask"].shape == (16, 16, 16) and loose[0]["mask"].sum() > 0
    # the cube is centred on the nodule: its mask covers the centre voxel
    assert loose[0]["mask"][8, 8, 8] == 1


def test_lidc_shift_moves_the_nodule_off_the_centre(tmp_path):
    root = make_lidc(tmp_path / "lidc", n_patients=4)
    kw = dict(cache_dir=False, progress=False, size=24, unlabeled=True, return_mask=True)
    centred = LIDCNodules(root, "all", **kw)
    assert not centred.offsets_mm.any()
    np.testing.assert_array_equal(LIDCNodules(root, "all", shift=0, **kw)._arrays["hu"],
                                  centred._arrays["hu"])  # fmt: skip
    ds = LIDCNodules(root, "all", shift=(4.0, 5.0, 6.0), **kw)
    off = ds.offsets_mm
    assert off.shape == (len(ds), 3) and (np.abs(off) <= [4.0, 5.0, 6.0]).all()
    assert (np.abs(off) > 0.5).any(axis=0).all() and len(np.unique(off[:, 0])) == len(ds)
    for i in range(len(ds)):
        # 1 mm voxels: the nodule's centroid sits ``offset`` mm before the cube's centre
        for mask, want in ((centred[i]["mask"], np.zeros(3)), (ds[i]["mask"], -off[i])):
            got = np.argwhere(np.asarray(mask) > 0).mean(axis=0) - 11.5
            np.testing.assert_allclose(got, want, atol=1.0)
    again = LIDCNodules(root, "all", shift=(4.0, 5.0, 6.0), **kw)
    np.testing.assert_array_equal(again.offsets_mm, off)
    other = LIDCNodules(root, "all", shift=(4.0, 5.0, 6.0), shift_seed=1, **kw)
    assert not np.allclose(other.offsets_mm, off)
    # offset: the same move for every nodule, on top of the shift draws
    fixed = LIDCNodules(root, "all", offset=(3.0, -4.0, 0.0), **kw)
    np.testing.assert_array_equal(fixed.offsets_mm, np.tile([3.0, -4.0, 0.0], (len(ds), 1)))
    for i in range(len(fixed)):
        got = np.argwhere(np.asarray(fixed[i]["mask"]) > 0).mean(axis=0) - 11.5
        np.testing.assert_allclose(got, [-3.0, 4.0, 0.0], atol=1.0)
    both = LIDCNodules(root, "all", shift=(4.0, 5.0, 6.0), offset=1.0, **kw)
    np.testing.assert_allclose(both.offsets_mm, off + 1.0)
    for bad, match in (
        (dict(offset=(1.0, 2.0)), "offset"),
        (dict(offset="up"), "offset"),
        (dict(offset=float("inf")), "offset"),
        (dict(shift=-1.0), "shift"),
        (dict(shift=(1.0, 2.0)), "shift"),
        (dict(shift="far"), "shift"),
        (dict(shift=float("nan")), "shift"),
        (dict(shift=2.0, shift_seed=-1), "shift_seed"),
        (dict(shift=2.0, shift_seed=1.5), "shift_seed"),
    ):
        with pytest.raises(ValueError, match=match):
            LIDCNodules(root, "all", **bad, **kw)


def test_lidc_cache_on_disk_and_an_unwritable_cache_dir(tmp_path):
    root = make_lidc(tmp_path / "lidc", n_patients=2)
    clear_memory_cache()
    first = LIDCNodules(root, "all", cache_dir=tmp_path / "cache", progress=False, size=12)
    (cached,) = (tmp_path / "cache").glob("lidc-*.npz")
    clear_memory_cache()
    again = LIDCNodules(root, "all", cache_dir=tmp_path / "cache", progress=False, size=12)
    torch.testing.assert_close(again[0]["image"], first[0]["image"])
    # a cache folder that cannot be made (here: a file is in the way) is warned about, not fatal
    (tmp_path / "blocked").write_text("a file, not a folder")
    clear_memory_cache()
    with pytest.warns(UserWarning, match="cache_dir: cannot write .*blocked"):
        kept = LIDCNodules(
            root, "all", cache_dir=tmp_path / "blocked" / "c", progress=False, size=12
        )
    torch.testing.assert_close(kept[0]["image"], first[0]["image"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocked", "cache", "lidc"]
    assert cached.is_file()
    calls = []
    arrays = cached_arrays("t", {"k": 1}, lambda: calls.append(1) or {"a": np.ones(2)}, None)
    assert cached_arrays("t", {"k": 1}, lambda: calls.append(1) or {}, None) is arrays
    assert calls == [1]  # computed once, then from memory


def test_open_split_progress_reaches_the_dataset(tmp_path, capsys):
    root = make_lidc(tmp_path / "lidc", n_patients=2)
    assert takes_option("lidc:x", "progress") and takes_option("brats:x", "progress")
    assert not takes_option("phantoms:tumour", "progress")
    spec = f"lidc:{root}"
    clear_memory_cache()
    open_split(spec, "all", {"cache_dir": False, "size": 10}, progress=False)
    assert "LIDC VOIs" not in capsys.readouterr().err
    clear_memory_cache()
    open_split(spec, "all", {"cache_dir": False, "size": 10})
    assert "LIDC VOIs" in capsys.readouterr().err
    open_split("phantoms:tumour", "train", {"n": 2, "size": 16}, progress=False)  # takes none


def test_lidc_bad_inputs(tmp_path):
    root = make_lidc(tmp_path / "lidc", n_patients=3)
    meta = pd.read_csv(root / "metadata.csv")
    meta.drop(columns=["Malignancy_value"]).to_csv(root / "metadata.csv", index=False)
    with pytest.raises(ValueError, match="no column 'Malignancy_value'"):
        LIDCNodules(root, "all", cache_dir=False, progress=False)
    meta.to_csv(root / "metadata.csv", index=False)
    mask = root / "nodule_mask" / meta.file[1]
    write_nifti(mask, np.zeros((3, 3, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match=f"nodule_mask: {meta.file[1]} has shape"):
        LIDCNodules(root, "all", cache_dir=False, progress=False)
    truncate(root / "image" / meta.file[2], 0.4)
    write_nifti(mask, np.zeros((1, 1, 1), dtype=np.uint8))
    with pytest.raises((ValueError, FileNotFoundError), match=str(meta.file[1]).split(".")[0]):
        LIDCNodules(root, "all", cache_dir=False, progress=False)
    with pytest.raises(FileNotFoundError, match="metadata.csv"):
        LIDCNodules(tmp_path, "all")
    with pytest.raises(ValueError, match="labels"):
        LIDCNodules(root, "all", labels="stage")


def test_xlsx_metadata_conversion(tmp_path):
    table = pd.DataFrame(
        {"patient_id": ["LIDC-IDRI-0001", "LIDC-IDRI-0002"], "nodule_id": [1, 3]}
    ).assign(Malignancy_value=[5, 2], diameter_mm=[12.5, 4.0])
    got = read_xlsx(write_xlsx(tmp_path / "m.xlsx", table))
    assert list(got.columns) == list(table.columns)
    assert got.Malignancy_value.tolist() == [5, 2] and got.diameter_mm.tolist() == [12.5, 4.0]
    meta = voi_metadata(got)
    assert meta.file.tolist() == ["LIDC-IDRI-0001_R_1.nii.gz", "LIDC-IDRI-0002_R_3.nii.gz"]
    with pytest.raises(ValueError, match="no 'nodule_id' column"):
        voi_metadata(got.drop(columns=["nodule_id"]))
    (tmp_path / "bad.xlsx").write_bytes(b"nope")
    with pytest.raises(ValueError, match=r"bad\.xlsx"):
        read_xlsx(tmp_path / "bad.xlsx")


# ----------------------------------------------------------------------------- BraTS / MSD
def test_brats_cases_fabricated(tmp_path):
    root = make_brats_cases(tmp_path / "b")
    ds = BraTS(root, "train", size=16, cache_dir=False, progress=False)
    assert ds.channels == ["t1c", "flair"] and ds.num_channels == 2 and len(ds) == 2
    item = ds[0]
    assert item["image"].shape == (2, 16, 16, 16) and item["image"].dtype == torch.float32
    assert item["mask"].dtype == torch.int64 and set(item["mask"].unique().tolist()) <= {0, 1, 2, 4}
    whole = BraTS(root, "train", labels="whole", size=None, keep_aspect=False, cache_dir=False)
    assert whole.class_names == ["background", "whole tumour"]
    assert int(whole[0]["mask"].sum()) == 4 * 4 * 4  # every tumour voxel of the fabricated case
    assert len(BraTS(root, "val", cache_dir=False, size=16)) == 1
    with pytest.raises(ValueError, match="channels: .*pat1.* no 't2' modality"):
        BraTS(root, "train", channels=["t2"], cache_dir=False)


def test_brats_bad_inputs(tmp_path):
    root = make_brats_cases(tmp_path / "b")
    (root / "train" / "pat2" / "T1c_subtrMeanDivStd.nii.gz").unlink()
    with pytest.raises(ValueError, match="pat2 has no 't1c' modality"):
        BraTS(root, "train", channels=["flair", "t1c"], cache_dir=False)
    assert BraTS(root, "train", cache_dir=False).channels == ["flair"]  # the shared ones
    lab = root / "validation" / "pat3" / "OTMultiClass.nii.gz"
    write_nifti(lab, np.zeros((5, 5, 5), dtype=np.float32))
    with pytest.raises(ValueError, match="label map .*OTMultiClass.nii.gz has shape"):
        BraTS(root, "val", cache_dir=False, size=8)[0]
    with pytest.raises(ValueError, match="split: .* no folder for split 'test'"):
        BraTS(root, "test", cache_dir=False)
    with pytest.raises(ValueError, match="labels"):
        BraTS(root, "val", labels="necrosis")


def test_msd_layout(tmp_path):
    root = make_msd(tmp_path / "Task01_BrainTumour", n=6)
    ds = BraTS(root, "all", size=12, cache_dir=False, normalize=None, keep_aspect=False)
    assert ds.layout == "msd" and ds.convention == "msd" and len(ds) == 6
    assert ds.channels == ["t1", "t1c", "t2", "flair"]
    img = ds[0]["image"]
    # MSD stores FLAIR, T1w, T1gd, T2w: channel c was offset by c in the fabricated file
    means = [float(img[k].max()) for k in range(4)]
    assert means[3] < means[0] < means[1] < means[2]
    core = BraTS(root, "all", labels="core", size=None, keep_aspect=False, cache_dir=False)
    assert int(core[0]["mask"].sum()) == 3 * 3 * 2
    parts = [BraTS(root, s, cache_dir=False).case_ids for s in ("train", "val", "test")]
    assert sorted(sum(parts, [])) == sorted(ds.case_ids)


# ----------------------------------------------------------------------------- NIfTI folder
def test_nifti_folder_csv_and_errors(tmp_path):
    root = tmp_path / "n"
    for i in range(6):
        write_nifti(root / f"v{i}.nii.gz", np.full((6, 7, 8), i, dtype=np.float32))
        write_nifti(root / f"m{i}.nii.gz", (np.arange(6 * 7 * 8) % 2).reshape(6, 7, 8))
    table = pd.DataFrame(
        {
            "file": [f"v{i}.nii.gz" for i in range(6)],
            "label": ["a", "b"] * 3,
            "mask": [f"m{i}.nii.gz" for i in range(6)],
            "split": ["train"] * 4 + ["test"] * 2,
        }
    )
    table.to_csv(root / "labels.csv", index=False)
    ds = NiftiFolder(root, "train", normalize=None)
    assert len(ds) == 4 and ds.class_names == ["a", "b"] and ds.task == "classification"
    item = ds[1]
    assert item["image"].shape == (1, 8, 7, 6) and item["mask"].shape == (8, 7, 6)
    assert float(item["image"][0, 0, 0, 0]) == 1.0
    assert NiftiFolder(root, "train", size=4)[0]["image"].shape == (1, 4, 4, 4)
    write_nifti(root / "m1.nii.gz", np.zeros((3, 3, 3)))
    with pytest.raises(ValueError, match=r"mask: .*m1\.nii\.gz has shape"):
        ds = NiftiFolder(root, "train")
        ds[1]
    table.drop(columns=["file"]).to_csv(root / "labels.csv", index=False)
    with pytest.raises(ValueError, match="no column 'file'"):
        NiftiFolder(root)
    table.drop(columns=["label", "mask"]).to_csv(root / "labels.csv", index=False)
    with pytest.raises(ValueError, match="neither a 'label' nor a 'mask' column"):
        NiftiFolder(root)
    with pytest.raises(FileNotFoundError, match="labels_csv"):
        NiftiFolder(root, labels_csv=root / "nope.csv")
    (root / "labels.csv").unlink()
    un = NiftiFolder(root, "all")
    assert un.task == "unlabeled" and len(un) == 12


# ----------------------------------------------------------------------------- MedMNIST (fabricated)
def test_medmnist_fabricated(tmp_path):
    make_medmnist(tmp_path / "adrenalmnist3d.npz")
    ds = MedMNIST3D("adrenal", "val", root=tmp_path)
    assert len(ds) == 4 and ds.class_names == ["normal", "hyperplasia"]
    item = ds[0]
    assert item["image"].shape == (1, 28, 28, 28) and set(item["image"].unique().tolist()) <= {0, 1}
    with pytest.raises(ValueError, match="split"):
        MedMNIST3D("adrenal", "all", root=tmp_path)
    with pytest.raises(ValueError, match="size"):
        MedMNIST3D("adrenal", "train", size=32, root=tmp_path)
    np.savez(tmp_path / "organmnist3d.npz", train_images=np.zeros((2, 28, 28, 28), np.uint8))
    with pytest.raises(ValueError, match=r"organmnist3d\.npz lacks 'train_labels'|train_labels"):
        MedMNIST3D("organ", "train", root=tmp_path)
    truncate(tmp_path / "adrenalmnist3d.npz", 0.5)
    with pytest.raises(ValueError, match=r"adrenalmnist3d\.npz"):
        MedMNIST3D("adrenal", "test", root=tmp_path)
