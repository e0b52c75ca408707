"""3D ResNet-10/18/34 with basic blocks (He et al., CVPR 2016), the TCPC backbone (Sec. 3.2.1).

The default stem (``stem="imagenet"``) is a 7x7x7 convolution with stride 2 followed by a 3x3x3
max-pool with stride 2, as in the 2D ResNet and the common 3D ports; then four stages of basic
blocks with strides 1, 2, 2, 2. The stem is stage 0 (stride 2), so the stages work at strides 2, 4,
8, 16, 32. For small inputs such as 28^3 MedMNIST volumes that stem throws away most of the
resolution at once; ``stem="small"`` is a 3x3x3 convolution with stride 1 and no max-pool, the stem
of small-image ResNets, so the stages work at strides 1, 1, 2, 4, 8.
"""

from __future__ import annotations

import torch
from torch import nn

from rubikkit.models.backbone import Backbone, check_channels, check_int_tuple, set_dilation

#: Basic blocks per stage.
RESNET_LAYERS = {10: (1, 1, 1, 1), 18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}
RESNET_WIDTHS = (64, 128, 256, 512)
STEMS = ("imagenet", "small")


class BasicBlock3D(nn.Module):
    """Two 3x3x3 convolutions with batch norm and an identity (or 1x1x1 projection) shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv3d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm3d(c_out)
        self.conv2 = nn.Conv3d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm3d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = None
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv3d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm3d(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = x if self.shortcut is None else self.shortcut(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return self.relu(y + skip)


class ResNet3D(Backbone):
    """3D ResNet with basic blocks and adaptive average pooling.

    Parameters
    ----------
    depth : {10, 18, 34}
        Blocks per stage ``(1, 1, 1, 1)``, ``(2, 2, 2, 2)`` or ``(3, 4, 6, 3)``.
    in_channels : int
        Input channels C.
    widths : tuple of 4 ints
        Channels of the four residual stages; the stem has ``widths[0]``.
    stem : {"imagenet", "small"}
        7x7x7 stride-2 convolution + max-pool, or a 3x3x3 stride-1 convolution without pooling
        (small inputs, e.g. 28^3).

    Notes
    -----
    Input ``(B, C, D, H, W)``; :meth:`forward_features` returns five maps (stem and four stages)
    at strides 2, 4, 8, 16, 32 (``stem="small"``: 1, 1, 2, 4, 8).
    """

    def __init__(
        self, depth: int = 18, in_channels: int = 1, widths=RESNET_WIDTHS, stem: str = "imagenet"
    ):
        if depth not in RESNET_LAYERS:
            raise ValueError(f"depth: expected one of {sorted(RESNET_LAYERS)}, got {depth!r}")
        if stem not in STEMS:
            raise ValueError(f"stem: expected one of {STEMS}, got {stem!r}")
        widths = check_int_tuple(widths, "widths")
        if len(widths) != 4:
            raise ValueError(f"widths: expected 4 stage widths, got {len(widths)}")
        check_channels(in_channels)
        config = {"name": f"resnet{depth}", "in_channels": int(in_channels), "widths": list(widths)}
        if stem != "imagenet":  # configs of the default stay as they were
            config["stem"] = stem
        super().__init__(config)
        w0 = widths[0]
        small = stem == "small"
        self.stem = nn.Sequential(
            nn.Conv3d(in_channels, w0, 3 if small else 7, stride=1 if small else 2,
                      padding=1 if small else 3, bias=False),
            nn.BatchNorm3d(w0),
            nn.ReLU(inplace=True),
        )  # fmt: skip
        self.maxpool = nn.Identity() if small else nn.MaxPool3d(3, stride=2, padding=1)
        layers = []
        c = w0
        for i, (w, n) in enumerate(zip(widths, RESNET_LAYERS[depth])):
            blocks = [BasicBlock3D(c, w, stride=1 if i == 0 else 2)]
            blocks += [BasicBlock3D(w, w) for _ in range(n - 1)]
            layers.append(nn.Sequential(*blocks))
            c = w
        self.layers = nn.ModuleList(layers)
        self.stage_channels = (w0, *widths)
        self.stage_strides = (1, 1, 2, 4, 8) if small else (2, 4, 8, 16, 32)
        self.min_output_stride = self.stage_strides[1]  # the stem and its pool keep their strides
        self.out_features = widths[-1]
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.reset_parameters()

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        feats = [x]
        x = self.maxpool(x)
        for layer in self.layers:
            x = layer(x)
            feats.append(x)
        return feats

    def stage_modules(self) -> list[nn.Module]:
        return [self.stem, *self.layers]  # the max-pool after the stem holds nothing

    def _dilate(self, output_stride: int) -> None:
        d = 1  # spacing, in voxels of the dense grid, of the undilated network's samples
        for stride, layer in zip(self.stage_strides[1:], self.layers):
            if stride <= output_stride:
                continue
            first = layer[0]  # a stage that downsamples does so in its first block
            set_dilation(first.conv1, d)
            if first.shortcut is not None:
                set_dilation(first.shortcut[0], d)
            d *= 2
            set_dilation(first.conv2, d)
            for block in layer[1:]:
                set_dilation(block.conv1, d)
                set_dilation(block.conv2, d)
