"""rubikkit.train.schedule: the MedMNIST v2 step schedule and voxel scaling, and their use in fit."""

from __future__ import annotations

import json

import pytest
import torch

from rubikkit.train.schedule import (
    augment_batch,
    check_augment,
    check_milestones,
    lr_at_epoch,
)

TINY = {"widths": (4, 8)}
PHANTOM = {"n": 4, "size": 16}


@pytest.mark.parametrize("epochs", [4, 8, 20, 100])
def test_lr_at_epoch_matches_multisteplr(epochs):
    # MedMNIST v2 builds MultiStepLR(milestones=[0.5 * E, 0.75 * E], gamma=0.1), stepped per epoch
    # (E = 100 there; MultiStepLR only ever matches integral milestones, hence these E).
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.Adam([p], lr=1e-3)
    sched = torch.optim.lr_scheduler.MultiStepLR(
        opt, milestones=[0.5 * epochs, 0.75 * epochs], gamma=0.1
    )
    for e in range(epochs):
        assert lr_at_epoch(1e-3, e, epochs, (0.5, 0.75), 0.1) == pytest.approx(
            opt.param_groups[0]["lr"], rel=1e-12
        )
        opt.step()
        sched.step()


def test_lr_at_epoch_rounds_fractional_milestones_up():
    # 10 epochs: 0.5 -> epoch 5, 0.75 -> 7.5, passed from epoch 8 on.
    lrs = [lr_at_epoch(1.0, e, 10, (0.5, 0.75)) for e in range(10)]
    assert lrs == pytest.approx([1.0] * 5 + [0.1] * 3 + [0.01] * 2)


def test_lr_at_epoch_without_milestones_is_constant():
    assert [lr_at_epoch(0.5, e, None, ()) for e in range(3)] == [0.5, 0.5, 0.5]


@pytest.mark.parametrize(
    "milestones, gamma, epochs, match",
    [
        ((0.75, 0.5), 0.1, 10, "lr_milestones: expected increasing"),
        ((0.0, 0.5), 0.1, 10, "lr_milestones: expected increasing"),
        ((0.5, 1.0), 0.1, 10, "lr_milestones: expected increasing"),
        ("0.5", 0.1, 10, "lr_milestones: expected a sequence"),
        ((0.5,), 0.1, None, "lr_milestones: fractions of the epochs need epochs"),
        ((0.5,), 0.0, 10, "lr_gamma: expected a number"),
        ((0.5,), 2.0, 10, "lr_gamma: expected a number"),
    ],
)
def test_check_milestones_errors(milestones, gamma, epochs, match):
    with pytest.raises(ValueError, match=match):
        check_milestones(milestones, gamma, epochs)


def test_check_milestones_accepts_none_and_lists():
    assert check_milestones(None, 0.1, None) == ()
    assert check_milestones([0.5, 0.75], 0.1, 100) == (0.5, 0.75)


def test_voxel_scale_train_draws_one_factor_per_volume():
    x = torch.ones(5, 1, 3, 3, 3)
    y = augment_batch("voxel_scale", x, training=True, generator=torch.Generator().manual_seed(3))
    factors = y.flatten(1)
    assert torch.equal(factors, factors[:, :1].expand_as(factors))  # one factor per volume
    assert (factors[:, 0] >= 0).all() and (factors[:, 0] < 1).all()
    assert len(set(factors[:, 0].tolist())) == 5
    # Same generator state, same factors; the input is left as it was.
    y2 = augment_batch("voxel_scale", x, training=True, generator=torch.Generator().manual_seed(3))
    assert torch.equal(y, y2)
    assert torch.equal(x, torch.ones_like(x))


def test_voxel_scale_eval_halves_and_none_is_identity():
    x = torch.rand(2, 1, 4, 4, 4)
    assert torch.equal(augment_batch("voxel_scale", x, training=False), x * 0.5)
    assert augment_batch(None, x, training=True) is x


def test_augment_errors():
    with pytest.raises(ValueError, match="augment: expected None or one of"):
        check_augment("flip")
    with pytest.raises(ValueError, match="images: expected a batch"):
        augment_batch("voxel_scale", torch.ones(3), training=True)


def _lrs(log_path):
    rows = [json.loads(line) for line in log_path.read_text().splitlines()]
    return [r["lr"] for r in rows if r["split"] == "train"]


def test_finetune_follows_the_step_schedule_and_records_augment(tmp_path):
    from rubikkit.data import open_dataset
    from rubikkit.train import (
        accuracy,
        accuracy_at_threshold,
        evaluate,
        finetune,
        load_model,
        validation_threshold,
    )
    from rubikkit.train.finetune import evaluate_target

    out = tmp_path / "ft"
    finetune(
        "scratch",
        "phantoms:nodule",
        out=out,
        backbone_options=TINY,
        data_options=PHANTOM,
        epochs=4,
        batch_size=2,
        lr=1e-2,
        lr_milestones=(0.5, 0.75),
        augment="voxel_scale",
        device="cpu",
        progress=False,
    )
    assert _lrs(out / "log.jsonl") == pytest.approx([1e-2, 1e-2, 1e-3, 1e-4])
    config = json.loads((out / "config.json").read_text())
    assert config["augment"] == "voxel_scale"
    assert config["lr_milestones"] == [0.5, 0.75] and config["lr_gamma"] == 0.1
    # evaluate() scores with the run's evaluation scaling, so it reproduces the validation of
    # best.pt exactly.
    metrics = json.loads((out / "metrics.json").read_text())
    res = evaluate(out / "best.pt", split="val", device="cpu", progress=False)
    assert res["splits"]["val"]["loss"] == pytest.approx(metrics["splits"]["val"]["loss"])
    assert "acc_val_thr" not in res["splits"]["val"]  # no cut chosen on the split it scores
    # Away from the validation split, ACC also comes at the cut chosen on it.
    test = evaluate(out / "best.pt", split="test", device="cpu", progress=False)["splits"]["test"]
    model, _, _ = load_model(out / "best.pt")
    scores = {name: {} for name in ("val", "test")}
    for name, got in scores.items():
        ds = open_dataset("phantoms:nodule", name, **PHANTOM)
        evaluate_target(
            "classify",
            model,
            ds,
            batch_size=2,
            device=torch.device("cpu"),
            class_names=list(ds.class_names),
            augment="voxel_scale",
            scores=got,
        )
    cut = validation_threshold(scores["val"]["labels"], scores["val"]["probs"])
    assert test["val_thr"] == pytest.approx(cut)
    assert test["acc_val_thr"] == pytest.approx(
        accuracy_at_threshold(scores["test"]["labels"], scores["test"]["probs"], cut)
    )
    assert test["acc"] == pytest.approx(accuracy(scores["test"]["labels"], scores["test"]["probs"]))


def test_finetune_rejects_milestones_without_epochs(tmp_path):
    from rubikkit.train import finetune

    with pytest.raises(ValueError, match="lr_milestones"):
        finetune(
            "scratch",
            "phantoms:nodule",
            out=tmp_path / "x",
            data_options=PHANTOM,
            max_steps=1,
            lr_milestones=(0.5,),
            device="cpu",
            progress=False,
        )
    with pytest.raises(ValueError, match="augment"):
        finetune(
            "scratch",
            "phantoms:nodule",
            out=tmp_path / "y",
            data_options=PHANTOM,
            max_steps=1,
            augment="mirror",
            device="cpu",
            progress=False,
        )


def test_a_run_records_the_commit_it_started_from(tmp_path, monkeypatch):
    import importlib

    ft = importlib.import_module("rubikkit.train.finetune")  # the module, not the function
    runs = importlib.import_module("rubikkit.train.runs")

    # The commit is read when the run starts; a later checkout must not relabel it.
    monkeypatch.setattr(ft, "git_commit", lambda: "started-here")
    monkeypatch.setattr(runs, "git_commit", lambda: "moved-on")
    out = tmp_path / "ft"
    summary = ft.finetune(
        "scratch",
        "phantoms:nodule",
        out=out,
        backbone_options=TINY,
        data_options=PHANTOM,
        max_steps=1,
        batch_size=2,
        device="cpu",
        progress=False,
    )
    assert summary["commit"] == "started-here"
    assert json.loads((out / "config.json").read_text())["commit"] == "started-here"


def test_git_commit_marks_a_checkout_whose_code_differs(tmp_path):
    import shutil
    import subprocess

    from rubikkit.train.runs import git_commit

    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    assert git_commit(tmp_path) is None  # not a checkout

    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "rubikkit").mkdir()
    (tmp_path / "rubikkit" / "ops.py").write_text("x = 1\n")
    (tmp_path / "README.md").write_text("notes\n")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@example.org", "commit", "-q", "-m", "first")
    head = subprocess.run(
        ["git", "-C", str(tmp_path), "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    assert git_commit(tmp_path) == head
    assert git_commit(tmp_path / "rubikkit") is None  # a folder inside a checkout is not one
    (tmp_path / "README.md").write_text("other notes\n")  # not code
    (tmp_path / ".gitignore").write_text("*.so\n")
    (tmp_path / "rubikkit" / "_C.so").write_bytes(b"built")  # ignored build product
    assert git_commit(tmp_path) == head
    (tmp_path / "rubikkit" / "new.py").write_text("y = 2\n")  # new, not ignored
    assert git_commit(tmp_path) == f"{head}+dirty"
    (tmp_path / "rubikkit" / "new.py").unlink()
    (tmp_path / "rubikkit" / "ops.py").write_text("x = 2\n")
    assert git_commit(tmp_path) == f"{head}+dirty"
