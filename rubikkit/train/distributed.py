"""Multi-process training under ``torchrun``: process group, devices, samplers, rank-0 output.

``torchrun --nproc_per_node=N -m rubikkit pretrain ...`` starts N copies of the command with the
environment variables ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE`` set. :func:`setup` reads them,
joins the process group (NCCL on GPUs, Gloo on CPUs) and gives every process its own GPU
(``LOCAL_RANK``); the model is wrapped in :class:`~torch.nn.parallel.DistributedDataParallel`
(gradients averaged over processes in every backward pass) and each process reads a disjoint
shard of the data through :class:`ResumableSampler`, a :class:`DistributedSampler` that can start
part-way through an epoch. Only rank 0 writes files, logs and progress bars. Without those
variables everything runs as a single process (world size 1) through the same code.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler

__all__ = [
    "Context",
    "ResumableSampler",
    "all_gather_object",
    "all_reduce_sums",
    "barrier",
    "broadcast_object",
    "check_agree",
    "cleanup",
    "resolve_device",
    "setup",
    "unwrap",
    "wrap_model",
]

#: How long a process waits in a collective before the run fails (validation on rank 0 included).
COLLECTIVE_TIMEOUT = timedelta(minutes=60)


@dataclass(frozen=True)
class Context:
    """Where this process stands: ``rank`` of ``world_size`` processes, on ``device``."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    initialised_here: bool = False

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that writes files and logs."""
        return self.rank == 0


def resolve_device(device: str | torch.device = "auto", local_rank: int = 0) -> torch.device:
    """``"auto"``: CUDA when available, else CPU; ``"cuda"`` picks GPU ``local_rank``.

    Raises
    ------
    ValueError
        ``device`` is not one of auto, cpu, cuda (or cuda:N), or CUDA was asked for but is absent.
    """
    name = str(device).lower()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ValueError(f"device: {device!r} asked for, but CUDA is not available here")
        if name == "cuda":
            return torch.device("cuda", local_rank % max(1, torch.cuda.device_count()))
        return torch.device(name)
    raise ValueError(f"device: expected 'auto', 'cpu' or 'cuda', got {device!r}")


def setup(device: str | torch.device = "auto") -> Context:
    """Join the ``torchrun`` process group when ``WORLD_SIZE`` > 1; pick this process's device.

    Parameters
    ----------
    device : {"auto", "cpu", "cuda"}

    On CUDA it turns on ``torch.backends.cudnn.benchmark``. Collectives time out after
    :data:`COLLECTIVE_TIMEOUT` (NCCL's own default is 10 minutes): validation runs on rank 0
    while the other ranks wait for its result, and on a large split it may take longer.

    Returns
    -------
    Context
        ``initialised_here`` tells :func:`cleanup` to destroy the group afterwards.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local)
    if dev.type == "cuda":
        # Every batch of a run has one shape: let cuDNN time its algorithms once and keep the
        # fastest (GPU runs are not bit-reproducible in any case).
        torch.backends.cudnn.benchmark = True
    if world <= 1:
        return Context(0, 1, 0, dev, False)
    here = False
    if not dist.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group(
            backend="nccl" if dev.type == "cuda" else "gloo", timeout=COLLECTIVE_TIMEOUT
        )
        here = True
    return Context(dist.get_rank(), dist.get_world_size(), local, dev, here)


def cleanup(ctx: Context) -> None:
    """Leave the process group if :func:`setup` joined it."""
    if ctx.initialised_here and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: Context) -> None:
    """Wait for every process (no-op for one process)."""
    if ctx.distributed:
        if ctx.device.type == "cuda":
            dist.barrier(device_ids=[ctx.device.index])
        else:
            dist.barrier()


def wrap_model(model: torch.nn.Module, ctx: Context) -> torch.nn.Module:
    """The model to train: itself for one process, else a DistributedDataParallel wrapper.

    ``find_unused_parameters`` is on because proxy models may leave a head unused in a step
    (e.g. a rotation head in the ordering-only baseline).
    """
    if not ctx.distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids, find_unused_parameters=True)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside a DistributedDataParallel wrapper (or the model itself)."""
    return getattr(model, "module", model)


def all_reduce_sums(values: dict[str, float], ctx: Context) -> dict[str, float]:
    """Sum every entry of ``values`` over processes (same keys on every rank)."""
    if not ctx.distributed or not values:
        return dict(values)
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
    if ctx.device.type == "cuda":
        t = t.to(ctx.device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return {k: float(v) for k, v in zip(keys, t.cpu().tolist())}


def all_gather_object(obj, ctx: Context) -> list:
    """``[obj of rank 0, obj of rank 1, ...]`` on every process."""
    if not ctx.distributed:
        return [obj]
    out = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj, ctx: Context):
    """Rank 0's ``obj`` on every process."""
    if not ctx.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0, device=ctx.device if ctx.device.type == "cuda" else None)
    return box[0]


def check_agree(values: dict, ctx: Context, name: str, hint: str) -> None:
    """Raise ValueError on every process unless all of them hold the same ``values``.

    Processes that disagree on, e.g., the number of training items run different numbers of
    steps, and the first collective one of them reaches early waits for the others forever.
    The message starts with ``name`` (the argument at fault) and ends with ``hint``.
    """
    views = all_gather_object(dict(values), ctx)
    if any(v != views[0] for v in views):
        seen = "; ".join(
            f"rank {r}: " + ", ".join(f"{k}={v[k]!r}" for k in sorted(v))
            for r, v in enumerate(views)
        )
        raise ValueError(f"{name}: the {len(views)} processes disagree ({seen}); {hint}")


class ResumableSampler(DistributedSampler):
    """A DistributedSampler whose epoch order depends only on ``(seed, epoch)`` and which can
    start at a given batch, so a resumed run reads exactly the batches an uninterrupted run would.

    Parameters
    ----------
    dataset : Dataset
    ctx : Context
        Gives the shard (``rank`` of ``world_size``).
    shuffle : bool
    seed : int
    batch_size : int
        Used by :meth:`set_start` to turn batches into items.
    """

    def __init__(self, dataset, ctx: Context, *, shuffle: bool, seed: int, batch_size: int):
        super().__init__(
            dataset,
            num_replicas=ctx.world_size,
            rank=ctx.rank,
            shuffle=shuffle,
            seed=seed,
            drop_last=False,
        )
        self.batch_size = int(batch_size)
        self.start = 0

    def set_start(self, batches: int) -> None:
        """Skip the first ``batches`` batches of this process's shard in the next epoch read."""
        self.start = int(batches) * self.batch_size

    def __iter__(self):
        indices = list(super().__iter__())
        return iter(indices[self.start :])

    def __len__(self) -> int:
        return max(0, self.num_samples - self.start)
