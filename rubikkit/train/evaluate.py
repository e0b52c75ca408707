"""Scoring a checkpoint on a split (``rubikkit evaluate CKPT --data SPEC --split test``).

A fine-tuning checkpoint gives the target metrics (accuracy and AUC, or mIoU and Dice); a
pre-training checkpoint gives the proxy metrics (e.g. ordering and rotation accuracy, the columns of
Table 1 of Zhuang et al. 2019) and, for the cube puzzles, their ceilings on the split (the best any
model can do when rotations or swaps leave the cubes unchanged) and, with turns, how much a turned
cube looks like another place's cube and whether the split's mean cubes tell places and turns apart,
all from one pass over the split and a second for the mean cubes
(:meth:`rubikkit.tasks.rubik.CubePuzzleTask.volume_stats`). A binary classifier scored on its own
data set, away from the validation split it was selected on, also gets ``acc_val_thr``: its accuracy
when the cut on the class-1 probability is chosen on that validation split (``val_thr``,
:func:`rubikkit.train.metrics.validation_threshold`) instead of the softmax's 0.5. The model is
rebuilt from the checkpoint's config and loaded strictly. Runs in one process (under ``torchrun``
every rank would score the same split).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from rubikkit.tasks.base import check_int
from rubikkit.train.checkpoint import load_checkpoint
from rubikkit.train.distributed import resolve_device
from rubikkit.train.loop import write_json
from rubikkit.train.runs import git_commit, open_split, options_dict, resolve_amp

__all__ = ["evaluate", "load_model"]


class _Images:
    """The ``image`` of each item of a dataset, as an iterable that can be walked more than once."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __iter__(self):
        return (self.dataset[i]["image"] for i in range(len(self.dataset)))


def load_model(checkpoint, device="cpu"):
    """The model of a pretrain or finetune checkpoint, weights loaded strictly, in eval mode.

    Returns
    -------
    (model, config, task)
        ``config`` is the checkpoint's, plus ``trained_epochs`` and ``trained_steps``; ``task`` is the proxy task for a pretrain checkpoint, else None.

    Raises
    ------
    FileNotFoundError
        No file at ``checkpoint``.
    ValueError
        The checkpoint's config cannot rebuild the model, or its weights do not fit it.
    """
    from rubikkit.models import build_backbone
    from rubikkit.train.finetune import build_target_model

    ckpt = load_checkpoint(checkpoint, name="checkpoint")
    cfg = dict(ckpt.get("config") or {})
    cfg["trained_epochs"] = int(ckpt.get("epoch", 0))
    cfg["trained_steps"] = int(ckpt.get("step", 0))
    kind = cfg.get("kind")
    if not isinstance(cfg.get("backbone"), dict):
        raise ValueError(f"checkpoint: {checkpoint} has no config['backbone'] to rebuild from")
    backbone = build_backbone(**cfg["backbone"])
    task = None
    if kind == "finetune":
        model = build_target_model(
            cfg["head"], backbone, int(cfg["n_classes"]), cfg.get("dropout", 0)
        )
    elif kind == "pretrain":
        from rubikkit.tasks import get_task

        options = {k: v for k, v in (cfg.get("task_options") or {}).items() if k != "name"}
        task = get_task(cfg["task"], **options)
        model = task.build_model(backbone)
    else:
        raise ValueError(f"checkpoint: {checkpoint} has an unknown kind {kind!r}")
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        raise ValueError(
            f"checkpoint: weights of {checkpoint} do not fit its model: {exc}"
        ) from exc
    model.to(device).eval()
    return model, cfg, task


def _check_data(dataset, spec, cfg: dict, checkpoint) -> None:
    """The data must fit the checkpoint's model: its channels, and labels or masks for its head."""
    channels = cfg["backbone"].get("in_channels")
    if channels is not None and int(dataset.num_channels) != int(channels):
        raise ValueError(
            f"data: {spec!r} has {dataset.num_channels} channels, the model of {checkpoint} "
            f"takes {channels}"
        )
    head = cfg.get("head")
    need = {"classify": "classification", "unet": "segmentation", "duc": "segmentation"}
    if cfg.get("kind") == "finetune" and getattr(dataset, "task", None) != need.get(head):
        raise ValueError(
            f"data: {spec!r} is {getattr(dataset, 'task', None)!r} data; the {head!r} head of "
            f"{checkpoint} is scored on {need.get(head)!r} data"
        )


def evaluate(
    checkpoint,
    data: str | None = None,
    split: str = "test",
    *,
    data_options: dict | None = None,
    batch_size: int | None = None,
    device: str = "auto",
    workers: int = 0,
    amp: bool | None = None,
    seed: int | None = None,
    draws: int = 1,
    stage_activity: str | None = None,
    out=None,
    progress: bool = True,
) -> dict:
    """Score ``checkpoint`` on ``split`` of ``data``.

    Parameters
    ----------
    checkpoint : path-like
        best.pt or last.pt of a pretrain or finetune run.
    data : str, optional
        Dataset spec; default the one the checkpoint was trained on.
    split : str
    data_options : dict, optional
        Override the checkpoint's data options (e.g. a different ``n``).
    batch_size : int, optional
        Default: the run's.
    device, workers, amp
        As for training.
    seed : int, optional
        Puzzles drawn for a proxy task (default: the run's seed).
    draws : int
        Puzzles scored per volume for a proxy task (``puzzles`` in the metrics counts them all);
        a fine-tuning checkpoint takes only 1.
    stage_activity : {"running", "batch"}, optional
        Also push the split's volumes, whole, through the checkpoint's backbone and count what
        each stage switches on (:func:`rubikkit.models.stage_activity`, batch norm with the
        checkpoint's running statistics or each batch's own); the metrics then hold
        ``stage_activity`` (one entry per stage) and ``stage_activity_bn``.
    out : path-like, optional
        Write the result there as JSON (a folder gets ``metrics_<split>.json``).

    Returns
    -------
    dict
        Record fields of the run (``dataset``, ``method``, ``backbone``, ``head``, ...) and
        ``splits`` = {split: metrics}; :func:`rubikkit.train.to_record` makes it a record.
    """
    from rubikkit.train.finetune import evaluate_target
    from rubikkit.train.metrics import accuracy_at_threshold, validation_threshold
    from rubikkit.train.pretrain import evaluate_proxy

    if stage_activity not in (None, "running", "batch"):
        raise ValueError(
            f"stage_activity: expected 'running', 'batch' or None, got {stage_activity!r}"
        )
    check_int(workers, "workers", 0)
    if batch_size is not None:  # else the checkpoint's
        check_int(batch_size, "batch_size", 1)
    t0 = time.perf_counter()
    dev = resolve_device(device)
    use_amp = resolve_amp(amp, dev)
    model, cfg, task = load_model(checkpoint, dev)
    if task is None and draws != 1:
        raise ValueError(f"draws: {checkpoint} is a fine-tuning checkpoint, which draws no puzzles")
    spec = cfg.get("data") if data is None else data
    opts = dict(cfg.get("data_options") or {}) if data is None else {}
    opts.update(options_dict(data_options, "data_options"))
    dataset = open_split(spec, split, opts, progress=progress)
    _check_data(dataset, spec, cfg, checkpoint)
    bs = int(batch_size or cfg.get("batch_size") or 2)
    if task is not None:
        task.prepare(dataset)
        metrics = evaluate_proxy(
            task,
            model,
            dataset,
            batch_size=bs,
            device=dev,
            seed=int(cfg.get("seed", 0) if seed is None else seed),
            workers=workers,
            amp=use_amp,
            progress=progress,
            desc=f"evaluate {split}",
            draws=draws,
        )
        metrics["puzzles"] = len(dataset) * draws
        if hasattr(task, "volume_stats"):  # cube puzzles: what the volumes allow any model,
            # how much a turned cube looks like another place's (centred lesions) and whether the
            # split's mean cubes tell places and turns apart
            metrics.update(task.volume_stats(_Images(dataset), templates=True))
        method = cfg["task"]
    else:
        if len(dataset.class_names) != int(cfg["n_classes"]):
            raise ValueError(
                f"data: {spec!r} has {len(dataset.class_names)} classes, the checkpoint "
                f"predicts {cfg['n_classes']}"
            )

        def score(ds, name, scores=None):
            return evaluate_target(
                cfg["head"],
                model,
                ds,
                batch_size=bs,
                device=dev,
                workers=workers,
                amp=use_amp,
                class_names=list(ds.class_names),
                progress=progress,
                desc=f"evaluate {name}",
                augment=cfg.get("augment"),
                scores=scores,
            )

        val_split = cfg.get("val_split")
        binary = cfg["head"] == "classify" and int(cfg["n_classes"]) == 2
        own_data = spec == cfg.get("data")  # the validation split the run was selected on
        if binary and own_data and val_split and val_split != split:
            # ACC at a cut chosen on the validation split (where the model was selected), next
            # to ACC at the softmax's 0.5: see rubikkit.train.metrics.validation_threshold.
            test_scores, val_scores = {}, {}
            metrics = score(dataset, split, test_scores)
            score(open_split(spec, val_split, opts, progress=progress), val_split, val_scores)
            cut = validation_threshold(val_scores["labels"], val_scores["probs"])
            metrics["val_thr"] = cut
            metrics["acc_val_thr"] = accuracy_at_threshold(
                test_scores["labels"], test_scores["probs"], cut
            )
        else:
            metrics = score(dataset, split)
        method = cfg.get("method", "scratch")
    if stage_activity is not None:
        from rubikkit.models import stage_activity as census

        metrics["stage_activity"] = census(
            model.backbone, _Images(dataset), batch_size=bs, bn=stage_activity
        )
        metrics["stage_activity_bn"] = stage_activity
    result = {
        "kind": "evaluate",
        "checkpoint": str(Path(checkpoint).resolve()),
        "dataset": spec,
        "data_options": opts,
        "method": method,
        "backbone": cfg["backbone"].get("name"),
        "head": cfg.get("head"),
        "label_fraction": cfg.get("label_fraction"),
        "seed": cfg.get("seed"),
        "epochs": cfg["trained_epochs"],
        "steps": cfg["trained_steps"],
        "commit": git_commit(),
        "device": str(dev),
        "wall_s": time.perf_counter() - t0,
        "splits": {split: metrics},
    }
    # Under torchrun every rank scores the same split; only rank 0 writes.
    if out is not None and int(os.environ.get("RANK", "0")) == 0:
        p = Path(out)
        if p.is_dir() or not p.suffix:
            p = p / f"metrics_{split}.json"
        write_json(result, p)
    return result
