"""rubikkit.experiments: config validation, the grid, a tiny real run, resumability, tables."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rubikkit.cli import main as cli_main
from rubikkit.experiments import (
    PAGE_BEGIN,
    PAGE_END,
    load_config,
    plan_grid,
    render_page,
    render_tables,
    run_experiment,
    validate_config,
    write_page,
)
from rubikkit.results import MISSING, RECORD_FIELDS, load_records, validate_record

REPO = Path(__file__).resolve().parents[1]

TINY = {
    "name": "tiny",
    "description": "phantom smoke test",
    "data": "phantoms:nodule",
    "data_options": {"n": 4, "size": 16},
    "backbones": ["vgg3d"],
    "backbone_options": {"widths": [4, 8]},
    "seeds": [0],
    "eval_split": "test",
    "metrics": ["acc", "auc", "order_acc"],
    "proxy_eval": True,
    "recipe_epochs": 1,
    "pretrain": {
        "methods": ["rubik"],
        "epochs": 1,
        "max_steps": 2,
        "batch_size": 2,
        "task_options": {"rubik": {"n_perms": 6, "hidden": 8}},
    },
    "finetune": {
        "methods": ["scratch", "rubik"],
        "label_fractions": [1.0],
        "epochs": 1,
        "max_steps": 2,
        "batch_size": 2,
        "lr": 1e-3,
    },
}


def _cfg(**changes):
    raw = json.loads(json.dumps(TINY))
    for key, value in changes.items():
        section, _, field = key.partition("__")
        if field:
            raw[section][field] = value
        elif value is None and key in raw:
            del raw[key]
        else:
            raw[key] = value
    return raw


@pytest.mark.parametrize(
    "changes, match",
    [
        ({"data": None}, "data: missing"),
        ({"data": "mnist:adrenal"}, "data: spec"),
        ({"seeds": [0, -1]}, "seeds: expected"),
        ({"seeds": "0"}, "seeds: expected list"),
        ({"backbones": ["vgg19"]}, "backbones: unknown backbone"),
        ({"colour": "red"}, "colour: unknown field"),
        ({"finetune__label_fractions": [0.0]}, "finetune.label_fractions: expected numbers"),
        ({"finetune__heads": ["mlp"]}, "finetune.heads: unknown head"),
        ({"finetune__methods": ["tcpc"]}, "finetune.methods: 'tcpc' needs a pre-training"),
        ({"finetune__lr": "fast"}, "finetune.lr: expected int or float"),
        ({"finetune__augment": "flip"}, "finetune.augment: expected None"),
        ({"finetune__lr_milestones": [0.8, 0.4]}, "finetune.lr_milestones: expected increasing"),
        ({"pretrain__methods": ["simclr"]}, "pretrain.methods: unknown method"),
        ({"pretrain__task_options": {"tcpc": {}}}, "pretrain.task_options: 'tcpc' is not"),
        ({"published": [{"dataset": "nowhere"}]}, r"published\[0\]: no row"),
        ({"published": [{}]}, r"published\[0\]: expected an object"),
        ({"pretrain": None, "proxy_eval": False}, "finetune.methods: 'rubik' needs"),
        ({"name": "a b"}, "name: use letters"),
    ],
)
def test_config_errors_name_the_field(changes, match):
    with pytest.raises(ValueError, match=match):
        validate_config(_cfg(**changes))


def test_load_config_checks_json_and_name(tmp_path):
    bad = tmp_path / "broken.json"
    bad.write_text("{")
    with pytest.raises(ValueError, match="config: .* is not valid JSON"):
        load_config(bad)
    other = tmp_path / "other.json"
    other.write_text(json.dumps(TINY))
    with pytest.raises(ValueError, match="name: 'tiny' differs from the file stem"):
        load_config(other)
    with pytest.raises(FileNotFoundError, match="config: "):
        load_config(tmp_path / "absent.json")


def test_shipped_configs_are_valid(tmp_path):
    paths = sorted((REPO / "experiments").glob("*.json"))
    assert paths, "experiments/*.json missing"
    for p in paths:
        cfg = load_config(p)
        plan = run_experiment(cfg, dry_run=True, results_dir=tmp_path, log=lambda *a: None)
        assert plan and all(e["status"] == "planned" for e in plan), p.name


def test_grid_order_and_ids():
    cfg = validate_config(_cfg(seeds=[0, 1], finetune__label_fractions=[0.5, 1.0]))
    plan = plan_grid(cfg)
    runs = [(e["kind"], e["run"]) for e in plan]
    assert runs[:5] == [
        ("finetune", "s0/vgg3d/ft-scratch-classify-lf0p5"),
        ("finetune", "s0/vgg3d/ft-scratch-classify-lf1"),
        ("pretrain", "s0/vgg3d/pt-rubik"),
        ("proxy", "s0/vgg3d/pt-rubik/proxy-test"),
        ("finetune", "s0/vgg3d/ft-rubik-classify-lf0p5"),
    ]
    assert len(plan) == 2 * 6
    # A fine-tuning run's hash covers its pre-training: other task options, other hash.
    other = plan_grid(
        validate_config(_cfg(pretrain__task_options={"rubik": {"n_perms": 7, "hidden": 8}}))
    )
    h = {e["run"]: e["config_hash"] for e in plan}
    h2 = {e["run"]: e["config_hash"] for e in other}
    assert h["s0/vgg3d/ft-scratch-classify-lf1"] == h2["s0/vgg3d/ft-scratch-classify-lf1"]
    assert h["s0/vgg3d/ft-rubik-classify-lf1"] != h2["s0/vgg3d/ft-rubik-classify-lf1"]


def test_dry_run_lists_the_grid(tmp_path, capsys):
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(TINY))
    rc = cli_main(
        ["experiment", "run", str(path), "--dry-run", "--seeds", "0,3", "--results-dir",
         str(tmp_path / "results")]
    )  # fmt: skip
    assert rc == 0
    out = capsys.readouterr().out
    assert "planned  pretrain s3/vgg3d/pt-rubik" in out
    assert "planned  finetune s0/vgg3d/ft-scratch-classify-lf1" in out
    assert "tiny: 8 runs; done 0, skipped 0, planned 8" in out
    assert not (tmp_path / "results").exists()


def test_cli_reports_bad_config(tmp_path, capsys):
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(_cfg(seeds=[])))
    assert cli_main(["experiment", "run", str(path), "--dry-run"]) == 2
    assert "seeds: expected" in capsys.readouterr().err


def test_tiny_run_appends_records_and_rerun_skips(tmp_path):
    cfg = validate_config(_cfg())
    kw = dict(
        device="cpu",
        results_dir=tmp_path / "results",
        runs_dir=tmp_path / "runs",
        progress=False,
        log=lambda *a: None,
    )
    plan = run_experiment(cfg, **kw)
    assert [e["status"] for e in plan] == ["done"] * 4
    path = tmp_path / "results" / "tiny.jsonl"
    records = load_records(path)
    assert len(records) == 3  # scratch, proxy, rubik fine-tune
    for rec in records:
        validate_record(rec)
        assert set(RECORD_FIELDS) <= set(rec)
        assert rec["device"].startswith("cpu: ") and rec["wall_s"] > 0
        assert rec["split"] == "test" and rec["seed"] == 0
        assert rec["epochs"] > 0 and "/" not in rec["device"]
    ft = {r["method"]: r for r in records if r["head"] == "classify"}
    assert set(ft) == {"scratch", "rubik"}
    assert {"acc", "auc"} <= set(ft["scratch"]["metrics"])
    assert ft["rubik"]["pretrain_epochs"] is not None and ft["scratch"]["pretrain_epochs"] is None
    assert "max 2 steps" in ft["scratch"]["protocol"]
    proxy = [r for r in records if r["head"] == "proxy"][0]
    assert proxy["label_fraction"] is None and "order_acc" in proxy["metrics"]

    again = run_experiment(cfg, **kw)
    assert [e["status"] for e in again] == ["skipped"] * 4
    assert len(load_records(path)) == 3

    # The table shows our numbers and keeps unrun settings visibly missing.
    table = render_tables(records, validate_config(_cfg(finetune__methods=["scratch"])))
    assert "| scratch | vgg3d | classify |" in table
    assert "(n=1)" in table
    empty = render_tables([], cfg)
    assert f"| scratch | vgg3d | classify | {MISSING} |" in empty
    assert "no runs yet" in empty


def test_table_marks_published_rows_and_page_block(tmp_path):
    cfg = validate_config(
        _cfg(
            dataset_name="medmnist3d:adrenal",
            published=[{"dataset": "medmnist3d:adrenal"}],
            metrics=["acc", "auc"],
            proxy_eval=False,
        )
    )
    table = render_tables([], cfg)
    assert "published, not run here (MedMNIST v2" in table
    assert "0.827" in table and "0.721" in table
    page = tmp_path / "README.md"
    page.write_text("# Results\n\nintro\n")
    write_page(page, "first")
    write_page(page, "second")
    text = page.read_text()
    assert text.count(PAGE_BEGIN) == 1 and text.count(PAGE_END) == 1
    assert "second" in text and "first" not in text and text.startswith("# Results")
    body = render_page([tmp_path / "none.jsonl"], config_dir=REPO / "experiments")
    assert "adrenal28_scratch_resnet18" in body
