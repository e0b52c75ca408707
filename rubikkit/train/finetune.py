"""Fine-tuning a (pre-trained) backbone on a labelled target task (``rubikkit finetune``).

Classification datasets train a :class:`~rubikkit.models.Classifier` on ``label``; segmentation
datasets train a :class:`~rubikkit.models.UNet3D` or :class:`~rubikkit.models.DUC3D` on ``mask``,
the encoder being the backbone (Zhuang et al. 2019, Sec. 2.2: a U-Net decoder starts random, the
DUC head has few random parameters). ``init`` is a checkpoint whose backbone is transferred with
:func:`rubikkit.models.load_backbone_state`, which loads every backbone tensor or raises with the
mismatching keys; training never falls back silently to random weights. ``label_fraction`` keeps a
stratified subset of the training labels (TCPC, Sec. 3.4: 1 % of the LUNA16 labels). Defaults:
Adam (TCPC, Sec. 3.2.1), learning rate 1e-4 for the target task (see :mod:`.pretrain` on the
rates), mini-batch 2 (TCPC, Sec. 3.2.1); best.pt maximises the validation AUC (classification) or
mIoU (segmentation).
"""

from __future__ import annotations

import numbers
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Subset

from rubikkit.train import distributed as D
from rubikkit.train.checkpoint import load_checkpoint
from rubikkit.train.loop import Selection, fit, seed_everything, write_json
from rubikkit.train.metrics import classification_metrics, confusion_matrix, segmentation_metrics
from rubikkit.train.runs import (
    eval_loader,
    git_commit,
    open_split,
    open_val_split,
    options_dict,
    resolve_amp,
    run_summary,
)
from rubikkit.train.schedule import augment_batch, check_augment, check_milestones

__all__ = [
    "DEFAULT_LR",
    "HEADS",
    "SEG_LOSSES",
    "build_target_model",
    "evaluate_target",
    "finetune",
    "label_subset",
    "load_init",
    "soft_dice_loss",
]

HEADS = ("classify", "unet", "duc")
#: Training losses of the segmentation heads: voxel-wise cross-entropy, or cross-entropy plus
#: the soft Dice loss of the foreground classes (:func:`soft_dice_loss`).
SEG_LOSSES = ("ce", "ce+dice")
DEFAULT_LR = 1e-4
DEFAULT_BATCH_SIZE = 2
DEFAULT_EPOCHS = 10


def label_subset(labels, fraction: float, seed: int = 0, n: int | None = None) -> np.ndarray:
    """Indices of a stratified, seed-determined ``fraction`` of a training set.

    Every class keeps ``max(1, round(fraction * n_c))`` of its ``n_c`` items (at least one example
    per class present), chosen by a permutation of the class's items drawn from
    ``numpy.random.default_rng(seed)``; the first items of that permutation are kept, so for one
    seed a smaller fraction's subset lies inside a larger one's.

    Parameters
    ----------
    labels : (N,) int array or None
        Class of every item; None (segmentation) gives a plain random subset of ``n`` items.
    fraction : float in (0, 1]
    seed : int
    n : int, optional
        Number of items when ``labels`` is None.

    Returns
    -------
    (k,) int64 array of item indices, ascending.
    """
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float, np.floating)):
        raise TypeError(f"label_fraction: expected a number in (0, 1], got {fraction!r}")
    if not 0.0 < float(fraction) <= 1.0:
        raise ValueError(f"label_fraction: expected a number in (0, 1], got {fraction!r}")
    rng = np.random.default_rng(seed)
    if labels is None:
        if n is None or n < 1:
            raise ValueError("n: give the number of items when labels is None")
        if fraction >= 1.0:
            return np.arange(n, dtype=np.int64)
        k = max(1, int(round(fraction * n)))
        return np.sort(rng.permutation(n)[:k]).astype(np.int64)
    y = np.asarray(labels)
    if y.ndim != 1:
        raise ValueError(f"labels: expected a 1-D array, got shape {y.shape}")
    if fraction >= 1.0:
        return np.arange(y.shape[0], dtype=np.int64)
    keep = []
    for c in np.unique(y):  # sorted, so the draws do not depend on the item order of classes
        members = np.flatnonzero(y == c)
        k = max(1, int(round(fraction * members.size)))
        keep.append(members[rng.permutation(members.size)[:k]])
    return np.sort(np.concatenate(keep)).astype(np.int64)


def load_init(init, *, in_channels: int | None = None, stages: int | None = None):
    """The backbone of checkpoint ``init``, rebuilt from its config and with all its weights.

    Parameters
    ----------
    init : path-like
        A pretrain or finetune checkpoint (``config["backbone"]`` and ``model`` entries under
        ``backbone.``).
    in_channels : int, optional
        Channels of the data it will see; checked against the backbone's.
    stages : int, optional
        Transfer the first ``stages`` stages only; the deeper ones keep the fresh initialisation
        the rebuilt backbone draws from torch's generator (after the same seeding, the one a
        scratch run of that backbone starts from). See
        :func:`rubikkit.models.load_backbone_state`.

    Returns
    -------
    (backbone, config)
        The backbone with every tensor loaded, and the checkpoint's config.

    Raises
    ------
    FileNotFoundError
        No file at ``init``.
    ValueError
        No backbone config, no backbone weights, a channel mismatch, or tensors that do not
        match (the message lists missing, unexpected and mis-shaped keys).
    """
    from rubikkit.models import build_backbone, load_backbone_state

    ckpt = load_checkpoint(init, name="init")
    cfg = ckpt.get("config") or {}
    bcfg = cfg.get("backbone")
    if not isinstance(bcfg, dict) or "name" not in bcfg:
        raise ValueError(
            f"init: checkpoint {init} has no config['backbone'] to rebuild its backbone from"
        )
    if in_channels is not None and int(bcfg.get("in_channels", in_channels)) != in_channels:
        raise ValueError(
            f"init: the backbone of {init} takes {bcfg.get('in_channels')} channels, the data "
            f"has {in_channels}"
        )
    bcfg = dict(bcfg)
    backbone = build_backbone(**bcfg)
    prefix = "backbone."
    state = {k[len(prefix) :]: v for k, v in ckpt["model"].items() if k.startswith(prefix)}
    if not state:
        raise ValueError(f"init: checkpoint {init} holds no weights under {prefix!r}")
    try:
        load_backbone_state(backbone, state, stages=stages)
    except ValueError as exc:
        if str(exc).startswith("stages:"):  # the caller's argument, named by the caller
            raise
        raise ValueError(f"init: cannot transfer the backbone of {init}: {exc}") from exc
    return backbone, cfg


def build_target_model(head: str, backbone, n_classes: int, dropout: float = 0.0):
    """Classifier, U-Net or DUC over ``backbone`` (:mod:`rubikkit.models`)."""
    from rubikkit import models

    if head == "classify":
        return models.Classifier(backbone, n_classes, dropout=dropout)
    if head == "unet":
        return models.UNet3D(backbone, n_classes)
    if head == "duc":
        return models.DUC3D(backbone, n_classes)
    raise ValueError(f"head: expected one of {HEADS}, got {head!r}")


def _check_head(head: str, dataset) -> None:
    if head not in HEADS:
        raise ValueError(f"head: expected one of {HEADS}, got {head!r}")
    task = getattr(dataset, "task", None)
    if task == "classification" and head != "classify":
        raise ValueError(f"head: {head!r} segments, but the data is a classification set")
    if task == "segmentation" and head == "classify":
        raise ValueError("head: 'classify' needs labels, but the data is a segmentation set")
    if task not in ("classification", "segmentation"):
        raise ValueError(f"data: fine-tuning needs labels or masks; the data's task is {task!r}")


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """One minus the mean soft Dice of the foreground classes, over the whole batch.

    For each class ``c >= 1`` with softmax probabilities ``p`` and one-hot target ``t``, the soft
    Dice is ``(2 sum(p t) + eps) / (sum(p) + sum(t) + eps)``, the sums running over every voxel
    of the batch (a "batch Dice": a volume without that class adds to ``sum(p)`` only). Cross-
    entropy is an average over voxels, so when one class holds 1 % of them a network can lower it
    with probabilities that never pass one half on that class; the Dice term rewards overlap,
    whatever the class's share (Milletari et al., V-Net, 2016).

    Parameters
    ----------
    logits : (B, K, D, H, W) tensor, K >= 2 classes, class 0 the background
    target : (B, D, H, W) int64 tensor of class indices
    eps : float
        Smoothing, so that a class absent from the batch and from the prediction scores 1.
    """
    if logits.ndim != 5 or logits.shape[1] < 2:
        raise ValueError(f"logits: expected (B, K >= 2, D, H, W), got {tuple(logits.shape)}")
    if target.shape != logits.shape[:1] + logits.shape[2:]:
        raise ValueError(
            f"target: expected shape {tuple(logits.shape[:1] + logits.shape[2:])}, "
            f"got {tuple(target.shape)}"
        )
    p = logits.float().softmax(1)[:, 1:]
    t = F.one_hot(target, logits.shape[1]).movedim(-1, 1)[:, 1:].to(p.dtype)
    dims = (0, 2, 3, 4)
    dice = (2 * (p * t).sum(dims) + eps) / (p.sum(dims) + t.sum(dims) + eps)
    return 1 - dice.mean()


def check_loss(loss: str, head: str) -> str:
    """Validate a fine-tuning loss for ``head``."""
    if head == "classify":
        if loss != "ce":
            raise ValueError(f"loss: the classifier trains with 'ce' only, got {loss!r}")
    elif loss not in SEG_LOSSES:
        raise ValueError(f"loss: expected one of {SEG_LOSSES}, got {loss!r}")
    return loss


def target_loss(
    head: str, model, batch, *, augment: str | None = None, generator=None, loss: str = "ce"
) -> tuple[torch.Tensor, dict]:
    """Cross-entropy of the model's class (or voxel class) logits, and batch metrics.

    ``augment`` (:func:`rubikkit.train.schedule.augment_batch`, training mode) is applied to the
    images first, with ``generator``. ``loss="ce+dice"`` (segmentation heads) adds
    :func:`soft_dice_loss`; the batch metrics then hold both terms.
    """
    images = augment_batch(augment, batch["image"], training=True, generator=generator)
    logits = model(images)
    if head == "classify":
        y = batch["label"]
        ce = F.cross_entropy(logits.float(), y)
        acc = (logits.argmax(1) == y).float().mean()
        return ce, {"acc": float(acc)}
    y = batch["mask"]
    ce = F.cross_entropy(logits.float(), y)
    acc = (logits.argmax(1) == y).float().mean()
    if loss == "ce":
        return ce, {"voxel_acc": float(acc)}
    dice = soft_dice_loss(logits, y)
    metrics = {"voxel_acc": float(acc), "ce": float(ce.detach()), "dice_loss": float(dice.detach())}
    return ce + dice, metrics


@torch.no_grad()
def evaluate_target(
    head: str,
    model,
    dataset,
    *,
    batch_size,
    device,
    workers=0,
    amp=False,
    class_names=None,
    progress=False,
    desc="val",
    augment: str | None = None,
    scores: dict | None = None,
) -> dict:
    """Metrics of a classifier (``loss``, ``acc``, ``auc``) or segmenter (``loss``, ``miou``,
    ``dice``, per-class IoU and Dice, from one confusion matrix over the split).

    ``augment`` is applied in evaluation mode (``"voxel_scale"``: volumes times 0.5). A classifier
    also fills ``scores``, when given, with ``probs`` (N, K) and ``labels`` (N,) of the split.
    """
    from tqdm.auto import tqdm

    was_training = model.training
    model.eval()
    n_classes = len(class_names) if class_names is not None else None
    loss_sum, n = 0.0, 0
    probs, labels = [], []
    conf = None
    for batch in tqdm(
        eval_loader(dataset, batch_size, workers, device),
        desc=desc,
        disable=not progress,
        leave=False,
    ):
        x = batch["image"].to(device, non_blocking=True)
        x = augment_batch(augment, x, training=False)
        with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=amp):
            logits = model(x)
        logits = logits.float()
        b = int(x.shape[0])
        if head == "classify":
            y = batch["label"].to(device)
            loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
            probs.append(torch.softmax(logits, 1).cpu())
            labels.append(y.cpu())
        else:
            y = batch["mask"].to(device)
            loss_sum += float(F.cross_entropy(logits, y)) * b
            k = n_classes or logits.shape[1]
            c = confusion_matrix(logits.argmax(1), y, k)
            conf = c if conf is None else conf + c
        n += b
    model.train(was_training)
    out = {"loss": loss_sum / max(n, 1)}
    if head == "classify":
        y_all, p_all = torch.cat(labels), torch.cat(probs)
        out.update(classification_metrics(y_all, p_all))
        if scores is not None:
            scores.update(probs=p_all, labels=y_all)
    else:
        out.update(segmentation_metrics(conf.cpu(), class_names))
    return out


def finetune(
    init="scratch",
    data: str = "phantoms:hemorrhage",
    *,
    out,
    head: str = "classify",
    label_fraction: float = 1.0,
    backbone: str | None = None,
    backbone_options: dict | None = None,
    data_options: dict | None = None,
    dropout: float = 0.0,
    epochs: int | None = None,
    max_steps: int | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    lr: float = DEFAULT_LR,
    weight_decay: float = 0.0,
    seed: int = 0,
    device: str = "auto",
    workers: int = 0,
    resume=False,
    amp: bool | None = None,
    train_split: str = "train",
    val_split: str | None = "val",
    progress: bool = True,
    checkpoint_every: int | None = None,
    lr_milestones=None,
    lr_gamma: float = 0.1,
    augment: str | None = None,
    output_stride: int | None = None,
    loss: str = "ce",
    transfer_stages: int | None = None,
) -> dict:
    """Fine-tune a pre-trained (or fresh) backbone on the labels of ``data``.

    Parameters
    ----------
    init : path-like or "scratch"
        A checkpoint whose backbone is transferred (all tensors or an error), or ``"scratch"``
        for a fresh ``backbone`` built with ``backbone_options``.
    data : str
        Dataset spec with ``data_options``; classification sets use ``label``, segmentation
        sets ``mask``.
    out : path-like
        Run folder.
    head : {"classify", "unet", "duc"}
    label_fraction : float in (0, 1]
        Share of the training items kept (stratified by class, fixed by ``seed``).
    backbone : {"vgg3d", "resnet10", "resnet18", "resnet34"}, optional
        The backbone of ``init="scratch"`` (default ``"vgg3d"``), built with
        ``backbone_options``. A checkpoint's backbone is rebuilt from its config; naming another
        one is an error.
    dropout : float
        Before the classifier's last layer.
    epochs, max_steps, batch_size, lr, weight_decay, seed, device
        As for :func:`rubikkit.train.pretrain` (default lr 1e-4).
    workers, resume, amp, val_split, progress, checkpoint_every
        As for :func:`rubikkit.train.pretrain`.
    lr_milestones, lr_gamma
        Step schedule: the rate is multiplied by ``lr_gamma`` at each fraction of ``epochs`` in
        ``lr_milestones`` (MedMNIST v2: ``(0.5, 0.75)`` and 0.1); see
        :func:`rubikkit.train.schedule.lr_at_epoch`.
    augment : {None, "voxel_scale"}
        Batch augmentation (:func:`rubikkit.train.schedule.augment_batch`): ``"voxel_scale"``
        multiplies training volumes by U(0, 1) and evaluated volumes by 0.5 (the MedMNIST v2
        recipe for the shape datasets AdrenalMNIST3D and VesselMNIST3D). It is stored in the
        run's config, so :func:`rubikkit.train.evaluate` scores with the same scaling.
    output_stride : int, optional
        DUC head only: run the encoder at this output stride, its deeper stages dilated instead
        of downsampled (:meth:`rubikkit.models.Backbone.dilate_`; Wang et al.'s DUC runs at 8),
        so the DUC predicts from a finer feature grid with the same (pre-trained) weights.
        Default: the backbone's own total stride. The run's backbone config records it.
    loss : {"ce", "ce+dice"}
        Training loss; ``"ce+dice"`` (segmentation heads) adds :func:`soft_dice_loss` to the
        voxel-wise cross-entropy. Validation always reports cross-entropy as ``loss``.
    transfer_stages : int, optional
        With an ``init`` checkpoint: transfer its first ``transfer_stages`` encoder stages only
        and start the deeper ones from the fresh weights a scratch run of the same ``seed`` starts
        from, e.g. to test whether a pre-training's deepest features help or harm. Default: all
        stages. The run's config records it.

    Returns
    -------
    dict
        The content of metrics.json (``splits["val"]``: metrics of best.pt).
    """
    data_options = options_dict(data_options, "data_options")
    backbone_options = options_dict(backbone_options, "backbone_options")
    if epochs is None and max_steps is None:
        epochs = DEFAULT_EPOCHS
    milestones = check_milestones(lr_milestones, lr_gamma, epochs)
    check_augment(augment)
    if output_stride is not None and head != "duc":
        raise ValueError(f"output_stride: applies to the DUC head only, not head={head!r}")
    check_loss(loss, head)
    if transfer_stages is not None:
        if isinstance(init, str) and init == "scratch":
            raise ValueError("transfer_stages: needs an init checkpoint, not init='scratch'")
        if isinstance(transfer_stages, bool) or not isinstance(transfer_stages, numbers.Integral):
            raise TypeError(
                f"transfer_stages: expected an int, got {type(transfer_stages).__name__}"
            )
        transfer_stages = int(transfer_stages)
    ctx = D.setup(device)
    try:
        use_amp = resolve_amp(amp, ctx.device)
        train_full = open_split(data, train_split, data_options, progress=progress)
        _check_head(head, train_full)
        val_set = open_val_split(data, val_split, data_options, progress=progress)
        labels = getattr(train_full, "labels", None) if head == "classify" else None
        if head == "classify" and labels is None:
            labels = np.array([int(train_full[i]["label"]) for i in range(len(train_full))])
        keep = label_subset(labels, label_fraction, seed, n=len(train_full))
        train_set = Subset(train_full, keep.tolist()) if keep.size < len(train_full) else train_full
        class_names = list(train_full.class_names)
        in_channels = int(train_full.num_channels)
        seed_everything(seed)
        if isinstance(init, str) and init == "scratch":
            from rubikkit.models import build_backbone

            bb = build_backbone(backbone or "vgg3d", in_channels=in_channels, **backbone_options)
            method, init_path = "scratch", None
        else:
            if backbone_options:
                raise ValueError(
                    "backbone_options: the backbone of an init checkpoint is rebuilt from its "
                    "config; give backbone options only with init='scratch'"
                )
            try:
                bb, init_cfg = load_init(init, in_channels=in_channels, stages=transfer_stages)
            except ValueError as exc:
                if str(exc).startswith("stages:"):
                    raise ValueError(f"transfer_{exc}") from None
                raise
            if backbone is not None and backbone != bb.config["name"]:
                raise ValueError(
                    f"backbone: {init} holds a {bb.config['name']!r} backbone, not {backbone!r}; "
                    "a backbone is chosen for init='scratch' only"
                )
            # A fine-tuned init keeps the method it came from (e.g. rubik), else its task.
            method = init_cfg.get("method") or init_cfg.get("task") or "scratch"
            init_path = str(Path(init).resolve())
        if output_stride is not None:
            bb.dilate_(output_stride)
        model = build_target_model(head, bb, len(class_names), dropout).to(ctx.device)
        config = {
            "kind": "finetune",
            "task": None,
            "task_options": None,
            "method": method,
            "init": init_path,
            "data": data,
            "data_options": data_options,
            "train_split": train_split,
            "val_split": val_split,
            "backbone": dict(bb.config),
            "head": head,
            "n_classes": len(class_names),
            "class_names": class_names,
            "in_channels": in_channels,
            "label_fraction": float(label_fraction),
            "n_train": int(keep.size),
            "train_indices": keep.tolist(),
            "dropout": dropout,
            "epochs": epochs,
            "max_steps": max_steps,
            "batch_size": batch_size,
            "lr": lr,
            "weight_decay": weight_decay,
            "lr_milestones": list(milestones) or None,
            "lr_gamma": float(lr_gamma) if milestones else None,
            "augment": augment,
            # only where it is not the default, so that older runs still resume
            **({"loss": loss} if loss != "ce" else {}),
            **({"transfer_stages": transfer_stages} if transfer_stages is not None else {}),
            "seed": seed,
            "commit": git_commit(),  # when this session of the run started
            "amp": use_amp,
            "device": str(ctx.device),
            "world_size": ctx.world_size,
            "workers": workers,
        }

        def step_fn(m, batch, gen):
            return target_loss(head, m, batch, augment=augment, generator=gen, loss=loss)

        def evaluate_fn(m):
            return evaluate_target(
                head,
                m,
                val_set,
                batch_size=batch_size,
                device=ctx.device,
                workers=workers,
                amp=use_amp,
                class_names=class_names,
                augment=augment,
            )

        selection = Selection("auc" if head == "classify" else "miou", "max", val_split or "train")
        if val_set is None:
            selection = Selection("loss", "min", "train")
        result = fit(
            model=model,
            train_set=train_set,
            step_fn=step_fn,
            evaluate_fn=evaluate_fn if val_set is not None else None,
            config=config,
            out=out,
            ctx=ctx,
            epochs=epochs,
            max_steps=max_steps,
            batch_size=batch_size,
            lr=lr,
            weight_decay=weight_decay,
            seed=seed,
            workers=workers,
            resume=resume,
            amp=use_amp,
            progress=progress,
            selection=selection,
            checkpoint_every=checkpoint_every,
            desc=f"finetune {head}",
            lr_milestones=milestones or None,
            lr_gamma=lr_gamma,
        )
        summary = run_summary(config, result, method=method)
        if ctx.is_main:
            write_json(summary, Path(out) / "metrics.json")
        D.barrier(ctx)
        return summary
    finally:
        D.cleanup(ctx)
