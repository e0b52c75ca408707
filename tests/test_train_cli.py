"""``rubikkit pretrain / finetune / evaluate`` end to end on tiny phantoms."""

from __future__ import annotations

import json

import pytest
import torch

from rubikkit.cli import main
from rubikkit.results import validate_record
from rubikkit.train import evaluate, load_checkpoint, to_record
from rubikkit.viz import read_log

DATA = ["--data", "phantoms:hemorrhage", "--data-option", "n=8", "--data-option", "size=32"]
FAST = ["--device", "cpu", "--no-progress", "--seed", "1"]
RUN_FILES = {"config.json", "log.jsonl", "last.pt", "best.pt", "metrics.json"}


def _files(folder) -> set[str]:
    return {p.name for p in folder.iterdir()}


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "pre"
    code = main(
        [
            "pretrain",
            "--task",
            "rubik",
            *DATA,
            "--backbone",
            "vgg3d",
            "--out",
            str(out),
            "--backbone-option",
            "widths=4,8",
            "--task-option",
            "n_perms=8",
            "--task-option",
            "hidden=16",
            "--max-steps",
            "3",
            "--batch-size",
            "2",
            *FAST,
        ]
    )
    assert code == 0
    return out


def test_pretrain_writes_a_complete_run(pretrained):
    assert RUN_FILES <= _files(pretrained)
    config = json.loads((pretrained / "config.json").read_text())
    assert config["backbone"] == {
        "name": "vgg3d",
        "in_channels": 1,
        "widths": [4, 8],
        "convs": [1, 1],
    }
    assert config["task"] == "rubik" and config["task_options"]["n_perms"] == 8
    log = read_log(pretrained)
    assert [r["split"] for r in log] == ["train", "val"]
    assert all({"epoch", "step", "split", "loss"} <= r.keys() for r in log)
    assert {"order_acc", "rot_acc"} <= log[1].keys()
    ckpt = load_checkpoint(pretrained / "best.pt")
    assert ckpt["step"] == 3 and ckpt["config"]["backbone"]["widths"] == [4, 8]
    record = validate_record(to_record(pretrained / "metrics.json", "val"))
    assert record["method"] == "rubik" and record["head"] == "proxy"
    assert 0 <= record["metrics"]["order_acc"] <= 1


def test_finetune_then_evaluate(pretrained, tmp_path, capsys):
    out = tmp_path / "ft"
    code = main(
        [
            "finetune",
            "--init",
            str(pretrained / "best.pt"),
            "--head",
            "classify",
            *DATA,
            "--label-fraction",
            "0.5",
            "--out",
            str(out),
            "--max-steps",
            "2",
            *FAST,
        ]
    )
    assert code == 0
    assert RUN_FILES <= _files(out)
    config = json.loads((out / "config.json").read_text())
    assert config["method"] == "rubik" and config["n_train"] == 4  # one per class of 4
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["label_fraction"] == 0.5 and set(metrics["splits"]["val"]) >= {"acc", "auc"}
    capsys.readouterr()
    code = main(
        [
            "evaluate",
            str(out / "best.pt"),
            *DATA,
            "--split",
            "test",
            "--out",
            str(out),
            "--device",
            "cpu",
            "--no-progress",
        ]
    )
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    assert set(printed) >= {"loss", "acc", "auc"}
    result = json.loads((out / "metrics_test.json").read_text())
    record = validate_record(to_record(result, "test"))
    assert record["split"] == "test" and record["method"] == "rubik"
    assert record["label_fraction"] == 0.5 and record["backbone"] == "vgg3d"
    # Only a proxy task draws puzzles.
    assert main(["evaluate", str(out / "best.pt"), *DATA, "--draws", "2", *FAST[:3]]) == 2
    assert "draws: " in capsys.readouterr().err


def test_evaluate_counts_stage_activity(pretrained, capsys):
    capsys.readouterr()
    args = ["evaluate", str(pretrained / "best.pt"), *DATA, "--split", "test", *FAST[:3]]
    assert main([*args, "--stage-activity", "batch"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert "order_acc" in printed and printed["stage_activity_bn"] == "batch"
    stages = printed["stage_activity"]
    assert [s["channels"] for s in stages] == [4, 8]
    assert all(0 <= s["silent"] <= s["channels"] and 0 <= s["active"] <= 1 for s in stages)
    # Records keep numbers only: the census stays in the evaluation's JSON.
    record = to_record({"splits": {"test": printed}}, "test")
    assert "stage_activity" not in record["metrics"] and "order_acc" in record["metrics"]
    with pytest.raises(SystemExit):
        main([*args, "--stage-activity", "eval"])
    assert "--stage-activity: invalid choice" in capsys.readouterr().err
    with pytest.raises(ValueError, match="stage_activity: expected 'running', 'batch' or None"):
        evaluate(pretrained / "best.pt", stage_activity="eval")


def test_finetune_from_scratch_segmentation(tmp_path):
    out = tmp_path / "seg"
    code = main(
        [
            "finetune",
            "--init",
            "scratch",
            "--head",
            "duc",
            "--data",
            "phantoms:tumour",
            "--data-option",
            "n=2",
            "--data-option",
            "size=16",
            "--backbone-option",
            "widths=4,8",
            "--out",
            str(out),
            "--max-steps",
            "1",
            *FAST,
        ]
    )
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["method"] == "scratch" and metrics["head"] == "duc"
    val = metrics["splits"]["val"]
    assert {"miou", "dice", "iou/background"} <= set(val)
    assert 0 <= val["miou"] <= 1


def test_duc_at_a_finer_output_stride_from_a_pretraining(tmp_path, capsys):
    tumour = ["--data", "phantoms:tumour", "--data-option", "n=4", "--data-option", "size=16"]
    pre, seg = tmp_path / "pre", tmp_path / "seg"
    assert main(["pretrain", "--task", "rubik", *tumour, "--backbone-option", "widths=4,8",
                 "--task-option", "n_perms=8", "--out", str(pre), "--max-steps", "1",
                 "--batch-size", "2", *FAST]) == 0  # fmt: skip
    finetune = ["finetune", "--init", str(pre / "best.pt"), *tumour, "--max-steps", "2", *FAST]
    assert main([*finetune, "--head", "duc", "--output-stride", "1", "--out", str(seg)]) == 0
    config = json.loads((seg / "config.json").read_text())
    assert config["backbone"]["output_stride"] == 1 and config["method"] == "rubik"
    val = json.loads((seg / "metrics.json").read_text())["splits"]["val"]
    capsys.readouterr()
    # evaluate rebuilds the dilated encoder from the run's config and scores the same
    assert main(["evaluate", str(seg / "best.pt"), *tumour, "--split", "val", *FAST[:3]]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["miou"] == pytest.approx(val["miou"]) and again["loss"] == pytest.approx(
        val["loss"]
    )
    # a stride the backbone does not have, or a head without one, is refused by name
    assert (
        main([*finetune, "--head", "duc", "--output-stride", "3", "--out", str(tmp_path / "a")])
        == 2
    )
    assert "output_stride: expected one of [1, 2]" in capsys.readouterr().err
    assert (
        main([*finetune, "--head", "unet", "--output-stride", "1", "--out", str(tmp_path / "b")])
        == 2
    )
    assert "output_stride: applies to the DUC head only" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_evaluate_a_pretrain_checkpoint(pretrained, capsys):
    code = main(
        [
            "evaluate",
            str(pretrained / "best.pt"),
            "--split",
            "test",
            "--device",
            "cpu",
            "--no-progress",
        ]
    )
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    assert {"order_acc", "rot_acc", "loss"} <= set(printed)
    # The ceilings of the split: phantoms have textured cubes, so nothing is invisible.
    assert printed["order_ceiling"] == printed["rot_ceiling"] == 1.0
    assert printed["constant_cubes"] == 0.0
    assert printed["puzzles"] == 8  # one puzzle per test phantom by default


def test_evaluate_draws_more_puzzles_per_volume(pretrained, capsys):
    args = ["evaluate", str(pretrained / "best.pt"), "--split", "test", *FAST[:3]]
    assert main([*args, "--draws", "3"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["puzzles"] == 3 * 8  # what the passes score: tests/test_tasks.py
    with pytest.raises(SystemExit):
        main([*args, "--draws", "0"])
    assert "draws" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["pretrain", "--task", "rubik", "--data", "nowhere:x", "--out", "{tmp}/a"], "data:"),
        (
            ["finetune", "--init", "{tmp}/missing.pt", *DATA, "--out", "{tmp}/b"],
            "init: no checkpoint file",
        ),
        (["evaluate", "{tmp}/missing.pt"], "checkpoint: no checkpoint file"),
        (
            ["finetune", "--init", "scratch", "--head", "unet", *DATA, "--out", "{tmp}/c"],
            "head: 'unet' segments",
        ),
    ],
)
def test_cli_errors_name_the_argument(tmp_path, capsys, argv, message):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main([*argv, "--device", "cpu", "--no-progress"]) == 2
    assert message in capsys.readouterr().err


def test_cli_rejects_bad_values(capsys):
    with pytest.raises(SystemExit):
        main(["finetune", "--init", "scratch", *DATA, "--out", "x", "--label-fraction", "2"])
    assert "label-fraction" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["pretrain", "--task", "rubik", *DATA, "--out", "x", "--task-option", "oops"])
    assert "KEY=VALUE" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "unknown"),
    [
        (["finetune", "--init", "scratch", *DATA, "--out", "x", "--checkpoint", "a.pt"],
         "--checkpoint a.pt"),
        (["experiment", "table", "--config", "experiments"], "--config"),
        (["assignments", "check", "n.ipynb", "--verb"], "--verb"),
    ],
    ids=["finetune", "experiment", "assignments"],
)  # fmt: skip
def test_an_option_is_never_taken_for_a_longer_one(capsys, argv, unknown):
    # With argparse's default, --checkpoint was read as --checkpoint-every.
    with pytest.raises(SystemExit):
        main(argv)
    assert f"unrecognized arguments: {unknown}" in capsys.readouterr().err


def test_a_partial_transfer_starts_its_deeper_stages_as_scratch_does(pretrained, capsys):
    # With a vanishing rate the fine-tuned weights are the starting ones (to ~1e-12), so best.pt
    # shows where each stage started: the pre-training's or the scratch run's of the same seed.
    tiny_rate = [*DATA, "--max-steps", "1", "--lr", "1e-12", *FAST]
    runs = {}
    for name, init, extra in [
        ("scratch", "scratch", ["--backbone", "vgg3d", "--backbone-option", "widths=4,8"]),
        ("part", str(pretrained / "best.pt"), ["--transfer-stages", "1"]),
    ]:
        out = pretrained.parent / f"transfer-{name}"
        assert main(["finetune", "--init", init, *extra, "--out", str(out), *tiny_rate]) == 0
        runs[name] = load_checkpoint(out / "best.pt")["model"]
    pre = load_checkpoint(pretrained / "best.pt")["model"]
    conv0, conv1 = "backbone.stages.0.0.weight", "backbone.stages.1.1.weight"
    assert torch.allclose(runs["part"][conv0], pre[conv0], atol=1e-9)
    assert torch.allclose(runs["part"][conv1], runs["scratch"][conv1], atol=1e-9)
    assert not torch.allclose(pre[conv1], runs["scratch"][conv1], atol=1e-3)  # a real difference
    config = json.loads((pretrained.parent / "transfer-part" / "config.json").read_text())
    assert config["transfer_stages"] == 1 and config["method"] == "rubik"
    assert "transfer_stages" not in json.loads(
        (pretrained.parent / "transfer-scratch" / "config.json").read_text()
    )
    # more stages than the backbone has, or a partial transfer of nothing, are refused by name
    bad = pretrained.parent / "transfer-bad"
    assert main(["finetune", "--init", str(pretrained / "best.pt"), "--transfer-stages", "3",
                 "--out", str(bad), *tiny_rate]) == 2  # fmt: skip
    assert "transfer_stages: expected 1 to 2 (the backbone's stages), got 3" in (
        capsys.readouterr().err
    )
    assert main(["finetune", "--init", "scratch", "--transfer-stages", "1", "--out", str(bad),
                 *tiny_rate]) == 2  # fmt: skip
    assert "transfer_stages: needs an init checkpoint" in capsys.readouterr().err
    assert not bad.exists()
