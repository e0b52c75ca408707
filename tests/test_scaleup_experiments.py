"""The experiment driver under a crash and beside a second driver: a cut records file, a
results or runs folder that is a file, two lanes that need the same run."""

from __future__ import annotations

import json
import threading

import pytest

from rubikkit.experiments import plan_grid, run_experiment, validate_config
from rubikkit.results import load_records

TINY = {
    "name": "tiny",
    "data": "phantoms:nodule",
    "data_options": {"n": 4, "size": 16},
    "backbones": ["vgg3d"],
    "backbone_options": {"widths": [4, 8]},
    "eval_split": "test",
    "metrics": ["acc", "auc"],
    "pretrain": None,
    "finetune": {"methods": ["scratch"], "epochs": 1, "max_steps": 2, "batch_size": 2},
}


def _record(entry: dict) -> dict:
    # What the driver writes for a scored run, as far as the resume reads it.
    return {
        "dataset": "phantoms:nodule",
        "method": entry["method"],
        "backbone": entry["backbone"],
        "head": entry["head"],
        "label_fraction": entry["label_fraction"],
        "seed": entry["seed"],
        "split": "test",
        "metrics": {"acc": 0.5},
        "epochs": 1,
        "commit": "abc",
        "device": "cpu",
        "wall_s": 1.0,
        "run": entry["run"],
        "config_hash": entry["config_hash"],
    }


def _scratch(seeds):
    cfg = validate_config(dict(TINY, seeds=seeds))
    return cfg, plan_grid(cfg, methods=["scratch"])


def test_a_cut_last_record_is_dropped_and_its_run_planned_again(tmp_path):
    cfg, plan = _scratch([0, 1])
    path = tmp_path / "tiny.jsonl"
    first, second = (json.dumps(_record(e), sort_keys=True) for e in plan)
    path.write_text(first + "\n" + second[: len(second) // 2], encoding="utf-8")
    lines = []
    kw = dict(methods=["scratch"], results_dir=tmp_path, runs_dir=tmp_path / "runs")
    # Before: "tiny.jsonl:2: bad record", and the grid could not resume until edited by hand.
    out = run_experiment(cfg, dry_run=True, log=lines.append, **kw)
    assert [e["status"] for e in out] == ["skipped", "planned"]
    assert any(x.startswith(f"mend     {path}: dropped its cut last line") for x in lines)
    assert path.read_text(encoding="utf-8") == first + "\n"


def test_a_last_record_without_its_newline_is_not_glued_to_the_next(tmp_path):
    cfg, plan = _scratch([0, 1])
    path = tmp_path / "results" / "tiny.jsonl"
    path.parent.mkdir()
    path.write_text(json.dumps(_record(plan[0]), sort_keys=True), encoding="utf-8")
    out = run_experiment(
        cfg,
        methods=["scratch"],
        device="cpu",
        results_dir=path.parent,
        runs_dir=tmp_path / "runs",
        progress=False,
        log=lambda *a: None,
    )
    assert [e["status"] for e in out] == ["skipped", "done"]
    # Before: the new record went onto the old one's line, and the file no longer loaded.
    assert [r["run"] for r in load_records(path)] == [e["run"] for e in plan]


@pytest.mark.parametrize("arg", ["results_dir", "runs_dir"])
def test_a_results_or_runs_folder_that_is_a_file_is_named_before_any_run(tmp_path, arg):
    cfg, _ = _scratch([0])
    (tmp_path / "taken").write_text("x")
    kw = {"results_dir": tmp_path / "res", "runs_dir": tmp_path / "runs"}
    kw[arg] = tmp_path / "taken" / "sub"
    # Before: a traceback (FileExistsError, NotADirectoryError) once the first run had trained.
    with pytest.raises(ValueError, match=f"{arg}: .*taken is a file, not a folder"):
        run_experiment(cfg, methods=["scratch"], device="cpu", progress=False, **kw)
    assert not (tmp_path / "runs").exists() and not (tmp_path / "res").exists()


def test_a_run_another_driver_holds_is_waited_for_not_trained_twice(tmp_path):
    fcntl = pytest.importorskip("fcntl", reason="run folders are locked on POSIX only")
    cfg, plan = _scratch([0])
    runs = tmp_path / "runs"
    folder = runs / "tiny" / plan[0]["run"]
    folder.parent.mkdir(parents=True)
    seen = threading.Event()
    lines = []

    def log(text):
        lines.append(text)
        if text.startswith("wait"):
            seen.set()

    result = {}
    # The other driver (another lane of the grid) is training this run: it holds its lock.
    with open(folder.parent / f".{folder.name}.lock", "a") as other:
        fcntl.flock(other, fcntl.LOCK_EX)
        lane = threading.Thread(
            target=lambda: result.update(
                plan=run_experiment(
                    cfg,
                    methods=["scratch"],
                    device="cpu",
                    results_dir=tmp_path,
                    runs_dir=runs,
                    progress=False,
                    log=log,
                )
            )
        )
        lane.start()
        waited = seen.wait(timeout=60)
        # ... and scores it before it lets go.
        (tmp_path / "tiny.jsonl").write_text(json.dumps(_record(plan[0])) + "\n")
    lane.join(timeout=120)
    # Before: the second driver trained the same run in the same folder at the same time.
    assert waited, lines
    assert [e["status"] for e in result["plan"]] == ["skipped"]
    assert "(run meanwhile by another process)" in lines[-1]
    assert not folder.exists()
    assert len(load_records(tmp_path / "tiny.jsonl")) == 1
