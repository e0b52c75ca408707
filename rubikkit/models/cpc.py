"""Contrastive predictive coding in 3D (van den Oord et al., 2018; TCPC, Sec. 2.2).

A backbone encodes every cube to ``z = f(x)`` (TCPC Eq. 2); a GRU reads the support features
along the support path (straight for 3D CPC, U-shaped for TCPC, Fig. 2) and a linear prediction
head maps its last state to ``z_hat``, the predicted feature of the target cube (Eq. 1). The
InfoNCE loss (Eq. 3) scores ``z_hat`` against the true target feature and the other targets of
the mini-batch, the negatives.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def info_nce(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """InfoNCE with in-batch negatives (TCPC Eq. 3).

    Parameters
    ----------
    pred : (N, F) tensor
        Predicted target features ``z_hat``.
    target : (N, F) tensor
        True target features ``z``; row ``i`` is the positive of ``pred[i]`` and every other row
        a negative.

    Returns
    -------
    loss : scalar tensor
        ``mean_i -log( exp(z_hat_i . z_i) / sum_j exp(z_hat_i . z_j) )``.
    logits : (N, N) tensor
        The scores ``z_hat_i . z_j``; ``logits.argmax(1) == arange(N)`` marks a correct pick.
    """
    if pred.ndim != 2 or pred.shape != target.shape:
        raise ValueError(
            f"pred: expected (N, F) like target, got {tuple(pred.shape)} and {tuple(target.shape)}"
        )
    logits = pred @ target.t()
    labels = torch.arange(len(pred), device=pred.device)
    return F.cross_entropy(logits.float(), labels), logits


class CPCModel(nn.Module):
    """Backbone encoder, GRU context network and prediction head.

    Parameters
    ----------
    backbone : Backbone
        Cube encoder ``f``, kept as ``.backbone``.
    hidden : int
        GRU state size.

    Notes
    -----
    ``forward(support (B, S, C, d, h, w), target (B, C, d, h, w))`` returns
    ``{"pred": (B, F), "target": (B, F)}`` with ``F = backbone.out_features``: the prediction from
    the S support cubes read in path order, and the target cube's feature. The backbone runs once
    over all ``B * (S + 1)`` cubes.
    """

    def __init__(self, backbone: nn.Module, hidden: int = 256):
        super().__init__()
        if isinstance(hidden, bool) or not isinstance(hidden, int) or hidden < 1:
            raise ValueError(f"hidden: expected an int >= 1, got {hidden!r}")
        self.backbone = backbone
        feat = backbone.out_features
        self.gru = nn.GRU(feat, hidden, batch_first=True)
        self.predict = nn.Linear(hidden, feat)

    def forward(self, support: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        if support.ndim != 6:
            raise ValueError(
                f"support: expected (B, S, C, d, h, w), got shape {tuple(support.shape)}"
            )
        if target.ndim != 5 or target.shape[0] != support.shape[0]:
            raise ValueError(
                f"target: expected (B, C, d, h, w) with B = {support.shape[0]}, "
                f"got shape {tuple(target.shape)}"
            )
        B, S = support.shape[:2]
        cubes = torch.cat([support.flatten(0, 1), target], dim=0)
        z = self.backbone(cubes)
        z_support = z[: B * S].view(B, S, -1)
        _, h = self.gru(z_support)  # h: (1, B, hidden), the context after the whole path
        return {"pred": self.predict(h[-1]), "target": z[B * S :]}
