"""Turning the ``rng`` arguments of rubikkit.ops into a numpy Generator."""

from __future__ import annotations

import numbers

import numpy as np


def as_generator(rng, name: str = "rng") -> np.random.Generator:
    """Accept None (fresh entropy), an int seed, a numpy Generator or a ``torch.Generator``.

    A torch generator (what a training step holds) is advanced by one draw that seeds a numpy
    generator, so sampling stays reproducible from the torch seed.
    """
    if rng is None:
        return np.random.default_rng()
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, numbers.Integral) and not isinstance(rng, bool):
        if rng < 0:
            raise ValueError(f"{name}: a seed must be >= 0, got {rng}")
        return np.random.default_rng(int(rng))
    if type(rng).__module__.startswith("torch") and type(rng).__name__ == "Generator":
        import torch

        seed = int(torch.randint(0, 2**62, (1,), generator=rng).item())
        return np.random.default_rng(seed)
    raise TypeError(
        f"{name}: expected None, an int seed, numpy.random.Generator or torch.Generator, "
        f"got {type(rng).__name__}"
    )
