"""3D U-Net whose encoder is a (pre-trained) backbone and whose decoder starts random.

Zhuang et al. (Sec. 2.2) transfer the pre-trained weights to the encoder of a U-Net
(Ronneberger et al., 2015); the decoder is randomly initialised. The decoder walks the backbone's
stages from deep to shallow: a 2x transposed convolution (or a larger one when a stage jumps more),
concatenation with the skip, two 3x3x3 conv-BN-ReLU; when the shallowest stage is not at full
resolution (ResNet's stem has stride 2) a last transposed convolution brings it there.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def conv_block(c_in: int, c_out: int) -> nn.Sequential:
    """Two 3x3x3 convolutions with batch norm and ReLU."""
    return nn.Sequential(
        nn.Conv3d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm3d(c_out),
        nn.ReLU(inplace=True),
        nn.Conv3d(c_out, c_out, 3, padding=1, bias=False),
        nn.BatchNorm3d(c_out),
        nn.ReLU(inplace=True),
    )


def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """Zero-pad the end of D, H, W to a multiple of ``multiple``; returns the padded tensor and the
    original (D, H, W) to crop back to."""
    if x.ndim != 5:
        raise ValueError(f"x: expected (B, C, D, H, W), got shape {tuple(x.shape)}")
    dhw = tuple(int(s) for s in x.shape[2:])
    pad = [(-s) % multiple for s in dhw]
    if any(pad):
        x = F.pad(x, (0, pad[2], 0, pad[1], 0, pad[0]))
    return x, dhw


def check_n_classes(n_classes) -> None:
    if isinstance(n_classes, bool) or not isinstance(n_classes, int) or n_classes < 1:
        raise ValueError(f"n_classes: expected an int >= 1, got {n_classes!r}")


class UNet3D(nn.Module):
    """U-Net with a backbone encoder.

    Parameters
    ----------
    backbone : Backbone
        Encoder, kept as ``.backbone`` (its stages give the skips).
    n_classes : int
        Output channels (class logits).

    Notes
    -----
    ``forward(x (B, C, D, H, W)) -> (B, n_classes, D, H, W)`` for any D, H, W: the input is
    zero-padded at the end of each axis to a multiple of the backbone's total stride, so every
    upsampling meets its skip exactly, and the output is cropped back.
    """

    def __init__(self, backbone: nn.Module, n_classes: int):
        super().__init__()
        check_n_classes(n_classes)
        self.backbone = backbone
        chans = list(backbone.stage_channels)
        strides = list(backbone.stage_strides)
        ups, blocks = [], []
        c = chans[-1]
        for i in range(len(chans) - 2, -1, -1):
            f = strides[i + 1] // strides[i]
            ups.append(nn.ConvTranspose3d(c, chans[i], f, stride=f))
            blocks.append(conv_block(2 * chans[i], chans[i]))
            c = chans[i]
        self.ups = nn.ModuleList(ups)
        self.blocks = nn.ModuleList(blocks)
        self.final_up = None
        if strides[0] > 1:
            self.final_up = nn.Sequential(
                nn.ConvTranspose3d(c, c, strides[0], stride=strides[0]), conv_block(c, c)
            )
        self.out = nn.Conv3d(c, n_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, (D, H, W) = pad_to_multiple(x, self.backbone.total_stride)
        feats = self.backbone.forward_features(x)
        y = feats[-1]
        for up, block, skip in zip(self.ups, self.blocks, reversed(feats[:-1])):
            y = block(torch.cat([up(y), skip], dim=1))
        if self.final_up is not None:
            y = self.final_up(y)
        return self.out(y)[:, :, :D, :H, :W]
