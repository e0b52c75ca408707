"""Learning-rate steps and the shape-dataset voxel scaling of the MedMNIST v2 recipe.

MedMNIST v2 (Yang et al., Sci. Data 2023, Sec. "Experiments") trains its 3D baselines with Adam
at 1e-3 for 100 epochs and multiplies the rate by 0.1 at 50 % and 75 % of the epochs
(:func:`lr_at_epoch`). For the shape datasets (AdrenalMNIST3D, VesselMNIST3D, whose voxels are
binary masks) it multiplies every training volume by one number drawn from U(0, 1) and every
evaluated volume by 0.5 (:func:`augment_batch` with ``"voxel_scale"``), so that the network cannot
rely on the constant foreground value.

Both are pure functions of the epoch or of the step's generator, so a resumed run reproduces them
without extra checkpoint state.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["AUGMENTS", "augment_batch", "check_augment", "check_milestones", "lr_at_epoch"]

#: Batch augmentations known to :func:`augment_batch`.
AUGMENTS = ("voxel_scale",)


def check_milestones(
    milestones: Sequence[float] | None, gamma: float, epochs: int | None
) -> tuple[float, ...]:
    """Validate ``lr_milestones`` (fractions of ``epochs`` in (0, 1), increasing) and ``lr_gamma``.

    Returns
    -------
    tuple of float
        The milestones (empty for None).

    Raises
    ------
    ValueError
        Naming ``lr_milestones`` or ``lr_gamma``.
    """
    if milestones is None:
        return ()
    if isinstance(milestones, (str, bytes)) or not isinstance(milestones, Sequence):
        raise ValueError(
            f"lr_milestones: expected a sequence of fractions of the epochs, got {milestones!r}"
        )
    ms = tuple(float(m) for m in milestones)
    if any(not 0.0 < m < 1.0 for m in ms) or any(b <= a for a, b in zip(ms, ms[1:])):
        raise ValueError(
            f"lr_milestones: expected increasing fractions in (0, 1), got {list(milestones)!r}"
        )
    if ms and epochs is None:
        raise ValueError("lr_milestones: fractions of the epochs need epochs to be given")
    if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not 0.0 < gamma <= 1.0:
        raise ValueError(f"lr_gamma: expected a number in (0, 1], got {gamma!r}")
    return ms


def lr_at_epoch(
    lr: float, epoch: int, epochs: int | None, milestones: Sequence[float], gamma: float = 0.1
) -> float:
    """The learning rate of (0-based) ``epoch``: ``lr * gamma**k``, k the milestones passed.

    A milestone ``m`` is passed from the first epoch ``>= m * epochs`` on. Where ``m * epochs`` is
    a whole number this is what ``torch.optim.lr_scheduler.MultiStepLR(milestones=[m * epochs,
    ...])`` stepped once per epoch does (MedMNIST v2: ``[0.5, 0.75]`` of 100 epochs, so epochs
    50-74 train at ``0.1 lr`` and 75-99 at ``0.01 lr``); MultiStepLR would skip a fractional
    milestone altogether, here it is rounded up.

    Examples
    --------
    >>> [lr_at_epoch(1.0, e, 4, (0.5, 0.75)) for e in range(4)]
    [1.0, 1.0, 0.1, 0.010000000000000002]
    """
    if not milestones:
        return float(lr)
    k = sum(1 for m in milestones if epoch >= m * epochs)
    return float(lr) * float(gamma) ** k


def check_augment(augment: str | None) -> str | None:
    """Validate an augmentation name (None: no augmentation)."""
    if augment is not None and augment not in AUGMENTS:
        raise ValueError(f"augment: expected None or one of {AUGMENTS}, got {augment!r}")
    return augment


def augment_batch(
    augment: str | None,
    images: torch.Tensor,
    *,
    training: bool,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Apply the batch augmentation ``augment`` to ``images`` (B, C, D, H, W).

    ``"voxel_scale"`` (MedMNIST v2 shape datasets): in training every volume is multiplied by
    its own factor drawn from U(0, 1) with ``generator`` (on the CPU, so the draws do not depend
    on the device); in evaluation every volume is multiplied by 0.5.

    Returns
    -------
    Tensor
        A new tensor (``images`` is not modified); ``images`` itself for ``augment=None``.
    """
    check_augment(augment)
    if augment is None:
        return images
    if images.ndim < 2:
        raise ValueError(f"images: expected a batch (B, C, ...), got shape {tuple(images.shape)}")
    if not training:
        return images * 0.5
    u = torch.rand(images.shape[0], generator=generator, dtype=torch.float32)
    u = u.to(device=images.device, dtype=images.dtype)
    return images * u.view(-1, *([1] * (images.ndim - 1)))
