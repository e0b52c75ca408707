"""Backbones: the shared interface, the factory and the strict weight transfer.

A backbone maps ``(B, C, D, H, W)`` volumes to ``(B, out_features)`` vectors through an adaptive
average pooling layer (TCPC, Sec. 3.2.1: pre-training cubes and fine-tuning volumes differ in size),
and exposes the feature map of every stage for the segmentation heads.

Transferring pre-trained weights either loads every backbone tensor or raises: public code has
silently trained from scratch after a failed load (:func:`load_backbone_state`).
"""

from __future__ import annotations

import copy
import numbers
from collections.abc import Mapping

import torch
from torch import nn

BACKBONES = ("vgg3d", "resnet10", "resnet18", "resnet34")


def check_int_tuple(value, name: str) -> tuple[int, ...]:
    """A non-empty tuple of positive ints, or ValueError naming ``name``."""
    try:
        out = tuple(value)
    except TypeError:
        raise TypeError(
            f"{name}: expected a sequence of ints, got {type(value).__name__}"
        ) from None
    if not out or any(
        isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1 for v in out
    ):
        raise ValueError(f"{name}: expected a non-empty sequence of positive ints, got {value!r}")
    return tuple(int(v) for v in out)


def check_channels(in_channels) -> None:
    if isinstance(in_channels, bool) or not isinstance(in_channels, numbers.Integral):
        raise TypeError(f"in_channels: expected an int, got {type(in_channels).__name__}")
    if in_channels < 1:
        raise ValueError(f"in_channels: must be >= 1, got {in_channels}")


class Backbone(nn.Module):
    """Base class of the 3D backbones.

    Attributes
    ----------
    out_features : int
        Channels of the deepest feature map, the size of the pooled vector.
    stage_channels : tuple of ints
        Channels of each stage's output, shallow to deep.
    stage_strides : tuple of ints
        Downsampling factor of each stage's output relative to the input.
    config : dict
        ``{"name": ..., "in_channels": ..., **options}``, JSON-serialisable;
        ``build_backbone(**config)`` rebuilds the same architecture.
    """

    out_features: int
    stage_channels: tuple[int, ...]
    stage_strides: tuple[int, ...]

    def __init__(self, config: dict):
        super().__init__()
        self.config = dict(config)

    @property
    def total_stride(self) -> int:
        """Stride of the deepest feature map (inputs padded to a multiple of it tile exactly)."""
        return self.stage_strides[-1]

    #: The smallest output stride :meth:`dilate_` can give (strides before the first dilatable
    #: stage stay).
    min_output_stride: int = 1

    def dilate_(self, output_stride: int) -> Backbone:
        """Trade the downsamplings below ``output_stride`` for dilated convolutions, in place.

        The *a trous* trick of dense prediction (DeepLab; Wang et al.'s DUC, WACV 2018, runs its
        ResNet at output stride 8): a stage that would halve the resolution keeps it, and every
        convolution after it spreads its taps by the factor it no longer downsamples by, so the
        same weights (a pre-trained encoder's) see the same neighbourhoods on a denser grid. In
        eval mode the deepest map sampled every ``total_stride / output_stride`` voxels equals
        the undilated network's map; in training, batch norm sees the dense map's statistics.

        Parameters
        ----------
        output_stride : int
            One of ``stage_strides`` from :attr:`min_output_stride` up; ``total_stride`` leaves
            the network as it is.

        Returns
        -------
        Backbone
            ``self``, its ``stage_strides`` capped at ``output_stride`` and ``config`` holding
            ``output_stride`` so that ``build_backbone(**config)`` rebuilds it dilated. No
            parameter is added or renamed: state dicts load either way.
        """
        if "output_stride" in self.config and output_stride != self.total_stride:
            raise ValueError(
                f"output_stride: the backbone is already dilated to output stride "
                f"{self.total_stride}; build it again to choose {output_stride!r}"
            )
        valid = sorted({s for s in self.stage_strides if s >= self.min_output_stride})
        if (
            isinstance(output_stride, bool)
            or not isinstance(output_stride, numbers.Integral)
            or int(output_stride) not in valid
        ):
            raise ValueError(
                f"output_stride: expected one of {valid} for {self.config.get('name')}, "
                f"got {output_stride!r}"
            )
        output_stride = int(output_stride)
        if output_stride == self.total_stride:
            return self
        self._dilate(output_stride)
        self.stage_strides = tuple(min(s, output_stride) for s in self.stage_strides)
        self.config["output_stride"] = output_stride
        return self

    def _dilate(self, output_stride: int) -> None:  # pragma: no cover
        raise NotImplementedError(f"{type(self).__name__} cannot be dilated")

    def reset_parameters(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm3d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:  # pragma: no cover
        """Feature map of every stage, shallow to deep: ``[(B, stage_channels[i], ...)]``."""
        raise NotImplementedError

    def stage_modules(self) -> list[nn.Module]:  # pragma: no cover
        """The modules that compute each stage's feature map, shallow to deep (one per entry of
        :attr:`stage_channels`); together they hold every parameter and buffer."""
        raise NotImplementedError

    def stage_keys(self) -> list[list[str]]:
        """State-dict keys of each stage, shallow to deep (see :meth:`stage_modules`)."""
        names = {id(m): n for n, m in self.named_modules()}
        out = []
        for module in self.stage_modules():
            prefix = names[id(module)] + "."
            out.append([prefix + k for k in module.state_dict()])
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, D, H, W)`` -> pooled ``(B, out_features)``."""
        if x.ndim != 5:
            raise ValueError(f"x: expected (B, C, D, H, W), got shape {tuple(x.shape)}")
        return self.pool(self.forward_features(x)[-1]).flatten(1)


def set_dilation(conv: nn.Conv3d, dilation: int) -> None:
    """Make a 3x3x3 (or 1x1x1) convolution stride 1, dilated by ``dilation``, with "same" zero
    padding."""
    conv.stride = (1, 1, 1)
    if conv.kernel_size != (1, 1, 1):
        conv.dilation = (dilation,) * 3
        conv.padding = (dilation * (conv.kernel_size[0] // 2),) * 3


class DenseMaxPool3d(nn.Module):
    """A 2x2x2 max-pool of stride 2 evaluated at every voxel of a grid dilated by ``dilation``.

    Voxel ``p`` takes the maximum over ``p + dilation * {0, 1}`` on each axis, with the voxels past
    the end left out (as ``ceil_mode`` does), so sampling the output every ``2 * dilation`` voxels
    gives the strided pool of the map sampled every ``dilation`` voxels.
    """

    def __init__(self, dilation: int):
        super().__init__()
        self.dilation = int(dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = self.dilation
        x = nn.functional.pad(x, (0, d, 0, d, 0, d), value=float("-inf"))
        return nn.functional.max_pool3d(x, 2, stride=1, dilation=d)

    def extra_repr(self) -> str:
        return f"dilation={self.dilation}"


def build_backbone(name: str, in_channels: int = 1, **kwargs) -> Backbone:
    """Build a backbone by name.

    Parameters
    ----------
    name : {"vgg3d", "resnet10", "resnet18", "resnet34"}
    in_channels : int
        Input channels C.
    **kwargs
        Architecture options: ``widths`` (and ``convs`` for VGG, ``stem`` for ResNets), and
        ``output_stride`` (:meth:`Backbone.dilate_`).

    Returns
    -------
    Backbone
        Its ``config`` rebuilds it: ``build_backbone(**backbone.config)``.
    """
    from rubikkit.models.resnet import ResNet3D
    from rubikkit.models.vgg import VGG3D

    output_stride = kwargs.pop("output_stride", None)
    if name == "vgg3d":
        backbone = VGG3D(in_channels=in_channels, **kwargs)
    elif isinstance(name, str) and name.startswith("resnet") and name in BACKBONES:
        backbone = ResNet3D(depth=int(name[len("resnet") :]), in_channels=in_channels, **kwargs)
    else:
        raise ValueError(f"name: unknown backbone {name!r}; expected one of {BACKBONES}")
    if output_stride is not None:
        backbone.dilate_(output_stride)
    return backbone


def load_backbone_state(
    backbone: nn.Module, state_dict: Mapping[str, torch.Tensor], stages: int | None = None
) -> None:
    """Load every tensor of a backbone state dict, or raise listing what does not match.

    Parameters
    ----------
    backbone : nn.Module
        The module to load into (a :class:`Backbone`).
    state_dict : mapping of str to Tensor
        The backbone's own keys (strip a ``"backbone."`` prefix first, e.g. with
        :func:`backbone_state_from`).
    stages : int, optional
        Load the tensors of the first ``stages`` stages only (:meth:`Backbone.stage_keys`); the
        deeper stages keep the values they have, e.g. a fresh initialisation (partial transfer,
        to test which stages a pre-training helps or harms). The state dict must still match the
        whole backbone. Default: every stage.

    Raises
    ------
    ValueError
        Listing the missing, unexpected and shape-mismatched keys; nothing is loaded then. Or
        ``stages`` out of range.
    """
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"state_dict: expected a mapping, got {type(state_dict).__name__}")
    if stages is not None:
        n = len(backbone.stage_channels)
        if isinstance(stages, bool) or not isinstance(stages, numbers.Integral):
            raise TypeError(f"stages: expected an int, got {type(stages).__name__}")
        if not 1 <= stages <= n:
            raise ValueError(f"stages: expected 1 to {n} (the backbone's stages), got {stages}")
    own = backbone.state_dict()
    missing = sorted(k for k in own if k not in state_dict)
    unexpected = sorted(k for k in state_dict if k not in own)
    mismatched = sorted(
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state_dict and tuple(state_dict[k].shape) != tuple(own[k].shape)
    )
    if missing or unexpected or mismatched:
        parts = []
        for label, keys in (
            ("missing", missing),
            ("unexpected", unexpected),
            ("shape-mismatched", mismatched),
        ):
            if keys:
                parts.append(f"{label} ({len(keys)}): {', '.join(keys)}")
        raise ValueError(
            "state_dict: the backbone weights do not match the model, refusing a partial load; "
            + "; ".join(parts)
        )
    if stages is None:
        backbone.load_state_dict(state_dict, strict=True)
        return
    with torch.no_grad():
        for keys in backbone.stage_keys()[: int(stages)]:
            for k in keys:
                own[k].copy_(state_dict[k])


def backbone_state_from(state_dict: Mapping[str, torch.Tensor], prefix: str = "backbone.") -> dict:
    """The entries of a model's state dict under ``prefix``, with the prefix removed.

    Raises
    ------
    ValueError
        When no key starts with ``prefix``.
    """
    out = {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}
    if not out:
        raise ValueError(f"state_dict: no key starts with {prefix!r}")
    return out


def _used_taps(n: int, k: int, stride: int, pad: int, dilation: int) -> int:
    """Kernel taps along one axis that touch the input (not only zero padding) at some output."""
    out = (n + 2 * pad - dilation * (k - 1) - 1) // stride + 1
    return sum(
        any(0 <= i * stride - pad + t * dilation < n for i in range(max(out, 0))) for t in range(k)
    )


def weight_reach(backbone: nn.Module, size, in_channels: int | None = None) -> dict[str, float]:
    """Share of each stage's convolution weights that an input of ``size`` voxels can reach.

    A kernel tap that meets only zero padding at every output position multiplies zeros: its weight
    gets no gradient from such inputs and plays no part in the output. Deep stages of a network that
    downsamples a small cube to 1^3 use only the centre of their 3x3x3 kernels, so pre-training on
    small cubes leaves most of those weights at their initial values.

    Parameters
    ----------
    backbone : nn.Module
        A :class:`Backbone` (or any module of 3D convolutions taking ``(B, C, D, H, W)``).
    size : int or (D, H, W)
        Input size in voxels.
    in_channels : int, optional
        Input channels (default: ``backbone.config["in_channels"]``).

    Returns
    -------
    dict
        ``{stage: share}`` in [0, 1] per stage (``"stem"``, ``"layers.0"``, ``"stages.2"``, ...;
        the share weights each convolution by its number of weights) and ``"total"``.
    """
    if isinstance(size, numbers.Integral) and not isinstance(size, bool):
        size = (size,) * 3
    size = check_int_tuple(size, "size")
    if len(size) != 3:
        raise ValueError(f"size: expected an int or (D, H, W), got {size}")
    if in_channels is None:
        in_channels = getattr(backbone, "config", {}).get("in_channels")
        if in_channels is None:
            raise ValueError("in_channels: required for a module without a backbone config")
    shapes: dict[str, tuple[int, ...]] = {}
    hooks = [
        m.register_forward_hook(
            lambda mod, inp, out, name=name: shapes.__setitem__(name, inp[0].shape[2:])
        )
        for name, m in backbone.named_modules()
        if isinstance(m, nn.Conv3d)
    ]
    param = next(backbone.parameters(), None)
    if not hooks or param is None:
        for h in hooks:
            h.remove()
        raise ValueError("backbone: no 3D convolution ran on the input")
    was_training = backbone.training
    try:
        backbone.eval()
        with torch.no_grad():
            backbone(torch.zeros(1, in_channels, *size, dtype=param.dtype, device=param.device))
    finally:
        for h in hooks:
            h.remove()
        backbone.train(was_training)
    sums: dict[str, list[float]] = {}
    for name, m in backbone.named_modules():
        if name not in shapes:
            continue
        share = 1.0
        for axis in range(3):
            k = m.kernel_size[axis]
            if m.padding_mode == "zeros" and not isinstance(m.padding, str):
                used = _used_taps(
                    shapes[name][axis], k, m.stride[axis], m.padding[axis], m.dilation[axis]
                )
            else:  # non-zero padding modes repeat the input: every tap that runs sees data
                used = k
            share *= used / k
        parts = name.split(".")
        top = getattr(backbone, parts[0], None)
        stage = (
            ".".join(parts[:2]) if isinstance(top, nn.ModuleList) and len(parts) > 1 else parts[0]
        )
        for key in (stage, "total"):
            acc = sums.setdefault(key, [0.0, 0.0])
            acc[0] += share * m.weight.numel()
            acc[1] += m.weight.numel()
    if not sums:
        raise ValueError("backbone: no 3D convolution ran on the input")
    total = sums.pop("total")
    return {**{k: v[0] / v[1] for k, v in sums.items()}, "total": total[0] / total[1]}


def stage_activity(
    backbone: Backbone, volumes, *, batch_size: int = 8, bn: str = "running"
) -> list[dict]:
    """How much of each stage's output fires on ``volumes``: a census for a collapsed encoder.

    A pre-training can leave channels that no input switches on: after the ReLU that ends every
    stage of the backbones here they output zero everywhere, pass nothing to a head and give their
    weights no gradient until batch norm shifts them back. Pushing the volumes a fine-tuning will
    see through a pre-trained encoder, whole, tells how many such channels each stage holds and
    how strongly the rest respond.

    Parameters
    ----------
    backbone : Backbone
        Any backbone (a model's ``.backbone``); it is not changed.
    volumes : tensor or iterable of tensors
        ``(N, C, D, H, W)``, or ``(C, D, H, W)`` volumes of any sizes the backbone takes (an
        iterable is walked once, a batch at a time).
    batch_size : int
        Volumes per forward pass (same-sized neighbours are batched).
    bn : {"running", "batch"}
        Which statistics batch norm normalises with: ``"running"``, the ones the checkpoint
        stored (eval mode: what the encoder computed on its own training data), or ``"batch"``,
        each batch's own, as a fine-tuning's first training steps do (the numbers then depend on
        ``batch_size``). Running statistics are never updated.

    Returns
    -------
    list of dict
        One entry per stage, shallow to deep: ``stage`` (index), ``channels``, ``silent``
        (channels not above zero at any voxel of any volume), ``active`` (share of all outputs
        above zero) and ``mean`` (the mean output).
    """
    if bn not in ("running", "batch"):
        raise ValueError(f"bn: expected 'running' or 'batch', got {bn!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral):
        raise TypeError(f"batch_size: expected an int, got {type(batch_size).__name__}")
    if batch_size < 1:
        raise ValueError(f"batch_size: must be >= 1, got {batch_size}")
    if not isinstance(backbone, Backbone):
        raise TypeError(f"backbone: expected a Backbone, got {type(backbone).__name__}")
    if isinstance(volumes, torch.Tensor) and volumes.ndim != 5:
        raise ValueError(f"volumes: expected (N, C, D, H, W), got shape {tuple(volumes.shape)}")
    in_channels = backbone.config.get("in_channels")
    param = next(backbone.parameters())
    if bn == "batch":  # a copy, so that neither the running statistics nor the mode change
        net = copy.deepcopy(backbone).eval()
        for m in net.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.train()
    else:
        net, was_training = backbone, backbone.training
        net.eval()
    widths = backbone.stage_channels
    fired = [torch.zeros(c, dtype=torch.bool, device=param.device) for c in widths]
    positive, total, count = [0] * len(widths), [0.0] * len(widths), [0] * len(widths)

    def run(batch):
        x = torch.stack(batch).to(param.device, param.dtype)
        for i, f in enumerate(net.forward_features(x)):
            on = f > 0
            fired[i] |= on.flatten(2).any(dim=2).any(dim=0)
            positive[i] += int(on.sum())
            total[i] += float(f.double().sum())
            count[i] += f.numel()

    try:
        with torch.no_grad():
            batch = []  # same-sized neighbours, streamed: the volumes need not fit in memory
            for i, v in enumerate(volumes):
                if not isinstance(v, torch.Tensor) or v.ndim != 4:
                    what = tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__
                    raise ValueError(f"volumes: item {i} is not a (C, D, H, W) tensor ({what})")
                if in_channels is not None and v.shape[0] != in_channels:
                    raise ValueError(
                        f"volumes: item {i} has {v.shape[0]} channels, the backbone takes "
                        f"{in_channels}"
                    )
                if batch and (len(batch) == batch_size or v.shape != batch[0].shape):
                    run(batch)
                    batch = []
                batch.append(v)
            if not batch:  # every volume seen is in a batch until the next one flushes it
                raise ValueError("volumes: empty")
            run(batch)
    finally:
        if bn == "running":
            net.train(was_training)
    return [
        {
            "stage": i,
            "channels": widths[i],
            "silent": int((~fired[i]).sum()),
            "active": positive[i] / count[i],
            "mean": total[i] / count[i],
        }
        for i in range(len(widths))
    ]
