"""3D dense upsampling convolution (DUC; Wang et al., WACV 2018), Zhuang et al. Sec. 2.2.

Instead of a random decoder of transposed convolutions, convolutions on the encoder's deepest
feature map (stride r) predict ``r**3 * n_classes`` channels per position, and a 3D pixel shuffle
rearranges them into a full-resolution ``n_classes`` map. Few trainable parameters sit on top of
the pre-trained encoder, which is why it transfers better than a U-Net decoder (Table 2).

r is the encoder's total stride: 16 for a 5-stage 3D VGG, so a 32^3 volume leaves a 2^3 grid
whose every cell paints a 16^3 block. Wang et al. run their encoder at output stride 8 with
dilated convolutions; :meth:`rubikkit.models.Backbone.dilate_` does that to any backbone
(``build_backbone(..., output_stride=4)``, or ``finetune(..., output_stride=4)`` for a
pre-trained one) without changing its weights, and the DUC then works at that stride.
"""

from __future__ import annotations

import torch
from torch import nn

from rubikkit.models.unet import check_n_classes, pad_to_multiple


def pixel_shuffle_3d(x: torch.Tensor, r: int) -> torch.Tensor:
    """Rearrange ``(B, C * r**3, D, H, W)`` into ``(B, C, D * r, H * r, W * r)``.

    Channel ``c * r**3 + (i * r + j) * r + k`` of voxel ``(d, h, w)`` moves to voxel
    ``(d * r + i, h * r + j, w * r + k)`` of channel ``c`` (the 3D analogue of
    :func:`torch.nn.functional.pixel_shuffle`).
    """
    if isinstance(r, bool) or not isinstance(r, int) or r < 1:
        raise ValueError(f"r: expected an int >= 1, got {r!r}")
    if x.ndim != 5:
        raise ValueError(f"x: expected (B, C * r**3, D, H, W), got shape {tuple(x.shape)}")
    B, Cr, D, H, W = x.shape
    if Cr % r**3:
        raise ValueError(f"x: {Cr} channels are not a multiple of r**3 = {r**3}")
    C = Cr // r**3
    y = x.reshape(B, C, r, r, r, D, H, W).permute(0, 1, 5, 2, 6, 3, 7, 4)
    return y.reshape(B, C, D * r, H * r, W * r)


class DUC3D(nn.Module):
    """Segmentation by dense upsampling convolution on a backbone's deepest feature map.

    Parameters
    ----------
    backbone : Backbone
        Encoder, kept as ``.backbone``.
    n_classes : int
        Output channels (class logits).
    hidden : int
        Channels of the 3x3x3 conv-BN-ReLU before the 1x1x1 convolution that predicts the
        ``r**3 * n_classes`` channels (keeps the parameter count small when r is 16 or 32).

    Notes
    -----
    ``forward(x (B, C, D, H, W)) -> (B, n_classes, D, H, W)`` for any D, H, W: the input is
    zero-padded to a multiple of ``r = backbone.total_stride`` and the output cropped back.
    """

    def __init__(self, backbone: nn.Module, n_classes: int, hidden: int = 64):
        super().__init__()
        check_n_classes(n_classes)
        if isinstance(hidden, bool) or not isinstance(hidden, int) or hidden < 1:
            raise ValueError(f"hidden: expected an int >= 1, got {hidden!r}")
        self.backbone = backbone
        self.r = int(backbone.total_stride)
        self.n_classes = n_classes
        self.head = nn.Sequential(
            nn.Conv3d(backbone.out_features, hidden, 3, padding=1, bias=False),
            nn.BatchNorm3d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv3d(hidden, self.r**3 * n_classes, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, (D, H, W) = pad_to_multiple(x, self.r)
        y = self.head(self.backbone.forward_features(x)[-1])
        return pixel_shuffle_3d(y, self.r)[:, :, :D, :H, :W]
