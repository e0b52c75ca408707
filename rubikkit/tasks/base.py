"""The proxy-task interface shared by the training loop and every task.

A proxy task turns a batch of raw volumes into a self-supervised problem *where training runs*:
the DataLoader only supplies volumes, and :meth:`ProxyTask.step` cuts the cubes on the volumes'
device (on a GPU the puzzle op runs as the CUDA kernel inside the step), runs the model and returns
the loss and the proxy metrics. All randomness comes from the ``torch.Generator`` handed to
:meth:`~ProxyTask.step`, so a run is reproducible from its seed.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch
from torch import nn


def check_int(value, name: str, low: int = 1) -> int:
    """An int >= ``low`` or ValueError/TypeError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__}")
    if value < low:
        raise ValueError(f"{name}: must be >= {low}, got {value}")
    return int(value)


def check_weight(value, name: str) -> float:
    """A finite float >= 0 (a loss weight) or ValueError/TypeError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a number, got {type(value).__name__}")
    if not (math.isfinite(float(value)) and float(value) >= 0):  # NaN would make the loss NaN
        raise ValueError(f"{name}: loss weights must be finite and >= 0, got {value}")
    return float(value)


def check_fraction(value, name: str, low: float = 0.0, high: float = 1.0) -> float:
    """A float in ``[low, high)`` or ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a number, got {type(value).__name__}")
    if not low <= float(value) < high:
        raise ValueError(f"{name}: expected a value in [{low}, {high}), got {value}")
    return float(value)


def check_volumes(volumes, min_shape) -> None:
    """Volumes are a floating (B, C, D, H, W) tensor at least ``min_shape`` in (D, H, W)."""
    if not isinstance(volumes, torch.Tensor):
        raise TypeError(f"volumes: expected a torch tensor, got {type(volumes).__name__}")
    if volumes.ndim != 5:
        raise ValueError(f"volumes: expected (B, C, D, H, W), got shape {tuple(volumes.shape)}")
    if not volumes.is_floating_point():
        raise TypeError(f"volumes: expected a floating dtype, got {volumes.dtype}")
    dhw = tuple(int(s) for s in volumes.shape[2:])
    if any(s < m for s, m in zip(dhw, min_shape)):
        raise ValueError(
            f"volumes: (D, H, W) = {dhw} is smaller than this task needs, {tuple(min_shape)}"
        )


def numpy_rng(generator) -> np.random.Generator:
    """A numpy Generator seeded by one draw of ``generator`` (torch.Generator, int or None)."""
    if generator is None or isinstance(generator, torch.Generator):
        seed = int(torch.randint(0, 2**62, (1,), generator=generator).item())
        return np.random.default_rng(seed)
    if isinstance(generator, np.random.Generator):
        return generator
    if isinstance(generator, numbers.Integral) and not isinstance(generator, bool):
        if generator < 0:  # numpy's own message ("expected non-negative integer") names nothing
            raise ValueError(f"generator: a seed must be >= 0, got {generator}")
        return np.random.default_rng(int(generator))
    raise TypeError(f"generator: expected a torch.Generator, got {type(generator).__name__}")


class ProxyTask:
    """Base class: a batch builder, a loss and proxy metrics.

    Subclasses set :attr:`name`, store their options in ``self.options`` (JSON-serialisable) and
    implement :meth:`build_model`, :meth:`step` and :attr:`min_volume_shape`.
    """

    name: str = "base"

    def __init__(self, **options):
        self.options = dict(options)

    def config(self) -> dict:
        """JSON-serialisable options, ``{"name": ..., **options}``; ``get_task(**config)`` rebuilds
        the task."""
        return {"name": self.name, **self.options}

    def prepare(self, dataset) -> None:
        """One-time per-dataset precomputation before training (no-op by default)."""

    def build_model(self, backbone: nn.Module) -> nn.Module:  # pragma: no cover
        """The proxy model, holding ``backbone`` as ``.backbone``."""
        raise NotImplementedError

    def step(self, model: nn.Module, volumes: torch.Tensor, generator, index=None):
        """Build one batch of the proxy task on ``volumes.device``, run ``model``, score it.

        Parameters
        ----------
        model : nn.Module
            From :meth:`build_model` (possibly wrapped in DistributedDataParallel); its
            ``training`` flag selects training behaviour (e.g. cube jitter).
        volumes : (B, C, D, H, W) float tensor
            Raw volumes, already on the training device.
        generator : torch.Generator
            CPU generator driving all sampling.
        index : (B,) int tensor or array, optional
            Dataset indices of the volumes (used by tasks with per-volume caches).

        Returns
        -------
        loss : scalar tensor
        metrics : dict of str to float
            Batch means, including ``"loss"``.
        """
        raise NotImplementedError  # pragma: no cover

    @property
    def min_volume_shape(self) -> tuple[int, int, int]:  # pragma: no cover
        """Smallest (D, H, W) this task accepts with its options."""
        raise NotImplementedError

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        return f"{type(self).__name__}({opts})"
