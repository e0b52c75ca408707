"""Proxy tasks: targets match the transforms applied, sampling, losses, overfitting, InfoNCE."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import torch

from rubikkit import RubikkitWarning
from rubikkit.models import build_backbone, info_nce
from rubikkit.ops import cell_origins, puzzle, reference, rotation_bits, unpuzzle
from rubikkit.tasks import TASKS, ProxyTask, get_task
from rubikkit.tasks.cpc3d import target_ceiling
from rubikkit.tasks.tcpc import U_PATH, grid_candidates
from rubikkit.train.pretrain import evaluate_proxy, proxy_ceiling

try:  # rubikkit.slic is written in parallel; only the SLIC-dependent tests wait for it
    from rubikkit.slic import lesion_candidates, slic3d  # noqa: F401

    HAVE_SLIC = True
except ImportError:
    HAVE_SLIC = False
needs_slic = pytest.mark.skipif(not HAVE_SLIC, reason="rubikkit.slic is not importable yet")

SMALL = {
    "rubik": {"n_perms": 10, "hidden": 16},
    "ordering": {"n_perms": 10, "hidden": 16},
    "jigsaw3d": {"n_perms": 10, "hidden": 16, "pool_size": 2000},
    "cpc3d": {"cube_size": 8, "hidden": 16},
    "tcpc": {"cube_size": 8, "hidden": 16},
}


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def anatomy(n: int, shape=(32, 32, 32), seed: int = 0) -> torch.Tensor:
    """(n, 1, D, H, W) volumes sharing a canonical orientation (like registered brains): a common
    intensity ramp plus per-volume texture, so cube position and rotation are recognisable."""
    g = torch.Generator().manual_seed(seed)
    axes = [torch.linspace(-1, 1, s) for s in shape]
    d, h, w = torch.meshgrid(*axes, indexing="ij")
    out = []
    for i in range(n):
        a = torch.tensor([1.0, 0.8, 0.6]) + 0.1 * torch.randn(3, generator=g)
        v = a[0] * d + a[1] * h + a[2] * w + 0.5 * torch.sin(3 * d + i) * torch.cos(2 * h)
        out.append(v + 0.3 * torch.randn(shape, generator=g))
    return torch.stack(out)[:, None]


def ids_for(n: int) -> list[str]:
    return [f"vol{i}" for i in range(n)]


def with_grid_candidates(task, volumes, k: int = 4):
    """Fill a tcpc task's candidate cache with the fallback rule (no SLIC needed)."""
    for item_id, v in zip(ids_for(len(volumes)), volumes):
        task.candidates[item_id] = grid_candidates(v[0].numpy(), k)
    return ids_for(len(volumes))


# --- registry and configuration ---------------------------------------------------------------


def test_registry_and_config_round_trip():
    assert TASKS == ("rubik", "ordering", "jigsaw3d", "cpc3d", "tcpc")
    for name in TASKS:
        task = get_task(name, **SMALL[name])
        assert isinstance(task, ProxyTask) and task.name == name
        config = json.loads(json.dumps(task.config()))
        assert config["name"] == name
        assert get_task(**config).config() == task.config()
        assert len(task.min_volume_shape) == 3
    with pytest.raises(ValueError, match="name"):
        get_task("colorization")


@pytest.mark.parametrize(
    "name, kwargs, match",
    [
        ("rubik", {"n_perms": 0}, "n_perms"),
        ("rubik", {"gap": 1.0}, "gap"),
        ("rubik", {"cube_size": (4, 4)}, "cube_size"),
        ("rubik", {"perm_method": "best"}, "perm_method"),
        ("rubik", {"alpha": -1.0}, "alpha"),
        ("cpc3d", {"overlap": 1.0}, "overlap"),
        ("cpc3d", {"axis": 3}, "axis"),
        ("tcpc", {"n_candidates": 0}, "n_candidates"),
        ("tcpc", {"compactness": -1.0}, "compactness"),
        # found in review: each failed late, obscurely, or named another argument
        ("rubik", {"beta": -1.0}, "^beta"),  # the message named alpha
        ("rubik", {"alpha": math.nan}, "^alpha"),  # accepted; every loss was NaN
        ("rubik", {"n_perms": 50_000}, "^n_perms: only 40320"),  # raised at the first batch
        ("jigsaw3d", {"n_perms": 500, "pool_size": 100}, "^n_perms"),
        ("tcpc", {"compactness": math.inf}, "^compactness"),  # raised in prepare()
        ("tcpc", {"compactness": "a"}, "^compactness"),  # "could not convert string to float"
    ],
)
def test_option_errors(name, kwargs, match):
    with pytest.raises(ValueError, match=match):
        get_task(name, **kwargs)


def test_rubik_defaults_follow_the_paper():
    task = get_task("rubik")
    assert task.n_perms == 100 and task.n_cubes == 8
    assert task.alpha == task.beta == 1.0
    assert task.rotation_codes == (0, 1, 2)
    assert get_task("rubik", both_rotations=True).rotation_codes == (0, 1, 2, 3)
    # the ~10-voxel gap of the paper: an 80-voxel cell keeps a 70-voxel cube
    assert task.cube_for((160, 160, 160)) == (70, 70, 70)
    assert get_task("rubik", cube_size=64).cube_for((160, 150, 140)) == (64, 64, 64)
    assert get_task("rubik", cube_size=64).min_volume_shape == (128, 128, 128)
    assert get_task("ordering").rotation_codes == (0,)


def test_step_rejects_small_or_bad_volumes():
    task = get_task("rubik", cube_size=8, **SMALL["rubik"])
    model = task.build_model(build_backbone("vgg3d", 1, widths=[4]))
    with pytest.raises(ValueError, match="volumes"):
        task.step(model, torch.randn(2, 1, 15, 16, 16), gen())
    with pytest.raises(ValueError, match="volumes"):
        task.step(model, torch.randn(1, 16, 16, 16), gen())


# --- targets match the transforms applied ------------------------------------------------------


@pytest.mark.parametrize("name", ["rubik", "ordering", "jigsaw3d"])
@pytest.mark.parametrize("train", [True, False])
def test_puzzle_targets_undo_the_puzzle(name, train):
    task = get_task(name, **SMALL[name])
    x = torch.randn(3, 2, 27, 31, 29)
    batch = task.build_batch(x, gen(1), train=train)
    cubes = batch["cubes"]
    M = task.n_cubes
    assert cubes.shape == (3, M, 2, *task.cube_for(x.shape))
    labels = batch["order"].numpy()
    perms = task.perm_set[labels]
    np.testing.assert_array_equal(perms, batch["perms"])
    rots = batch["rots"]
    hor, ver = rotation_bits(rots)
    np.testing.assert_array_equal(batch["hor"].numpy(), hor)
    np.testing.assert_array_equal(batch["ver"].numpy(), ver)
    if name != "rubik":
        assert (rots == 0).all()
    # Undoing the puzzle with the task's labels gives back the volume on every covered voxel.
    back = unpuzzle(cubes, batch["origins"], perms, rots, x.shape)
    covered = unpuzzle(torch.ones_like(cubes), batch["origins"], perms, rots, x.shape) > 0
    torch.testing.assert_close(back[covered], x[covered], rtol=0, atol=0)
    # ... and the numpy reference with the same labels makes the same cubes.
    ref = reference.puzzle(x.numpy(), batch["origins"], cubes.shape[3:], perms, rots)
    np.testing.assert_array_equal(ref, cubes.numpy())
    if not train:
        centred = cell_origins(x.shape, task.grid, task.cube_for(x.shape), jitter=False)
        np.testing.assert_array_equal(batch["origins"], np.broadcast_to(centred, (3, M, 3)))


def test_rubik_targets_cover_every_class_and_rotation():
    task = get_task("rubik", n_perms=10)
    x = torch.zeros(600, 1, 8, 8, 8)
    batch = task.build_batch(x, gen(2))
    counts = np.bincount(batch["order"].numpy(), minlength=10)
    assert (counts > 0.5 * 60).all() and (counts < 1.5 * 60).all()
    rot_counts = np.bincount(batch["rots"].ravel(), minlength=4)
    assert rot_counts[3] == 0
    assert (np.abs(rot_counts[:3] / rot_counts.sum() - 1 / 3) < 0.03).all()
    both = get_task("rubik", n_perms=10, both_rotations=True).build_batch(x, gen(2))
    rot_counts = np.bincount(both["rots"].ravel(), minlength=4)
    assert (np.abs(rot_counts / rot_counts.sum() - 1 / 4) < 0.03).all()


def test_sampling_is_driven_by_the_generator():
    x = anatomy(2, (24, 24, 24))
    for name in TASKS:
        task = get_task(name, **SMALL[name])
        if name == "tcpc":
            ids = with_grid_candidates(task, x)
            a, b = task.build_batch(x, gen(5), ids), task.build_batch(x, gen(5), ids)
            c = task.build_batch(x, gen(6), ids)
        else:
            a, b, c = (task.build_batch(x, gen(s)) for s in (5, 5, 6))
        for key, value in a.items():
            if isinstance(value, torch.Tensor):
                assert torch.equal(value, b[key]), (name, key)
        assert any(
            not np.array_equal(np.asarray(a[k]), np.asarray(c[k]))
            for k in a
            if not isinstance(a[k], torch.Tensor)
        ), name


@pytest.mark.parametrize("name", ["cpc3d", "tcpc"])
def test_cpc_cubes_are_the_path_with_overlap(name):
    task = get_task(name, **SMALL[name])
    x = torch.randn(2, 1, 24, 25, 26)
    ids = with_grid_candidates(task, x) if name == "tcpc" else None
    batch = task.build_batch(x, gen(3), ids)
    cells = task.path_cells()
    assert task.stride == 4  # 50 % overlap of 8-voxel cubes
    P = len(cells)
    S = P - 1
    assert batch["support"].shape == (2 * task.n_crops, S, 1, 8, 8, 8)
    assert batch["target"].shape == (2 * task.n_crops, 1, 8, 8, 8)
    corners = batch["corners"]
    for b in range(2):
        for n in range(task.n_crops):
            for p, cell in enumerate(cells):
                d, h, w = corners[b, n] + cell * task.stride
                want = x[b, :, d : d + 8, h : h + 8, w : w + 8]
                row = b * task.n_crops + n
                got = batch["support"][row, p] if p < S else batch["target"][row]
                assert torch.equal(got, want)
    if name == "tcpc":
        # U path: 7 cubes around the target, which sits in the hollow of the U
        assert S == 7 and tuple(cells[-1]) == (0, 1, 1)
        assert [tuple(c[1:]) for c in cells[:-1]] == list(U_PATH)
        steps = np.abs(np.diff(cells[:-1], axis=0)).sum(axis=1)
        assert (steps == 1).all()  # a connected path
    else:
        assert (cells[:, 1:] == 0).all() and list(cells[:, 0]) == list(range(P))


def test_info_nce_matches_hand_computation():
    pred = torch.tensor([[1.0, 0.0], [0.5, 2.0], [0.0, -1.0]])
    target = torch.tensor([[2.0, 1.0], [0.0, 1.0], [1.0, -1.0]])
    loss, logits = info_nce(pred, target)
    s = [[sum(p * t for p, t in zip(pr, tg)) for tg in target.tolist()] for pr in pred.tolist()]
    hand = -sum(s[i][i] - math.log(sum(math.exp(v) for v in s[i])) for i in range(3)) / 3
    assert logits.tolist() == s
    assert loss.item() == pytest.approx(hand, rel=1e-6)
    with pytest.raises(ValueError, match="pred"):
        info_nce(pred, target[:2])


def test_target_ceiling_counts_groups_of_identical_targets():
    rng = np.random.default_rng(0)
    for _ in range(20):
        n = int(rng.integers(1, 12))
        kinds = torch.randn(4, 1, 3, 3, 3)
        kinds[0] = 0.0  # an empty cube
        pick = rng.integers(0, 4, size=n)
        targets = kinds[torch.as_tensor(pick)]
        got = target_ceiling(targets)
        assert got["cpc_ceiling"] == pytest.approx(len(set(pick.tolist())) / n)
        assert got["cpc_chance"] == pytest.approx(1 / n)
        assert got["constant_cubes"] == pytest.approx(float(np.mean(pick == 0)))
        assert target_ceiling(np.flip(targets.numpy(), 0)) == got  # numpy, negative strides
    with pytest.raises(ValueError, match="targets"):
        target_ceiling(torch.zeros(0, 1, 2, 2, 2))


@pytest.mark.parametrize("name", ["cpc3d", "tcpc"])
def test_cpc_accuracy_never_beats_the_ceiling_of_its_batch(name):
    # Half the volumes empty: their target cubes are identical, and whatever the weights, the
    # arg-max can be right for one prediction of that group at most.
    task = get_task(name, **SMALL[name])
    x = anatomy(4, (24, 24, 24))
    x[:2] = 0.0
    ids = with_grid_candidates(task, x) if name == "tcpc" else None
    for seed in range(3):
        torch.manual_seed(seed)
        model = task.build_model(build_backbone("vgg3d", 1, widths=[4, 8]))
        _, metrics = task.step(model, x, gen(seed), index=ids)
        rows = 4 * task.n_crops
        assert metrics["constant_cubes"] >= 0.5
        assert metrics["cpc_ceiling"] <= (2 * task.n_crops + 1) / rows
        assert metrics["cpc_acc"] <= metrics["cpc_ceiling"] + 1e-9


class _IdVolumes(torch.utils.data.Dataset):
    def __init__(self, volumes):
        self.volumes = volumes

    def __len__(self):
        return len(self.volumes)

    def __getitem__(self, i):
        return {"image": self.volumes[i], "id": ids_for(len(self.volumes))[i]}


@pytest.mark.parametrize("name", ["cpc3d", "tcpc"])
def test_proxy_ceiling_is_that_of_the_evaluated_batches(name):
    task = get_task(name, **SMALL[name])
    x = anatomy(5, (24, 24, 24))
    x[1] = 0.0
    x[3] = x[2]  # two identical volumes
    if name == "tcpc":
        with_grid_candidates(task, x, k=2)  # fewer candidates than crops: repeated sub-volumes
    ds = _IdVolumes(x)
    model = task.build_model(build_backbone("vgg3d", 1, widths=[4, 8]))
    kw = dict(batch_size=2, seed=7)
    scored = evaluate_proxy(task, model, ds, device=torch.device("cpu"), **kw)
    ceiling = proxy_ceiling(task, ds, **kw)
    assert set(ceiling) == {"cpc_ceiling", "cpc_chance", "constant_cubes"}
    for k, v in ceiling.items():
        assert scored[k] == pytest.approx(v)
    assert ceiling["cpc_ceiling"] < 1.0 and scored["cpc_acc"] <= ceiling["cpc_ceiling"] + 1e-9
    assert proxy_ceiling(task, ds, **kw) == ceiling  # the same batches every time
    with pytest.raises(ValueError, match="task"):
        proxy_ceiling(get_task("rubik", **SMALL["rubik"]), ds, batch_size=2)


@pytest.mark.parametrize("name", TASKS)
def test_evaluate_proxy_gives_the_scores_the_experiment_tables_show(name):
    # experiments.load_config asks a proxy_eval grid to list these scores among its metrics
    from rubikkit.experiments import PROXY_SCORES

    assert set(PROXY_SCORES) == set(TASKS)
    task = get_task(name, **SMALL[name])
    x = anatomy(4, (24, 24, 24))
    if name == "tcpc":
        with_grid_candidates(task, x)
    model = task.build_model(build_backbone("vgg3d", 1, widths=[4, 8]))
    scored = evaluate_proxy(task, model, _IdVolumes(x), device=torch.device("cpu"), batch_size=2)
    for score in PROXY_SCORES[name]:
        assert 0.0 <= scored[score] <= 1.0, (name, score, scored)


def test_evaluate_proxy_draws_are_further_passes_of_one_generator():
    task = get_task("rubik", **SMALL["rubik"])
    x = anatomy(4, (24, 24, 24))
    model = task.build_model(build_backbone("vgg3d", 1, widths=[4, 8]))
    kw = dict(batch_size=2, seed=3, device=torch.device("cpu"))
    twice = evaluate_proxy(task, model, _IdVolumes(x), draws=2, **kw)
    # Two passes over the split score what one pass over the split written twice scores.
    doubled = evaluate_proxy(task, model, _IdVolumes(torch.cat([x, x])), **kw)
    assert twice == pytest.approx(doubled)
    assert evaluate_proxy(task, model, _IdVolumes(x), **kw) != pytest.approx(twice)
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match="draws: expected a positive int"):
            evaluate_proxy(task, model, _IdVolumes(x), draws=bad, **kw)


def test_tcpc_crop_jitter_moves_the_repeated_sub_volumes_apart():
    x = anatomy(3, (24, 28, 28))
    plain = get_task("tcpc", **SMALL["tcpc"])
    ids = with_grid_candidates(plain, x, k=1)  # one candidate: every crop of a volume repeats
    size = np.asarray(plain.subvolume_shape)
    room = np.asarray(x.shape[2:]) - size
    base = np.clip(plain.candidates[ids[0]][0] - size // 2, 0, room)
    assert (plain.build_batch(x, gen(1), ids)["corners"][0] == base).all()
    assert plain.batch_ceiling(x, gen(1), ids)["cpc_ceiling"] == pytest.approx(1 / plain.n_crops)
    # The default draws nothing more: its batches are those of a task without the option.
    zero = get_task("tcpc", crop_jitter=0, **SMALL["tcpc"])
    with_grid_candidates(zero, x, k=1)
    a, b = plain.build_batch(x, gen(2), ids), zero.build_batch(x, gen(2), ids)
    assert np.array_equal(a["corners"], b["corners"])
    moved = get_task("tcpc", crop_jitter=2, **SMALL["tcpc"])
    with_grid_candidates(moved, x, k=1)
    corners = np.concatenate([moved.build_batch(x, gen(s), ids)["corners"] for s in range(5)])
    for v, vol_corners in enumerate(corners.reshape(5, 3, moved.n_crops, 3).transpose(1, 0, 2, 3)):
        c = np.clip(moved.candidates[ids[v]][0] - size // 2, 0, room)
        lo, hi = np.clip(c - 2, 0, room), np.clip(c + 2, 0, room)
        assert ((vol_corners >= lo) & (vol_corners <= hi)).all()
        assert len(np.unique(vol_corners.reshape(-1, 3), axis=0)) > 1
    assert moved.batch_ceiling(x, gen(1), ids)["cpc_ceiling"] > 1 / moved.n_crops
    assert moved.config()["crop_jitter"] == 2
    with pytest.raises(ValueError, match="crop_jitter"):
        get_task("tcpc", crop_jitter=-1)


# --- tcpc candidates --------------------------------------------------------------------------


def test_grid_candidates_known_answer():
    v = np.zeros((16, 16, 16), dtype=np.float32)
    v[12:16, 0:4, 8:12] = 5.0  # the brightest cell
    v[0:4, 4:8, 4:8] = 2.0
    c = grid_candidates(v, 3)
    assert c.shape == (3, 3)
    assert tuple(c[0]) == (14, 2, 10) and tuple(c[1]) == (2, 6, 6)


def test_negative_seed_names_the_generator():
    with pytest.raises(ValueError, match="^generator: a seed must be >= 0"):
        get_task("rubik", **SMALL["rubik"]).build_batch(anatomy(1, (8, 8, 8)), -1)


def test_grid_candidates_bad_arguments():
    v = np.zeros((8, 8, 8), np.float32)
    with pytest.raises(ValueError, match="^k"):  # k = 0 or -1 gave an empty list
        grid_candidates(v, 0)
    with pytest.raises(ValueError, match="^grid"):  # was ZeroDivisionError
        grid_candidates(v, 2, grid=0)
    with pytest.raises(ValueError, match="^volume: is empty"):
        grid_candidates(np.zeros((0, 8, 8)), 2)


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_tcpc_candidates_refuse_nan_and_inf(bad):
    # NaN made the min-max rescaling give a blank volume, so SLIC's candidates were made up
    task = get_task("tcpc", **SMALL["tcpc"])
    v = np.random.default_rng(0).random((16, 16, 16)).astype(np.float32)
    v[3, 4, 5] = bad
    with pytest.raises(ValueError, match="^volume: contains NaN or inf"):
        task.compute_candidates(v)


@needs_slic
def test_tcpc_candidates_of_a_bfloat16_volume():
    task = get_task("tcpc", n_segments=8, n_candidates=2, **SMALL["tcpc"])
    v = _blob_volumes(1, shape=(20, 20, 20))[0].bfloat16()  # was torch's "unsupported ScalarType"
    np.testing.assert_array_equal(task.compute_candidates(v), task.compute_candidates(v.float()))


def test_tcpc_negative_index_is_out_of_range():
    task = get_task("tcpc", **SMALL["tcpc"])
    x = anatomy(2, (16, 24, 24))
    ids = with_grid_candidates(task, x)
    task.prepare([{"image": v, "id": i} for v, i in zip(x, ids)])  # cached: no SLIC
    model = task.build_model(build_backbone("vgg3d", 1, widths=[4]))
    with pytest.raises(ValueError, match="^index: .* out of range"):  # -1 read the last item
        task.step(model, x, gen(), index=[-1, 0])


def test_ceiling_of_flipped_and_bfloat16_volumes():
    task = get_task("rubik", **SMALL["rubik"])
    x = anatomy(2, (16, 16, 16))
    want = task.ceiling(x)
    # np.flip over the size-1 channel axis leaves a negative stride torch refused
    assert task.ceiling(np.flip(x.numpy(), 1)) == want
    assert task.ceiling(x.bfloat16()) == task.ceiling(x.bfloat16().float())


def test_tcpc_index_rules():
    task = get_task("tcpc", **SMALL["tcpc"])
    x = anatomy(2, (16, 24, 24))
    ids = with_grid_candidates(task, x)
    model = task.build_model(build_backbone("vgg3d", 1, widths=[4, 8]))
    loss, metrics = task.step(model, x, gen(), index=ids)
    assert set(metrics) == {"loss", "cpc_acc", "cpc_ceiling", "cpc_chance", "constant_cubes"}
    with pytest.raises(ValueError, match="index"):
        task.step(model, x, gen(), index=None)
    with pytest.raises(ValueError, match="index"):
        task.step(model, x, gen(), index=[0, 1])  # integers need prepare()
    with pytest.raises(ValueError, match="index"):
        task.step(model, x, gen(), index=ids[:1])


class _Volumes(torch.utils.data.Dataset):
    def __init__(self, volumes):
        self.volumes = volumes
        self.reads = 0

    def __len__(self):
        return len(self.volumes)

    def __getitem__(self, i):
        self.reads += 1
        return {"image": self.volumes[i], "id": f"vol{i}"}


def _blob_volumes(n: int, shape=(24, 32, 32)) -> torch.Tensor:
    rng = np.random.default_rng(0)
    out = np.zeros((n, 1, *shape), dtype=np.float32)
    for i in range(n):
        c = rng.integers(8, np.asarray(shape) - 8)
        d, h, w = np.ogrid[: shape[0], : shape[1], : shape[2]]
        out[i, 0] = np.exp(-((d - c[0]) ** 2 + (h - c[1]) ** 2 + (w - c[2]) ** 2) / 18.0)
        out[i, 0] += 0.05 * rng.standard_normal(shape)
    return torch.from_numpy(out)


@needs_slic
def test_tcpc_prepare_computes_once_and_caches_on_disk(tmp_path):
    x = _blob_volumes(3)
    ds = _Volumes(x)
    task = get_task("tcpc", cache_dir=str(tmp_path), n_segments=20, n_candidates=4, **SMALL["tcpc"])
    task.prepare(ds)
    assert task.n_computed == 3
    # up to 4 positive-score candidates per volume, inside the volume
    for i in ids_for(3):
        c = task.candidates[i]
        assert c.ndim == 2 and c.shape[1] == 3 and 1 <= len(c) <= 4
        assert (c >= 0).all() and (c < np.asarray(x.shape[2:])).all()
    model = task.build_model(build_backbone("vgg3d", 1, widths=[4]))
    for s in range(3):
        task.step(model, x[:2], gen(s), index=torch.tensor([2, 0]))
        task.step(model, x[1:], gen(s), index=["vol1", "vol2"])
    task.prepare(ds)
    assert task.n_computed == 3  # never per step, never twice
    fresh = get_task(
        "tcpc", cache_dir=str(tmp_path), n_segments=20, n_candidates=4, **SMALL["tcpc"]
    )
    fresh.prepare(ds)
    assert fresh.n_computed == 0  # read from the disk cache
    for i in ids_for(3):
        np.testing.assert_array_equal(fresh.candidates[i], task.candidates[i])


@needs_slic
def test_tcpc_falls_back_when_slic_finds_nothing(monkeypatch):
    import rubikkit.slic

    monkeypatch.setattr(
        rubikkit.slic,
        "lesion_candidates",
        lambda v, labels, k, **kw: (np.zeros((0, 3)), np.zeros(0), np.zeros(0, dtype=np.int64)),
    )
    task = get_task("tcpc", n_segments=10, n_candidates=2, **SMALL["tcpc"])
    v = _blob_volumes(1)[0]
    with pytest.warns(RubikkitWarning, match="no lesion candidate"):
        c = task.compute_candidates(v)
    lo, hi = float(v.min()), float(v.max())
    np.testing.assert_array_equal(
        c, grid_candidates(((2 * (v - lo) / (hi - lo)) - 1)[0].numpy(), 2)
    )


# --- learning: losses decrease, a handful of volumes can be overfit ------------------------------


def _train(task, model, x, steps, lr=3e-3, index=None, seed=0):
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    g = gen(seed)
    history = []
    for _ in range(steps):
        loss, metrics = task.step(model, x, g, index=index)
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(metrics)
    return history


def _mean(history, key):
    return float(np.mean([h[key] for h in history]))


@pytest.mark.parametrize("name", TASKS)
def test_losses_decrease_on_a_tiny_set(name):
    x = anatomy(4, (24, 24, 24))
    task = get_task(name, **SMALL[name])
    torch.manual_seed(0)
    model = task.build_model(build_backbone("vgg3d", 1, widths=[8, 16]))
    ids = with_grid_candidates(task, x) if name == "tcpc" else None
    history = _train(task, model, x, 60, index=ids)
    assert _mean(history[-10:], "loss") < 0.8 * _mean(history[:10], "loss")


def _proxy_accuracy(task, model, x, keys, index=None, repeats=10):
    model.eval()
    with torch.no_grad():
        runs = [task.step(model, x, gen(100 + r), index=index)[1] for r in range(repeats)]
    return {k: _mean(runs, k) for k in keys}


def test_rubik_overfits_a_handful_of_volumes():
    x = anatomy(4)
    task = get_task("rubik", n_perms=8, hidden=32, jitter=False)
    torch.manual_seed(0)
    model = task.build_model(build_backbone("vgg3d", 1, widths=[8, 16, 16]))
    _train(task, model, x, 400)
    acc = _proxy_accuracy(task, model, x, ("order_acc", "rot_acc"))
    print("rubik overfit:", acc)
    assert acc["order_acc"] >= 0.95 and acc["rot_acc"] >= 0.95


def test_jigsaw3d_overfits_a_handful_of_volumes():
    x = anatomy(4, (24, 24, 24))
    task = get_task("jigsaw3d", n_perms=8, hidden=32, jitter=False, pool_size=2000)
    torch.manual_seed(0)
    model = task.build_model(build_backbone("vgg3d", 1, widths=[8, 16]))
    _train(task, model, x, 150)
    acc = _proxy_accuracy(task, model, x, ("order_acc",))
    print("jigsaw3d overfit:", acc)
    assert acc["order_acc"] >= 0.95


@pytest.mark.parametrize("name", ["cpc3d", "tcpc"])
def test_cpc_tasks_overfit_a_handful_of_sub_volumes(name):
    """8 sub-volumes, each its own volume (cpc3d) or a single candidate (tcpc): memorisable."""
    task = get_task(name, cube_size=8, hidden=32, n_crops=1)
    x = anatomy(8, task.subvolume_shape if name == "cpc3d" else (16, 24, 24))
    ids = None
    if name == "tcpc":
        ids = with_grid_candidates(task, x, k=1)
    torch.manual_seed(0)
    model = task.build_model(build_backbone("vgg3d", 1, widths=[8, 16]))
    history = _train(task, model, x, 200, index=ids)
    # Scored on the training batches (batch-norm batch statistics): memorising 8 nearly alike
    # sub-volumes hinges on small feature differences that lagging running statistics blur.
    acc = {"cpc_acc": _mean(history[-10:], "cpc_acc")}
    print(f"{name} overfit:", acc)
    assert acc["cpc_acc"] >= 0.95


def test_amp_dtype_outputs_are_accepted():
    """Losses are computed in float32 even when the model runs in bfloat16 (autocast)."""
    x = anatomy(2, (16, 16, 16))
    task = get_task("rubik", **SMALL["rubik"])
    model = task.build_model(build_backbone("vgg3d", 1, widths=[4]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss, metrics = task.step(model, x, gen())
    assert loss.dtype == torch.float32 and math.isfinite(metrics["loss"])


@needs_slic
def test_tcpc_candidates_lie_inside_the_head_of_a_phantom():
    from rubikkit.data import open_dataset
    from rubikkit.slic import body_mask

    ds = open_dataset("phantoms:hemorrhage", n=3, size=32, seed=0)
    task = get_task("tcpc", n_segments=50, n_candidates=8, **SMALL["tcpc"])
    for i in range(len(ds)):
        v = ds[i]["image"]
        c = task.compute_candidates(v)
        assert 1 <= len(c) <= 8
        assert body_mask(v.numpy()[0])[tuple(c.T)].all()


def _bayes_accuracies(task, volume):
    """Order and rotation accuracy of the best possible guess, by enumerating every puzzle."""
    perm_set, codes = task.perm_set, task.rotation_codes
    K, M = perm_set.shape
    rots = np.array(np.meshgrid(*[codes] * M, indexing="ij")).reshape(M, -1).T  # (R, M)
    labels = np.repeat(np.arange(K), len(rots))
    rots = np.tile(rots, (K, 1))
    n = len(labels)
    cube = task.cube_for(volume.shape)
    origins = np.broadcast_to(
        cell_origins(volume.shape[1:], (2, 2, 2), cube, jitter=False), (n, M, 3)
    )
    x = puzzle(np.ascontiguousarray(np.broadcast_to(volume, (n, *volume.shape))),
               np.ascontiguousarray(origins), cube, perm_set[labels], rots).reshape(n, -1)  # fmt: skip
    _, group = np.unique(x, axis=0, return_inverse=True)
    group = group.ravel()
    order = np.zeros((group.max() + 1, K))
    np.add.at(order, (group, labels), 1)
    rot = []
    for m in range(M):
        table = np.zeros((group.max() + 1, 4))
        np.add.at(table, (group, rots[:, m]), 1)
        rot.append(table.max(1).sum() / n)
    return order.max(1).sum() / n, float(np.mean(rot))


def test_puzzle_ceiling_equals_the_bayes_accuracy_of_every_puzzle():
    # 8 cells of 2^3: six empty cubes (swaps among them are invisible, and so are their
    # rotations), one cube that a horizontal turn leaves unchanged, one generic cube.
    rng = np.random.default_rng(0)
    volume = np.zeros((1, 4, 4, 4), np.float32)
    cubes = [np.zeros((1, 2, 2, 2), np.float32) for _ in range(6)]
    r = rng.random((1, 2, 2, 2)).astype(np.float32)
    cubes += [r + reference.rotate_cube(r, 1), rng.random((1, 2, 2, 2)).astype(np.float32)]
    for c, (z, y, x) in zip(cubes, cell_origins((4, 4, 4), (2, 2, 2), (2, 2, 2), jitter=False)):
        volume[:, z : z + 2, y : y + 2, x : x + 2] = c
    for name in ("rubik", "ordering"):
        task = get_task(name, n_perms=24, cube_size=2)
        ceiling = task.ceiling(volume[None])
        order, rot = _bayes_accuracies(task, volume)
        assert ceiling["order_ceiling"] == pytest.approx(order)
        assert 0 < order < 1  # some of the 24 permutations differ only among the empty cubes
        assert ceiling["constant_cubes"] == pytest.approx(6 / 8)
        if name == "rubik":
            assert ceiling["rot_ceiling"] == pytest.approx(rot)
            assert rot == pytest.approx((6 * 1 / 3 + 2 / 3 + 1) / 8)
        else:
            assert "rot_ceiling" not in ceiling
    # Volumes with texture everywhere leave nothing ambiguous; a streamed iterable works too.
    task = get_task("rubik", n_perms=12)
    noisy = (torch.rand(1, 16, 16, 16, generator=gen(1)) for _ in range(3))
    assert task.ceiling(noisy) == {
        "order_ceiling": 1.0,
        "order_chance": 1 / 12,
        "rot_ceiling": 1.0,
        "rot_chance": 1 / 3,
        "constant_cubes": 0.0,
    }
    with pytest.raises(ValueError, match="volumes"):
        task.ceiling(np.zeros((16, 16, 16)))
    with pytest.raises(ValueError, match="volumes: empty"):
        task.ceiling([])
    with pytest.raises(ValueError, match=r"volumes\[1\]"):
        task.ceiling([np.zeros((1, 16, 16, 16)), np.zeros((16, 16, 16))])


def _template_probe_by_hand(task, volumes):
    # The nearest-mean rules of CubePuzzleTask.template_probe, written out volume by volume.
    cubes = np.stack([np.stack(c) for c in task._evaluation_cubes(volumes)]).astype(np.float64)
    n, m_cubes = cubes.shape[:2]

    def others(a, v):  # mean over the volumes other than v
        return np.delete(a, v, axis=0).mean(axis=0)

    def dist(x, y):
        return ((x - y) ** 2).mean()

    place = [
        np.argmin([dist(cubes[v, m], others(cubes[:, c], v)) for c in range(m_cubes)]) == m
        for v in range(n)
        for m in range(m_cubes)
    ]
    turn = []
    for m in range(m_cubes):
        for code in task.rotation_codes[1:]:
            j = task._mirror_cell(m, code)
            turned = np.stack([reference.rotate_cube(c, code) for c in cubes[:, j]])
            for v in range(n):
                u_mean, t_mean = others(cubes[:, m], v), others(turned, v)
                turn.append(dist(cubes[v, m], u_mean) < dist(cubes[v, m], t_mean))
                turn.append(dist(turned[v], t_mean) < dist(turned[v], u_mean))
    return np.mean(place), np.mean(turn)


def test_template_probe_tells_fixed_orientation_from_random_orientation():
    rng = np.random.default_rng(0)
    # 6^3 cubes in 8^3 cells: centred, so a turn of the volume maps cubes onto cubes exactly
    task = get_task("rubik", n_perms=10, cube_size=6, both_rotations=True)
    pattern = rng.normal(size=(1, 16, 16, 16)).astype(np.float32)
    # Organs in a fixed orientation: one pattern, a little noise. The mean cubes tell it all.
    fixed = pattern[None] + 0.3 * rng.normal(size=(16, 1, 16, 16, 16)).astype(np.float32)
    probe = task.template_probe(fixed)
    assert probe == {"place_template_acc": 1.0, "turn_template_acc": 1.0}
    # The same volumes each turned about its centre by one of the four half turns (context as
    # likely one way as another): turned and unturned cubes share one distribution.
    spun = np.stack([reference.rotate_cube(v, k % 4) for k, v in enumerate(fixed)])
    assert task.template_probe(spun)["turn_template_acc"] < 0.6
    noise = rng.normal(size=(12, 1, 16, 16, 16)).astype(np.float32)
    by_hand = _template_probe_by_hand(task, noise)
    got = task.template_probe(noise)
    assert got["place_template_acc"] == pytest.approx(by_hand[0])
    assert got["turn_template_acc"] == pytest.approx(by_hand[1])
    assert 0.3 < got["turn_template_acc"] < 0.7
    # One pass with the other statistics; the ordering task has no turns to probe.
    assert task.volume_stats(noise, templates=True) == {**task.volume_stats(noise), **got}
    assert get_task("ordering", n_perms=10, cube_size=6).template_probe(noise) == {
        "place_template_acc": got["place_template_acc"]
    }

    # A split that can be walked twice is, keeping only the mean cubes; a generator, walked once,
    # has its cubes kept. Both give the array's values.
    class Split:
        walks = 0

        def __iter__(self):
            Split.walks += 1
            return iter(list(noise))

    assert task.template_probe(Split()) == got and Split.walks == 2
    assert task.template_probe(v for v in noise) == got
    assert task.volume_stats(Split(), templates=True) == {**task.volume_stats(noise), **got}
    assert Split.walks == 4  # the other statistics ride on the first walk

    class Shrinking:  # a split that changes between the walks
        def __init__(self):
            self.left = len(noise) + 1

        def __iter__(self):
            self.left -= 1
            return iter(list(noise[: self.left]))

    with pytest.raises(ValueError, match="volumes: gave 12 volumes on the first walk and 11"):
        task.template_probe(Shrinking())
    lone = task.template_probe(noise[:1])  # no other volume to take a mean over
    assert np.isnan(lone["place_template_acc"]) and np.isnan(lone["turn_template_acc"])
    two_sizes = [noise[0], noise[1, :, :12, :12, :12]]  # 7^3 and 5^3 cubes by the gap
    sizes = get_task("rubik", n_perms=10).volume_stats(two_sizes, templates=True)
    assert np.isnan(sizes["turn_template_acc"]) and sizes["turn_pairs"] > 0  # the rest is kept


def test_a_turned_octant_of_a_centred_blob_is_another_octant():
    # Why the Rubik's cube confuses order and orientation on centred lesions (LIDC nodule crops):
    # for a volume that a half turn about its centre leaves unchanged, the cube of one cell
    # turned by 180 degrees is exactly the unturned cube of the cell across. The ceiling, which
    # compares cubes without turning them into each other, still reports 1.0 for both heads.
    grid = np.indices((32, 32, 32)).astype(np.float32) - 15.5
    blob = np.exp(-(grid**2).sum(0) / 60.0)[None].astype(np.float32)
    task = get_task("rubik", n_perms=10)
    size = task.cube_for(blob.shape)
    origins = cell_origins(blob.shape[1:], (2, 2, 2), size, jitter=False)
    cubes = {
        (int(z >= 16), int(y >= 16), int(x >= 16)): blob[
            :, z : z + size[0], y : y + size[1], x : x + size[2]
        ]
        for z, y, x in origins
    }
    across = {1: lambda d, h, w: (d, 1 - h, 1 - w), 2: lambda d, h, w: (1 - d, 1 - h, w)}
    for cell, cube in cubes.items():
        for code, mirror in across.items():
            turned = reference.rotate_cube(cube, code)
            np.testing.assert_allclose(turned, cubes[mirror(*cell)], atol=1e-6)
            assert not np.allclose(turned, cube)  # the turn itself is visible
    ceiling = task.ceiling(blob[None])
    assert ceiling["order_ceiling"] == 1.0 and ceiling["rot_ceiling"] == 1.0
    # turn_confusion measures it: every turned cube is its mirror cell's cube.
    conf = task.turn_confusion(blob[None])
    assert conf == {"turn_mirror_nearest": 1.0, "turn_mirror_ratio": 0.0, "turn_pairs": 16}
    # The blob off the centre (as LIDCNodules(shift=...) crops it) breaks the symmetry ...
    off = np.exp(-((grid - np.array([3.0, -4.0, 5.0])[:, None, None, None]) ** 2).sum(0) / 60.0)
    moved = task.turn_confusion(off[None, None].astype(np.float32))
    assert moved["turn_mirror_nearest"] < 0.5 and moved["turn_mirror_ratio"] > 0.5
    # ... and unrelated cubes are about as far from their mirror as from themselves.
    noise = np.random.default_rng(0).normal(size=(4, 1, 32, 32, 32)).astype(np.float32)
    rand = task.turn_confusion(noise)
    assert rand["turn_pairs"] == 64 and 0.9 < rand["turn_mirror_ratio"] < 1.1
    assert rand["turn_mirror_nearest"] < 0.4
    with pytest.raises(ValueError, match="turns no cubes"):
        get_task("ordering", n_perms=10).turn_confusion(blob[None])
    with pytest.raises(ValueError, match="volumes: empty"):
        task.turn_confusion([])
    # Constant volumes: no turn changes a cube, so there is nothing to score.
    flat = task.turn_confusion(np.zeros((2, 1, 32, 32, 32), np.float32))
    assert flat["turn_pairs"] == 0 and np.isnan(flat["turn_mirror_nearest"])
    # volume_stats gives both in one pass over an iterable (a dataset's items load once).
    pulled = []

    def items():
        for v in noise:
            pulled.append(1)
            yield v

    both = task.volume_stats(items())
    assert len(pulled) == len(noise)
    assert both == {**task.ceiling(noise), **rand}
    assert task.volume_stats(noise, turns=False) == task.ceiling(noise)
    ordering = get_task("ordering", n_perms=10)
    assert ordering.volume_stats(noise) == ordering.ceiling(noise)  # no turns, no confusion
