"""3D CNNs and the heads of pre-training and fine-tuning.

Axis order is (C, D, H, W); a batch adds a leading B.

* Backbones (:func:`build_backbone`): 3D VGG (:class:`VGG3D`) and 3D ResNet-10/18/34
  (:class:`ResNet3D`), ending in adaptive average pooling (TCPC, Sec. 3.2.1).
* Pre-training: :class:`SiameseOctad` (Rubik's cube, jigsaw), :class:`CPCModel` (3D CPC, TCPC).
* Fine-tuning: :class:`Classifier`, :class:`UNet3D`, :class:`DUC3D`.
* :func:`load_backbone_state` transfers weights strictly: all tensors or a ValueError.
* :func:`weight_reach`: the share of a backbone's convolution weights an input size can reach.
* :func:`stage_activity`: how many channels of each stage some volumes switch on, and how strongly.

Every model built on a backbone keeps it as ``.backbone``, so its weights are the model's
state-dict entries under ``"backbone."``.
"""

from __future__ import annotations

from rubikkit.models.backbone import (
    BACKBONES,
    Backbone,
    backbone_state_from,
    build_backbone,
    load_backbone_state,
    stage_activity,
    weight_reach,
)
from rubikkit.models.cpc import CPCModel, info_nce
from rubikkit.models.duc import DUC3D, pixel_shuffle_3d
from rubikkit.models.heads import Classifier
from rubikkit.models.resnet import ResNet3D
from rubikkit.models.siamese import SiameseOctad
from rubikkit.models.unet import UNet3D
from rubikkit.models.vgg import VGG3D

__all__ = [
    "BACKBONES",
    "DUC3D",
    "VGG3D",
    "Backbone",
    "CPCModel",
    "Classifier",
    "ResNet3D",
    "SiameseOctad",
    "UNet3D",
    "backbone_state_from",
    "build_backbone",
    "info_nce",
    "load_backbone_state",
    "pixel_shuffle_3d",
    "stage_activity",
    "weight_reach",
]
