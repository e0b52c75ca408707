"""Models: output shapes for odd input sizes, the 3D pixel shuffle, strict weight transfer."""

from __future__ import annotations

import itertools
import json

import pytest
import torch

from rubikkit.models import (
    BACKBONES,
    DUC3D,
    Backbone,
    Classifier,
    CPCModel,
    SiameseOctad,
    UNet3D,
    backbone_state_from,
    build_backbone,
    load_backbone_state,
    pixel_shuffle_3d,
    stage_activity,
    weight_reach,
)

TINY = {
    "vgg3d": {"widths": [4, 8, 8, 16, 16]},
    **{n: {"widths": [4, 8, 8, 16]} for n in BACKBONES[1:]},
}
ODD = (1, 33, 37, 29)  # (C, D, H, W)


def tiny(name: str, in_channels: int = 1) -> Backbone:
    torch.manual_seed(0)
    return build_backbone(name, in_channels, **TINY[name])


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize("name", BACKBONES)
def test_backbone_shapes_odd_input(name):
    b = tiny(name, in_channels=2)
    x = torch.randn(2, 2, 33, 37, 29)
    assert b(x).shape == (2, b.out_features)
    feats = b.forward_features(x)
    assert [f.shape[1] for f in feats] == list(b.stage_channels)
    for f, s in zip(feats, b.stage_strides):
        assert tuple(f.shape[2:]) == tuple(-(-L // s) for L in x.shape[2:])
    assert b.out_features == b.stage_channels[-1]


@pytest.mark.parametrize("name", BACKBONES)
def test_backbone_config_rebuilds(name):
    b = tiny(name, in_channels=3)
    config = json.loads(json.dumps(b.config))
    assert config["name"] == name and config["in_channels"] == 3
    again = build_backbone(**config)
    assert type(again) is type(b)
    assert {k: v.shape for k, v in again.state_dict().items()} == {
        k: v.shape for k, v in b.state_dict().items()
    }


def test_resnet_small_stem_keeps_resolution_and_rebuilds():
    torch.manual_seed(0)
    b = build_backbone("resnet18", 1, widths=[4, 4, 8, 8], stem="small")
    x = torch.randn(1, 1, 28, 27, 29)
    feats = b.forward_features(x)
    assert b.stage_strides == (1, 1, 2, 4, 8)
    for f, s in zip(feats, b.stage_strides):
        assert tuple(f.shape[2:]) == tuple(-(-L // s) for L in x.shape[2:])
    again = build_backbone(**json.loads(json.dumps(b.config)))
    assert again.config["stem"] == "small"
    again.load_state_dict(b.state_dict())  # same architecture, same tensors
    assert "stem" not in build_backbone("resnet18", 1, widths=[4, 4, 8, 8]).config
    with pytest.raises(ValueError, match="stem"):
        build_backbone("resnet18", 1, stem="cifar")


def test_default_backbones_are_standard():
    assert build_backbone("resnet18").stage_channels == (64, 64, 128, 256, 512)
    assert len(build_backbone("resnet34").layers[2]) == 6
    vgg = build_backbone("vgg3d")
    assert vgg.stage_channels == (64, 128, 256, 512, 512) and vgg.total_stride == 16


def test_backbone_tiny_inputs_pool_adaptively():
    b = tiny("vgg3d").eval()
    for size in ((1, 1, 1), (5, 3, 7), (17, 16, 15)):
        assert b(torch.randn(1, 1, *size)).shape == (1, 16)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"name": "vgg19"}, "name"),
        ({"name": "resnet50"}, "name"),
        ({"name": "vgg3d", "widths": []}, "widths"),
        ({"name": "vgg3d", "widths": [4, 0]}, "widths"),
        ({"name": "vgg3d", "widths": [4, 8], "convs": [1]}, "convs"),
        ({"name": "resnet18", "widths": [4, 8]}, "widths"),
        ({"name": "vgg3d", "in_channels": 0}, "in_channels"),
    ],
)
def test_build_backbone_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_backbone(**kwargs)


@pytest.mark.parametrize("name", ["vgg3d", "resnet18"])
def test_segmentation_heads_odd_input(name):
    x = torch.randn(1, *ODD)
    for head in (UNet3D(tiny(name), 3), DUC3D(tiny(name), 3, hidden=8)):
        y = head(x)
        assert y.shape == (1, 3, *ODD[1:])
        y.mean().backward()
        grads = [p.grad for p in head.backbone.parameters()]
        assert all(g is not None for g in grads)


def test_segmentation_heads_name_a_volume_without_its_batch_axis():
    x = torch.randn(*ODD)  # (C, D, H, W): the batch axis forgotten
    for head in (UNet3D(tiny("vgg3d"), 3), DUC3D(tiny("vgg3d"), 3, hidden=8)):
        with pytest.raises(ValueError, match=r"x: expected \(B, C, D, H, W\)"):
            head(x)


def test_duc_predicts_r_cubed_channels():
    b = tiny("vgg3d")
    duc = DUC3D(b, n_classes=2, hidden=8)
    assert duc.r == 16 and duc.head[-1].out_channels == 16**3 * 2


def _random_bn_stats(module: torch.nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm3d):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.normal_()


@pytest.mark.parametrize(
    "name, options, sizes",
    [
        ("vgg3d", {}, [(32, 32, 32), (35, 33, 30)]),
        ("resnet10", {}, [(64, 64, 64), (70, 66, 61)]),
        ("resnet10", {"stem": "small"}, [(16, 16, 16), (19, 17, 15)]),
    ],
)
def test_dilated_backbone_is_the_dense_version_of_the_strided_one(name, options, sizes):
    torch.manual_seed(0)
    strided = build_backbone(name, 2, **TINY[name], **options)
    _random_bn_stats(strided)
    strided = strided.double().eval()
    for output_stride in sorted(set(strided.stage_strides) - {strided.stage_strides[0]}):
        dense = build_backbone(name, 2, **TINY[name], **options, output_stride=output_stride)
        assert dense.total_stride == output_stride
        dense.load_state_dict(strided.state_dict())  # same tensors, same names
        dense = dense.double().eval()
        for size in sizes:
            x = torch.randn(1, 2, *size, dtype=torch.float64)
            with torch.no_grad():
                pairs = zip(strided.forward_features(x), dense.forward_features(x))
                for s, (a, b) in zip(strided.stage_strides, pairs):
                    assert tuple(b.shape[2:]) == tuple(-(-L // min(s, output_stride)) for L in size)
                    k = s // min(s, output_stride)
                    torch.testing.assert_close(b[:, :, ::k, ::k, ::k], a, rtol=0, atol=1e-10)


def test_dilate_keeps_parameters_and_rebuilds_from_config():
    b = tiny("vgg3d")
    before = {k: v.clone() for k, v in b.state_dict().items()}
    assert b.dilate_(4) is b
    assert b.stage_strides == (1, 2, 4, 4, 4) and b.config["output_stride"] == 4
    assert {k: v.shape for k, v in b.state_dict().items()} == {
        k: v.shape for k, v in before.items()
    }
    assert all(torch.equal(v, before[k]) for k, v in b.state_dict().items())
    again = build_backbone(**json.loads(json.dumps(b.config)))
    assert again.stage_strides == b.stage_strides
    assert b.dilate_(4) is b  # the same stride again changes nothing
    plain = tiny("vgg3d")
    assert plain.dilate_(16).config == tiny("vgg3d").config  # the total stride: no change
    duc = DUC3D(tiny("vgg3d").dilate_(8), n_classes=2, hidden=8)
    assert duc.r == 8 and duc.head[-1].out_channels == 8**3 * 2
    assert duc(torch.randn(1, *ODD)).shape == (1, 2, *ODD[1:])


@pytest.mark.parametrize(
    "name, value, match",
    [
        ("vgg3d", 3, r"output_stride: expected one of \[1, 2, 4, 8, 16\]"),
        ("vgg3d", 32, "output_stride"),
        ("vgg3d", 4.0, "output_stride"),
        ("vgg3d", True, "output_stride"),
        ("resnet18", 2, r"output_stride: expected one of \[4, 8, 16, 32\] for resnet18"),
    ],
)
def test_dilate_errors_name_the_argument(name, value, match):
    with pytest.raises(ValueError, match=match):
        tiny(name).dilate_(value)
    with pytest.raises(ValueError, match="output_stride"):
        build_backbone(name, 1, **TINY[name], output_stride=value)


def test_dilate_refuses_a_second_output_stride():
    b = tiny("resnet10").dilate_(8)
    with pytest.raises(
        ValueError, match="output_stride: the backbone is already dilated to output stride 8"
    ):
        b.dilate_(16)


def test_classifier_and_errors():
    b = tiny("resnet10", 2)
    clf = Classifier(b, 4, dropout=0.5)
    assert clf(torch.randn(2, 2, 19, 21, 23)).shape == (2, 4)
    assert clf.backbone is b
    with pytest.raises(ValueError, match="n_classes"):
        Classifier(b, 0)
    with pytest.raises(ValueError, match="dropout"):
        Classifier(b, 2, dropout=1.0)
    with pytest.raises(ValueError, match="n_classes"):
        UNet3D(b, 0)


@pytest.mark.parametrize("rotation", [True, False])
def test_siamese_octad_shapes(rotation):
    b = tiny("vgg3d")
    net = SiameseOctad(b, n_cubes=8, n_perms=10, hidden=16, rotation=rotation)
    out = net(torch.randn(3, 8, 1, 9, 11, 7))
    assert out["order"].shape == (3, 10)
    if rotation:
        assert out["rot"].shape == (3, 8, 2)
        # the rotation head is shallow: one linear layer over the concatenated features
        assert isinstance(net.rot_head, torch.nn.Linear)
        assert net.rot_head.in_features == 8 * b.out_features
    else:
        assert "rot" not in out
    with pytest.raises(ValueError, match="cubes"):
        net(torch.randn(3, 7, 1, 9, 11, 7))


def test_siamese_runs_backbone_once_over_all_cubes():
    b = tiny("vgg3d")
    calls = []
    b.register_forward_hook(lambda m, inp, out: calls.append(inp[0].shape[0]))
    SiameseOctad(b, n_cubes=8, n_perms=4, hidden=8)(torch.randn(2, 8, 1, 8, 8, 8))
    assert calls == [16]


def test_siamese_branches_share_weights():
    """A cube gives the same feature in every slot: swapping two cubes swaps their features."""
    b = tiny("vgg3d").eval()
    net = SiameseOctad(b, n_cubes=2, n_perms=2, hidden=4).eval()
    cubes = torch.randn(1, 2, 1, 8, 8, 8)
    f = b(cubes[0])
    f_swapped = b(cubes[0].flip(0))
    torch.testing.assert_close(f, f_swapped.flip(0))
    net(cubes)


def test_cpc_model_shapes():
    b = tiny("resnet18")
    m = CPCModel(b, hidden=12)
    out = m(torch.randn(5, 7, 1, 8, 8, 8), torch.randn(5, 1, 8, 8, 8))
    assert out["pred"].shape == (5, b.out_features) and out["target"].shape == (5, b.out_features)
    with pytest.raises(ValueError, match="target"):
        m(torch.randn(5, 7, 1, 8, 8, 8), torch.randn(4, 1, 8, 8, 8))


# --- the 3D pixel shuffle --------------------------------------------------------------------


def pixel_shuffle_3d_reference(x: torch.Tensor, r: int) -> torch.Tensor:
    """Plain loops: channel c*r^3 + (i*r + j)*r + k of voxel (d, h, w) -> (d*r+i, h*r+j, w*r+k)."""
    B, Cr, D, H, W = x.shape
    C = Cr // r**3
    out = torch.empty(B, C, D * r, H * r, W * r, dtype=x.dtype)
    for c, i, j, k in itertools.product(range(C), range(r), range(r), range(r)):
        ch = c * r**3 + (i * r + j) * r + k
        out[:, c, i::r, j::r, k::r] = x[:, ch]
    return out


@pytest.mark.parametrize(
    "r, C, dhw", [(1, 3, (2, 3, 4)), (2, 1, (1, 1, 1)), (2, 3, (3, 2, 5)), (3, 2, (2, 1, 3))]
)
def test_pixel_shuffle_3d_matches_reference(r, C, dhw):
    x = torch.randn(2, C * r**3, *dhw)
    torch.testing.assert_close(pixel_shuffle_3d(x, r), pixel_shuffle_3d_reference(x, r))


def test_pixel_shuffle_3d_errors():
    with pytest.raises(ValueError, match="r:"):
        pixel_shuffle_3d(torch.randn(1, 8, 2, 2, 2), 0)
    with pytest.raises(ValueError, match="x:"):
        pixel_shuffle_3d(torch.randn(1, 9, 2, 2, 2), 2)
    with pytest.raises(ValueError, match="x:"):
        pixel_shuffle_3d(torch.randn(8, 2, 2, 2), 2)


# --- strict weight transfer ------------------------------------------------------------------


def test_load_backbone_state_loads_every_tensor():
    src = tiny("resnet18")
    with torch.no_grad():
        for p in src.parameters():
            p.normal_()
    dst = build_backbone("resnet18", 1, widths=[4, 8, 8, 16])
    load_backbone_state(dst, src.state_dict())
    for k, v in src.state_dict().items():
        assert torch.equal(dst.state_dict()[k], v), k


def test_transfer_from_pretraining_model_to_fine_tuning_heads():
    pre = SiameseOctad(tiny("vgg3d"), n_cubes=8, n_perms=4, hidden=8)
    with torch.no_grad():
        for p in pre.parameters():
            p.uniform_()
    state = backbone_state_from(pre.state_dict())
    for model in (Classifier(tiny("vgg3d"), 2), UNet3D(tiny("vgg3d"), 2), DUC3D(tiny("vgg3d"), 2)):
        load_backbone_state(model.backbone, state)
        for k, v in state.items():
            assert torch.equal(model.state_dict()["backbone." + k], v)
    with pytest.raises(ValueError, match="backbone"):
        backbone_state_from({"fc.weight": torch.zeros(1)})


def test_load_backbone_state_raises_with_key_lists():
    dst = tiny("vgg3d")
    before = {k: v.clone() for k, v in dst.state_dict().items()}
    state = dict(tiny("vgg3d").state_dict())
    del state["stages.0.0.weight"]
    state["head.weight"] = torch.zeros(3)
    state["stages.1.1.weight"] = torch.zeros(5)
    with pytest.raises(ValueError) as info:
        load_backbone_state(dst, state)
    msg = str(info.value)
    assert "missing (1): stages.0.0.weight" in msg
    assert "unexpected (1): head.weight" in msg
    assert "shape-mismatched (1): stages.1.1.weight" in msg
    # nothing was loaded
    for k, v in dst.state_dict().items():
        assert torch.equal(v, before[k])


def test_load_backbone_state_rejects_other_architecture():
    with pytest.raises(ValueError, match="missing .*unexpected"):
        load_backbone_state(tiny("vgg3d"), tiny("resnet10").state_dict())
    with pytest.raises(ValueError, match="shape-mismatched"):
        load_backbone_state(tiny("vgg3d", 1), tiny("vgg3d", 4).state_dict())
    with pytest.raises(TypeError, match="state_dict"):
        load_backbone_state(tiny("vgg3d"), [1, 2])


@pytest.mark.parametrize(
    "n, stride, share",
    [(1, 1, 1 / 27), (2, 2, 8 / 27), (3, 1, 1.0), (5, 2, 1.0)],
)
def test_weight_reach_counts_taps_that_meet_data(n, stride, share):
    conv = torch.nn.Sequential(torch.nn.Conv3d(2, 4, 3, stride=stride, padding=1))
    reach = weight_reach(conv, n, in_channels=2)
    assert reach["total"] == pytest.approx(share) and reach["0"] == pytest.approx(share)


def test_weight_reach_matches_gradients_and_stems():
    torch.manual_seed(0)
    bb = build_backbone("vgg3d", 1, widths=(4, 8, 8, 8, 8))
    reach = weight_reach(bb, 12)
    assert reach["stages.0"] == 1.0 and reach["stages.4"] == pytest.approx(1 / 27)
    # Cross-check: a weight that meets only padding gets no gradient; the others do.
    bb(torch.randn(3, 1, 12, 12, 12)).pow(2).sum().backward()
    deepest = [m for m in bb.stages[4].modules() if isinstance(m, torch.nn.Conv3d)]
    for m in deepest:
        nonzero = (m.weight.grad != 0).any(dim=(0, 1))  # (3, 3, 3) taps
        assert nonzero.sum().item() == 1 and nonzero[1, 1, 1]
    # The ImageNet stem downsamples a 12^3 cube to 1^3 by layer3; the small stem keeps 3^3 there.
    imagenet = weight_reach(build_backbone("resnet10", 1), 12)
    small = weight_reach(build_backbone("resnet10", 1, stem="small"), 12)
    assert imagenet["stem"] == 1.0 and imagenet["layers.3"] < 0.05 and imagenet["total"] < 0.2
    assert small["total"] == 1.0
    assert weight_reach(build_backbone("resnet10", 1), 64)["total"] == 1.0


def test_weight_reach_errors_name_the_argument():
    bb = build_backbone("vgg3d", 1, widths=(4, 8))
    with pytest.raises(ValueError, match="size: expected"):
        weight_reach(bb, (12, 12))
    with pytest.raises(ValueError, match="size: expected a non-empty sequence of positive"):
        weight_reach(bb, 0)
    with pytest.raises(ValueError, match="in_channels: required"):
        weight_reach(torch.nn.Sequential(torch.nn.Conv3d(1, 2, 3)), 8)
    with pytest.raises(ValueError, match="backbone: no 3D convolution"):
        weight_reach(torch.nn.Sequential(torch.nn.Identity()), 8, in_channels=1)


@pytest.mark.parametrize("name", ["vgg3d", "resnet10", "resnet18"])
def test_stage_keys_split_the_state_dict_by_stage(name):
    bb = build_backbone(name, 2)
    keys = bb.stage_keys()
    assert len(keys) == len(bb.stage_channels)
    flat = [k for stage in keys for k in stage]
    assert sorted(flat) == sorted(bb.state_dict()) and len(set(flat)) == len(flat)
    # each stage's keys produce that stage's channels
    for stage, channels in zip(keys, bb.stage_channels):
        convs = [k for k in stage if bb.state_dict()[k].ndim == 5]
        assert bb.state_dict()[convs[-1]].shape[0] == channels


def test_load_backbone_state_transfers_the_first_stages_only():
    src, dst = tiny("resnet18"), tiny("resnet18")
    with torch.no_grad():
        for p in src.parameters():
            p.normal_()
    before = {k: v.clone() for k, v in dst.state_dict().items()}
    load_backbone_state(dst, src.state_dict(), stages=2)
    keys = dst.stage_keys()
    for k in keys[0] + keys[1]:
        assert torch.equal(dst.state_dict()[k], src.state_dict()[k]), k
    for k in [k for stage in keys[2:] for k in stage]:
        assert torch.equal(dst.state_dict()[k], before[k]), k
    # the state dict must still match the whole backbone, and stages its range
    with pytest.raises(ValueError, match="missing .*unexpected"):
        load_backbone_state(tiny("vgg3d"), tiny("resnet10").state_dict(), stages=1)
    for bad in (0, 6):
        with pytest.raises(ValueError, match=rf"stages: expected 1 to 5 .*got {bad}"):
            load_backbone_state(dst, src.state_dict(), stages=bad)
    with pytest.raises(TypeError, match="stages: expected an int"):
        load_backbone_state(dst, src.state_dict(), stages=True)


def _silenced_vgg():
    """A tiny VGG whose deepest stage's first channel is switched off by its running statistics
    alone (a running mean far above anything it computes), and whose other channels fire."""
    torch.manual_seed(0)
    bb = build_backbone("vgg3d", 2, widths=(4, 6, 8))
    bn = [m for m in bb.stages[2].modules() if isinstance(m, torch.nn.BatchNorm3d)][-1]
    bn.running_mean[0] = 1e4
    return bb, bn


def test_stage_activity_counts_what_fires():
    bb, bn = _silenced_vgg()
    x = torch.randn(5, 2, 8, 8, 8)
    running = stage_activity(bb, x, batch_size=2)
    assert [s["stage"] for s in running] == [0, 1, 2]
    assert [s["channels"] for s in running] == [4, 6, 8]
    assert running[2]["silent"] >= 1
    # The same numbers straight from the stage outputs, all five volumes in one pass.
    bb.eval()
    with torch.no_grad():
        feats = bb.forward_features(x)
    for s, f in zip(running, feats):
        assert s["silent"] == int((f.amax(dim=(0, 2, 3, 4)) <= 0).sum())
        assert s["active"] == pytest.approx((f > 0).float().mean().item())
        assert s["mean"] == pytest.approx(f.mean().item(), rel=1e-5)
    # With each batch's own statistics the switched-off channel fires again; the backbone keeps
    # its running statistics and its mode.
    bb.train()
    tracked = bn.num_batches_tracked.clone()
    batch = stage_activity(bb, x, batch_size=5, bn="batch")
    assert batch[2]["silent"] < running[2]["silent"]
    assert bn.running_mean[0] == 1e4 and torch.equal(bn.num_batches_tracked, tracked)
    assert bb.training
    bb.eval()
    stage_activity(bb, x)
    assert not bb.training


def test_stage_activity_streams_volumes_of_mixed_sizes():
    bb, _ = _silenced_vgg()
    small, large = torch.randn(3, 2, 8, 8, 8), torch.randn(2, 2, 12, 12, 12)
    vols = (v for v in [*small[:2], *large, small[2]])  # a generator: walked once
    mixed = stage_activity(bb, vols, batch_size=4)
    bb.eval()
    with torch.no_grad():
        parts = list(zip(bb.forward_features(small), bb.forward_features(large)))
    for s, (a, b) in zip(mixed, parts):
        assert s["mean"] == pytest.approx(
            (a.sum() + b.sum()).item() / (a.numel() + b.numel()), rel=1e-5
        )
        fired = (a > 0).any(dim=(0, 2, 3, 4)) | (b > 0).any(dim=(0, 2, 3, 4))
        assert s["silent"] == int((~fired).sum())


def test_stage_activity_errors_name_the_argument():
    bb, _ = _silenced_vgg()
    x = torch.randn(2, 2, 8, 8, 8)
    with pytest.raises(ValueError, match="bn: expected"):
        stage_activity(bb, x, bn="eval")
    with pytest.raises(ValueError, match="batch_size: must be >= 1"):
        stage_activity(bb, x, batch_size=0)
    with pytest.raises(TypeError, match="backbone: expected a Backbone"):
        stage_activity(torch.nn.Conv3d(2, 2, 3), x)
    with pytest.raises(ValueError, match=r"volumes: expected \(N, C, D, H, W\)"):
        stage_activity(bb, x[0])
    with pytest.raises(ValueError, match="volumes: item 1 has 1 channels, the backbone takes 2"):
        stage_activity(bb, [x[0], x[1, :1]])
    with pytest.raises(ValueError, match="volumes: item 0 is not a"):
        stage_activity(bb, [x[0, 0]])
    with pytest.raises(ValueError, match="volumes: empty"):
        stage_activity(bb, [])
