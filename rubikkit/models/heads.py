"""Classification head for fine-tuning (Zhuang et al., Sec. 2.2; TCPC, Sec. 2.3)."""

from __future__ import annotations

import torch
from torch import nn


class Classifier(nn.Module):
    """A backbone, dropout and one linear layer.

    Parameters
    ----------
    backbone : Backbone
        Kept as ``.backbone``.
    n_classes : int
        Number of classes (>= 1).
    dropout : float
        Dropout probability before the linear layer, in [0, 1).

    Notes
    -----
    ``forward(x (B, C, D, H, W)) -> (B, n_classes)`` logits; any D, H, W (adaptive pooling).
    """

    def __init__(self, backbone: nn.Module, n_classes: int, dropout: float = 0.0):
        super().__init__()
        if isinstance(n_classes, bool) or not isinstance(n_classes, int) or n_classes < 1:
            raise ValueError(f"n_classes: expected an int >= 1, got {n_classes!r}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout: expected a probability in [0, 1), got {dropout!r}")
        self.backbone = backbone
        self.dropout = nn.Dropout(float(dropout))
        self.fc = nn.Linear(backbone.out_features, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(self.backbone(x)))
