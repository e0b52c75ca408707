"""Self-supervised proxy tasks: each a batch builder, a loss and proxy metrics.

=============  ===========================================================================
``rubik``      Rubik's cube recovery: cube ordering + orientation (Zhuang et al., 2019)
``ordering``   the same without rotations (the paper's "cube ordering" baseline)
``jigsaw3d``   3x3x3 jigsaw puzzle with Hamming-selected permutations (TCPC baseline)
``cpc3d``      3D contrastive predictive coding along a straight path (TCPC baseline)
``tcpc``       task-related CPC: SLIC lesion candidates, U-shaped path (Zhu et al., 2020)
=============  ===========================================================================

Every task follows :class:`ProxyTask`; build one with :func:`get_task`.
"""

from __future__ import annotations

import importlib

from rubikkit.tasks.base import ProxyTask

TASKS = ("rubik", "ordering", "jigsaw3d", "cpc3d", "tcpc")

_CLASSES = {
    "rubik": ("rubikkit.tasks.rubik", "RubikTask"),
    "ordering": ("rubikkit.tasks.rubik", "OrderingTask"),
    "jigsaw3d": ("rubikkit.tasks.jigsaw3d", "Jigsaw3DTask"),
    "cpc3d": ("rubikkit.tasks.cpc3d", "CPC3DTask"),
    "tcpc": ("rubikkit.tasks.tcpc", "TCPCTask"),
}


def get_task(name: str, **options) -> ProxyTask:
    """Build a proxy task by name.

    Parameters
    ----------
    name : {"rubik", "ordering", "jigsaw3d", "cpc3d", "tcpc"}
    **options
        The task's options (see its class); ``get_task(**task.config())`` rebuilds a task.

    Returns
    -------
    ProxyTask
    """
    if name not in _CLASSES:
        raise ValueError(f"name: unknown proxy task {name!r}; expected one of {TASKS}")
    module, cls = _CLASSES[name]
    return getattr(importlib.import_module(module), cls)(**options)


__all__ = ["TASKS", "ProxyTask", "get_task"]
