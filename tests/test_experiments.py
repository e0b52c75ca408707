"""rubikkit.experiments: config validation, the grid, a tiny real run, resumability, tables."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rubikkit.cli import main as cli_main
from rubikkit.experiments import (
    INIT_DIGEST_FILE,
    PAGE_BEGIN,
    PAGE_END,
    _protocol,
    against_configured,
    against_scratch,
    diagnose,
    load_config,
    plan_grid,
    pooled_pretrainings,
    pretraining_seeds,
    render_page,
    render_tables,
    run_experiment,
    validate_config,
    weights_digest,
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
    "metrics": ["acc", "auc", "order_acc", "rot_acc"],
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
        ({"proxy_draws": 0}, "proxy_draws: expected a positive int"),
        ({"proxy_draws": 2.5}, "proxy_draws: expected int"),
        ({"seed_tables": ["f1"]}, "seed_tables: 'f1' is not a fine-tuning metric"),
        ({"seed_tables": ["order_acc"]}, "seed_tables: 'order_acc' is not a fine-tuning metric"),
        ({"seed_tables": "auc"}, "seed_tables: expected list"),
        (
            {"metrics": ["acc", "auc", "order_acc"]},
            "metrics: proxy_eval scores rubik's .* 'rot_acc'",
        ),
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
    listed = tmp_path / "listed.json"
    listed.write_text("[]")
    with pytest.raises(ValueError, match=r"^config listed.json: expected a JSON object, got list$"):
        load_config(listed)
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


def test_duc_output_stride_reaches_the_duc_runs_only(tmp_path):
    seg = dict(data="phantoms:tumour", metrics=["miou", "dice"], proxy_eval=False)
    plain = plan_grid(validate_config(_cfg(**seg, finetune__heads=["unet", "duc"])))
    cfg = validate_config(
        _cfg(**seg, finetune__heads=["unet", "duc"], finetune__duc_output_stride=1)
    )
    plan = plan_grid(cfg)
    hashes = {e["run"]: e["config_hash"] for e in plain}
    for e in plan:
        if e["kind"] == "finetune" and e["head"] == "duc":
            assert e["settings"]["output_stride"] == 1 and e["config_hash"] != hashes[e["run"]]
        else:  # the U-Net and the pre-training keep their settings and hashes
            assert "output_stride" not in e.get("settings", {})
            assert e["config_hash"] == hashes[e["run"]]
    # null is the field left out: every hash as before
    unset = plan_grid(validate_config(_cfg(**seg, finetune__heads=["unet", "duc"],
                                           finetune__duc_output_stride=None)))  # fmt: skip
    assert {e["run"]: e["config_hash"] for e in unset} == hashes
    with pytest.raises(ValueError, match="finetune.duc_output_stride: set, but finetune.heads"):
        validate_config(_cfg(**seg, finetune__heads=["unet"], finetune__duc_output_stride=1))
    with pytest.raises(ValueError, match=r"finetune.duc_output_stride: expected one of \[1, 2\]"):
        validate_config(_cfg(**seg, finetune__heads=["duc"], finetune__duc_output_stride=4))
    # The run dilates the encoder, and the record says at which stride the DUC ran.
    tiny = validate_config(_cfg(**seg, finetune__heads=["duc"], finetune__duc_output_stride=1,
                                finetune__methods=["scratch"], pretrain=None))  # fmt: skip
    kw = dict(device="cpu", results_dir=tmp_path, runs_dir=tmp_path / "runs", progress=False)
    run_experiment(tiny, log=lambda *a: None, **kw)
    (record,) = load_records(tmp_path / "tiny.jsonl")
    assert record["head"] == "duc" and record["output_stride"] == 1
    config = json.loads((tmp_path / "runs" / "tiny" / record["run"] / "config.json").read_text())
    assert config["backbone"]["output_stride"] == 1


def test_a_segmentation_loss_reaches_the_runs_and_records(tmp_path):
    seg = dict(data="phantoms:tumour", metrics=["miou", "dice"], proxy_eval=False)
    plain = plan_grid(validate_config(_cfg(**seg, finetune__heads=["unet", "duc"])))
    ce = plan_grid(
        validate_config(_cfg(**seg, finetune__heads=["unet", "duc"], finetune__loss="ce"))
    )
    hashes = {e["run"]: e["config_hash"] for e in plain}
    assert {e["run"]: e["config_hash"] for e in ce} == hashes  # the default changes no hash
    cfg = validate_config(_cfg(**seg, finetune__heads=["duc"], finetune__loss="ce+dice",
                               finetune__methods=["scratch"], pretrain=None))  # fmt: skip
    (entry,) = plan_grid(cfg)
    assert entry["settings"]["loss"] == "ce+dice" and entry["config_hash"] != hashes[entry["run"]]
    kw = dict(device="cpu", results_dir=tmp_path, runs_dir=tmp_path / "runs", progress=False)
    run_experiment(cfg, log=lambda *a: None, **kw)
    (record,) = load_records(tmp_path / "tiny.jsonl")
    assert record["loss"] == "ce+dice"
    with pytest.raises(ValueError, match="finetune.loss: the classifier trains with 'ce' only"):
        validate_config(_cfg(finetune__loss="ce+dice"))
    with pytest.raises(ValueError, match="finetune.loss: expected one of"):
        validate_config(_cfg(**seg, finetune__heads=["unet"], finetune__loss="focal"))


def test_a_partial_transfer_reaches_the_pretrained_runs_only(tmp_path):
    plain = {e["run"]: e["config_hash"] for e in plan_grid(validate_config(_cfg()))}
    cfg = validate_config(_cfg(finetune__transfer_stages=1))
    for e in plan_grid(cfg):
        settings = e.get("settings", {})
        if e["kind"] == "finetune" and e["method"] == "rubik":
            assert settings["transfer_stages"] == 1 and e["config_hash"] != plain[e["run"]]
        else:  # scratch, the pre-training and its proxy score keep their settings and hashes
            assert "transfer_stages" not in settings and e["config_hash"] == plain[e["run"]]
    unset = plan_grid(validate_config(_cfg(finetune__transfer_stages=None)))
    assert {e["run"]: e["config_hash"] for e in unset} == plain
    with pytest.raises(ValueError, match=r"finetune.transfer_stages: expected 1 to 2 \(the stages"):
        validate_config(_cfg(finetune__transfer_stages=3))
    with pytest.raises(ValueError, match="finetune.transfer_stages: set, but finetune.methods"):
        validate_config(_cfg(finetune__transfer_stages=1, finetune__methods=["scratch"]))
    # The record of the pre-trained run carries it, and its protocol (so its table) says so.
    kw = dict(device="cpu", results_dir=tmp_path, runs_dir=tmp_path / "runs", progress=False)
    run_experiment(cfg, log=lambda *a: None, **kw)
    records = {
        r["method"]: r for r in load_records(tmp_path / "tiny.jsonl") if r["head"] != "proxy"
    }
    assert records["rubik"]["transfer_stages"] == 1 and "transfer_stages" not in records["scratch"]
    assert records["rubik"]["protocol"].endswith(", its first 1 stages transferred")
    config = json.loads(
        (tmp_path / "runs" / "tiny" / records["rubik"]["run"] / "config.json").read_text()
    )
    assert config["transfer_stages"] == 1


def test_a_list_of_transfers_fine_tunes_each_pretraining_once_a_value():
    plain = {e["run"]: e["config_hash"] for e in plan_grid(validate_config(_cfg()))}
    one = {e["run"]: e for e in plan_grid(validate_config(_cfg(finetune__transfer_stages=1)))}
    cfg = validate_config(_cfg(finetune__transfer_stages=[1, 2]))
    runs = {e["run"]: e for e in plan_grid(cfg) if e["kind"] == "finetune"}
    assert sorted(runs) == [
        "s0/vgg3d/ft-rubik-classify-lf1-t1",
        "s0/vgg3d/ft-rubik-classify-lf1-t2",
        "s0/vgg3d/ft-scratch-classify-lf1",
    ]
    assert runs["s0/vgg3d/ft-rubik-classify-lf1-t2"]["settings"]["transfer_stages"] == 2
    # the value of an int and of a list entry is the same run, under another id
    same = one["s0/vgg3d/ft-rubik-classify-lf1"]["config_hash"]
    assert runs["s0/vgg3d/ft-rubik-classify-lf1-t1"]["config_hash"] == same
    assert (
        runs["s0/vgg3d/ft-scratch-classify-lf1"]["config_hash"]
        == plain["s0/vgg3d/ft-scratch-classify-lf1"]
    )
    for bad, match in [([], "expected an int or a list"), ([1, True], "expected an int or a list"),
                       ([2, 2], "repeats a value"), ([1, 3], "expected 1 to 2")]:  # fmt: skip
        with pytest.raises(ValueError, match=f"finetune.transfer_stages: .*{match}"):
            validate_config(_cfg(finetune__transfer_stages=bad))


def test_one_depth_of_a_transfer_grid_runs_alone(tmp_path, capsys):
    cfg = validate_config(_cfg(finetune__transfer_stages=[1, 2],
                               pretrain__variants={"rubik": [{"name": "k=3", "task_options": {"n_perms": 3}}]}))  # fmt: skip
    deep = plan_grid(cfg, transfer_stages=[2])
    # the depth's fine-tunings and the pre-trainings they start from; no scratch, no proxy
    assert [(e["kind"], e["run"]) for e in deep] == [
        ("pretrain", "s0/vgg3d/pt-rubik"),
        ("finetune", "s0/vgg3d/ft-rubik-classify-lf1-t2"),
        ("pretrain", "s0/vgg3d/pt-rubik-k=3"),
        ("finetune", "s0/vgg3d/ft-rubik-k=3-classify-lf1-t2"),
    ]
    full = {e["run"]: e["config_hash"] for e in plan_grid(cfg)}
    assert all(full[e["run"]] == e["config_hash"] for e in deep)  # the same runs, not new ones
    one = plan_grid(cfg, variants=["k=3"], transfer_stages=[1, 2])
    assert [e["run"] for e in one] == [
        "s0/vgg3d/pt-rubik-k=3",
        "s0/vgg3d/ft-rubik-k=3-classify-lf1-t1",
        "s0/vgg3d/ft-rubik-k=3-classify-lf1-t2",
    ]
    kw = dict(dry_run=True, log=lambda *a: None, results_dir=tmp_path)
    with pytest.raises(ValueError, match=r"transfer_stages: 3 is not a depth of tiny"):
        run_experiment(cfg, transfer_stages=[3], **kw)
    with pytest.raises(ValueError, match=r"transfer_stages: 1 is not a depth of tiny \(finetune"):
        run_experiment(validate_config(_cfg()), transfer_stages=[1], **kw)
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(cfg))
    args = ["experiment", "run", str(path), "--dry-run", "--results-dir", str(tmp_path)]
    assert cli_main(args + ["--transfer-stages", "2"]) == 0
    assert "tiny: 4 runs; done 0, skipped 0, planned 4" in capsys.readouterr().out
    for bad in ("0", "two", ""):
        with pytest.raises(SystemExit):
            cli_main(args + ["--transfer-stages", bad])
        assert "--transfer-stages: expected stage counts" in capsys.readouterr().err


def test_verdicts_keep_a_partial_transfer_apart_from_the_full_one():
    def rec(method, variant, seed, dice, n=None):
        return dict(method=method, variant=variant, backbone="vgg3d", head="duc", seed=seed,
                    label_fraction=0.1, metrics={"dice": dice},
                    **({"transfer_stages": n} if n is not None else {}))  # fmt: skip

    scratch = [rec("scratch", None, s, v) for s, v in enumerate([0.50, 0.52, 0.48])]
    full = [rec("rubik", "epochs=100", s, v) for s, v in enumerate([0.40, 0.41, 0.39])]
    part = [rec("rubik", "epochs=100", s, v, n=4) for s, v in enumerate([0.60, 0.61, 0.59])]
    lines = against_scratch(scratch + full + part, ["dice"])
    assert [line.split(": ")[0] for line in lines] == [
        "rubik [epochs=100] (vgg3d, duc, 0.1 of the labels), dice",
        "rubik [epochs=100] (first 4 stages) (vgg3d, duc, 0.1 of the labels), dice",
    ]
    assert "-0.100 (0.400 vs 0.500" in lines[0] and "+0.100 (0.600 vs 0.500" in lines[1]
    # a lever meets its method's configured pre-training at the same transfer only
    configured = [rec("rubik", None, s, 0.55, n=4) for s in range(3)]
    (line,) = against_configured(scratch + full + part + configured, ["dice"])
    assert line.startswith("rubik [epochs=100] (first 4 stages)") and "vs 0.550" in line


def test_a_comparison_across_machines_says_so():
    xeon = "cpu: Intel(R) Xeon(R) Processor, 2 cores, 1 torch thread; torch 2.13.0+cpu"
    epyc = "cpu: AMD EPYC, 2 cores, 1 torch thread; torch 2.13.0+cpu"

    def rec(method, variant, seed, dice, device):
        return dict(method=method, variant=variant, backbone="vgg3d", head="unet", seed=seed,
                    label_fraction=0.1, metrics={"dice": dice}, device=device)  # fmt: skip

    records = [rec("scratch", None, s, 0.6 + s / 100, xeon) for s in range(3)]
    records += [rec("rubik", None, s, 0.6, xeon) for s in range(3)]
    records += [rec("rubik", "seed=1", s, 0.6, epyc) for s in range(3)]
    lines = against_scratch(records, ["dice"])
    [same] = [line for line in lines if line.startswith("rubik (")]
    [across] = [line for line in lines if line.startswith("rubik [seed=1]")]
    assert "machines" not in same
    assert across.endswith("; paired across machines (AMD EPYC against Intel Xeon Processor)")
    (line,) = against_configured(records, ["dice"])
    assert line.endswith("(AMD EPYC against Intel Xeon Processor)")


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


def test_proxy_draws_change_only_the_proxy_records():
    base = {e["run"]: e for e in plan_grid(validate_config(_cfg()))}
    one = {e["run"]: e for e in plan_grid(validate_config(_cfg(proxy_draws=1)))}
    more = {e["run"]: e for e in plan_grid(validate_config(_cfg(proxy_draws=20)))}
    proxy = "s0/vgg3d/pt-rubik/proxy-test"
    assert {r: e["config_hash"] for r, e in one.items()} == {
        r: e["config_hash"] for r, e in base.items()
    }  # the default keeps the hashes of records made before the field existed
    assert more[proxy]["settings"]["draws"] == 20
    assert more[proxy]["config_hash"] != base[proxy]["config_hash"]
    assert all(more[r]["config_hash"] == base[r]["config_hash"] for r in base if r != proxy)


def test_proxy_draws_reach_the_record(tmp_path):
    from rubikkit.train.runs import open_split

    cfg = validate_config(_cfg(proxy_draws=3, finetune=None, metrics=["order_acc", "rot_acc"]))
    run_experiment(cfg, device="cpu", results_dir=tmp_path, runs_dir=tmp_path / "runs",
                   progress=False, log=lambda *a: None)  # fmt: skip
    (record,) = load_records(tmp_path / "tiny.jsonl")
    n_test = len(open_split(cfg["data"], "test", cfg["data_options"]))
    assert record["head"] == "proxy" and record["metrics"]["puzzles"] == 3 * n_test


def test_shared_pretraining_seed():
    per_seed = plan_grid(validate_config(_cfg(seeds=[0, 1])))
    cfg = validate_config(_cfg(seeds=[0, 1], pretrain__seed=0))
    plan = plan_grid(cfg)
    kinds = [(e["kind"], e["run"]) for e in plan]
    # One pre-training (and proxy record), first; both seeds fine-tune from it.
    assert kinds[:2] == [
        ("pretrain", "s0/vgg3d/pt-rubik"),
        ("proxy", "s0/vgg3d/pt-rubik/proxy-test"),
    ]
    assert sum(k == "pretrain" for k, _ in kinds) == 1
    ft = {e["run"]: e for e in plan if e["kind"] == "finetune" and e["method"] == "rubik"}
    assert {e["init"] for e in ft.values()} == {"s0/vgg3d/pt-rubik"}
    assert set(ft) == {"s0/vgg3d/ft-rubik-classify-lf1", "s1/vgg3d/ft-rubik-classify-lf1"}
    # Scratch runs keep their hashes; fine-tunings from a shared run get other ones.
    h_per = {e["run"]: e["config_hash"] for e in per_seed}
    h = {e["run"]: e["config_hash"] for e in plan}
    assert h["s1/vgg3d/ft-scratch-classify-lf1"] == h_per["s1/vgg3d/ft-scratch-classify-lf1"]
    assert h["s1/vgg3d/ft-rubik-classify-lf1"] != h_per["s1/vgg3d/ft-rubik-classify-lf1"]
    # --seeds without the shared seed still plans the shared pre-training.
    only1 = plan_grid(cfg, seeds=[1])
    assert only1[0]["run"] == "s0/vgg3d/pt-rubik"
    with pytest.raises(ValueError, match="pretrain.seed: "):
        validate_config(_cfg(pretrain__seed=-1))


def test_shared_pretraining_run(tmp_path):
    cfg = validate_config(_cfg(seeds=[0, 1], pretrain__seed=1))
    kw = dict(
        device="cpu",
        results_dir=tmp_path / "results",
        runs_dir=tmp_path / "runs",
        progress=False,
        log=lambda *a: None,
    )
    run_experiment(cfg, methods=["rubik"], **kw)
    records = load_records(tmp_path / "results" / "tiny.jsonl")
    assert sorted((r["head"], r["seed"]) for r in records) == [
        ("classify", 0),
        ("classify", 1),
        ("proxy", 1),
    ]
    assert sorted(p.name for p in (tmp_path / "runs" / "tiny").iterdir()) == ["s0", "s1"]
    assert not (tmp_path / "runs" / "tiny" / "s0" / "vgg3d" / "pt-rubik").exists()
    for r in records:
        if r["head"] == "classify":
            assert "one pre-training (seed 1) for all seeds" in r["protocol"]
            assert r["pretrain_epochs"] is not None


def test_variants_plan_ids_and_keep_the_configured_hashes():
    base = plan_grid(validate_config(_cfg()))
    levers = [{"task_options": {"n_perms": 3}}, {"epochs": 2, "name": "long"}, {"lr": 1e-4},
              {"data_options": {"n": 6}}]  # fmt: skip
    cfg = validate_config(_cfg(pretrain__variants={"rubik": levers}))
    assert [v["name"] for v in cfg["pretrain"]["variants"]["rubik"]] == [
        "n_perms=3",
        "long",
        "lr=0.0001",
        "n=6",
    ]
    plan = plan_grid(cfg)
    runs = {e["run"]: e for e in plan}
    # The configured pre-training and everything from it keep their ids and hashes.
    for e in base:
        assert runs[e["run"]]["config_hash"] == e["config_hash"]
        assert runs[e["run"]]["variant"] is None
    pt = runs["s0/vgg3d/pt-rubik-n_perms=3"]
    assert pt["settings"]["task_options"] == {"n_perms": 3, "hidden": 8}
    assert runs["s0/vgg3d/pt-rubik-long"]["settings"]["epochs"] == 2
    assert runs["s0/vgg3d/pt-rubik-lr=0.0001"]["settings"]["lr"] == 1e-4
    # Other pre-training volumes; the fine-tuning data stay the configured ones.
    assert runs["s0/vgg3d/pt-rubik-n=6"]["settings"]["data_options"] == {"n": 6, "size": 16}
    assert runs["s0/vgg3d/pt-rubik"]["settings"]["data_options"] == {"n": 4, "size": 16}
    ft_n6 = runs["s0/vgg3d/ft-rubik-n=6-classify-lf1"]["settings"]
    assert ft_n6["data_options"] == {"n": 4, "size": 16}
    ft = runs["s0/vgg3d/ft-rubik-n_perms=3-classify-lf1"]
    assert ft["init"] == "s0/vgg3d/pt-rubik-n_perms=3" and ft["variant"] == "n_perms=3"
    assert runs["s0/vgg3d/pt-rubik-n_perms=3/proxy-test"]["variant"] == "n_perms=3"
    assert len({e["config_hash"] for e in plan}) == len(plan)
    # --variants keeps some of them; "default" is the configured pre-training and scratch.
    only = plan_grid(cfg, variants=["n_perms=3"])
    assert {e["variant"] for e in only} == {"n_perms=3"} and len(only) == 3
    default = plan_grid(cfg, variants=["default"])
    assert [e["run"] for e in default] == [e["run"] for e in base]
    with pytest.raises(ValueError, match="variants: 'k=9' is not a variant of tiny"):
        run_experiment(cfg, variants=["k=9"], dry_run=True, log=print)


@pytest.mark.parametrize(
    "variants, match",
    [
        ({"tcpc": [{"lr": 1.0}]}, "pretrain.variants: 'tcpc' is not in pretrain.methods"),
        ({"rubik": []}, "pretrain.variants.rubik: expected a non-empty list"),
        ({"rubik": [{"name": "x"}]}, r"pretrain.variants.rubik\[0\]: expected an object that"),
        ({"rubik": [{"gap": 0.2}]}, r"pretrain.variants.rubik\[0\].gap: unknown field"),
        ({"rubik": [{"epochs": 0}]}, r"pretrain.variants.rubik\[0\].epochs: expected a positive"),
        ({"rubik": [{"lr": -1}]}, r"pretrain.variants.rubik\[0\].lr: expected a positive"),
        ({"rubik": [{"lr": 1.0, "name": "a b"}]}, r"\[0\].name: use letters"),
        ({"rubik": [{"lr": 1.0, "name": "default"}]}, r"\[0\].name: 'default' names"),
        ({"rubik": [{"lr": 1.0, "name": "a"}, {"lr": 2.0, "name": "a"}]}, "two variants share"),
        ({"rubik": [{"seed": -1}]}, r"pretrain.variants.rubik\[0\].seed: expected a non-negative"),
        ({"rubik": [{"seed": True}]}, r"\[0\].seed: expected int, got bool"),
        ({"rubik": [{"seed": 1}]}, r"\[0\].seed: needs pretrain.seed"),
    ],
)
def test_variant_errors_name_the_field(variants, match):
    with pytest.raises(ValueError, match=match):
        validate_config(_cfg(pretrain__variants=variants))


def test_finetune_variants_choose_the_pretrainings_to_fine_tune():
    levers = [{"task_options": {"n_perms": 3}}, {"epochs": 2, "name": "long"}]
    cfg = validate_config(_cfg(pretrain__variants={"rubik": levers},
                               finetune__variants={"rubik": ["n_perms=3"]}))  # fmt: skip
    all_levers = validate_config(_cfg(pretrain__variants={"rubik": levers}))
    every = {e["run"]: e for e in plan_grid(all_levers)}
    plan = plan_grid(cfg)
    fine = sorted(e["run"] for e in plan if e["kind"] == "finetune")
    assert fine == ["s0/vgg3d/ft-rubik-n_perms=3-classify-lf1", "s0/vgg3d/ft-scratch-classify-lf1"]
    # Every pre-training and proxy score stays; the chosen runs keep their ids and hashes.
    assert sum(e["kind"] == "proxy" for e in plan) == 3
    for e in plan:
        assert every[e["run"]]["config_hash"] == e["config_hash"]
    # The table plans rows only for what is fine-tuned.
    text = render_tables([], cfg)
    assert "| rubik [n_perms=3] | vgg3d | classify | – |" in text
    assert "| rubik | vgg3d | classify |" not in text
    assert "| rubik [long] | vgg3d | classify |" not in text
    assert "| rubik [long] | vgg3d | proxy | – |" in text
    # --pretrain-epochs makes an epochs lever the configured run: it is fine-tuned as "default".
    long = validate_config(_cfg(pretrain__variants={"rubik": levers},
                                finetune__variants={"rubik": ["long"]}))  # fmt: skip
    plan = run_experiment(long, pretrain_epochs=1, dry_run=True, log=lambda *a: None)
    assert [e["run"] for e in plan if e["kind"] == "finetune" and e["method"] == "rubik"] == [
        "s0/vgg3d/ft-rubik-classify-lf1"
    ]


@pytest.mark.parametrize(
    "chosen, match",
    [
        ({"scratch": ["default"]}, "finetune.variants: 'scratch' is not a pre-trained method"),
        ({"ordering": ["default"]}, "finetune.variants: 'ordering' is not a pre-trained method"),
        ({"rubik": []}, "finetune.variants.rubik: expected a non-empty list of pre-trainings"),
        ({"rubik": "default"}, "finetune.variants.rubik: expected a non-empty list"),
        ({"rubik": ["k=9"]}, r"rubik: unknown pre-training 'k=9'; expected one of \('default',\)"),
        ({"rubik": ["default", "default"]}, "rubik: a pre-training is listed twice"),
        ([], "finetune.variants: expected dict"),
    ],
)
def test_finetune_variant_errors_name_the_field(chosen, match):
    with pytest.raises(ValueError, match=match):
        validate_config(_cfg(finetune__variants=chosen))


def test_variant_seed_repeats_the_shared_pretraining():
    cfg = validate_config(
        _cfg(seeds=[0, 1], pretrain__seed=0, pretrain__variants={"rubik": [{"seed": 3}]})
    )
    plan = plan_grid(cfg)
    runs = {e["run"]: e for e in plan}
    pt, base = runs["s3/vgg3d/pt-rubik-seed=3"], runs["s0/vgg3d/pt-rubik"]
    assert pt["seed"] == 3 and pt["variant"] == "seed=3"
    # Same settings, another seed: another run, and fine-tunings that know which one they start from.
    assert pt["settings"] == base["settings"] and pt["config_hash"] != base["config_hash"]
    for s in (0, 1):
        ft = runs[f"s{s}/vgg3d/ft-rubik-seed=3-classify-lf1"]
        assert ft["init"] == "s3/vgg3d/pt-rubik-seed=3" and ft["seed"] == s
        assert ft["config_hash"] != runs[f"s{s}/vgg3d/ft-rubik-classify-lf1"]["config_hash"]
    assert sum(e["kind"] == "pretrain" for e in plan) == 2


def test_variant_runs_records_and_rows(tmp_path):
    levers = [{"task_options": {"n_perms": 3}}, {"epochs": 2, "name": "long"}, {"seed": 1},
              {"data_options": {"n": 6}}]  # fmt: skip
    cfg = validate_config(_cfg(pretrain__seed=0, pretrain__variants={"rubik": levers}))
    kw = dict(device="cpu", results_dir=tmp_path / "results", runs_dir=tmp_path / "runs",
              progress=False, log=lambda *a: None)  # fmt: skip
    run_experiment(cfg, methods=["rubik"], **kw)
    records = load_records(tmp_path / "results" / "tiny.jsonl")
    assert sorted((r["head"], str(r["variant"])) for r in records) == [
        ("classify", "None"),
        ("classify", "long"),
        ("classify", "n=6"),
        ("classify", "n_perms=3"),
        ("classify", "seed=1"),
        ("proxy", "None"),
        ("proxy", "long"),
        ("proxy", "n=6"),
        ("proxy", "n_perms=3"),
        ("proxy", "seed=1"),
    ]
    # A proxy score names the volumes it was measured on (the pre-training's), a fine-tuning its own.
    for r in records:
        n = 6 if r["variant"] == "n=6" and r["head"] == "proxy" else 4
        assert r["data_options"] == {"n": n, "size": 16}, (r["run"], r["data_options"])
    # The protocol names the pre-training seed, so the repeat gets its own table beside scratch.
    for r in records:
        want = 1 if r["variant"] == "seed=1" else 0
        assert f"one pre-training (seed {want}) for all seeds" in r["protocol"], r["protocol"]
    long = [r for r in records if r["variant"] == "long"]
    assert all("pre-train 2 epochs / max 2 steps" in r["protocol"] for r in long)
    # Measured against the variant's own budget, not the configured 1 epoch.
    assert all("the config has 2 epochs" in r["protocol"] for r in long)
    table = render_tables(records, cfg)
    assert "| rubik [n_perms=3] | vgg3d | classify |" in table
    assert "| rubik [long] | vgg3d | proxy |" in table
    # The repeated pre-training has its own table (scratch would join it); the others have none.
    repeat = table[table.index("one pre-training (seed 1)") :].split("\n**tiny**")[0]
    assert "| rubik [seed=1] | vgg3d | classify | 0." in repeat
    assert "| rubik | vgg3d | classify |" not in repeat  # seed 0's rows are in seed 0's table
    # --pretrain-epochs overrides the variants' epochs too: "long" is the configured run then.
    plan = run_experiment(cfg, pretrain_epochs=1, dry_run=True, **kw)
    assert not any(e.get("variant") == "long" for e in plan)


def test_tables_put_scratch_beside_each_pretraining_budget():
    def rec(method, head, protocol, auc):
        lf = None if head == "proxy" else 0.1
        metrics = {"order_acc": auc} if head == "proxy" else {"auc": auc}
        return dict(method=method, backbone="vgg3d", head=head, label_fraction=lf, seed=0,
                    metrics=metrics, protocol=protocol, device="cpu", epochs=1,
                    pretrain_epochs=None, experiment="tiny")  # fmt: skip

    records = [
        rec("scratch", "classify", "fine-tune 100 epochs", 0.70),
        rec("rubik", "classify", "fine-tune 100 epochs, pre-train 10 epochs", 0.71),
        rec("rubik", "proxy", "pre-train 10 epochs", 0.50),
        rec("tcpc", "classify", "fine-tune 100 epochs, pre-train 5 epochs", 0.72),
        rec("scratch", "classify", "fine-tune 1 epochs (reduced: the recipe has 100 epochs)", 0.6),
    ]

    def titles_and_blocks(records):
        blocks = render_tables(records).split("**tiny** — ")[1:]
        return [b.splitlines()[0] for b in blocks], blocks

    # Each method at its configured budget (10 epochs of rubik, 5 of tcpc): one table, the
    # budgets in numeric order.
    titles, blocks = titles_and_blocks(records)
    assert titles == [
        "fine-tune 100 epochs; pre-train as configured: 5 epochs (tcpc), 10 epochs (rubik)",
        "fine-tune 1 epochs (reduced: the recipe has 100 epochs)",
    ]
    assert "| scratch | vgg3d | classify | 0.700" in blocks[0] and "tcpc" in blocks[0]
    assert "| rubik | vgg3d | proxy |" in blocks[0] and "0.500" in blocks[0]
    assert "rubik" not in blocks[1]

    # A reduced pre-training keeps its own table, with the scratch runs beside it.
    reduced = "fine-tune 100 epochs, pre-train 2 epochs (reduced: the config has 10 epochs)"
    titles, blocks = titles_and_blocks(records + [rec("ordering", "classify", reduced, 0.65)])
    assert len(titles) == 3
    block = blocks[titles.index(reduced.replace(", pre-train", "; pre-train"))]
    assert "| scratch | vgg3d | classify | 0.700" in block and "tcpc" not in block
    # So does an extended one: it is not the configured budget either.
    extended = "fine-tune 100 epochs, pre-train 50 epochs (extended: the config has 10 epochs)"
    titles, _ = titles_and_blocks(records + [rec("ordering", "classify", extended, 0.65)])
    assert extended.replace(", pre-train", "; pre-train") in titles and len(titles) == 3

    # One row at two unreduced budgets (say, the config's epochs changed): split, never mixed.
    titles, _ = titles_and_blocks(records + [rec("rubik", "classify", records[3]["protocol"], 0.7)])
    assert titles[:2] == [
        "fine-tune 100 epochs; pre-train 10 epochs",
        "fine-tune 100 epochs; pre-train 5 epochs",
    ]


def test_protocol_says_reduced_only_for_a_smaller_budget():
    cfg = {"recipe_epochs": 100, "pretrain": None}

    def protocol(**settings):
        return _protocol(cfg, {"kind": "finetune", "settings": settings}, None, {"finetune": 100})

    assert protocol(epochs=100) == "fine-tune 100 epochs"
    assert protocol(epochs=30) == "fine-tune 30 epochs (reduced: the recipe has 100 epochs)"
    assert protocol(epochs=100, max_steps=5) == (
        "fine-tune 100 epochs / max 5 steps (reduced: the recipe has 100 epochs)"
    )
    # More epochs than the recipe is no reduced run (`--epochs 300`), and says so.
    assert protocol(epochs=300) == "fine-tune 300 epochs (extended: the recipe has 100 epochs)"


def test_against_scratch_verdicts():
    def rec(method, seed, auc):
        return dict(method=method, backbone="vgg3d", head="classify", label_fraction=0.1,
                    seed=seed, metrics={"auc": auc, "acc": 0.5})  # fmt: skip

    scratch = [rec("scratch", s, v) for s, v in enumerate([0.70, 0.72, 0.71])]
    better = [rec("rubik", s, v) for s, v in enumerate([0.80, 0.81, 0.79])]
    noisy = [rec("ordering", s, v) for s, v in enumerate([0.60, 0.80, 0.74])]
    worse = [rec("tcpc", s, v) for s, v in enumerate([0.60, 0.61, 0.62])]
    single = [rec("cpc3d", 0, 0.9)]
    lines = against_scratch(scratch + better + noisy + worse + single, ["auc"])
    text = {line.split(" (")[0]: line for line in lines}
    assert "**beats scratch**" in text["rubik"] and "higher on 3 of 3 paired seeds" in text["rubik"]
    assert "+0.090" in text["rubik"]
    assert "**within seed noise**" in text["ordering"]
    # Paired: rubik wins by 0.10, 0.09, 0.08 (mean 0.09, sd 0.01); ordering's pairs scatter.
    assert "by +0.090 ± 0.010 (beyond its paired sd)" in text["rubik"]
    # 3 pairs: t at 2 df is 4.303, the standard error 0.010 / √3, so +0.090 ± 0.025.
    assert text["rubik"].endswith("; 95 % interval +0.065 to +0.115 (t, 2 df)")
    # Two pairs (1 df) give no interval.
    [two] = against_scratch(scratch[:2] + better[:2], ["auc"])
    assert two.endswith("by +0.095 ± 0.007 (beyond its paired sd)")
    assert "by +0.003 ± 0.093; 95 % interval -0.227 to +0.234 (t, 2 df)" in text["ordering"]
    assert "beyond" not in text["ordering"]
    # A shift that the unpaired spread hides but every seed shows: within noise, beyond paired.
    wide = [rec("scratch", s, v) for s, v in enumerate([0.60, 0.80, 0.70])]
    shifted = [rec("jigsaw3d", s, v) for s, v in enumerate([0.58, 0.78, 0.69])]
    [line] = against_scratch(wide + shifted, ["auc"])
    assert "**within seed noise**" in line and "by -0.017 ± 0.006 (beyond its paired sd)" in line
    assert "**trails scratch**" in text["tcpc"]
    assert "no verdict" in text["cpc3d"]
    # No scratch runs: nothing to compare with.
    assert against_scratch(better, ["auc"]) == []
    # Every label used: the line says so rather than "1 of the labels".
    full = [dict(r, label_fraction=1.0) for r in scratch + better]
    assert against_scratch(full, ["auc"])[0].startswith(
        "rubik (vgg3d, classify, all the labels), auc:"
    )
    # The verdicts appear under the tables.
    table = render_tables([dict(r, protocol="fine-tune 1 epochs", split="test", device="cpu",
                                epochs=1, dataset="d", experiment="tiny")
                           for r in scratch + better])  # fmt: skip
    assert "Against scratch" in table and "**beats scratch**" in table


def test_against_scratch_lists_fractions_in_order_and_a_method_before_its_variants():
    def rec(method, variant, lf, seed, auc):
        return dict(method=method, variant=variant, backbone="resnet18", head="classify",
                    label_fraction=lf, seed=seed, metrics={"auc": auc})  # fmt: skip

    records = []
    for lf in (1.0, 0.1, 0.01):  # stored in another order than the lines should come
        for method, variant in (("tcpc", "offset=0,6,6"), ("tcpc", None), ("scratch", None)):
            records += [rec(method, variant, lf, s, 0.7 + 0.01 * s) for s in range(2)]
    heads = [line.split(", auc:")[0] for line in against_scratch(records, ["auc"])]
    assert heads == [
        "tcpc (resnet18, classify, 0.01 of the labels)",
        "tcpc [offset=0,6,6] (resnet18, classify, 0.01 of the labels)",
        "tcpc (resnet18, classify, 0.1 of the labels)",
        "tcpc [offset=0,6,6] (resnet18, classify, 0.1 of the labels)",
        "tcpc (resnet18, classify, all the labels)",
        "tcpc [offset=0,6,6] (resnet18, classify, all the labels)",
    ]
    # One pre-training named differently by the grids that fine-tune it reads by fraction.
    curve = [r for r in records
             if r["method"] == "scratch" or (r["variant"] is None) != (r["label_fraction"] == 0.1)]  # fmt: skip
    assert [line.split(", auc:")[0] for line in against_scratch(curve, ["auc"])] == [
        "tcpc (resnet18, classify, 0.01 of the labels)",
        "tcpc [offset=0,6,6] (resnet18, classify, 0.1 of the labels)",
        "tcpc (resnet18, classify, all the labels)",
    ]


def test_against_configured_reads_each_lever_against_its_methods_configured_pretraining():
    def rec(method, variant, seed, dice, head="unet"):
        return dict(method=method, variant=variant, backbone="vgg3d", head=head,
                    label_fraction=0.1, seed=seed, metrics={"dice": dice})  # fmt: skip

    scratch = [rec("scratch", None, s, v) for s, v in enumerate([0.50, 0.90, 0.10])]
    configured = [rec("rubik", None, s, v) for s, v in enumerate([0.60, 0.62, 0.58])]
    longer = [rec("rubik", "epochs=100", s, v) for s, v in enumerate([0.70, 0.73, 0.68])]
    reseeded = [rec("rubik", "seed=1", s, v) for s, v in enumerate([0.61, 0.60, 0.59])]
    other_head = [rec("rubik", "epochs=100", s, 0.2, head="duc") for s in range(3)]
    orphan = [rec("ordering", "n_perms=10", s, 0.5) for s in range(3)]
    proxy = [dict(rec("rubik", "epochs=100", 0, 0.9, head="proxy"), label_fraction=None)]
    records = scratch + configured + longer + reseeded + other_head + orphan + proxy
    lines = against_configured(records, ["dice", "order_acc"])
    # Scratch, the configured run itself, a head the configured run never had, a method without
    # a configured run and the proxy record give no line; the levers are sorted by label.
    assert [line.split(", dice:")[0] for line in lines] == [
        "rubik [epochs=100] (vgg3d, unet, 0.1 of the labels)",
        "rubik [seed=1] (vgg3d, unet, 0.1 of the labels)",
    ]
    # +0.10, +0.11, +0.10 seed by seed: the means differ by more than either sd.
    assert "+0.103 (0.703 vs 0.600; sd 0.025 vs 0.020, n=3 vs 3): **above rubik**" in lines[0]
    assert "higher on 3 of 3 paired seeds, by +0.103 ± 0.006 (beyond its paired sd)" in lines[0]
    assert "**within seed noise**; higher on 2 of 3 paired seeds, by +0.000 ± 0.017" in lines[1]
    # Scratch is never the base here, whatever it scored.
    assert all("scratch" not in line for line in lines)
    assert against_configured(scratch + longer, ["dice"]) == []


def test_seed_tables_pair_each_settings_runs_seed_by_seed():
    def rec(method, seed, auc, lf=0.1, head="classify"):
        return dict(method=method, variant=None, backbone="vgg3d", head=head, seed=seed,
                    label_fraction=lf, metrics={"auc": auc, "top_share": 0.5}, protocol="p",
                    split="test", device="cpu", epochs=1, dataset="d")  # fmt: skip

    records = [rec("scratch", s, v) for s, v in enumerate([0.71, 0.75, 0.70])]
    records += [rec("rubik", s, v) for s, v in enumerate([0.74, 0.73])]  # seed 2 not run yet
    records += [rec("scratch", 0, 0.9, lf=1.0), rec("rubik", 0, 0.5, head="proxy")]
    plain = render_tables(records, validate_config(_cfg()))
    assert "Seed by seed" not in plain
    text = render_tables(records, validate_config(_cfg(seed_tables=["auc"])))
    blocks = text.split("Seed by seed, auc ")
    # one table a setting (0.1 and all the labels); the proxy record has none
    assert [b.split(":")[0] for b in blocks[1:]] == [
        "(vgg3d, classify, 0.1 of the labels)",
        "(vgg3d, classify, all the labels)",
    ]
    rows = [line for line in blocks[1].splitlines() if line.startswith("| ")]
    assert rows[0] == "| seed | scratch | rubik |"
    assert rows[1:4] == [
        "| 0 | 0.710 | 0.740 |",
        "| 1 | 0.750 | 0.730 |",
        f"| 2 | 0.700 | {MISSING} |",
    ]
    assert rows[4].startswith("| mean ± sd | 0.720 ± 0.026 (n=3) | 0.735")
    assert "| 0 | 0.900 |" in blocks[2]
    # a segmenter's seed table marks no collapse and does not ask for top_share
    seg = [dict(rec(m, s, 0.0), head="unet", metrics={"dice": v}) for m, s, v in
           [("scratch", 0, 0.61), ("rubik", 0, 0.0)]]  # fmt: skip
    seg_cfg = _cfg(metrics=["dice"], seed_tables=["dice"], proxy_eval=False)
    seg_text = render_tables(seg, validate_config(seg_cfg))
    assert "| 0 | 0.610 | 0.000 |" in seg_text and "top_share" not in seg_text


def test_pretraining_seeds_read_the_repeat_against_the_configured_run():
    cfg = validate_config(_cfg(pretrain__seed=0, pretrain__variants={"rubik": [{"seed": 4}]}))

    def rec(variant, seed, auc, head="classify"):
        lf, metrics = (None, {"order_acc": auc}) if head == "proxy" else (0.1, {"auc": auc})
        return dict(method="rubik", variant=variant, backbone="vgg3d", head=head, seed=seed,
                    label_fraction=lf, metrics=metrics)  # fmt: skip

    configured = [rec(None, s, v) for s, v in enumerate([0.70, 0.78, 0.72])]
    repeat = [rec("seed=4", s, v) for s, v in enumerate([0.66, 0.73, 0.69])]
    for r in repeat:  # a metric the configured runs predate: no line for it
        r["metrics"]["acc_val_thr"] = 0.7
    proxies = [rec(None, 0, 0.9, "proxy"), rec("seed=4", 4, 0.8, "proxy")]
    for r in proxies:  # a property of the data, not of the pre-training: not listed
        r["metrics"]["rot_ceiling"] = 0.8
    metrics = ["auc", "acc_val_thr", "order_acc"]
    lines = pretraining_seeds(configured + repeat + proxies, cfg, metrics)
    assert len(lines) == 2
    assert lines[0].startswith(
        "rubik [seed=4] against rubik (pre-training seed 4 vs 0; vgg3d, classify, 0.1 of the labels)"
    )
    # -0.04, -0.05, -0.03 seed by seed: within the columns' spread, beyond the paired one.
    assert "-0.040 (0.693 vs 0.733" in lines[0] and "**within seed noise**" in lines[0]
    assert "higher on 0 of 3 paired seeds, by -0.040 ± 0.010 (beyond its paired sd)" in lines[0]
    assert lines[1].endswith("proxy test scores: order_acc 0.800 vs 0.900")
    # Without the configured run's fine-tunings, or without a seed lever, there is nothing to read.
    assert pretraining_seeds(repeat, cfg, metrics) == []
    assert pretraining_seeds(configured + repeat, validate_config(_cfg()), metrics) == []
    table = render_tables([dict(r, protocol="p", split="test", device="cpu", epochs=1, dataset="d")
                           for r in configured + repeat], cfg)  # fmt: skip
    assert "**tiny** — pre-training seeds" in table and "rubik [seed=4] against rubik" in table


def test_pooled_pretrainings_average_a_methods_pretrainings_against_scratch():
    variants = {"rubik": [{"seed": 1}, {"seed": 2}, {"task_options": {"n_perms": 10}}]}
    cfg = validate_config(_cfg(pretrain__seed=0, pretrain__variants=variants))

    def rec(method, variant, seed, auc):
        return dict(method=method, variant=variant, backbone="vgg3d", head="classify", seed=seed,
                    label_fraction=0.1, metrics={"auc": auc})  # fmt: skip

    records = [rec("rubik", None, s, v) for s, v in enumerate([0.70, 0.78, 0.72])]
    records += [rec("rubik", "seed=1", s, v) for s, v in enumerate([0.66, 0.73, 0.69])]
    # seed 3 of the second repeat has no partner in the others: left out of the pool
    records += [rec("rubik", "seed=2", s, v) for s, v in enumerate([0.74, 0.80, 0.75, 0.99])]
    records += [rec("rubik", "n_perms=10", s, 0.99) for s in range(3)]  # a lever, not a seed
    records += [rec("scratch", None, s, v) for s, v in enumerate([0.72, 0.75, 0.70])]
    lines = pooled_pretrainings(records, cfg, ["auc", "order_acc"])
    assert len(lines) == 1
    line = lines[0]
    assert line.startswith(
        "rubik over 3 pre-trainings (seeds 0, 1, 2; vgg3d, classify, 0.1 of the labels, "
        "fine-tuning seeds 0, 1, 2), auc: pre-training means 0.733, 0.693, 0.763, sd 0.035 between"
    )
    # per seed: 0.70, 0.77, 0.72 over the pre-trainings; against scratch -0.02, +0.02, +0.02
    assert "against scratch: +0.007 (0.730 vs 0.723" in line
    assert "higher on 2 of 3 paired seeds, by +0.007 ± 0.023" in line
    # Within: the root mean square of the three fine-tuning sds; over the root of 3 seeds, the
    # spread of the means that fine-tuning noise alone would give.
    within = ((0.0416**2 + 0.0351**2 + 0.0328**2) / 3) ** 0.5
    assert (
        f"noise alone gives {within / 3**0.5:.3f} (the sd within them, {within:.3f}, over" in line
    )
    # Without scratch the spreads stay; with one pre-training there is nothing to pool.
    no_scratch = [r for r in records if r["method"] != "scratch"]
    assert pooled_pretrainings(no_scratch, cfg, ["auc"])[0].endswith("over the root of 3 seeds)")
    assert pooled_pretrainings(records[:3] + records[-3:], cfg, ["auc"]) == []
    assert pooled_pretrainings(records, validate_config(_cfg()), ["auc"]) == []


def test_a_seed_variant_of_a_lever_is_read_against_that_lever():
    variants = {"rubik": [{"task_options": {"n_perms": 10}},
                          {"seed": 1, "task_options": {"n_perms": 10}},
                          {"seed": 2, "task_options": {"gap": 0.25}}]}  # fmt: skip
    cfg = validate_config(_cfg(pretrain__seed=0, pretrain__variants=variants))

    def rec(variant, seed, auc):
        return dict(method="rubik", variant=variant, backbone="vgg3d", head="classify", seed=seed,
                    label_fraction=0.1, metrics={"auc": auc})  # fmt: skip

    records = [rec(None, s, 0.5) for s in range(3)]  # the configured run: not the counterpart
    records += [rec("n_perms=10", s, v) for s, v in enumerate([0.70, 0.78, 0.72])]
    records += [rec("n_perms=10,seed=1", s, v) for s, v in enumerate([0.66, 0.73, 0.69])]
    records += [rec("gap=0.25,seed=2", s, 0.9) for s in range(3)]  # repeats nothing that ran
    [line] = pretraining_seeds(records, cfg, ["auc"])
    assert line.startswith("rubik [n_perms=10,seed=1] against rubik [n_perms=10] (pre-training")
    assert "-0.040 (0.693 vs 0.733" in line
    [pooled] = pooled_pretrainings(records, cfg, ["auc"])
    assert pooled.startswith("rubik [n_perms=10] over 2 pre-trainings (seeds 0, 1;")
    assert "pre-training means 0.733, 0.693" in pooled


def test_pretraining_seeds_and_pools_keep_each_depth_of_a_partial_transfer_apart():
    # Before, one run per (pre-training, fine-tuning seed) was kept, the last depth read.
    cfg = validate_config(_cfg(pretrain__seed=0, pretrain__variants={"rubik": [{"seed": 1}]}))

    def rec(method, variant, seed, dice, stages):
        return dict(method=method, variant=variant, backbone="vgg3d", head="unet", seed=seed,
                    label_fraction=0.1, metrics={"dice": dice}, transfer_stages=stages)  # fmt: skip

    records = [rec("scratch", None, s, 0.60 + s / 100, None) for s in range(3)]
    for n, base in ((2, 0.70), (3, 0.50)):
        records += [rec("rubik", None, s, base + s / 100, n) for s in range(3)]
        records += [rec("rubik", "seed=1", s, base + 0.02 + s / 100, n) for s in range(3)]
    lines = pretraining_seeds(records, cfg, ["dice"])
    assert [line.split(", dice:")[0] for line in lines] == [
        f"rubik [seed=1] against rubik (pre-training seed 1 vs 0; vgg3d, unet, 0.1 of the labels, "
        f"first {n} stages)"
        for n in (2, 3)
    ]
    assert all("+0.020 (" in line and "by +0.020 ± 0.000" in line for line in lines)
    pooled = pooled_pretrainings(records, cfg, ["dice"])
    assert [p.split(", fine-tuning seeds")[0].rsplit(", ", 1)[1] for p in pooled] == [
        "first 2 stages",
        "first 3 stages",
    ]
    # scratch (no depth) meets every depth: +0.11 at 2 stages, -0.09 at 3
    assert "against scratch: +0.110 (" in pooled[0] and "against scratch: -0.090 (" in pooled[1]


def test_diagnose_flags_saturated_proxies_and_collapsed_heads():
    def rec(method, head, seed, **metrics):
        lf = None if head == "proxy" else 0.1
        return dict(method=method, backbone="resnet18", head=head, label_fraction=lf, seed=seed,
                    metrics=metrics)  # fmt: skip

    records = [
        rec("ordering", "proxy", 0, order_acc=0.97),
        rec("ordering", "proxy", 1, order_acc=0.99),
        rec("rubik", "proxy", 0, order_acc=0.99, rot_acc=0.60),
        rec("rubik", "proxy", 1, order_acc=0.90, rot_acc=0.62),  # one seed below: no flag
        rec("scratch", "classify", 0, acc=0.77, auc=0.70, top_share=1.0),
        rec("scratch", "classify", 1, acc=0.70, auc=0.80, top_share=0.80),
        rec("scratch", "classify", 2, acc=0.77, auc=0.75),  # before top_share existed
        rec("rubik", "classify", 0, acc=0.72, auc=0.81, top_share=0.70),
    ]
    lines = diagnose(records)
    assert len(lines) == 2
    assert lines[0].startswith("ordering (resnet18) proxy order_acc 0.980 (n=2): nearly solved")
    assert lines[1].startswith("scratch (resnet18, 0.1 of the labels): 1 of 2 runs predict one")
    assert lines[1].endswith("; 1 older runs have no top_share")
    assert diagnose(records[3:4] + records[-1:]) == []
    # Fine-tunings of one setting from two different pre-trained checkpoints.
    two = [dict(r, init_digest=d) for r, d in zip(records[-1:] * 2, ("aa", "bb"))]
    assert diagnose(two) == [
        "rubik (resnet18, classify): fine-tuned from 2 different pre-trained checkpoints "
        "(init_digest): the seed spread includes the pre-training's"
    ]
    assert diagnose([dict(r, init_digest="aa") for r in records[-1:] * 2]) == []
    # Proxy records of one method that scored two different checkpoints.
    scored = [
        dict(records[2], init_digest=d, run="s0/resnet18/pt-rubik/proxy-test") for d in ("aa", "bb")
    ]
    assert diagnose(scored)[1:] == [
        "rubik (resnet18) proxy s0/resnet18/pt-rubik/proxy-test: the records score 2 different "
        "checkpoints of its pre-training (init_digest), e.g. one trained again on another machine"
    ]  # [0] says the order task is nearly solved
    # Two pre-training seeds' proxies score two checkpoints, as they should.
    assert diagnose([dict(r, init_digest=str(r["seed"])) for r in records[2:4]]) == []
    # ACC lost to the 0.5 cut: the cut chosen on validation recovers more than the seed sd.
    cut = [
        rec("tcpc", "classify", 0, acc=0.25, acc_val_thr=0.70, top_share=0.99),
        rec("tcpc", "classify", 1, acc=0.57, acc_val_thr=0.74, top_share=0.62),
        rec("tcpc", "classify", 2, acc=0.38, acc_val_thr=0.66, top_share=0.80),
    ]
    assert diagnose(cut) == [
        "tcpc (resnet18, 0.1 of the labels): 1 of 3 runs predict one class for at least 95% of "
        "the test volumes (collapse: ACC is that class's share, AUC still ranks)",
        "tcpc (resnet18, 0.1 of the labels): ACC 0.400 at the softmax's 0.5 but 0.700 at the cut "
        "chosen on validation (n=3, higher in 3): the threshold costs the ACC, not the ranking",
    ]
    assert diagnose([dict(r, metrics=dict(r["metrics"], acc_val_thr=0.45)) for r in cut[1:]]) == []
    with_majority = [dict(r, metrics=dict(r["metrics"], majority_acc=0.768)) for r in cut[1:]]
    assert diagnose(with_majority)[0].endswith(
        "the ranking; calling every test volume the majority class scores 0.768"
    )
    assert len(diagnose(cut[:1])) == 1  # the collapse only: one run has no sd, no claim

    # Runs whose best validation AUC never passed 0.5: their labels taught no rule that carries.
    def picked(seed, val, test, split="val"):
        r = rec("rubik", "classify", seed, auc=test, top_share=0.6)
        return dict(r, split="test", selected_by=dict(split=split, metric="auc", value=val))

    blind = [picked(0, 0.41, 0.20), picked(1, 0.48, 0.30), picked(2, 0.70, 0.80)]
    assert diagnose(blind) == [
        "rubik (resnet18, 0.1 of the labels): 2 of 3 runs never ranked the validation volumes "
        "above chance (validation AUC at most 0.5 at every epoch, so also at the one selected): "
        "what their labels taught does not carry to other volumes; test AUC 0.250 in those runs, "
        "0.800 in the others"
    ]
    assert diagnose(blind[2:]) == []
    # Selected on the scored split itself, or on a loss: no such reading.
    assert diagnose([picked(0, 0.41, 0.20, split="test")]) == []
    assert diagnose([dict(blind[0], selected_by=dict(split="val", metric="loss", value=0.3))]) == []
    # A rotation score read against the ceiling the volumes allow; a ceiling of 1 says nothing.
    ceilings = dict(order_ceiling=1.0, rot_ceiling=0.8, constant_cubes=0.3)
    capped = [rec("rubik", "proxy", 0, order_acc=0.9, rot_acc=0.6, **ceilings)]
    assert diagnose(capped) == [
        "rubik (resnet18) proxy rot_acc 0.600 of a ceiling of 0.800 (n=1): no model can tell "
        "apart what leaves a cube unchanged; 30% of the test cubes hold a single value"
    ]
    assert diagnose([dict(capped[0], metrics=dict(capped[0]["metrics"], rot_ceiling=1.0))]) == []
    # The same for InfoNCE: identical target cubes cap what any encoder can pick out.
    contrast = [rec("cpc3d", "proxy", 0, cpc_acc=0.17, cpc_ceiling=0.44, cpc_chance=1 / 64,
                    constant_cubes=0.57)]  # fmt: skip
    assert diagnose(contrast) == [
        "cpc3d (resnet18) proxy cpc_acc 0.170 of a ceiling of 0.440 (n=1): no model can tell "
        "apart identical target cubes; 57% of the test cubes hold a single value"
    ]
    stuck_cpc = [dict(contrast[0], metrics=dict(contrast[0]["metrics"], cpc_acc=0.02))]
    assert diagnose(stuck_cpc)[0].endswith("at chance (0.016), not learned in these epochs")
    # An accuracy at chance in every run: the task was not learned.
    # Its ceiling goes unmentioned: the score is nowhere near it.
    chance = dict(order_chance=0.001, rot_chance=1 / 3, order_ceiling=0.98)
    stuck = [
        rec("rubik", "proxy", s, order_acc=a, rot_acc=0.7, **chance)
        for s, a in enumerate([0, 0.0015])
    ]
    assert diagnose(stuck) == [
        "rubik (resnet18) proxy order_acc 0.001 (n=2): at chance (0.001), not learned in these epochs"
    ]
    # One run left chance, but the scores are far below the ceiling: it explains none of the
    # shortfall, so it goes unmentioned; near the ceiling it is read, with the order's reason.
    assert diagnose(stuck[:1] + [rec("rubik", "proxy", 1, order_acc=0.01, **chance)]) == []
    near = diagnose([rec("rubik", "proxy", 1, order_acc=0.85, **dict(chance, order_ceiling=0.9))])
    assert near == [
        "rubik (resnet18) proxy order_acc 0.850 of a ceiling of 0.900 (n=1): no model can tell "
        "apart orders that swap identical cubes"
    ]
    table = render_tables([dict(r, protocol="fine-tune 1 epochs", split="test", device="cpu",
                                epochs=1, dataset="d", experiment="tiny")
                           for r in records])  # fmt: skip
    assert "Diagnostics:" in table and "nearly solved" in table


def test_diagnose_tests_counted_puzzles_against_chance():
    # With the puzzles counted, an ordering score is a count: 3 of 139 puzzles (twice the chance
    # of K = 100) is what guessing gives, the same share of 13900 is not. Runs are pooled.
    def rec(seed, acc, puzzles=None):
        metrics = dict(order_acc=acc, order_chance=0.01, order_ceiling=1.0)
        if puzzles:
            metrics["puzzles"] = float(puzzles)
        return dict(method="rubik", backbone="vgg3d", head="proxy", seed=seed, metrics=metrics)

    stuck = "rubik (vgg3d) proxy order_acc 0.022 (n=1): at chance (0.010), not learned"
    assert diagnose([rec(0, 3 / 139, 139)])[0].startswith(stuck)
    assert diagnose([rec(0, 300 / 13900, 13900)]) == []
    assert diagnose([rec(0, 3 / 139)]) == []  # no count: the ratio rule (2.2 > 1.5 x chance)
    assert diagnose([rec(0, 0.0, 100), rec(1, 0.08, 100)]) == []
    assert diagnose([rec(0, 0.0, 100), rec(1, 0.02, 100)])[0].endswith(
        "0.010 (n=2): at chance (0.010), not learned in these epochs"
    )
    assert diagnose([rec(0, 0.014, 139), rec(1, 0.02)]) == []  # one run uncounted: ratio rule


def test_methods_filter(tmp_path, capsys):
    cfg = validate_config(_cfg(seeds=[0, 1]))
    assert {e["method"] for e in plan_grid(cfg, methods=["scratch"])} == {"scratch"}
    assert {e["kind"] for e in plan_grid(cfg, methods=["rubik"])} == {
        "pretrain",
        "proxy",
        "finetune",
    }
    with pytest.raises(ValueError, match="methods: 'tcpc' is not a method of tiny"):
        run_experiment(cfg, methods=["tcpc"], dry_run=True, results_dir=tmp_path, log=print)
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(TINY))
    args = ["experiment", "run", str(path), "--dry-run", "--results-dir", str(tmp_path)]
    assert cli_main(args + ["--methods", "scratch"]) == 0
    assert "tiny: 1 runs; done 0, skipped 0, planned 1" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli_main(args + ["--methods", "rubix"])
    assert "expected methods from" in capsys.readouterr().err
    for bad, match in (("-1", "expected seeds of at least 0"), ("0,x", "expected seeds like")):
        with pytest.raises(SystemExit):
            cli_main(args + ["--seeds", bad])
        assert f"--seeds: {match}" in capsys.readouterr().err


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


def test_cli_table_names_a_missing_records_file_and_configs_folder(tmp_path, capsys):
    page = tmp_path / "README.md"
    page.write_text("# Results\n")
    configs = ["--configs", str(REPO / "experiments")]
    typo = tmp_path / "adrenal28.jsonl"
    assert cli_main(["experiment", "table", str(typo), *configs, "--write", str(page)]) == 2
    assert f"RECORDS: no records file {typo}" in capsys.readouterr().err
    assert page.read_text() == "# Results\n"
    nowhere = str(tmp_path / "experiments")
    assert cli_main(["experiment", "table", "--configs", nowhere]) == 2
    assert f"--configs: no folder {nowhere}, and no RECORDS given" in capsys.readouterr().err
    rec = dict(dataset="d", method="scratch", backbone="vgg3d", head="classify", seed=0,
               label_fraction=1.0, split="test", metrics={"auc": 0.5}, epochs=1, commit="c",
               device="cpu", wall_s=1.0)  # fmt: skip
    records = tmp_path / "tiny.jsonl"
    records.write_text(json.dumps(rec) + "\n")
    assert cli_main(["experiment", "table", str(records), "--configs", nowhere]) == 0
    out, err = capsys.readouterr()
    assert "### tiny" in out and f"warning: --configs: no folder {nowhere}" in err


def test_tiny_run_appends_records_and_rerun_skips(tmp_path):
    cfg = validate_config(_cfg())
    kw = dict(
        device="cpu",
        results_dir=tmp_path / "results",
        runs_dir=tmp_path / "runs",
        progress=False,
        log=lambda *a: None,
    )
    # A spent time budget starts nothing; the runs stay planned for the next call.
    spent = run_experiment(cfg, time_budget=1e-9, **kw)
    assert [e["status"] for e in spent] == ["planned"] * 4
    assert not (tmp_path / "results" / "tiny.jsonl").exists()
    with pytest.raises(ValueError, match="time_budget: expected a positive"):
        run_experiment(cfg, time_budget=0, **kw)
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
    assert {"acc", "auc", "bal_acc", "top_share"} <= set(ft["scratch"]["metrics"])
    # Binary labels and a validation split: ACC at the cut chosen on validation too.
    assert 0 <= ft["scratch"]["metrics"]["acc_val_thr"] <= 1 and "val_thr" in ft["rubik"]["metrics"]
    assert 0.5 <= ft["scratch"]["metrics"]["majority_acc"] <= 1
    # The checkpoint scored is the one of best validation AUC, and the record says how good.
    for rec in ft.values():
        summary = json.loads((tmp_path / "runs" / "tiny" / rec["run"] / "metrics.json").read_text())
        assert rec["selected_by"] == {
            "split": "val",
            "metric": "auc",
            "value": summary["best"]["value"],
        }
        assert rec["selected_epoch"] == summary["best"]["epoch"]
    assert "selected_by" not in [r for r in records if r["head"] == "proxy"][0]
    assert ft["rubik"]["pretrain_epochs"] is not None and ft["scratch"]["pretrain_epochs"] is None
    # The pre-trained weights a record started from, by digest (the proxy scores the same ones).
    best = tmp_path / "runs" / "tiny" / "s0" / "vgg3d" / "pt-rubik" / "best.pt"
    assert ft["rubik"]["init_digest"] == weights_digest(best) and len(weights_digest(best)) == 16
    assert ft["scratch"]["init_digest"] is None
    assert "max 2 steps" in ft["scratch"]["protocol"]
    proxy = [r for r in records if r["head"] == "proxy"][0]
    assert proxy["label_fraction"] is None and "order_acc" in proxy["metrics"]
    assert proxy["init_digest"] == ft["rubik"]["init_digest"]
    # A scored fine-tuning keeps only the checkpoint its record scored; pre-training keeps both.
    for rec in ft.values():
        run = tmp_path / "runs" / "tiny" / rec["run"]
        assert (run / "best.pt").exists() and not (run / "last.pt").exists()
    assert (best.parent / "last.pt").exists()

    again = run_experiment(cfg, **kw)
    assert [e["status"] for e in again] == ["skipped"] * 4
    assert len(load_records(path)) == 3
    # The dry run decides as the run does: a pre-training whose runs all have records is skipped.
    listed = run_experiment(cfg, dry_run=True, **kw)
    assert [e["status"] for e in listed] == [e["status"] for e in again]

    # The pre-training's checkpoint now holds other weights (trained again after its folder was
    # lost, say): its proxy is scored again and adds a record for them; the fine-tunings, whose
    # records name the weights they started from, are not run again.
    from rubikkit.train.checkpoint import load_checkpoint, save_checkpoint

    state = load_checkpoint(best)
    name = next(k for k, v in state["model"].items() if v.is_floating_point())
    state["model"][name] = state["model"][name] + 0.5
    save_checkpoint(state, best)
    listed = run_experiment(cfg, dry_run=True, **kw)
    statuses = [(e["kind"], e["status"]) for e in listed]
    assert sorted(statuses) == [
        ("finetune", "skipped"),
        ("finetune", "skipped"),
        ("pretrain", "planned"),
        ("proxy", "planned"),
    ]
    plan = run_experiment(cfg, **kw)
    ran = {"planned": "done", "skipped": "skipped"}
    assert [e["status"] for e in plan] == [ran[e["status"]] for e in listed]
    proxies = [r for r in load_records(path) if r["head"] == "proxy"]
    assert [p["init_digest"] for p in proxies] == [proxy["init_digest"], weights_digest(best)]
    assert proxies[0]["init_digest"] != proxies[1]["init_digest"]
    assert len(load_records(path)) == 4
    assert {e["status"] for e in run_experiment(cfg, **kw)} == {"skipped"}
    assert len(load_records(path)) == 4

    # Records lost, run folders kept: the finished fine-tunings are scored again, not retrained,
    # and wall_s still counts their training time (from the run folder), not just this evaluation.
    path.unlink()
    listed = run_experiment(cfg, dry_run=True, **kw)
    assert [e["status"] for e in listed] == ["planned"] * 4
    run_experiment(cfg, **kw)
    rescored = {r["method"]: r for r in load_records(path) if r["head"] == "classify"}
    # The rubik fine-tuning still names the weights it started from, not the changed best.pt.
    assert rescored["rubik"]["init_digest"] == proxy["init_digest"] != weights_digest(best)
    assert (tmp_path / "runs" / "tiny" / ft["rubik"]["run"] / INIT_DIGEST_FILE).exists()
    assert not (tmp_path / "runs" / "tiny" / ft["scratch"]["run"] / INIT_DIGEST_FILE).exists()
    for method, rec in rescored.items():
        trained = json.loads((tmp_path / "runs" / "tiny" / rec["run"] / "metrics.json").read_text())
        assert rec["metrics"] == ft[method]["metrics"]
        assert rec["wall_s"] > trained["wall_s"] > 0

    # --keep-last keeps it.
    keep = dict(kw, results_dir=tmp_path / "keep", runs_dir=tmp_path / "keep")
    run_experiment(cfg, methods=["scratch"], keep_last=True, **keep)
    assert (tmp_path / "keep" / "tiny" / ft["scratch"]["run"] / "last.pt").exists()

    # The table shows our numbers and keeps unrun settings visibly missing.
    table = render_tables(records, validate_config(_cfg(finetune__methods=["scratch"])))
    assert "| scratch | vgg3d | classify |" in table
    assert "(n=1)" in table
    full = render_tables(records, cfg)
    assert "Runs: 3 records; trained: " in full and "Runs: 1 record;" not in full
    assert "pre-training epochs (proxy scores)" in full and "epochs from scratch" in full
    assert "fine-tuning epochs after" in full
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
    # Published at 100 % of the labels only: no all-missing published row at 10 %.
    at_10 = validate_config(dict(cfg, finetune=dict(cfg["finetune"], label_fractions=[0.1])))
    assert "published, not run here" not in render_tables([], at_10)
    page = tmp_path / "README.md"
    page.write_text("# Results\n\nintro\n")
    write_page(page, "first")
    write_page(page, "second")
    text = page.read_text()
    assert text.count(PAGE_BEGIN) == 1 and text.count(PAGE_END) == 1
    assert "second" in text and "first" not in text and text.startswith("# Results")
    body = render_page([tmp_path / "none.jsonl"], config_dir=REPO / "experiments")
    assert "adrenal28_scratch_resnet18" in body


def _committed_tables(page_path) -> str:
    # The rendered part of a results page, between the markers write_page keeps.
    page = page_path.read_text(encoding="utf-8")
    return page.split(PAGE_BEGIN, 1)[1].split(PAGE_END, 1)[0].strip("\n")


def test_the_committed_results_page_is_what_the_committed_records_render(tmp_path):
    # results/README.md's tables come from `rubikkit experiment table results/*.jsonl --plots
    # results/plots --write results/README.md`; a record or config changed without rendering the
    # page again (or a cell edited by hand) fails here.
    committed = _committed_tables(REPO / "results" / "README.md")
    records = sorted((REPO / "results").glob("*.jsonl"))
    body = render_page(records, config_dir=REPO / "experiments", plots_dir=tmp_path / "plots")
    assert committed == body.strip("\n"), (
        "results/README.md is stale: run `rubikkit experiment table results/*.jsonl "
        "--plots results/plots --write results/README.md`"
    )
    drawn = {p.name for p in (tmp_path / "plots").glob("*.png")}
    assert drawn <= {p.name for p in (REPO / "results" / "plots").glob("*.png")}


def test_the_committed_reruns_page_is_what_its_records_render():
    # results/reruns/README.md: `rubikkit experiment table results/reruns/*.jsonl --only-run
    # --write results/reruns/README.md`.
    committed = _committed_tables(REPO / "results" / "reruns" / "README.md")
    records = sorted((REPO / "results" / "reruns").glob("*.jsonl"))
    body = render_page(records, config_dir=REPO / "experiments", include_unrun=False)
    assert committed == body.strip("\n"), (
        "results/reruns/README.md is stale: run `rubikkit experiment table "
        "results/reruns/*.jsonl --only-run --write results/reruns/README.md`"
    )


def test_label_fraction_plots_draw_scratch_beside_the_pretrained(tmp_path, monkeypatch):
    import rubikkit.results as results

    drawn = []
    real = results.plot_label_fractions

    def spy(records, *args, **kwargs):
        drawn.append(sorted({r["method"] for r in records}))
        return real(records, *args, **kwargs)

    monkeypatch.setattr(results, "plot_label_fractions", spy)

    def rec(method, lf, protocol, seed=0):
        return dict(method=method, backbone="resnet18", head="classify", label_fraction=lf,
                    seed=seed, metrics={"auc": 0.6 + lf / 4}, protocol=protocol, device="cpu",
                    epochs=100, pretrain_epochs=None, experiment="tiny", dataset="d",
                    split="test", commit="abc", wall_s=1.0)  # fmt: skip

    ft, pt = "fine-tune 100 epochs", ", pre-train 100 epochs"
    records = [rec(m, lf, ft + (pt if m == "rubik" else "")) for m in ("scratch", "rubik")
               for lf in (0.1, 1.0)]  # fmt: skip
    # A scratch budget no pre-training shares gets its own plot.
    records += [rec("scratch", lf, "fine-tune 10 epochs") for lf in (0.1, 1.0)]
    path = tmp_path / "tiny.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    body = render_page([path], config_dir=tmp_path / "no-configs", plots_dir=tmp_path / "plots")
    assert drawn == [["rubik", "scratch"], ["scratch"]]
    pngs = sorted((tmp_path / "plots").glob("*.png"))
    assert len(pngs) == 2 and all(f"](plots/{p.name})" in body for p in pngs)


def test_tables_list_the_budgets_in_numeric_order():
    def rec(method, epochs, protocol):
        return dict(method=method, backbone="vgg3d", head="proxy", label_fraction=None, seed=0,
                    metrics={"order_acc": 0.5}, protocol=protocol, device="cpu", epochs=epochs,
                    pretrain_epochs=epochs, experiment="tiny", variant=None)  # fmt: skip

    records = [
        rec("rubik", 100.0, "pre-train 100 epochs"),
        rec("ordering", 50.0, "pre-train 50 epochs"),
    ]
    records[0]["variant"] = "epochs=100"
    text = render_tables(records)
    assert "pre-train as configured: 50 epochs (ordering), 100 epochs (rubik [epochs=100])" in text
    assert "trained: 50 pre-training epochs (proxy scores); 100 pre-training epochs" in text


def test_an_epochs_lever_has_no_row_in_a_reduced_table():
    cfg = load_config(REPO / "experiments" / "proxy_lidc.json")

    def rec(variant, protocol, epochs):
        return dict(method="rubik", variant=variant, backbone="vgg3d", head="proxy",
                    label_fraction=None, seed=0, metrics={"order_acc": 0.5}, protocol=protocol,
                    device="cpu", epochs=epochs, pretrain_epochs=epochs,
                    experiment="proxy_lidc")  # fmt: skip

    reduced = "pre-train 2 epochs (reduced: the config has 50 epochs)"
    text = render_tables([rec(None, reduced, 2.0)], cfg)
    assert "| rubik | vgg3d | proxy | – | – | – | 0.500 (n=1)" in text
    # A planned setting stays visibly missing ...
    assert "| ordering | vgg3d | proxy | – | – | – | – |" in text
    assert "rubik [epochs=100]" not in text  # ... but the 100-epoch lever is no setting at 2 epochs
    text = render_tables([rec(None, "pre-train 50 epochs", 50.0)], cfg)
    assert "| rubik [epochs=100] | vgg3d | proxy | – | – | – | – |" in text

    # A reduced fine-tuning does not touch the pre-training: its table keeps the epochs lever.
    cfg = load_config(REPO / "experiments" / "adrenal28_ssl_cpu.json")
    scratch = dict(rec(None, "fine-tune 1 epochs (reduced: the recipe has 100 epochs)", 1.0),
                   method="scratch", head="classify", label_fraction=0.1, pretrain_epochs=None,
                   metrics={"auc": 0.5}, experiment="adrenal28_ssl_cpu")  # fmt: skip
    assert "| rubik [epochs=30] | resnet18 | classify | –" in render_tables([scratch], cfg)


def test_a_pretraining_seeds_table_lists_the_planned_rows_of_that_seed_only():
    # adrenal28_ssl_cpu repeats some pre-trainings with seeds 1-3; each seed gets a table, and
    # before, every table listed all 23 planned rows, 18 of them empty though their runs existed.
    cfg = load_config(REPO / "experiments" / "adrenal28_ssl_cpu.json")
    ft = "fine-tune 100 epochs"

    def rec(method, variant, pt_seed):
        pt = f", pre-train 10 epochs, one pre-training (seed {pt_seed}) for all seeds"
        proto = ft if pt_seed is None else ft + pt
        return dict(method=method, variant=variant, backbone="resnet18", head="classify",
                    label_fraction=0.1, seed=0, metrics={"auc": 0.5}, protocol=proto,
                    device="cpu", epochs=100, pretrain_epochs=None if pt_seed is None else 10,
                    experiment="adrenal28_ssl_cpu")  # fmt: skip

    records = [rec("scratch", None, None), rec("rubik", None, 0), rec("rubik", "seed=2", 2)]
    text = render_tables(records, cfg)
    seed0, seed2 = text.split("**adrenal28_ssl_cpu**")[1:3]
    assert "one pre-training (seed 0)" in seed0 and "one pre-training (seed 2)" in seed2
    for table in (seed0, seed2):
        assert "| scratch | resnet18 | classify | – | 0.500 (n=1)" in table
    # The seed-0 table keeps its planned rows, ran or not, but not seed 2's, which has its own.
    assert "| rubik | resnet18 | classify | – | 0.500 (n=1)" in seed0
    assert "| ordering | resnet18 | classify | – | – |" in seed0
    assert "| rubik [n_perms=10] | resnet18 | classify | – | – |" in seed0
    assert "rubik [seed=2] |" not in seed0
    # The seed-2 table lists no seed-0 row ...
    for row in ("| rubik |", "| ordering |", "| rubik [n_perms=10] |", "| tcpc [crop_jitter=2] |"):
        assert row not in seed2
    assert "| rubik [seed=2] | resnet18 | classify | – | 0.500 (n=1)" in seed2
    # ... and a seed that ran nothing has no table, so its rows stay missing in each of them.
    for table in (seed0, seed2):
        assert "| rubik [seed=1] | resnet18 | classify | – | – |" in table
        assert "| cpc3d [seed=1] | resnet18 | proxy | – |" in table


def test_a_pretraining_finished_by_another_experiment_is_reused(tmp_path):
    logs = []
    kw = dict(
        device="cpu",
        results_dir=tmp_path / "results",
        runs_dir=tmp_path / "runs",
        progress=False,
        log=logs.append,
    )
    run_experiment(validate_config(_cfg()), methods=["rubik"], **kw)
    source = tmp_path / "runs" / "tiny" / "s0" / "vgg3d" / "pt-rubik"
    # Another experiment: other fine-tuning, the same pre-training (same settings, same hash).
    other = validate_config(_cfg(name="other", finetune__lr=1e-2))
    logs.clear()
    run_experiment(other, dry_run=True, **kw)
    assert f"planned  pretrain s0/vgg3d/pt-rubik (reuses {source})" in logs
    logs.clear()
    run_experiment(other, methods=["rubik"], **kw)
    assert f"reuse    pretrain s0/vgg3d/pt-rubik from {source} (the same settings)" in logs
    adopted = tmp_path / "runs" / "other" / "s0" / "vgg3d" / "pt-rubik"
    assert (adopted / "adopted_from.txt").read_text(encoding="utf-8") == f"{source}\n"
    assert (adopted / "best.pt").stat().st_ino == (source / "best.pt").stat().st_ino
    assert json.loads((adopted / "metrics.json").read_text()) == json.loads(
        (source / "metrics.json").read_text()
    )
    # One pre-training shared by the seeds, finished in an earlier call: a grid grown by a seed
    # names it as kept, not as trained again.
    shared = validate_config(_cfg(name="shared", pretrain__seed=0))
    run_experiment(shared, seeds=[0], methods=["rubik"], **kw)
    logs.clear()
    run_experiment(shared, dry_run=True, seeds=[0, 1], methods=["rubik"], **kw)
    kept = "pretrain s0/vgg3d/pt-rubik (finished in an earlier call"
    assert f"planned  {kept}: kept, not trained again)" in logs
    logs.clear()
    run_experiment(shared, seeds=[0, 1], methods=["rubik"], **kw)
    assert f"keep     {kept})" in logs
    assert "run      finetune s1/vgg3d/ft-rubik-classify-lf1" in logs
    mine = {r["head"]: r for r in load_records(tmp_path / "results" / "tiny.jsonl")}
    theirs = {r["head"]: r for r in load_records(tmp_path / "results" / "other.jsonl")}
    assert theirs["classify"]["init_digest"] == mine["classify"]["init_digest"]
    assert theirs["proxy"]["metrics"] == mine["proxy"]["metrics"]
    assert theirs["proxy"]["pretrain_wall_s"] == mine["proxy"]["pretrain_wall_s"]

    # Other pre-training settings are trained, not taken; so is everything with reuse off.
    for name, changes, reuse in (("lr", {"pretrain__lr": 1e-2}, True), ("off", {}, False)):
        logs.clear()
        cfg = validate_config(_cfg(name=name, **changes))
        run_experiment(cfg, methods=["rubik"], reuse=reuse, **kw)
        assert "run      pretrain s0/vgg3d/pt-rubik" in logs
        assert not (tmp_path / "runs" / name / "s0/vgg3d/pt-rubik/adopted_from.txt").exists()

    # A run folder with a checkpoint of its own is resumed, never overwritten by a source.
    part = tmp_path / "runs" / "part" / "s0" / "vgg3d" / "pt-rubik"
    part.mkdir(parents=True)
    (part / "last.pt").write_bytes(b"")
    logs.clear()
    run_experiment(validate_config(_cfg(name="part")), dry_run=True, **kw)
    assert "planned  pretrain s0/vgg3d/pt-rubik" in logs


def test_same_pretraining_finds_only_finished_runs_with_the_hash(tmp_path):
    from rubikkit.experiments import same_pretraining

    assert same_pretraining(tmp_path / "nowhere", "abc") is None

    def run(exp, name, text, best=True):
        folder = tmp_path / exp / "s0" / "vgg3d" / name
        folder.mkdir(parents=True)
        (folder / "metrics.json").write_text(text, encoding="utf-8")
        if best:
            (folder / "best.pt").write_bytes(b"")
        return folder

    run("a", "pt-rubik", "{not json")  # damaged: skipped, not an error
    run("b", "pt-rubik", json.dumps({"config_hash": "abc"}), best=False)  # unfinished
    run("c", "pt-rubik", json.dumps({"config_hash": "xyz"}))  # other settings
    assert same_pretraining(tmp_path, "abc") is None
    found = run("d", "pt-rubik-n_perms=10", json.dumps({"config_hash": "abc"}))
    assert same_pretraining(tmp_path, "abc") == found
    assert same_pretraining(tmp_path, "abc", exclude=found) is None
