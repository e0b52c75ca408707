"""Self-supervised pre-training of a 3D backbone on a proxy task (``rubikkit pretrain``).

The DataLoader supplies raw volumes only; the task (:mod:`rubikkit.tasks`) cuts, permutes and
rotates the cubes on the training device inside its ``step`` (on a GPU with the CUDA puzzle
kernel), so no puzzle is built in a DataLoader worker. Defaults follow the papers: Adam (Zhou et
al., TCPC, Sec. 3.2.1: "The Adam solver is used as the optimizer", also for the baselines, the
Rubik's cube task among them) with a mini-batch of 2 volumes (TCPC, Sec. 3.2.1) and learning rate
1e-3 for the proxy task (the value did not survive in our copy of the TCPC text, which says the
proxy and target tasks use different initial rates; 1e-3 for the proxy task and 1e-4 for the
target task are the usual Adam settings). The Rubik's cube paper (Zhuang et al. 2019) gives no
optimiser settings.
"""

from __future__ import annotations

import torch

from rubikkit.train import distributed as D
from rubikkit.train.loop import Selection, derived_seed, fit, seed_everything, write_json
from rubikkit.train.runs import (
    IndexedDataset,
    eval_loader,
    git_commit,
    open_split,
    open_val_split,
    options_dict,
    resolve_amp,
    run_summary,
)
from rubikkit.train.schedule import check_milestones

__all__ = ["DEFAULT_BATCH_SIZE", "DEFAULT_LR", "evaluate_proxy", "pretrain", "proxy_ceiling"]

DEFAULT_LR = 1e-3
DEFAULT_BATCH_SIZE = 2  # TCPC, Sec. 3.2.1
DEFAULT_EPOCHS = 10


def _item_keys(batch: dict):
    """What a task's ``index`` gets: the items' ids (unique across splits, so per-volume caches
    such as tcpc's candidates serve the training and validation sets alike), else their
    positions in the dataset."""
    return batch["id"] if "id" in batch else batch["index"]


def _check_shape(task, dataset, name: str) -> None:
    need = getattr(task, "min_volume_shape", None)
    if need is None or len(dataset) == 0:
        return
    shape = tuple(dataset[0]["image"].shape[1:])
    if any(s < n for s, n in zip(shape, need)):
        raise ValueError(
            f"{name}: volumes of shape {shape} are smaller than the {task.name!r} task needs "
            f"({tuple(need)}); use larger volumes or smaller cubes (--task-option cube_size=...)"
        )


@torch.no_grad()
def evaluate_proxy(
    task,
    model,
    dataset,
    *,
    batch_size,
    device,
    seed=0,
    workers=0,
    amp=False,
    progress=False,
    desc="val",
    draws=1,
) -> dict:
    """Batch-size-weighted mean of the task's metrics (``loss``, ``order_acc``, ...) over a split.

    The puzzles are drawn from a generator seeded by ``seed`` alone, so every call scores the
    same puzzles (validation curves and model selection compare like with like). ``draws``
    passes score every volume with that many puzzles (one generator across the passes): a split
    of a few volumes (BraTS's 2 validation cases) otherwise gives an accuracy in steps of
    1/volumes.

    Raises
    ------
    ValueError
        ``draws`` is not a positive int.

    Parameters
    ----------
    task : ProxyTask
    model : nn.Module
        The proxy model (unwrapped), on ``device``.
    dataset : Dataset
        Items with ``image`` (C, D, H, W); wrapped to carry their ``index``.
    """
    if isinstance(draws, bool) or not isinstance(draws, int) or draws < 1:
        raise ValueError(f"draws: expected a positive int, got {draws!r}")
    was_training = model.training
    model.eval()
    mean = _BatchMean()
    for volumes, gen, index in _eval_batches(
        dataset, batch_size, device, seed, workers, progress, desc, draws
    ):
        with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=amp):
            loss, metrics = task.step(model, volumes, gen, index=index)
        mean.add({"loss": float(loss), **metrics}, int(volumes.shape[0]))
    model.train(was_training)
    return mean.result()


@torch.no_grad()
def proxy_ceiling(task, dataset, *, batch_size, seed=0, workers=0, progress=False) -> dict:
    """What the proxy batches of a split allow any model, measured without one.

    For the contrastive tasks (``cpc3d``, ``tcpc``): the batch-size-weighted means of
    :func:`rubikkit.tasks.cpc3d.target_ceiling` (``cpc_ceiling``, ``cpc_chance``,
    ``constant_cubes``) over the very batches :func:`evaluate_proxy` scores with the same
    ``batch_size`` and ``seed``, so the numbers equal those of an evaluation record. It costs the
    cube cutting only, which makes it the way to compare task options (tcpc's ``crop_jitter``,
    the cube size) before pre-training with them. The cube puzzles have
    :meth:`rubikkit.tasks.rubik.CubePuzzleTask.ceiling`, which needs no batches.

    Raises
    ------
    ValueError
        ``task`` has no per-batch ceiling.
    """
    if not hasattr(task, "batch_ceiling"):
        raise ValueError(
            f"task: {task.name!r} has no per-batch ceiling (the cube puzzles have "
            "CubePuzzleTask.ceiling)"
        )
    mean = _BatchMean()
    cpu = torch.device("cpu")
    for volumes, gen, index in _eval_batches(
        dataset, batch_size, cpu, seed, workers, progress, "ceiling"
    ):
        mean.add(task.batch_ceiling(volumes, gen, index=index), int(volumes.shape[0]))
    return mean.result()


def _eval_batches(dataset, batch_size, device, seed, workers, progress, desc, passes=1):
    """(volumes, generator, index) for each evaluation batch of ``passes`` passes over the split:
    one generator seeded by ``seed`` alone, so every call draws the same puzzles."""
    from tqdm.auto import tqdm

    ds = dataset if isinstance(dataset, IndexedDataset) else IndexedDataset(dataset)
    gen = torch.Generator().manual_seed(derived_seed(seed, 3))
    loader = eval_loader(ds, batch_size, workers, device)
    for _ in range(passes):
        for batch in tqdm(loader, desc=desc, disable=not progress, leave=False):
            yield batch["image"].to(device, non_blocking=True), gen, _item_keys(batch)


class _BatchMean:
    """Batch-size-weighted means of per-batch metrics."""

    def __init__(self):
        self.sums: dict[str, float] = {}
        self.n = 0

    def add(self, metrics: dict, b: int) -> None:
        self.n += b
        for k, v in metrics.items():
            self.sums[k] = self.sums.get(k, 0.0) + float(v) * b

    def result(self) -> dict[str, float]:
        return {k: v / max(self.n, 1) for k, v in self.sums.items()}


def pretrain(
    task: str = "rubik",
    data: str = "phantoms:hemorrhage",
    *,
    out,
    backbone: str = "vgg3d",
    backbone_options: dict | None = None,
    task_options: dict | None = None,
    data_options: dict | None = None,
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
) -> dict:
    """Pre-train ``backbone`` on the proxy ``task`` over the volumes of ``data``.

    Parameters
    ----------
    task : {"rubik", "ordering", "jigsaw3d", "cpc3d", "tcpc"}
        The proxy task (:func:`rubikkit.tasks.get_task`), with ``task_options``.
    data : str
        Dataset spec (``phantoms:hemorrhage``, ``brats:PATH``, ...) opened with ``data_options``;
        labels are ignored.
    out : path-like
        Run folder (config.json, log.jsonl, last.pt, best.pt, metrics.json).
    backbone : {"vgg3d", "resnet10", "resnet18", "resnet34"}
        Built with ``backbone_options`` and the dataset's number of channels.
    epochs, max_steps : int, optional
        Stop after whichever comes first; default 10 epochs when neither is given.
    batch_size : int
        Volumes per step and process (default 2, TCPC Sec. 3.2.1).
    lr : float
        Adam learning rate (default 1e-3).
    seed : int
        Seeds the weights, the data order and every puzzle.
    device : {"auto", "cpu", "cuda"}
    workers : int
        DataLoader worker processes (they only read volumes).
    resume : bool or path
        Continue ``out/last.pt`` (same step, same data order).
    amp : bool, optional
        Mixed precision; default on with CUDA, off on CPU.
    val_split : str or None
        Split scored after every epoch; best.pt has the lowest validation proxy loss. None: no
        validation, and best.pt is the last epoch's state (the training loss of random puzzles
        picks lucky batches: on 2 BraTS volumes, one step per epoch, its minimum fell on epoch 57
        of 200).
    lr_milestones, lr_gamma
        Optional step schedule (fractions of ``epochs``); see
        :func:`rubikkit.train.schedule.lr_at_epoch`.

    Returns
    -------
    dict
        The content of metrics.json: record fields (``dataset``, ``method``, ``backbone``, ...),
        ``splits`` ({"val": metrics of best.pt, "train": last epoch}) and ``best``.
    """
    from rubikkit.models import build_backbone
    from rubikkit.tasks import get_task

    task_options = options_dict(task_options, "task_options")
    data_options = options_dict(data_options, "data_options")
    backbone_options = options_dict(backbone_options, "backbone_options")
    if epochs is None and max_steps is None:
        epochs = DEFAULT_EPOCHS
    milestones = check_milestones(lr_milestones, lr_gamma, epochs)
    ctx = D.setup(device)
    try:
        use_amp = resolve_amp(amp, ctx.device)
        train_set = open_split(data, train_split, data_options, progress=progress)
        val_set = open_val_split(data, val_split, data_options, progress=progress)
        proxy = get_task(task, **task_options)
        _check_shape(proxy, train_set, "data")
        seed_everything(seed)
        bb = build_backbone(backbone, in_channels=int(train_set.num_channels), **backbone_options)
        model = proxy.build_model(bb).to(ctx.device)
        proxy.prepare(train_set)
        if val_set is not None:
            proxy.prepare(val_set)
        train_indexed = IndexedDataset(train_set)
        config = {
            "kind": "pretrain",
            "task": proxy.name,
            "task_options": proxy.config(),
            "data": data,
            "data_options": data_options,
            "train_split": train_split,
            "val_split": val_split,
            "backbone": dict(bb.config),
            "head": "proxy",
            "init": None,
            "in_channels": int(train_set.num_channels),
            "n_train": len(train_set),
            "epochs": epochs,
            "max_steps": max_steps,
            "batch_size": batch_size,
            "lr": lr,
            "weight_decay": weight_decay,
            "lr_milestones": list(milestones) or None,
            "lr_gamma": float(lr_gamma) if milestones else None,
            "seed": seed,
            "commit": git_commit(),  # when this session of the run started
            "amp": use_amp,
            "device": str(ctx.device),
            "world_size": ctx.world_size,
            "workers": workers,
            "label_fraction": None,
        }

        def step_fn(m, batch, gen):
            return proxy.step(m, batch["image"], gen, index=_item_keys(batch))

        def evaluate_fn(m):
            return evaluate_proxy(
                proxy,
                m,
                val_set,
                batch_size=batch_size,
                device=ctx.device,
                seed=seed,
                workers=workers,
                amp=use_amp,
            )

        # Without a validation split, the last epoch: a proxy's training loss is that of random
        # puzzles, and its minimum over epochs of a few steps picks a lucky draw.
        selection = Selection("loss", "min", val_split) if val_split else Selection(mode="last")
        result = fit(
            model=model,
            train_set=train_indexed,
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
            desc=f"pretrain {proxy.name}",
            lr_milestones=milestones or None,
            lr_gamma=lr_gamma,
        )
        summary = run_summary(config, result, method=proxy.name)
        if ctx.is_main:
            from pathlib import Path

            write_json(summary, Path(out) / "metrics.json")
        D.barrier(ctx)
        return summary
    finally:
        D.cleanup(ctx)
