"""3D VGG backbone (Simonyan & Zisserman, 2015), the backbone of both papers.

Zhuang et al. (MICCAI 2019, Sec. 3.2) and Zhu et al. (TCPC, Sec. 3.2.1) use a 3D VGG; TCPC ends it
in an adaptive average pooling layer so that pre-training cubes and fine-tuning volumes may differ
in size. Each stage here is ``[max-pool 2] + n x (conv 3x3x3, batch norm, ReLU)``; the first stage
does not pool, so stage ``i`` works at stride ``2**i`` and the U-Net can use stage 0 as its
full-resolution skip.
"""

from __future__ import annotations

import torch
from torch import nn

from rubikkit.models.backbone import (
    Backbone,
    DenseMaxPool3d,
    check_channels,
    check_int_tuple,
    set_dilation,
)

#: Convolutions per stage of VGG-11 (configuration "A"), the light VGG most 3D work uses.
VGG11_CONVS = (1, 1, 2, 2, 2)
VGG_WIDTHS = (64, 128, 256, 512, 512)


class VGG3D(Backbone):
    """3D VGG with batch norm and adaptive average pooling.

    Parameters
    ----------
    in_channels : int
        Input channels C (e.g. 4 for the BraTS modalities, concatenated as in Zhuang et al.,
        Sec. 3.1.2).
    widths : tuple of ints
        Output channels of each stage, shallow to deep.
    convs : tuple of ints, optional
        Convolutions per stage (same length as ``widths``). Default: VGG-11's ``(1, 1, 2, 2, 2)``
        truncated or extended (with 2) to ``len(widths)``.

    Notes
    -----
    Input ``(B, C, D, H, W)``; stage ``i`` outputs ``(B, widths[i], ~D/2**i, ~H/2**i, ~W/2**i)``.
    Pooling uses ``ceil_mode`` so any input size of at least one voxel works.
    """

    def __init__(self, in_channels: int = 1, widths=VGG_WIDTHS, convs=None):
        widths = check_int_tuple(widths, "widths")
        if convs is None:
            convs = tuple(VGG11_CONVS[i] if i < len(VGG11_CONVS) else 2 for i in range(len(widths)))
        convs = check_int_tuple(convs, "convs")
        if len(convs) != len(widths):
            raise ValueError(
                f"convs: expected {len(widths)} entries (one per stage of widths), got {len(convs)}"
            )
        check_channels(in_channels)
        super().__init__(
            {
                "name": "vgg3d",
                "in_channels": int(in_channels),
                "widths": list(widths),
                "convs": list(convs),
            }
        )
        stages = []
        c = int(in_channels)
        for i, (w, n) in enumerate(zip(widths, convs)):
            layers: list[nn.Module] = []
            if i > 0:
                layers.append(nn.MaxPool3d(2, stride=2, ceil_mode=True))
            for _ in range(n):
                layers += [
                    nn.Conv3d(c, w, 3, padding=1, bias=False),
                    nn.BatchNorm3d(w),
                    nn.ReLU(inplace=True),
                ]
                c = w
            stages.append(nn.Sequential(*layers))
        self.stages = nn.ModuleList(stages)
        self.stage_channels = tuple(widths)
        self.stage_strides = tuple(2**i for i in range(len(widths)))
        self.out_features = widths[-1]
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.reset_parameters()

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats

    def stage_modules(self) -> list[nn.Module]:
        return list(self.stages)

    def _dilate(self, output_stride: int) -> None:
        d = 1  # spacing, in voxels of the dense grid, of the undilated network's samples
        for stride, stage in zip(self.stage_strides[1:], self.stages[1:]):
            if stride <= output_stride:
                continue
            stage[0] = DenseMaxPool3d(d)  # each stage after the first opens with its pool
            d *= 2
            for m in stage:
                if isinstance(m, nn.Conv3d):
                    set_dilation(m, d)
