"""rubikkit.train: metrics, checkpoints, label fractions, weight transfer, exact resume."""

from __future__ import annotations

import importlib
import json
import math
import os

import numpy as np
import pytest
import torch

from rubikkit.train import (
    accuracy,
    accuracy_at_threshold,
    balanced_accuracy,
    classification_metrics,
    confusion_matrix,
    dice,
    iou_per_class,
    label_subset,
    load_checkpoint,
    load_init,
    mean_iou,
    roc_auc,
    save_checkpoint,
    segmentation_metrics,
    validation_threshold,
)
from rubikkit.train.checkpoint import restore_rng_state, rng_state
from rubikkit.train.loop import Selection

TINY = {"widths": (4, 8)}
PHANTOM = {"n": 4, "size": 16}
TASK = {"n_perms": 6, "hidden": 8, "dropout": 0.5}


# ----------------------------------------------------------------------------- metrics
def test_accuracy_from_classes_and_scores():
    assert accuracy([0, 1, 2, 1], [0, 2, 2, 1]) == 0.75
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 1.0]])
    assert accuracy(torch.tensor([0, 1, 1]), logits) == pytest.approx(2 / 3)
    assert math.isnan(accuracy([], np.zeros((0, 2))))


def test_roc_auc_binary_known_value():
    # Two positives and two negatives: 3 of the 4 (positive, negative) pairs are ordered right.
    assert roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.65, 0.35], [0.2, 0.8]])
    assert roc_auc([0, 0, 1, 1], probs) == pytest.approx(0.75)


def test_roc_auc_one_vs_rest_known_value():
    y = [0, 0, 1, 1, 2, 2]
    p = np.array(
        [
            [0.6, 0.3, 0.1],
            [0.2, 0.5, 0.3],
            [0.3, 0.6, 0.1],
            [0.1, 0.4, 0.5],
            [0.2, 0.2, 0.6],
            [0.5, 0.1, 0.4],
        ]
    )
    # Pairs counted by hand: class 0 5.5/8 (one tie), class 1 7/8, class 2 7/8.
    assert roc_auc(y, p) == pytest.approx((5.5 / 8 + 7 / 8 + 7 / 8) / 3)
    m = classification_metrics(torch.tensor(y), torch.tensor(p, dtype=torch.float32))
    assert m["acc"] == pytest.approx(3 / 6)  # argmax right for rows 0, 2 and 4
    assert m["auc"] == pytest.approx(0.8125, abs=1e-6)
    # Predicted classes 0, 1, 1, 2, 2, 0: recalls 1/2, 1/2, 1/2; every class predicted twice.
    assert m["bal_acc"] == pytest.approx(0.5)
    assert m["top_share"] == pytest.approx(2 / 6)
    assert m["majority_acc"] == pytest.approx(2 / 6)  # balanced classes


def test_collapsed_head_is_visible_in_bal_acc_and_top_share():
    # 8 of 10 items are class 0 and the head predicts class 0 for all: accuracy looks fine.
    y = np.array([0] * 8 + [1] * 2)
    probs = np.tile([0.7, 0.3], (10, 1))
    probs[8:, 1] = 0.4  # the positives still score higher: AUC 1, yet no positive is predicted
    probs[8:, 0] = 0.6
    m = classification_metrics(y, probs)
    assert m["acc"] == pytest.approx(0.8)
    assert m["auc"] == pytest.approx(1.0)
    assert m["bal_acc"] == pytest.approx(0.5)
    assert m["top_share"] == pytest.approx(1.0)
    assert m["majority_acc"] == pytest.approx(m["acc"])  # all on the majority: just its share


def test_balanced_accuracy_skips_absent_classes_and_checks_shapes():
    assert balanced_accuracy([1, 1, 2], [1, 0, 2]) == pytest.approx((1 / 2 + 1) / 2)
    assert math.isnan(balanced_accuracy([], np.zeros((0, 2))))
    with pytest.raises(ValueError, match="y_true: 2 labels for 3 predictions"):
        balanced_accuracy([0, 1], [0, 1, 1])
    with pytest.raises(ValueError, match="y_pred"):
        balanced_accuracy([0, 1], np.zeros((2, 2, 2)))


def test_validation_threshold_known_cuts():
    # Sorted: 0.1 (0), 0.35 (1), 0.4 (0), 0.8 (1). Cuts at 0.225 and 0.6 both get 3 of 4 right;
    # the one nearer the usual 0.5 wins.
    y, s = [0, 1, 0, 1], [0.1, 0.35, 0.4, 0.8]
    assert validation_threshold(y, s) == pytest.approx(0.6)
    assert accuracy_at_threshold(y, s, 0.6) == 0.75
    # All scores below 0.5 but separable: argmax calls everything 0, the chosen cut separates.
    y, s = [0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]
    assert validation_threshold(y, s) == pytest.approx(0.25)
    probs = np.stack([1 - np.array(s), s], axis=1)
    assert accuracy(y, probs) == 0.5
    assert accuracy_at_threshold(y, probs, validation_threshold(y, probs)) == 1.0
    # Nothing to tell apart: the default stays.
    assert validation_threshold([], []) == 0.5
    assert math.isnan(accuracy_at_threshold([], [], 0.5))


def test_validation_threshold_never_splits_tied_scores():
    assert validation_threshold([0, 1, 1, 0], [0.3, 0.3, 0.7, 0.7]) == pytest.approx(0.5)
    # Three equal scores: all class 1 (2 of 3 right) beats all class 0; no cut separates them.
    cut = validation_threshold([0, 1, 1], [0.4, 0.4, 0.4])
    assert cut == 0.4 and accuracy_at_threshold([0, 1, 1], [0.4, 0.4, 0.4], cut) == pytest.approx(
        2 / 3
    )


def test_validation_threshold_is_the_best_cut():
    rng = np.random.default_rng(0)
    for _ in range(50):
        n = int(rng.integers(1, 30))
        y = rng.integers(0, 2, n)
        s = np.round(rng.random(n), 1)  # ties on purpose
        cut = validation_threshold(y, s)
        best = max(accuracy_at_threshold(y, s, t) for t in [*np.unique(s), 2.0])
        assert accuracy_at_threshold(y, s, cut) == pytest.approx(best)


def test_threshold_metrics_reject_non_binary_input():
    with pytest.raises(ValueError, match="scores: a threshold needs two classes"):
        validation_threshold([0, 1], np.full((2, 3), 1 / 3))
    with pytest.raises(ValueError, match="y_true: a threshold needs binary labels"):
        accuracy_at_threshold([0, 2], [0.1, 0.9], 0.5)
    with pytest.raises(ValueError, match="scores: expected finite"):
        validation_threshold([0, 1], [0.1, float("nan")])


def test_roc_auc_undefined_is_nan():
    assert math.isnan(roc_auc([1, 1, 1], [0.2, 0.3, 0.9]))
    assert math.isnan(roc_auc([0, 1, 1], np.full((3, 3), 1 / 3)))  # class 2 absent


def test_segmentation_metrics_known_values():
    target = torch.tensor([0, 0, 1, 1, 2, 2])
    pred = torch.tensor([0, 1, 1, 1, 2, 0])
    c = confusion_matrix(pred, target, 3)
    assert c.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    np.testing.assert_allclose(iou_per_class(c), [1 / 3, 2 / 3, 1 / 2])
    assert mean_iou(c) == pytest.approx(0.5)
    assert mean_iou(c, ignore_background=True) == pytest.approx((2 / 3 + 1 / 2) / 2)
    np.testing.assert_allclose(dice(c), [0.8, 2 / 3])
    np.testing.assert_allclose(dice(c, ignore_background=False), [0.5, 0.8, 2 / 3])
    m = segmentation_metrics(c, ["bg", "a", "b"])
    assert m["miou"] == pytest.approx(0.5)
    assert m["dice"] == pytest.approx((0.8 + 2 / 3) / 2)
    assert m["voxel_acc"] == pytest.approx(4 / 6)
    assert m["iou/a"] == pytest.approx(2 / 3)
    assert m["dice/b"] == pytest.approx(2 / 3)


def test_iou_of_absent_class_is_nan_and_skipped():
    c = confusion_matrix(torch.tensor([0, 1, 1]), torch.tensor([0, 1, 1]), 3)
    iou = iou_per_class(c)
    assert iou[:2].tolist() == [1.0, 1.0] and math.isnan(iou[2])
    assert mean_iou(c) == 1.0


def test_metric_errors_name_the_argument():
    with pytest.raises(ValueError, match="pred: shape"):
        confusion_matrix(torch.zeros(3, dtype=torch.long), torch.zeros(4, dtype=torch.long), 2)
    with pytest.raises(ValueError, match="target: class indices"):
        confusion_matrix(torch.zeros(2, dtype=torch.long), torch.tensor([0, 5]), 2)
    with pytest.raises(ValueError, match="n_classes"):
        confusion_matrix(torch.zeros(2), torch.zeros(2), 0)
    with pytest.raises(ValueError, match="y_true: 2 labels for 3"):
        accuracy([0, 1], [0, 1, 1])
    with pytest.raises(ValueError, match="confusion"):
        iou_per_class(np.zeros((2, 3)))


# ----------------------------------------------------------------------------- checkpoints
def test_checkpoint_round_trip_weights_only(tmp_path):
    model = torch.nn.Linear(3, 2)
    path = save_checkpoint(
        {"model": model.state_dict(), "step": 3, "config": {"a": [1]}}, tmp_path / "x.pt"
    )
    state = load_checkpoint(path)
    assert state["step"] == 3 and state["config"] == {"a": [1]}
    assert torch.equal(state["model"]["weight"], model.weight.detach())


class _Unsafe:
    """Not loadable with weights_only=True."""


def test_checkpoint_refuses_arbitrary_objects(tmp_path):
    path = tmp_path / "unsafe.pt"
    torch.save({"model": {}, "thing": _Unsafe()}, path)
    with pytest.raises(ValueError, match="checkpoint: cannot read .* weights-only"):
        load_checkpoint(path)


def test_checkpoint_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="init: no checkpoint file"):
        load_checkpoint(tmp_path / "missing.pt", name="init")
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a rubikkit checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    (tmp_path / "notes.pt").write_text("junk\n")
    with pytest.raises(ValueError, match=r"notes.pt as a weights-only checkpoint \(a torch.save "):
        load_checkpoint(tmp_path / "notes.pt")


def test_failed_save_leaves_old_checkpoint_intact(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint({"model": {"w": torch.ones(2)}, "step": 1}, path)
    before = path.read_bytes()

    def broken_save(obj, fh, *args, **kwargs):
        fh.write(b"partial garbage")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint({"model": {"w": torch.zeros(2)}, "step": 2}, path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert load_checkpoint(path)["step"] == 1
    assert sorted(os.listdir(tmp_path)) == ["last.pt"]  # no temporary file left behind


def test_rng_state_round_trip(tmp_path):
    gen = torch.Generator().manual_seed(5)
    state = rng_state({"step": gen})
    save_checkpoint({"model": {}, "rng": state}, tmp_path / "r.pt")
    # The legacy global NumPy state is under test here.
    a = (torch.rand(3), np.random.rand(3), torch.rand(2, generator=gen))  # noqa: NPY002
    import random

    a_py = random.random()
    restore_rng_state(load_checkpoint(tmp_path / "r.pt")["rng"], {"step": gen})
    b = (torch.rand(3), np.random.rand(3), torch.rand(2, generator=gen))  # noqa: NPY002
    assert random.random() == a_py
    for x, y in zip(a, b):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


# ----------------------------------------------------------------------------- label fraction
def test_label_subset_is_stratified_deterministic_and_nested():
    labels = np.array([0] * 50 + [1] * 30 + [2] * 3 + [3] * 17)
    rng = np.random.default_rng(1)
    labels = labels[rng.permutation(labels.size)]
    a = label_subset(labels, 0.1, seed=3)
    assert np.array_equal(a, label_subset(labels, 0.1, seed=3))
    assert not np.array_equal(a, label_subset(labels, 0.1, seed=4))
    counts = np.bincount(labels[a], minlength=4)
    assert counts.tolist() == [5, 3, 1, 2]  # round(0.1 * n_c), at least 1
    big = label_subset(labels, 0.5, seed=3)
    assert set(a) <= set(big)
    assert np.array_equal(label_subset(labels, 1.0, seed=3), np.arange(labels.size))
    tiny = label_subset(labels, 0.001, seed=0)
    assert np.bincount(labels[tiny]).tolist() == [1, 1, 1, 1]


def test_label_subset_without_labels_and_errors():
    idx = label_subset(None, 0.25, seed=0, n=20)
    assert idx.size == 5 and np.all(np.diff(idx) > 0)
    with pytest.raises(ValueError, match="label_fraction"):
        label_subset([0, 1], 0.0)
    with pytest.raises(ValueError, match="label_fraction"):
        label_subset([0, 1], 1.5)
    with pytest.raises(TypeError, match="label_fraction"):
        label_subset([0, 1], "half")


# ----------------------------------------------------------------------------- weight transfer
def _proxy_checkpoint(path, widths=(4, 8)):
    from rubikkit.models import build_backbone
    from rubikkit.tasks import get_task

    bb = build_backbone("vgg3d", in_channels=1, widths=widths)
    model = get_task("rubik", n_perms=6, hidden=8).build_model(bb)
    save_checkpoint({"model": model.state_dict(), "config": {"backbone": bb.config}}, path)
    return model


def test_load_init_transfers_every_backbone_tensor(tmp_path):
    model = _proxy_checkpoint(tmp_path / "p.pt")
    bb, cfg = load_init(tmp_path / "p.pt", in_channels=1)
    assert cfg["backbone"]["widths"] == [4, 8]
    ref = model.backbone.state_dict()
    got = bb.state_dict()
    assert ref.keys() == got.keys()
    for k in ref:
        assert torch.equal(ref[k], got[k]), k


def test_failed_transfer_raises_with_key_lists(tmp_path):
    _proxy_checkpoint(tmp_path / "p.pt")
    state = load_checkpoint(tmp_path / "p.pt")
    state["config"]["backbone"]["widths"] = [4, 16]  # the architecture no longer fits
    state["model"]["backbone.extra.weight"] = torch.zeros(1)
    save_checkpoint(state, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="init: cannot transfer") as info:
        load_init(tmp_path / "bad.pt")
    msg = str(info.value)
    assert "shape-mismatched" in msg and "unexpected" in msg and "backbone.extra" not in msg
    assert "extra.weight" in msg


def test_transfer_errors_name_init(tmp_path):
    _proxy_checkpoint(tmp_path / "p.pt")
    state = load_checkpoint(tmp_path / "p.pt")
    with pytest.raises(ValueError, match="init: the backbone .* takes 1 channels, the data has 4"):
        load_init(tmp_path / "p.pt", in_channels=4)
    save_checkpoint({"model": state["model"], "config": {}}, tmp_path / "nocfg.pt")
    with pytest.raises(ValueError, match=r"init: .* has no config\['backbone'\]"):
        load_init(tmp_path / "nocfg.pt")
    save_checkpoint({"model": {"w": torch.ones(1)}, "config": state["config"]}, tmp_path / "e.pt")
    with pytest.raises(ValueError, match="init: .* holds no weights under 'backbone.'"):
        load_init(tmp_path / "e.pt")
    with pytest.raises(FileNotFoundError, match="init: no checkpoint file"):
        load_init(tmp_path / "nothing.pt")


def test_finetune_never_trains_after_a_failed_transfer(tmp_path):
    from rubikkit.train import finetune

    _proxy_checkpoint(tmp_path / "p.pt")
    state = load_checkpoint(tmp_path / "p.pt")
    del state["model"]["backbone.stages.0.0.weight"]
    save_checkpoint(state, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match=r"missing \(1\): stages.0.0.weight"):
        finetune(
            tmp_path / "bad.pt",
            "phantoms:hemorrhage",
            data_options=PHANTOM,
            out=tmp_path / "ft",
            max_steps=1,
            device="cpu",
            progress=False,
        )
    assert not (tmp_path / "ft" / "last.pt").exists()


# ----------------------------------------------------------------------------- losses
def test_soft_dice_loss_known_values():
    from rubikkit.train.finetune import soft_dice_loss

    target = torch.zeros(1, 2, 2, 2, dtype=torch.long)
    target[0, 0, 0, :] = 1  # 2 foreground voxels of 8
    sure = torch.stack([(target == 0).float(), (target == 1).float()], 1) * 50
    assert soft_dice_loss(sure, target, eps=0.0).item() == pytest.approx(0.0, abs=1e-6)
    # p = 1/2 everywhere: sum(p t) = 1, sum(p) = 4, sum(t) = 2 -> Dice 2/6
    even = torch.zeros(1, 2, 2, 2, 2)
    assert soft_dice_loss(even, target, eps=0.0).item() == pytest.approx(1 - 2 / 6)
    # background everywhere: no overlap, Dice 0 (eps 1: (0 + 1) / (0 + 2 + 1))
    none = torch.stack([torch.ones(2, 2, 2), torch.zeros(2, 2, 2)])[None] * 50
    assert soft_dice_loss(none, target).item() == pytest.approx(1 - 1 / 3, abs=1e-6)
    # three classes: the mean over the two foreground classes, over the whole batch
    three = torch.zeros(2, 3, 1, 1, 2)
    y = torch.tensor([[[[1, 2]]], [[[0, 0]]]])
    three[0, 1, 0, 0, 0] = three[0, 2, 0, 0, 1] = 50
    three[1, 0] = 50
    assert soft_dice_loss(three, y, eps=0.0).item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="logits: expected"):
        soft_dice_loss(torch.zeros(1, 1, 2, 2, 2), target)
    with pytest.raises(ValueError, match="target: expected shape"):
        soft_dice_loss(sure, target[:, :1])


def test_dice_term_lifts_an_underconfident_foreground():
    # Cross-entropy is content with p = 0.3 on a rare class; the Dice term pushes it up.
    from rubikkit.train.finetune import soft_dice_loss

    target = torch.zeros(1, 4, 4, 4, dtype=torch.long)
    target[0, 0, 0, 0] = 1
    logits = torch.zeros(1, 2, 4, 4, 4)
    logits[:, 1] = -3.0
    logits.requires_grad_(True)
    soft_dice_loss(logits, target).backward()
    assert logits.grad[0, 1, 0, 0, 0] < 0  # raise the foreground logit where the tumour is
    assert (logits.grad[0, 1][target[0] == 0] > 0).all()  # and lower it elsewhere


def test_finetune_with_the_dice_term(tmp_path):
    from rubikkit.train import finetune

    seg = dict(data_options={"n": 2, "size": 16}, backbone_options=TINY, device="cpu")
    summary = finetune("scratch", "phantoms:tumour", out=tmp_path / "a", head="unet",
                       loss="ce+dice", max_steps=2, batch_size=2, progress=False, **seg)  # fmt: skip
    assert json.loads((tmp_path / "a" / "config.json").read_text())["loss"] == "ce+dice"
    assert {"miou", "dice", "loss"} <= set(summary["splits"]["val"])
    log = [json.loads(x) for x in (tmp_path / "a" / "log.jsonl").read_text().splitlines()]
    train = [r for r in log if r["split"] == "train"][-1]
    assert train["loss"] == pytest.approx(train["ce"] + train["dice_loss"], rel=1e-5)
    with pytest.raises(ValueError, match="loss: the classifier trains with 'ce' only"):
        finetune("scratch", "phantoms:hemorrhage", out=tmp_path / "b", loss="ce+dice",
                 max_steps=1, progress=False, **seg)  # fmt: skip
    with pytest.raises(ValueError, match=r"loss: expected one of \('ce', 'ce\+dice'\)"):
        finetune("scratch", "phantoms:tumour", out=tmp_path / "c", head="duc", loss="dice",
                 max_steps=1, progress=False, **seg)  # fmt: skip
    assert not (tmp_path / "b").exists() and not (tmp_path / "c").exists()
    # the loss is a setting a resumed run must keep
    with pytest.raises(ValueError, match="differing settings: loss"):
        finetune("scratch", "phantoms:tumour", out=tmp_path / "a", head="unet", resume=True,
                 max_steps=3, batch_size=2, progress=False, **seg)  # fmt: skip


# ----------------------------------------------------------------------------- resume
def _pretrain(out, **kw):
    from rubikkit.train import pretrain

    args = dict(
        data_options=PHANTOM,
        backbone_options=TINY,
        task_options=TASK,
        batch_size=2,
        device="cpu",
        progress=False,
        seed=7,
    )
    args.update(kw)
    return pretrain("rubik", "phantoms:hemorrhage", out=out, **args)


def _assert_same_state(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_resume_reproduces_an_uninterrupted_run(tmp_path):
    # 4 training volumes, batch 2: 2 steps per epoch. 5 steps straight vs 3 (stopping inside the
    # second epoch) + resume to 5: the data order, the puzzles, dropout and Adam's moments must
    # all continue exactly.
    _pretrain(tmp_path / "straight", max_steps=5)
    _pretrain(tmp_path / "split", max_steps=3)
    first = load_checkpoint(tmp_path / "split" / "last.pt")
    assert (first["step"], first["epoch"], first["batch"]) == (3, 1, 1)
    summary = _pretrain(tmp_path / "split", max_steps=5, resume=True)
    assert summary["steps"] == 5
    a = load_checkpoint(tmp_path / "straight" / "last.pt")
    b = load_checkpoint(tmp_path / "split" / "last.pt")
    assert (a["step"], a["epoch"], a["batch"]) == (b["step"], b["epoch"], b["batch"]) == (5, 2, 1)
    _assert_same_state(a["model"], b["model"])
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        _assert_same_state(sa, sb)
    # Both logs end with the same training record of the last (partial) epoch, and the resumed
    # second epoch's record covers both its batches (the checkpoint kept the first one's sums).
    la = [json.loads(x) for x in (tmp_path / "straight" / "log.jsonl").read_text().splitlines()]
    lb = [json.loads(x) for x in (tmp_path / "split" / "log.jsonl").read_text().splitlines()]
    assert la[-2]["loss"] == lb[-2]["loss"] and la[-2]["split"] == "train"
    train_a, train_b = ({r["step"]: r for r in log if r["split"] == "train"} for log in (la, lb))
    assert train_a[4]["loss"] == train_b[4]["loss"]


def test_resume_after_the_last_batch_logs_the_epoch_once(tmp_path, monkeypatch):
    # A checkpoint written at an epoch's last batch, then a stop during the validation: the
    # resumed run runs no batch of that epoch, and logged a second training record for it,
    # without a loss.
    P = importlib.import_module("rubikkit.train.pretrain")  # the package exports the function
    real = P.evaluate_proxy
    calls = []

    def stop_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(P, "evaluate_proxy", stop_once)
    with pytest.raises(KeyboardInterrupt):
        _pretrain(tmp_path / "run", max_steps=4, checkpoint_every=2)
    assert load_checkpoint(tmp_path / "run" / "last.pt")["step"] == 2
    _pretrain(tmp_path / "run", max_steps=4, checkpoint_every=2, resume=True)
    log = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [(r["epoch"], r["split"]) for r in log if r["split"] == "train"] == [
        (1, "train"),
        (2, "train"),
    ]
    assert all("loss" in r for r in log)
    _pretrain(tmp_path / "straight", max_steps=4)
    straight = [
        json.loads(x) for x in (tmp_path / "straight" / "log.jsonl").read_text().splitlines()
    ]
    assert [r["loss"] for r in log] == [r["loss"] for r in straight]


def test_pretraining_without_validation_keeps_the_last_epoch(tmp_path):
    # The training loss of random puzzles is noisy: its minimum would pick a lucky epoch.
    summary = _pretrain(tmp_path / "run", epochs=4, val_split=None, lr=0.05)
    assert summary["best"]["epoch"] == 4 and summary["best"]["split"] == "train"
    best, last = (load_checkpoint(tmp_path / "run" / n) for n in ("best.pt", "last.pt"))
    assert best["step"] == last["step"] == summary["steps"]
    _assert_same_state(best["model"], last["model"])
    assert not list((tmp_path / "run").glob(".*.tmp"))


def test_selection_rejects_an_unknown_mode():
    with pytest.raises(ValueError, match="mode: expected 'min', 'max' or 'last', got 'latest'"):
        Selection(mode="latest")


def test_rerun_without_resume_or_with_other_settings_is_refused(tmp_path):
    _pretrain(tmp_path / "run", max_steps=1, val_split=None)
    with pytest.raises(ValueError, match="out: .* already holds a run"):
        _pretrain(tmp_path / "run", max_steps=2, val_split=None)
    with pytest.raises(ValueError, match="resume: .* differing settings: lr"):
        _pretrain(tmp_path / "run", max_steps=2, val_split=None, resume=True, lr=0.5)


@pytest.mark.parametrize("task", ["ordering", "jigsaw3d", "cpc3d", "tcpc"])
def test_every_task_pretrains_and_transfers(tmp_path, task):
    options = {"hidden": 8}
    if task in ("cpc3d", "tcpc"):
        options["cube_size"] = 8
    else:
        options["n_perms"] = 4
    size = 32 if task in ("cpc3d", "tcpc") else 16
    from rubikkit.train import pretrain

    summary = pretrain(
        task,
        "phantoms:hemorrhage",
        out=tmp_path / task,
        data_options={"n": 2, "size": size},
        backbone_options=TINY,
        task_options=options,
        max_steps=1,
        device="cpu",
        progress=False,
        val_split=None,
    )
    assert summary["method"] == task and summary["steps"] == 1
    assert math.isfinite(summary["splits"]["train"]["loss"])
    bb, cfg = load_init(tmp_path / task / "best.pt", in_channels=1)
    assert cfg["task"] == task and bb.config["widths"] == [4, 8]
