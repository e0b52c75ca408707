"""benchmarks/finetune_step.py: the fine-tuning timer and planner that sizes a GPU lease's grids."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def finetune_step():
    spec = importlib.util.spec_from_file_location(
        "finetune_step", REPO / "benchmarks" / "finetune_step.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _config(tmp_path, **finetune):
    cfg = {
        "name": "tiny_ft",
        "description": "planner test",
        "data": "phantoms:nodule",
        "data_options": {"n": 8, "size": 16},
        "backbones": ["vgg3d"],
        "backbone_options": {"widths": [4, 8]},
        "seeds": [0, 1, 2],
        "eval_split": "test",
        "metrics": ["acc", "auc"],
        "recipe_epochs": 50,
        "finetune": {"methods": ["scratch"], "label_fractions": [1.0], "epochs": 50,
                     "batch_size": 2, "lr": 1e-3, **finetune},
    }  # fmt: skip
    path = tmp_path / "tiny_ft.json"
    path.write_text(json.dumps(cfg))
    return path


def test_fit_budget_keeps_the_leading_runs_that_fit(finetune_step):
    runs = [("a.json", 0, 100.0), ("a.json", 1, 100.0), ("b.json", 0, 10.0)]
    assert finetune_step.fit_budget(runs, 205.0) == runs[:2]
    # b.json would fit the 50 s left, but it does not jump ahead of a.json's seed 1
    assert finetune_step.fit_budget(runs, 150.0) == runs[:1]
    assert finetune_step.fit_budget(runs, 99.0) == []
    assert finetune_step.fit_budget(runs, 1e9) == runs


def test_plan_measures_a_real_epoch_and_lists_the_runs_that_fit(
    finetune_step, tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)  # the timing run must not write results/ or runs/ here
    path = _config(tmp_path)
    argv = [str(path), "--device", "cpu", "--warmup", "0", "--steps", "1", "--epochs", "2"]
    assert finetune_step.main([*argv, "--plan", "1e9"]) == 0
    out = capsys.readouterr().out.splitlines()
    line = json.loads(out[0])
    assert line["device"] == "cpu" and line["runs"] == 3 and line["epochs"] == 50
    assert line["epoch_s"] > 0 and line["fixed_s"] >= 0 and line["compute_ms_per_step"] > 0
    want = 50 * line["epoch_s"] + line["fixed_s"] + finetune_step.START_S
    assert line["est_s_per_run"] == pytest.approx(want, abs=0.2)
    assert out[1:] == [f"{path} 0", f"{path} 1", f"{path} 2"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny_ft.json"]


def test_plan_times_each_label_fraction_apart(finetune_step, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = _config(tmp_path, label_fractions=[1.0, 0.5])
    argv = [str(path), "--device", "cpu", "--warmup", "0", "--steps", "1", "--epochs", "2"]
    assert finetune_step.main([*argv, "--plan", "1e9"]) == 0
    out = capsys.readouterr().out.splitlines()
    lines = [json.loads(x) for x in out if x.startswith("{")]
    assert sorted(x["label_fraction"] for x in lines) == [0.5, 1.0]
    assert all(x["runs"] == 3 for x in lines)
    assert len([x for x in out if not x.startswith("{")]) == 6


def test_plan_rejects_bad_arguments(finetune_step, tmp_path):
    path = _config(tmp_path)
    for bad in (["--plan", "0"], ["--epochs", "1"], ["--steps", "0"]):
        with pytest.raises(SystemExit):
            finetune_step.main([str(path), "--device", "cpu", *bad])


@pytest.mark.parametrize("head", ["unet", "duc"])
def test_a_segmentation_step_is_timed_with_voxel_labels(finetune_step, head):
    # It drew one label per volume, and cross-entropy refused a (B, K, D, H, W) output: PLAN=1
    # failed on every segmentation config.
    import torch

    settings = {
        "data": "phantoms:tumour",
        "data_options": {"n": 4, "size": 16},
        "backbone": "vgg3d",
        "backbone_options": {"widths": [4, 8]},
        "batch_size": 2,
        "head": head,
        "lr": 1e-3,
    }
    timed = finetune_step.time_steps(settings, torch.device("cpu"), warmup=0, steps=1)
    assert timed["step_s"] > 0
