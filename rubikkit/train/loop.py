"""The training loop shared by pre-training and fine-tuning, and the run folder it writes.

A run folder holds::

    config.json    everything that defines the run (written by rank 0 at the start)
    log.jsonl      one JSON object per epoch and split: {"epoch", "step", "split", "loss", ...}
    last.pt        the latest state (every epoch, every ``checkpoint_every`` steps, at the end)
    best.pt        the state with the best validation score so far (``Selection(mode="last")``:
                   the final state, written once at the end)
    metrics.json   the final summary (written by the caller, :mod:`.pretrain` or :mod:`.finetune`)

:func:`fit` runs Adam (Kingma and Ba 2014; both papers train with it: Zhou et al., TCPC,
Sec. 3.2.1) with mixed precision on CUDA (``torch.autocast`` + ``GradScaler``; off on CPU), one
progress bar per epoch, validation after every epoch and model selection on a validation metric.
It is exactly resumable: the data order of an epoch depends only on ``(seed, epoch)`` (see
:class:`~.distributed.ResumableSampler`), and the checkpoint holds the model, optimiser and scaler
states, the step, the epoch, the batch reached inside it and every random state, so that a run
stopped after k steps and resumed gives, on CPU, the very weights of an uninterrupted run.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from rubikkit.train import distributed as D
from rubikkit.train.checkpoint import load_checkpoint, restore_rng_state, rng_state, save_checkpoint
from rubikkit.train.runs import collate
from rubikkit.train.schedule import check_milestones, lr_at_epoch

__all__ = ["Selection", "fit", "read_json", "seed_everything", "write_json"]

# Config entries that must agree between a checkpoint and a resumed run (the rest, such as
# max_steps, epochs, workers or the device, may change on resume).
RESUME_KEYS = (
    "kind",
    "task",
    "task_options",
    "data",
    "data_options",
    "backbone",
    "head",
    "init",
    "batch_size",
    "lr",
    "weight_decay",
    "seed",
    "label_fraction",
    "lr_milestones",
    "lr_gamma",
    "loss",
    "augment",
)


@dataclass(frozen=True)
class Selection:
    """How ``best.pt`` is chosen: metric ``key`` of ``split``, lower (``"min"``) or higher
    (``"max"``) better; ``"last"``: every epoch replaces it, so it is the last epoch's state."""

    key: str = "loss"
    mode: str = "min"
    split: str = "val"

    def __post_init__(self):
        if self.mode not in ("min", "max", "last"):
            raise ValueError(f"mode: expected 'min', 'max' or 'last', got {self.mode!r}")

    def better(self, value: float, best: float | None) -> bool:
        if self.mode == "last":
            return True
        if value is None or not math.isfinite(value):
            return False
        if best is None or not math.isfinite(best):
            return True
        return value < best if self.mode == "min" else value > best


@dataclass
class _State:
    step: int = 0
    epoch: int = 0  # epochs completed
    batch: int = 0  # batches done in the epoch under way
    best: dict = field(default_factory=dict)
    wall_s: float = 0.0


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy's legacy global generator and torch (CPU and CUDA)."""
    import random

    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed: expected a non-negative int, got {seed!r}")
    random.seed(int(seed))
    np.random.seed(int(seed) % 2**32)  # noqa: NPY002 - code outside rubikkit may use it
    torch.manual_seed(int(seed))


def derived_seed(*parts: int) -> int:
    """A 63-bit seed mixing ``parts`` (e.g. the run seed and the rank) through SeedSequence."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(2, np.uint64)[0] >> 1)


def write_json(obj, path: str | os.PathLike) -> None:
    """Write ``obj`` as indented JSON atomically (temporary file + ``os.replace``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    text = json.dumps(_no_nan(_jsonable(obj)), indent=2, sort_keys=True, allow_nan=False)
    tmp.write_text(text + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _no_nan(obj):
    # Undefined metrics (NaN) are written as null: strict JSON readers reject NaN.
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _no_nan(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_no_nan(v) for v in obj]
    return obj


def read_json(path: str | os.PathLike) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def _json_default(x):
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating,)):
        return float(x)
    if isinstance(x, (np.ndarray, tuple)):
        return list(x.tolist() if isinstance(x, np.ndarray) else x)
    if isinstance(x, (Path, torch.device)):
        return str(x)
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


def _partial(sums: dict, n_items: int, data_s: float, t_epoch: float) -> dict:
    """The sums of the epoch under way, as a checkpoint keeps them for a resumed run."""
    return {
        "sums": dict(sums),
        "n": int(n_items),
        "data_s": float(data_s),
        "wall_s": time.perf_counter() - t_epoch,
    }


def _logged(path: Path, record: dict) -> bool:
    """Whether the log already holds the training record of ``record``'s epoch and step (a run
    resumed from a checkpoint written after the epoch's last batch logged it before it stopped)."""
    if not path.is_file():
        return False
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            r = json.loads(line)
        except ValueError:
            continue
        if (r.get("split"), r.get("epoch"), r.get("step")) == (
            "train",
            record["epoch"],
            record["step"],
        ):
            return True
    return False


def _append_log(path: Path, record: dict) -> None:
    line = json.dumps(_no_nan(_jsonable(record)), allow_nan=False)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(line + "\n")


def _to_device(batch: dict, device: torch.device) -> dict:
    out = {}
    for k, v in batch.items():
        if isinstance(v, torch.Tensor) and k != "index":
            out[k] = v.to(device, non_blocking=True)
        else:
            out[k] = v
    return out


def check_resume_config(saved: dict, config: dict, path) -> None:
    """Raise ValueError listing the entries of :data:`RESUME_KEYS` that differ."""
    diffs = []
    for k in RESUME_KEYS:
        a = json.loads(json.dumps(saved.get(k), default=_json_default))
        b = json.loads(json.dumps(config.get(k), default=_json_default))
        if a != b:
            diffs.append(f"{k} (checkpoint {a!r}, now {b!r})")
    if diffs:
        raise ValueError(
            f"resume: {path} was written by a different run; differing settings: "
            + "; ".join(diffs)
        )


def prepare_run(out, config: dict, resume, ctx: D.Context) -> dict | None:
    """Check the run folder; return the checkpoint to resume from, or None for a fresh run.

    Parameters
    ----------
    out : path-like
        Run folder.
    config : dict
        This run's configuration.
    resume : bool or path-like
        True: continue from ``out/last.pt`` if it exists (else start afresh); a path: that
        checkpoint (must exist). A fresh run replaces the log.jsonl, best.pt and metrics.json
        that an earlier run without a last.pt left in ``out``.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"out: {out} is a file, not a run folder; choose another path")
    last = out / "last.pt"
    if resume is True or resume is False or resume is None:
        if not resume:
            if last.exists():
                raise ValueError(
                    f"out: {out} already holds a run (last.pt); pass resume=True (--resume) to "
                    "continue it, or choose another folder"
                )
            return None
        if not last.exists():
            if ctx.is_main:
                print(f"resume: no checkpoint in {out}; starting a new run", flush=True)
            return None
        path = last
    else:
        path = Path(resume)
    ckpt = load_checkpoint(path, name="resume")
    check_resume_config(ckpt.get("config", {}), config, path)
    return ckpt


def fit(
    *,
    model: torch.nn.Module,
    train_set,
    step_fn: Callable,
    evaluate_fn: Callable | None,
    config: dict,
    out,
    ctx: D.Context,
    epochs: int | None,
    max_steps: int | None,
    batch_size: int,
    lr: float,
    weight_decay: float = 0.0,
    seed: int = 0,
    workers: int = 0,
    resume=False,
    amp: bool = False,
    progress: bool = True,
    selection: Selection = Selection(),
    checkpoint_every: int | None = None,
    desc: str = "train",
    on_epoch_start: Callable | None = None,
    lr_milestones=None,
    lr_gamma: float = 0.1,
) -> dict:
    """Train ``model`` on ``train_set``; write log.jsonl, last.pt and best.pt under ``out``.

    Parameters
    ----------
    model : nn.Module
        On ``ctx.device`` already (not wrapped; :func:`fit` wraps it for several processes).
    train_set : Dataset
        Items are dicts; tensors among them go to the device, except ``index``.
    step_fn : callable ``(model, batch, generator) -> (loss, metrics)``
        One training step's forward pass: the loss (a scalar tensor) and batch-mean metrics.
        ``generator`` is this process's torch.Generator for all sampling in the step.
    evaluate_fn : callable ``(model) -> dict`` or None
        Validation metrics of the (unwrapped) model, run on rank 0 after every epoch.
    config : dict
        Written to config.json and into every checkpoint.
    out : path-like
        Run folder.
    ctx : Context
        From :func:`rubikkit.train.distributed.setup`.
    epochs, max_steps : int or None
        Stop after ``epochs`` epochs or ``max_steps`` optimiser steps, whichever comes first (at
        least one must be given).
    batch_size : int
        Per process.
    lr, weight_decay : float
        Adam settings.
    seed : int
        Seeds the data order, the step generators and (through :func:`seed_everything`, called
        by the caller before building the model) the initial weights.
    workers : int
        DataLoader worker processes.
    resume : bool or path
        See :func:`prepare_run`.
    amp : bool
        Mixed precision (CUDA only).
    progress : bool
        tqdm progress bars (rank 0).
    selection : Selection
        Metric that picks best.pt.
    checkpoint_every : int, optional
        Also write last.pt every this many steps.
    on_epoch_start : callable ``(epoch) -> None``, optional
        Called before every epoch (e.g. to refresh a task's per-dataset cache).
    lr_milestones : sequence of float, optional
        Fractions of ``epochs`` at which the rate is multiplied by ``lr_gamma`` (MedMNIST v2:
        ``(0.5, 0.75)``, gamma 0.1); see :func:`rubikkit.train.schedule.lr_at_epoch`. The rate
        of an epoch depends only on its index, so a resumed run follows the same schedule.
    lr_gamma : float
        Factor applied at each milestone.

    Returns
    -------
    dict
        ``step``, ``epoch`` (completed), ``epochs_run`` (with the fraction of an unfinished
        epoch), ``best`` ({"epoch", "step", "key", "value", "metrics"}),
        ``last`` ({split: metrics} of the last epoch), ``wall_s``.
    """
    from tqdm.auto import tqdm

    if epochs is None and max_steps is None:
        raise ValueError("epochs: give epochs or max_steps (or both)")
    if epochs is not None and (not isinstance(epochs, (int, np.integer)) or epochs < 1):
        raise ValueError(f"epochs: expected a positive int, got {epochs!r}")
    if max_steps is not None and (not isinstance(max_steps, (int, np.integer)) or max_steps < 1):
        raise ValueError(f"max_steps: expected a positive int, got {max_steps!r}")
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size: expected a positive int, got {batch_size!r}")
    if not (isinstance(lr, (int, float)) and 0 < lr < math.inf):
        raise ValueError(f"lr: expected a positive number, got {lr!r}")
    if not (isinstance(weight_decay, (int, float)) and 0 <= weight_decay < math.inf):
        raise ValueError(f"weight_decay: expected a non-negative number, got {weight_decay!r}")
    if not isinstance(workers, (int, np.integer)) or workers < 0:
        raise ValueError(f"workers: expected a non-negative int, got {workers!r}")
    if len(train_set) == 0:
        raise ValueError("data: the training split holds no items")
    milestones = check_milestones(lr_milestones, lr_gamma, epochs)
    out = Path(out)
    device = ctx.device
    amp = bool(amp) and device.type == "cuda"

    ckpt = prepare_run(out, config, resume, ctx)
    # A process that reads other data, or resumes another checkpoint, would run other steps
    # than the rest, and a collective would wait for it forever: stop before writing anything.
    D.check_agree(
        {
            "n_train": len(train_set),
            "resume_step": None if ckpt is None else int(ckpt["step"]),
        },
        ctx,
        "data",
        "every process must read the same training items (and find the same last.pt in out)",
    )
    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
        if ckpt is None:
            # A fresh run in a folder an earlier run left without last.pt: its log would mix
            # with this one's, and its best.pt would stand while no epoch scores finitely.
            for name in ("log.jsonl", "best.pt", "metrics.json"):
                (out / name).unlink(missing_ok=True)
        # A process killed while writing a file of the run leaves its temporary (as large as a
        # checkpoint) behind; nothing else writes into a run folder while its run starts.
        for tmp in out.glob(".*.tmp"):
            if tmp.name.split(".")[1] in ("last", "best", "config", "metrics", "log"):
                tmp.unlink(missing_ok=True)
        write_json(config, out / "config.json")
    log_path = out / "log.jsonl"

    optimizer = torch.optim.Adam(model.parameters(), lr=float(lr), weight_decay=weight_decay)
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    gen = torch.Generator().manual_seed(derived_seed(seed, ctx.rank, 1))
    state = _State()
    # This process's sums over the batches of the epoch under way when the checkpoint was
    # written, so that a resumed epoch's training record covers the whole epoch.
    resumed_partial: dict | None = None
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        if amp and ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        state = _State(
            step=int(ckpt["step"]),
            epoch=int(ckpt["epoch"]),
            batch=int(ckpt.get("batch", 0)),
            best=dict(ckpt.get("best") or {}),
            wall_s=float(ckpt.get("wall_s", 0.0)),
        )
        rngs = ckpt.get("rng") or []
        if int(ckpt.get("world_size", 1)) == ctx.world_size and len(rngs) == ctx.world_size:
            restore_rng_state(rngs[ctx.rank], {"step": gen})
            partials = ckpt.get("partial") or []
            if state.batch and len(partials) == ctx.world_size:
                resumed_partial = partials[ctx.rank]
        else:
            warnings.warn(
                f"resume: the checkpoint was written by {ckpt.get('world_size', 1)} processes, "
                f"this run has {ctx.world_size}: the data order and random streams differ from "
                "an uninterrupted run",
                stacklevel=2,
            )
            gen.manual_seed(derived_seed(seed, ctx.rank, 1, state.step))

    train_model = D.wrap_model(model, ctx)
    sampler = D.ResumableSampler(train_set, ctx, shuffle=True, seed=seed, batch_size=batch_size)
    drop_last = sampler.num_samples >= batch_size
    loader_gen = torch.Generator()
    loader = DataLoader(
        train_set,
        batch_size=batch_size,
        collate_fn=collate,
        sampler=sampler,
        num_workers=int(workers),
        pin_memory=device.type == "cuda",
        drop_last=drop_last,
        generator=loader_gen,
        persistent_workers=False,
    )
    per_epoch = (
        sampler.num_samples // batch_size
        if drop_last
        else math.ceil(sampler.num_samples / batch_size)
    )
    start_time = time.perf_counter()
    last_metrics: dict = {}

    def elapsed() -> float:
        return state.wall_s + time.perf_counter() - start_time

    def save(path_names: tuple[str, ...], partial: dict | None = None) -> None:
        # Every rank's random states and sums of the epoch under way go into the checkpoint
        # (collective calls), rank 0 writes.
        rngs = D.all_gather_object(rng_state({"step": gen}), ctx)
        partials = D.all_gather_object(partial if state.batch else None, ctx)
        if not ctx.is_main:
            return
        payload = {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict() if amp else None,
            "step": state.step,
            "epoch": state.epoch,
            "batch": state.batch,
            "config": json.loads(json.dumps(config, default=_json_default)),
            "rng": rngs,
            "partial": partials,
            "best": _jsonable(state.best),
            "world_size": ctx.world_size,
            "wall_s": elapsed(),
        }
        for name in path_names:
            save_checkpoint(payload, out / name)

    def done() -> bool:
        return (max_steps is not None and state.step >= max_steps) or (
            epochs is not None and state.epoch >= epochs
        )

    while not done():
        epoch = state.epoch
        if on_epoch_start is not None:
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                on_epoch_start(epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr_at_epoch(lr, epoch, epochs, milestones, lr_gamma)
        sampler.set_epoch(epoch)
        sampler.set_start(state.batch)
        loader_gen.manual_seed(derived_seed(seed, ctx.rank, 2, epoch))
        train_model.train()
        sums: dict[str, float] = {}
        n_items = 0
        data_s = 0.0
        t_epoch = time.perf_counter()
        resumed_at_end = False  # the checkpoint came after the epoch's last batch
        if resumed_partial is not None:
            sums = dict(resumed_partial["sums"])
            n_items = int(resumed_partial["n"])
            data_s = float(resumed_partial["data_s"])
            t_epoch -= float(resumed_partial["wall_s"])
            resumed_at_end = state.batch >= per_epoch
            resumed_partial = None
        remaining = per_epoch - state.batch
        bar = tqdm(
            total=remaining,
            desc=f"{desc} epoch {epoch + 1}" + (f"/{epochs}" if epochs else ""),
            disable=not (progress and ctx.is_main),
            leave=False,
            dynamic_ncols=True,
        )
        t_wait = time.perf_counter()
        for batch in loader:
            data_s += time.perf_counter() - t_wait
            batch = _to_device(batch, device)
            with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=amp):
                loss, metrics = step_fn(train_model, batch, gen)
            if not amp and not torch.isfinite(loss.detach()):
                raise FloatingPointError(
                    f"loss: {float(loss.detach())} at step {state.step + 1} (epoch {epoch + 1}); "
                    "try a smaller lr"
                )
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            state.step += 1
            state.batch += 1
            b = int(batch["image"].shape[0])
            n_items += b
            metrics = {"loss": float(loss.detach()), **{k: float(v) for k, v in metrics.items()}}
            for k, v in metrics.items():
                sums[k] = sums.get(k, 0.0) + v * b
            bar.update(1)
            bar.set_postfix(loss=f"{metrics['loss']:.4f}", refresh=False)
            if checkpoint_every and state.step % checkpoint_every == 0:
                save(("last.pt",), _partial(sums, n_items, data_s, t_epoch))
            if max_steps is not None and state.step >= max_steps:
                break
            t_wait = time.perf_counter()
        bar.close()
        wall = time.perf_counter() - t_epoch
        completed = state.batch >= per_epoch
        partial = None if completed else _partial(sums, n_items, data_s, t_epoch)
        sums["_n"] = float(n_items)
        sums["_data_s"] = data_s
        sums["_wall_s"] = wall
        sums = D.all_reduce_sums(sums, ctx)
        n_total = max(sums.pop("_n"), 1.0)
        data_total = sums.pop("_data_s")
        wall_total = sums.pop("_wall_s")
        train_metrics = {k: v / n_total for k, v in sums.items()}
        record = {
            "epoch": epoch + 1,
            "step": state.step,
            "split": "train",
            **train_metrics,
            "lr": optimizer.param_groups[0]["lr"],
            "samples_per_s": n_total / max(wall_total / ctx.world_size, 1e-9),
            "data_wait_frac": data_total / max(wall_total, 1e-9),
            "time_s": elapsed(),
        }
        if ctx.is_main and not (resumed_at_end and _logged(log_path, record)):
            _append_log(log_path, record)
        last_metrics = {"train": train_metrics}
        val_metrics = None
        if evaluate_fn is not None and ctx.is_main:
            val_metrics = _evaluate(evaluate_fn, model, device)
            _append_log(
                log_path,
                {"epoch": epoch + 1, "step": state.step, "split": selection.split, **val_metrics},
            )
            last_metrics[selection.split] = val_metrics
        if completed:
            state.epoch += 1
            state.batch = 0
        scored = val_metrics if evaluate_fn is not None else train_metrics
        is_best = False
        if ctx.is_main:
            value = scored.get(selection.key) if scored else None
            if selection.better(value, state.best.get("value")):
                state.best = {
                    "epoch": epoch + 1,
                    "step": state.step,
                    "key": selection.key,
                    "split": selection.split if evaluate_fn is not None else "train",
                    "value": value,
                    "metrics": dict(scored),
                }
                is_best = True
            elif not state.best and not (out / "best.pt").exists():
                # No finite score yet (e.g. AUC undefined on a one-class split): keep a best.pt
                # anyway so that the run folder is complete; a finite score replaces it.
                is_best = True
                state.best = {
                    "epoch": epoch + 1,
                    "step": state.step,
                    "key": selection.key,
                    "split": selection.split,
                    "value": None,
                    "metrics": dict(scored or {}),
                }
        is_best = D.broadcast_object(is_best, ctx)
        state.best = D.broadcast_object(state.best, ctx)
        # "last": best.pt is written once, from the final last.pt (below), not every epoch.
        save(
            ("last.pt", "best.pt") if is_best and selection.mode != "last" else ("last.pt",),
            partial,
        )
        D.barrier(ctx)

    if selection.mode == "last" and last_metrics and ctx.is_main:
        tmp = out / f".best.pt.{os.getpid()}.tmp"
        shutil.copyfile(out / "last.pt", tmp)
        os.replace(tmp, out / "best.pt")

    if ckpt is not None and not last_metrics and ctx.is_main:
        # Resumed a finished run: nothing trained, still report the validation of the weights.
        if evaluate_fn is not None:
            last_metrics = {selection.split: _evaluate(evaluate_fn, model, device)}
    return {
        "step": state.step,
        "epoch": state.epoch,
        "epochs_run": state.epoch + state.batch / max(per_epoch, 1),
        "best": state.best,
        "last": last_metrics,
        "wall_s": elapsed(),
    }


def _evaluate(evaluate_fn, model, device) -> dict:
    # Validation must not move the global random streams: a resumed run skips the validation
    # an interrupted run did mid-epoch, and must still draw the same dropout masks afterwards.
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        return dict(evaluate_fn(model))


def _jsonable(obj):
    return json.loads(json.dumps(obj, default=_json_default, allow_nan=True))
