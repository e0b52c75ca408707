"""A researcher's own NIfTI folders and odd settings: each gives a clear error, never a traceback
from deep inside torch or a run folder left half written."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pandas as pd
import pytest
import torch
from data_fixtures import write_nifti

from rubikkit.cli import main
from rubikkit.data import NiftiFolder
from rubikkit.train.cli import _reported
from rubikkit.train.evaluate import evaluate
from rubikkit.train.runs import collate

TINY = [
    "--task", "rubik", "--backbone-option", "widths=4,8", "--task-option", "n_perms=8",
    "--task-option", "hidden=16", "--max-steps", "1", "--device", "cpu", "--no-progress",
]  # fmt: skip


def _folder(root, shapes, labels=None):
    rng = np.random.default_rng(0)
    for i, shape in enumerate(shapes):
        write_nifti(root / f"v{i}.nii.gz", rng.random(shape).astype(np.float32))
    if labels is not None:
        files = [f"v{i}.nii.gz" for i in range(len(shapes))]
        pd.DataFrame({"file": files, "label": labels}).to_csv(root / "labels.csv", index=False)
    return root


def test_nan_voxels_are_named_not_trained_on(tmp_path):
    root = _folder(tmp_path / "n", [(16, 16, 16)] * 4)
    data = np.ones((16, 16, 16), dtype=np.float32)
    data[3, 4, 5] = np.nan
    write_nifti(root / "v0.nii.gz", data)
    with pytest.raises(ValueError, match=r"image: .*v0\.nii\.gz holds 1 NaN or infinite voxels"):
        NiftiFolder(root, "all")[0]


def test_volumes_of_different_shapes_name_the_size_option(tmp_path, capsys):
    root = _folder(tmp_path / "a", [(16, 16, 16), (12, 16, 16)] * 3)
    items = [{"image": torch.zeros(1, 16, 16, 16), "id": "a"}, {"image": torch.zeros(1, 12, 16, 16), "id": "b"}]  # fmt: skip
    with pytest.raises(ValueError, match=r"'a' \(1, 16, 16, 16\) and 'b' \(1, 12, 16, 16\)"):
        collate(items)
    out = tmp_path / "run"
    argv = ["pretrain", "--data", f"nifti:{root}", "--out", str(out), "--val-split", "none"]
    argv += ["--data-option", "fractions=1,0,0", "--batch-size", "6"]  # one batch of all
    assert main([*argv, *TINY]) == 2
    assert "different shapes" in capsys.readouterr().err
    # ... and resampled to one shape they train
    assert main([*argv, "--data-option", "size=16", *TINY]) == 0


def test_an_empty_validation_split_is_an_error_before_any_file(tmp_path, capsys):
    # 3 volumes split 0.7 / 0.1 / 0.2 leave the validation split empty: pre-training validated
    # on nothing, fine-tuning failed in torch.cat after writing config.json and log.jsonl.
    root = _folder(tmp_path / "three", [(16, 16, 16)] * 3, labels=["a", "b", "a"])
    out = tmp_path / "run"
    for argv in (
        ["pretrain", *TINY],
        ["finetune", "--init", "scratch", "--max-steps", "1", "--device", "cpu", "--no-progress"],
    ):
        assert main([*argv, "--data", f"nifti:{root}", "--out", str(out)]) == 2
        assert "(split 'val'): the split holds no items" in capsys.readouterr().err
        assert not out.exists()


def test_a_mask_value_of_one_split_only_is_a_class_of_every_split(tmp_path):
    root = tmp_path / "seg"
    for i in range(6):
        write_nifti(root / f"v{i}.nii.gz", np.ones((8, 8, 8), dtype=np.float32))
        write_nifti(root / f"m{i}.nii.gz", (np.arange(512) % 2).reshape(8, 8, 8).astype(np.uint8))
    table = pd.DataFrame(
        {
            "file": [f"v{i}.nii.gz" for i in range(6)],
            "mask": [f"m{i}.nii.gz" for i in range(6)],
            "split": ["train"] * 4 + ["val", "test"],
        }
    )
    table.to_csv(root / "labels.csv", index=False)
    write_nifti(root / "m4.nii.gz", np.full((8, 8, 8), 2, dtype=np.uint8))  # only val has 2
    assert NiftiFolder(root, "train").class_names == ["0", "1", "2"]
    assert int(NiftiFolder(root, "val")[0]["mask"].max()) == 2
    # class names that leave a mask value out name the mask instead of failing in the loss
    (root / "dataset.json").write_text(json.dumps({"class_names": ["bg", "fg"]}))
    with pytest.raises(ValueError, match=r"mask: .*m4\.nii\.gz holds values 2\.\.2, outside"):
        NiftiFolder(root, "val")[0]


def test_bad_labels_and_size_name_the_argument(tmp_path):
    root = _folder(tmp_path / "l", [(8, 8, 8)] * 4, labels=[0, 1, -1, 1])
    with pytest.raises(ValueError, match="labels_csv: .* has the negative label -1"):
        NiftiFolder(root, "all")
    (root / "labels.csv").unlink()
    with pytest.raises(ValueError, match="size: expected an int or 3 positive ints"):
        NiftiFolder(root, "all", size="abc")


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory):
    """A classifier fine-tuned one step on 6 labelled volumes (its test split: one class)."""
    tmp = tmp_path_factory.mktemp("ft")
    root = _folder(tmp / "c", [(16, 16, 16)] * 6, labels=["a", "b"] * 3)
    out = tmp / "ft"
    ft = ["finetune", "--init", "scratch", "--backbone-option", "widths=4,8", "--max-steps", "1"]
    ft += ["--device", "cpu", "--no-progress"]
    assert main([*ft, "--data", f"nifti:{root}", "--out", str(out)]) == 0
    return out / "best.pt"


def test_evaluate_prints_strict_json(finetuned, capsys):
    # A test split of one class has no AUC; stdout said NaN, which JSON readers reject.
    capsys.readouterr()
    assert main(["evaluate", str(finetuned), "--no-progress", "--device", "cpu"]) == 0

    def refuse(name):
        raise ValueError(f"not JSON: {name}")

    metrics = json.loads(capsys.readouterr().out, parse_constant=refuse)
    assert metrics["auc"] is None and 0 <= metrics["acc"] <= 1


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--weight-decay", "-1"], "weight_decay: expected a non-negative number"),
        (["--lr", "inf"], "lr: expected a positive number, got inf"),
    ],
)
def test_bad_training_values_write_nothing(tmp_path, capsys, option, message):
    root = _folder(tmp_path / "v", [(16, 16, 16)] * 6)
    out = tmp_path / "run"
    assert main(["pretrain", "--data", f"nifti:{root}", "--out", str(out), *TINY, *option]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_out_that_is_a_file_and_a_diverged_loss_are_one_line(tmp_path, capsys):
    root = _folder(tmp_path / "v", [(16, 16, 16)] * 6)
    (tmp_path / "afile").write_text("x")
    argv = ["pretrain", "--data", f"nifti:{root}", "--out", str(tmp_path / "afile"), *TINY]
    assert main(argv) == 2
    assert "out: " in capsys.readouterr().err

    def diverge(args):
        raise FloatingPointError("loss: nan at step 3 (epoch 1); try a smaller lr")

    assert _reported(diverge)(argparse.Namespace(command="finetune")) == 2
    assert capsys.readouterr().err == (
        "rubikkit finetune: error: loss: nan at step 3 (epoch 1); try a smaller lr\n"
    )


def test_evaluate_on_data_that_does_not_fit_the_checkpoint(finetuned, tmp_path, capsys):
    # They failed inside torch (a conv's channel count) or with a bare KeyError: 'label'.
    two = tmp_path / "two"
    for i in range(6):
        write_nifti(two / f"v{i}.nii.gz", np.random.default_rng(i).random((16, 16, 16, 2)))
    seg = tmp_path / "seg"
    for i in range(6):
        write_nifti(seg / f"v{i}.nii.gz", np.ones((16, 16, 16), dtype=np.float32))
        write_nifti(seg / f"m{i}.nii.gz", (np.arange(16**3) % 2).reshape(16, 16, 16))
    files = [f"v{i}.nii.gz" for i in range(6)]
    masks = [f"m{i}.nii.gz" for i in range(6)]
    pd.DataFrame({"file": files, "label": ["a", "b"] * 3}).to_csv(two / "labels.csv", index=False)
    pd.DataFrame({"file": files, "mask": masks}).to_csv(seg / "labels.csv", index=False)
    for root, message in [
        (two, "has 2 channels, the model of"),
        (seg, "is 'segmentation' data; the 'classify' head of"),
    ]:
        argv = ["evaluate", str(finetuned), "--data", f"nifti:{root}", "--split", "all"]
        assert main([*argv, "--device", "cpu", "--no-progress"]) == 2
        assert message in capsys.readouterr().err


def test_evaluate_names_bad_loader_settings(finetuned, capsys):
    # --workers -1 gave torch's "num_workers option should be non-negative".
    argv = ["evaluate", str(finetuned), "--split", "test", "--device", "cpu", "--no-progress"]
    assert main([*argv, "--workers", "-1"]) == 2
    assert "workers: must be >= 0, got -1" in capsys.readouterr().err
    with pytest.raises(ValueError, match="batch_size: must be >= 1, got 0"):
        evaluate(finetuned, split="test", batch_size=0, progress=False)


def test_finetune_refuses_a_backbone_other_than_the_inits(finetuned, tmp_path, capsys):
    # --backbone resnet18 with a vgg3d checkpoint was ignored without a word.
    data = json.loads((finetuned.parent / "config.json").read_text())["data"]
    out = tmp_path / "ft"
    argv = ["finetune", "--init", str(finetuned), "--data", data, "--out", str(out)]
    argv += ["--max-steps", "1", "--device", "cpu", "--no-progress"]
    assert main([*argv, "--backbone", "resnet18"]) == 2
    assert "backbone: " in capsys.readouterr().err and not out.exists()
    assert main([*argv, "--backbone", "vgg3d"]) == 0


def test_a_fresh_run_replaces_what_an_earlier_run_left(tmp_path):
    # A folder whose last.pt was removed (as `experiment run` does) took a fresh run, which
    # appended to the old log.jsonl and, with no finite validation AUC (one class), kept the
    # old run's best.pt.
    from rubikkit.train import load_checkpoint
    from rubikkit.viz import read_log

    root = _folder(tmp_path / "c", [(16, 16, 16)] * 6, labels=["a", "b"] * 3)
    out = tmp_path / "ft"
    argv = ["finetune", "--init", "scratch", "--backbone-option", "widths=4,8", "--device", "cpu"]
    argv += ["--no-progress", "--data", f"nifti:{root}", "--out", str(out)]
    assert main([*argv, "--max-steps", "2"]) == 0
    (out / "last.pt").unlink()
    # what a process killed while writing a checkpoint leaves; a user's own file stays
    (out / ".best.pt.k1l2d3.tmp").write_bytes(b"half a checkpoint")
    (out / "notes.tmp").write_text("mine")
    assert main([*argv, "--max-steps", "1"]) == 0
    assert not (out / ".best.pt.k1l2d3.tmp").exists() and (out / "notes.tmp").exists()
    assert load_checkpoint(out / "best.pt")["step"] == 1
    assert [r["step"] for r in read_log(out)] == [1, 1]
