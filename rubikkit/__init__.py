"""rubikkit: self-supervised learning on 3D medical images, for learning and for research.

Axis order everywhere is (C, D, H, W): channel, depth (the slice axis), height, width; a batch adds a
leading B. Two papers are implemented:

* Zhuang et al., "Self-supervised Feature Learning for 3D Medical Images by Playing a Rubik's Cube",
  MICCAI 2019 (``rubikkit.ops``, ``rubikkit.tasks.rubik``).
* Zhou et al. (first author Zhu), TCPC, "Embedding Task Knowledge into 3D Neural Networks via
  Self-supervised Learning", arXiv 2020 (``rubikkit.slic``, ``rubikkit.tasks.tcpc``).
"""

from __future__ import annotations

__version__ = "0.1.0"


class RubikkitWarning(UserWarning):
    """Warnings issued by rubikkit (e.g. a missing compiled extension and the fallback used)."""


def show_config(file=None) -> None:
    """Print versions, compiled extensions, threads and devices (what ``rubikkit info`` prints)."""
    from rubikkit._info import info_text

    print(info_text(), file=file)


__all__ = ["RubikkitWarning", "__version__", "show_config"]
