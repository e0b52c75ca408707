"""Rubik's cube recovery (Zhuang et al., MICCAI 2019, Sec. 2.1) and its cube-ordering baseline.

A volume is cut into a 2x2x2 grid of cubes with a gap between neighbours (Sec. 2.1: "about 10
voxels", so that texture running across cube borders gives no shortcut). The cubes are rearranged
by one of K permutations chosen for large Hamming distance (:func:`rubikkit.ops.hamming_permutations`)
and each cube is rotated by 180 degrees horizontally, vertically or not at all. The Siamese-Octad
network predicts the permutation (K-way classification) and, per cube, whether it was rotated
horizontally and vertically (2M binary targets). Loss (Sec. 2.1, Eq. 3):

    L = alpha * CE(order) + beta * (BCE(horizontal) + BCE(vertical)),   alpha = beta = 1

("equal weights lead to the best feature representations"). Metrics are the paper's Table 1
columns: ``order_acc`` (the permutation is right) and ``rot_acc`` (per cube, both rotation bits
right).

Gap. The paper's ~10-voxel gap is given for its volumes, not as a rule; here the default cube
leaves ``gap = 0.125`` of each grid cell free (10 voxels of an 80-voxel cell, i.e. a 160^3 volume
cut into 70^3 cubes). With ``jitter`` (training) each cube sits at a random offset inside its cell,
so the gap between two neighbours varies between 0 and twice the slack; in evaluation the cubes are
centred and every gap equals the slack. Pass ``cube_size`` to fix the cube instead.

Rotation codes per cube are drawn uniformly from {0 none, 1 horizontal, 2 vertical} (the paper
allows one of the two per cube); ``both_rotations=True`` adds 3 (both).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rubikkit.models.siamese import SiameseOctad
from rubikkit.ops import (
    cell_origins,
    hamming_permutations,
    puzzle,
    reversed_axes,
    rotation_bits,
    sample_origins,
    sample_permutations,
    sample_rotations,
)
from rubikkit.ops.hamming import MAX_ENUMERATED
from rubikkit.tasks.base import (
    ProxyTask,
    check_fraction,
    check_int,
    check_volumes,
    check_weight,
    numpy_rng,
)

DEFAULT_GAP = 0.125


@functools.lru_cache(maxsize=16)
def _perm_set(n_cubes: int, k: int, method: str, seed: int, pool_size: int) -> np.ndarray:
    perms = hamming_permutations(n_cubes, k, method=method, seed=seed, pool_size=pool_size)
    perms.setflags(write=False)
    return perms


def _cube_option(cube_size):
    if cube_size is None:
        return None
    if isinstance(cube_size, (int, np.integer)) and not isinstance(cube_size, bool):
        cube_size = (cube_size,) * 3
    try:
        cube = tuple(cube_size)
    except TypeError:
        raise TypeError(f"cube_size: expected an int or 3 ints, got {cube_size!r}") from None
    if len(cube) != 3 or any(
        isinstance(c, bool) or not isinstance(c, (int, np.integer)) or c < 1 for c in cube
    ):
        raise ValueError(
            f"cube_size: expected a positive int or 3 positive ints, got {cube_size!r}"
        )
    return [int(c) for c in cube]


class CubePuzzleTask(ProxyTask):
    """Shared machinery of the grid-puzzle tasks (``rubik``, ``ordering``, ``jigsaw3d``).

    Parameters
    ----------
    grid : int
        Cells per axis (2 for the Rubik's cube, M = 8; 3 for the jigsaw, M = 27).
    n_perms : int
        Number of permutations K (ordering classes).
    perm_method : {"max_min", "max_avg"}
        Greedy Hamming rule of :func:`rubikkit.ops.hamming_permutations`.
    perm_seed : int
        Seed of the permutation set (part of the task: a checkpoint's classes depend on it).
    pool_size : int
        Candidate pool of the permutation search when M > 9.
    cube_size : int or 3 ints, optional
        Cube size (d, h, w); default: ``floor(cell * (1 - gap))`` per axis for each batch.
    gap : float
        Fraction of a grid cell left free around its cube when ``cube_size`` is None.
    jitter : bool
        Random cube offsets inside the cells while the model is training (centred in eval).
    rotation : bool
        Rotate cubes and predict the rotations.
    both_rotations : bool
        Also draw code 3 (horizontal and vertical).
    alpha, beta : float
        Weights of the ordering and rotation losses.
    hidden : int
        Width of the ordering head's hidden layer.
    dropout : float
        Dropout in the heads.
    """

    name = "puzzle"

    def __init__(
        self,
        *,
        grid: int,
        n_perms: int,
        perm_method: str,
        perm_seed: int,
        pool_size: int,
        cube_size,
        gap: float,
        jitter: bool,
        rotation: bool,
        both_rotations: bool,
        alpha: float,
        beta: float,
        hidden: int,
        dropout: float,
        option_names,
    ):
        self.grid = check_int(grid, "grid", 1)
        self.n_cubes = self.grid**3
        if self.n_cubes < 2:
            raise ValueError("grid: need at least 2 cells per axis")
        self.n_perms = check_int(n_perms, "n_perms", 1)
        if perm_method not in ("max_min", "max_avg"):
            raise ValueError(f"perm_method: expected 'max_min' or 'max_avg', got {perm_method!r}")
        self.perm_method = perm_method
        self.perm_seed = check_int(perm_seed, "perm_seed", 0)
        self.pool_size = check_int(pool_size, "pool_size", 1)
        # The permutation set is built at the first batch; say now when it cannot be.
        if self.n_cubes <= MAX_ENUMERATED and self.n_perms > math.factorial(self.n_cubes):
            raise ValueError(
                f"n_perms: only {math.factorial(self.n_cubes)} permutations of {self.n_cubes} "
                f"cubes exist, asked {self.n_perms}"
            )
        if self.n_cubes > MAX_ENUMERATED and self.n_perms > self.pool_size:
            raise ValueError(
                f"n_perms: {self.n_perms} permutations cannot come from a pool of "
                f"pool_size = {self.pool_size}"
            )
        self.cube_size = _cube_option(cube_size)
        self.gap = check_fraction(gap, "gap")
        self.jitter = bool(jitter)
        self.rotation = bool(rotation)
        self.both_rotations = bool(both_rotations)
        self.alpha = check_weight(alpha, "alpha")
        self.beta = check_weight(beta, "beta")
        self.hidden = check_int(hidden, "hidden", 1)
        self.dropout = check_fraction(dropout, "dropout")
        values = {
            "grid": self.grid,
            "n_perms": self.n_perms,
            "perm_method": self.perm_method,
            "perm_seed": self.perm_seed,
            "pool_size": self.pool_size,
            "cube_size": self.cube_size,
            "gap": self.gap,
            "jitter": self.jitter,
            "rotation": self.rotation,
            "both_rotations": self.both_rotations,
            "alpha": self.alpha,
            "beta": self.beta,
            "hidden": self.hidden,
            "dropout": self.dropout,
        }
        super().__init__(**{k: values[k] for k in option_names})

    # --- configuration -------------------------------------------------------------------------

    @property
    def perm_set(self) -> np.ndarray:
        """(K, M) int64 permutation set; row ``k`` is ordering class ``k`` (computed once)."""
        return _perm_set(
            self.n_cubes, self.n_perms, self.perm_method, self.perm_seed, self.pool_size
        )

    @property
    def rotation_codes(self) -> tuple[int, ...]:
        if not self.rotation:
            return (0,)
        return (0, 1, 2, 3) if self.both_rotations else (0, 1, 2)

    @property
    def min_volume_shape(self) -> tuple[int, int, int]:
        if self.cube_size is not None:
            return tuple(self.grid * c for c in self.cube_size)
        # smallest cell whose cube floor(cell * (1 - gap)) is at least one voxel
        cell = int(np.ceil(1.0 / (1.0 - self.gap) - 1e-9))
        return (self.grid * cell,) * 3

    def cube_for(self, volume_shape) -> tuple[int, int, int]:
        """Cube size (d, h, w) used for volumes of shape ``(..., D, H, W)``."""
        if self.cube_size is not None:
            return tuple(self.cube_size)
        cells = [int(s) // self.grid for s in volume_shape[-3:]]
        return tuple(max(1, int(np.floor(c * (1.0 - self.gap) + 1e-9))) for c in cells)

    def build_model(self, backbone: nn.Module) -> nn.Module:
        return SiameseOctad(
            backbone,
            n_cubes=self.n_cubes,
            n_perms=self.n_perms,
            hidden=self.hidden,
            rotation=self.rotation,
            dropout=self.dropout,
        )

    def ceiling(self, volumes) -> dict[str, float]:
        """The best proxy accuracies that any model can reach on ``volumes`` in evaluation.

        Evaluation cuts centred cubes (no jitter), so the cubes of a volume are fixed; only the
        permutation and the rotations are drawn. A rotation that leaves a cube unchanged (an empty
        or full cube, or a symmetric one) cannot be seen, and two permutations that differ only
        by swapping identical cubes give identical inputs. Per cube, the rotation ceiling is the
        number of distinct images among its rotations divided by the number of rotation codes;
        per volume, the ordering ceiling is the number of distinct sequences of cube contents
        among the K permutations divided by K (the Bayes accuracy of uniform labels).

        Cubes are compared exactly, each with its own turns only. A cube that is a turn of another
        cube adds confusions not counted here, so the values are upper bounds. That happens on a
        volume centred on a round lesion: a half turn of one octant is (nearly) the octant across
        the centre, so turns and places confound, and the ceilings say 1.0 where only texture
        tells the cubes apart (LIDC nodule crops; tests/test_tasks.py shows it on a symmetric blob).

        Parameters
        ----------
        volumes : iterable of (C, D, H, W) arrays or tensors, or one (B, C, D, H, W) array
            For example the ``image`` of every item of a split.

        Returns
        -------
        dict
            ``order_ceiling``, ``rot_ceiling`` (tasks with rotations), ``constant_cubes``
            (the share of cubes holding a single value), and for scale the chance levels
            ``order_chance`` (1/K) and ``rot_chance`` (one over the number of rotation codes).
        """
        return self.volume_stats(volumes, turns=False)

    def turn_confusion(self, volumes) -> dict[str, float]:
        """How much a turned cube looks like the cube of another place, on ``volumes``.

        A turn reverses two axes of a cube; the cell it maps to is the *mirror* cell, its index
        reversed along those axes (for the 2x2x2 grid, the cell across the volume's centre). On a
        volume that a half turn about its centre leaves unchanged, every turned cube **is** its
        mirror cell's cube, so order and orientation cannot be told apart; the more a data set
        looks like that, the less the Rubik's cube's two heads can learn from it. Each pair of a
        cube and a turn that changes it is scored against the unturned cubes of the same volume
        (evaluation cubes, no jitter; mean squared differences).

        Parameters
        ----------
        volumes : iterable of (C, D, H, W) arrays or tensors, or one (B, C, D, H, W) array

        Returns
        -------
        dict
            ``turn_mirror_nearest``: share of pairs whose turned cube is nearest to the mirror
            cell's cube (1.0 for a volume symmetric about its centre; about one over the number
            of cubes for unrelated cubes); ``turn_mirror_ratio``: median over pairs of the
            difference to the mirror cube divided by the difference to the cube itself unturned
            (0 for a symmetric volume, about 1 for unrelated cubes); ``turn_pairs``: the pairs.

        Raises
        ------
        ValueError
            The task has no rotations, or ``volumes`` is empty or of the wrong shape.
        """
        if not self.rotation:
            raise ValueError(f"turn_confusion: the {self.name!r} task turns no cubes")
        return self.volume_stats(volumes, ceiling=False)

    def template_probe(self, volumes) -> dict[str, float]:
        """Whether the data set's *mean* cube of each place tells places and turns apart.

        :meth:`turn_confusion` compares the cubes of one volume; whether a network can learn the
        turns depends on the data set: if a turned cube looks different from an unturned one in
        the place it appears to come from *on average over the volumes* (organs in a fixed
        anatomical orientation), even a linear read-out can tell them apart; if the context around
        the centre is as likely one way as the other (nodules anywhere in the lung), turned and
        unturned cubes come from the same distribution and only a joint reading of all eight
        cubes could. Each test is a nearest-mean rule with the means taken over the *other*
        volumes (leave-one-out), so it needs no training and no second split; a nonlinear model
        can see more, so values near chance say the cue is not in the means, not that no model
        can learn it. Volumes that can be walked twice (an array, a list, a dataset) are walked
        twice, keeping only the M mean cubes; a one-shot iterator (a generator) has its
        evaluation cubes kept in memory (float32) instead.

        Parameters
        ----------
        volumes : iterable of (C, D, H, W) arrays or tensors, or one (B, C, D, H, W) array
            At least 2 volumes whose cubes have one shape (else the values are NaN).
            Walked twice unless it is a one-shot iterator.

        Returns
        -------
        dict
            ``place_template_acc``: share of unturned cubes nearest to the mean cube of their own
            cell among the M cells' means (chance 1/M); for tasks with turns also
            ``turn_template_acc``: for each cell and turn that maps it elsewhere, the share of
            unturned cubes nearer to their cell's mean than to the mean of the mirror cell's cubes
            turned, and of those turned cubes nearer to their own mean (chance 0.5; 1.0 when the
            mean cubes alone tell a turn).
        """
        return self.volume_stats(volumes, ceiling=False, turns=False, templates=True)

    def volume_stats(
        self, volumes, *, ceiling: bool = True, turns: bool | None = None, templates: bool = False
    ) -> dict:
        """:meth:`ceiling`, :meth:`turn_confusion` and :meth:`template_probe` from one pass.

        Parameters
        ----------
        volumes : iterable of (C, D, H, W) arrays or tensors, or one (B, C, D, H, W) array
            Walked once, and a second time for ``templates`` unless it is a one-shot iterator
            (an :class:`~collections.abc.Iterator`, such as a generator), whose cubes are then kept.
        ceiling : bool
            Include :meth:`ceiling`'s values.
        turns : bool or None
            Include :meth:`turn_confusion`'s values; None: when the task turns cubes.
        templates : bool
            Include :meth:`template_probe`'s values.

        Returns
        -------
        dict
            The union of the methods' dicts.
        """
        from rubikkit.ops import reference

        turns = self.rotation if turns is None else bool(turns) and self.rotation
        perm_set, codes = self.perm_set, self.rotation_codes
        order, rot, constant, n_cubes, n = 0.0, 0.0, 0, 0, 0
        nearest, ratios = [], []
        # template_probe needs the split's sum of the cubes of each cell before it can measure
        # any cube against the mean of the others: a second walk, or the cubes kept in memory.
        one_shot = isinstance(volumes, Iterator)
        sums: np.ndarray | None = None
        same_shape = True
        kept: list[np.ndarray] = []
        for cubes in self._evaluation_cubes(volumes):
            n += 1
            n_cubes += len(cubes)
            if templates and same_shape:
                stack = np.stack(cubes).astype(np.float32)
                if sums is None:
                    sums = np.zeros(stack.shape, np.float64)
                if stack.shape != sums.shape:  # no mean cube over cubes of other sizes
                    same_shape, kept = False, []
                else:
                    sums += stack
                    if one_shot:
                        kept.append(stack)
            if ceiling:
                ids: dict[bytes, int] = {}
                classes = np.array([ids.setdefault(c.tobytes(), len(ids)) for c in cubes])
                order += len(np.unique(classes[perm_set], axis=0)) / len(perm_set)
                for c in cubes:
                    seen = {
                        np.ascontiguousarray(reference.rotate_cube(c, k)).tobytes() for k in codes
                    }
                    rot += len(seen) / len(codes)
                    constant += bool(c.min() == c.max())
            if not turns:
                continue
            stack = np.stack(cubes).astype(np.float64)
            for m, cube in enumerate(cubes):
                for code in codes[1:]:
                    j = self._mirror_cell(m, code)
                    turned = reference.rotate_cube(cube, code).astype(np.float64)
                    diff = ((stack - turned[None]) ** 2).reshape(len(cubes), -1).mean(axis=1)
                    if j == m or diff[m] == 0:  # the turn maps the cube onto itself
                        continue
                    nearest.append(int(np.argmin(diff)) == j)
                    ratios.append(diff[j] / diff[m])
        if n == 0:
            raise ValueError("volumes: empty")
        out = {}
        if ceiling:
            out.update(order_ceiling=order / n, order_chance=1.0 / len(perm_set))
            if self.rotation:
                out.update(rot_ceiling=rot / n_cubes, rot_chance=1.0 / len(codes))
            out["constant_cubes"] = constant / n_cubes
        if turns and ratios:
            out.update(
                turn_mirror_nearest=float(np.mean(nearest)),
                turn_mirror_ratio=float(np.median(ratios)),
                turn_pairs=len(ratios),
            )
        elif turns:  # every turn left its cube unchanged (empty or symmetric cubes)
            out.update(turn_mirror_nearest=float("nan"), turn_mirror_ratio=float("nan"),
                       turn_pairs=0)  # fmt: skip
        if templates:
            if not same_shape:
                sums = None
            elif not one_shot:
                kept = (np.stack(c).astype(np.float32) for c in self._evaluation_cubes(volumes))
            out.update(self._template_accuracies(sums, n, kept))
        return out

    def _mirror_cell(self, m: int, code: int) -> int:
        # The cell that turn ``code`` sends cell ``m`` to: its index reversed on the turned axes.
        g = self.grid
        axes = reversed_axes(code)
        cell = np.unravel_index(m, (g, g, g))
        mirror = [g - 1 - c if a in axes else c for a, c in enumerate(cell)]
        return int(np.ravel_multi_index(mirror, (g, g, g)))

    def _template_accuracies(self, sums: np.ndarray | None, n: int, stacks) -> dict[str, float]:
        # sums: (M, C, d, h, w) float64 sum over the n volumes of each cell's evaluation cube,
        # None when their shapes differ; stacks: the same n (M, C, d, h, w) float32 cubes again.
        # See template_probe: every distance is to a mean without the volume's own cube.
        from rubikkit.ops import reference

        out = {"place_template_acc": float("nan")}
        if self.rotation:
            out["turn_template_acc"] = float("nan")
        if sums is None or n < 2:
            return out
        m_cubes = len(sums)
        flat_sums = sums.reshape(m_cubes, -1)
        # Each cell and turn that sends it elsewhere: the cell j whose turned cubes it is to be
        # told from, and the sum of those turned cubes (a turn only moves voxels, so the sum of
        # the turned cubes is the turned sum).
        pairs = [
            (m, code, j, reference.rotate_cube(sums[j], code).reshape(-1))
            for m in range(m_cubes)
            for code in (self.rotation_codes[1:] if self.rotation else ())
            if (j := self._mirror_cell(m, code)) != m
        ]

        def to_mean(x, own, total):
            # Mean squared distance of x to the mean of the other n - 1 volumes' cubes whose
            # sum over all n is ``total`` and whose cube of this volume is ``own``.
            return float(((x - (total - own) / (n - 1)) ** 2).mean())

        place_hits, turn_hits, seen = 0, 0, 0
        for stack in stacks:
            x = stack.reshape(m_cubes, -1).astype(np.float64)
            means = (flat_sums - x) / (n - 1)
            dist = ((x[:, None, :] - means[None]) ** 2).mean(axis=-1)
            place_hits += int((dist.argmin(axis=1) == np.arange(m_cubes)).sum())
            seen += 1
            for m, code, j, s_turned in pairs:
                plain = x[m]
                turned = np.ascontiguousarray(reference.rotate_cube(stack[j], code))
                turned = turned.reshape(-1).astype(np.float64)
                turn_hits += to_mean(plain, plain, flat_sums[m]) < to_mean(plain, turned, s_turned)
                turn_hits += to_mean(turned, turned, s_turned) < to_mean(
                    turned, plain, flat_sums[m]
                )
        if seen != n:
            raise ValueError(
                f"volumes: gave {n} volumes on the first walk and {seen} on the second"
            )
        out["place_template_acc"] = place_hits / (n * m_cubes)
        if pairs:
            out["turn_template_acc"] = turn_hits / (2 * n * len(pairs))
        return out

    def _evaluation_cubes(self, volumes):
        # The cubes of each volume that evaluation cuts (centred in their cells, no jitter).
        if isinstance(volumes, (np.ndarray, torch.Tensor)) and volumes.ndim != 5:
            raise ValueError(
                f"volumes: expected (B, C, D, H, W) or an iterable of (C, D, H, W), "
                f"got shape {tuple(volumes.shape)}"
            )
        for i, vol in enumerate(volumes):
            if isinstance(vol, torch.Tensor):
                vol = vol.detach().cpu()
                # numpy has no bfloat16; float32 holds it exactly, so equal cubes stay equal
                v = (vol.float() if vol.dtype == torch.bfloat16 else vol).numpy()
            else:
                v = np.asarray(vol)
            if v.ndim != 4:
                raise ValueError(f"volumes[{i}]: expected (C, D, H, W), got shape {v.shape}")
            # a copy: torch refuses negative strides, which np.flip leaves even on size-1 axes
            check_volumes(torch.from_numpy(v[None].copy()), self.min_volume_shape)
            cube = self.cube_for(v.shape)
            origins = cell_origins(v.shape[1:], self.grid, cube, jitter=False)
            yield [
                np.ascontiguousarray(v[:, z : z + cube[0], y : y + cube[1], x : x + cube[2]])
                for z, y, x in origins
            ]

    # --- batches, loss, metrics ----------------------------------------------------------------

    def build_batch(self, volumes: torch.Tensor, generator, train: bool = True) -> dict:
        """Cut, rearrange and rotate the cubes of a batch, on the volumes' device.

        Parameters
        ----------
        volumes : (B, C, D, H, W) float tensor
        generator : torch.Generator
            Drives the cube offsets, permutations and rotations.
        train : bool
            Jitter the cube offsets (when the task's ``jitter`` is on).

        Returns
        -------
        dict
            ``"cubes"`` (B, M, C, d, h, w) tensor; ``"order"`` (B,) int64 tensor of permutation
            classes; ``"hor"``, ``"ver"`` (B, M) float tensors of rotation bits; and as numpy
            arrays ``"origins"`` (B, M, 3), ``"perms"`` (B, M) (``perm_set[order]``) and
            ``"rots"`` (B, M) codes, which :func:`rubikkit.ops.unpuzzle` takes to undo the puzzle.
        """
        check_volumes(volumes, self.min_volume_shape)
        B = int(volumes.shape[0])
        rng = numpy_rng(generator)
        cube = self.cube_for(volumes.shape)
        origins = sample_origins(
            B, volumes.shape, grid=self.grid, cube_size=cube, jitter=self.jitter and train, rng=rng
        )
        labels, perms = sample_permutations(B, self.perm_set, rng)
        rots = sample_rotations(B, self.n_cubes, codes=self.rotation_codes, rng=rng)
        cubes = puzzle(volumes.detach(), origins, cube, perms, rots)
        hor, ver = rotation_bits(rots)
        dev = volumes.device
        return {
            "cubes": cubes,
            "order": torch.as_tensor(labels, device=dev),
            "hor": torch.as_tensor(hor, dtype=torch.float32, device=dev),
            "ver": torch.as_tensor(ver, dtype=torch.float32, device=dev),
            "origins": origins,
            "perms": perms,
            "rots": rots,
        }

    def loss(self, out: dict, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        """The Rubik's cube loss (Sec. 2.1) and the Table 1 metrics of one batch."""
        order_logits = out["order"].float()
        loss_order = F.cross_entropy(order_logits, batch["order"])
        metrics = {
            "loss_order": float(loss_order.detach()),
            "order_acc": float((order_logits.argmax(1) == batch["order"]).float().mean()),
        }
        loss = self.alpha * loss_order
        if self.rotation:
            rot = out["rot"].float()
            loss_hor = F.binary_cross_entropy_with_logits(rot[..., 0], batch["hor"])
            loss_ver = F.binary_cross_entropy_with_logits(rot[..., 1], batch["ver"])
            loss = loss + self.beta * (loss_hor + loss_ver)
            hor_ok = (rot[..., 0] > 0).float() == batch["hor"]
            ver_ok = (rot[..., 1] > 0).float() == batch["ver"]
            metrics.update(
                loss_rot=float((loss_hor + loss_ver).detach()),
                rot_acc=float((hor_ok & ver_ok).float().mean()),
                hor_acc=float(hor_ok.float().mean()),
                ver_acc=float(ver_ok.float().mean()),
            )
        metrics["loss"] = float(loss.detach())
        return loss, metrics

    def step(self, model: nn.Module, volumes: torch.Tensor, generator, index=None):
        batch = self.build_batch(volumes, generator, train=model.training)
        return self.loss(model(batch["cubes"]), batch)


_RUBIK_OPTIONS = (
    "n_perms",
    "perm_method",
    "perm_seed",
    "cube_size",
    "gap",
    "jitter",
    "both_rotations",
    "alpha",
    "beta",
    "hidden",
    "dropout",
)


class RubikTask(CubePuzzleTask):
    """``rubik``: cube ordering and orientation on a 2x2x2 Rubik's cube (Zhuang et al., Sec. 2.1).

    Parameters
    ----------
    n_perms : int
        K, the number of permutations (default 100).
    perm_method, perm_seed : str, int
        How the permutation set is chosen (see :func:`rubikkit.ops.hamming_permutations`).
    cube_size : int or 3 ints, optional
        Fixed cube size; default ``floor(cell * (1 - gap))`` per axis.
    gap : float
        Fraction of each grid cell left free (default 0.125: 10 voxels of an 80-voxel cell).
    jitter : bool
        Random cube offsets inside the cells in training.
    both_rotations : bool
        Draw rotation codes from {0, 1, 2, 3} instead of {0, 1, 2}.
    alpha, beta : float
        Loss weights of ordering and orientation (1 and 1: the paper's equal weights).
    hidden : int
        Hidden width of the ordering head.
    dropout : float
        Dropout in the heads.
    """

    name = "rubik"
    _rotation = True

    def __init__(
        self,
        n_perms: int = 100,
        perm_method: str = "max_min",
        perm_seed: int = 0,
        cube_size=None,
        gap: float = DEFAULT_GAP,
        jitter: bool = True,
        both_rotations: bool = False,
        alpha: float = 1.0,
        beta: float = 1.0,
        hidden: int = 512,
        dropout: float = 0.0,
    ):
        names = (
            _RUBIK_OPTIONS
            if self._rotation
            else tuple(n for n in _RUBIK_OPTIONS if n not in ("both_rotations", "beta"))
        )
        super().__init__(
            grid=2,
            n_perms=n_perms,
            perm_method=perm_method,
            perm_seed=perm_seed,
            pool_size=100_000,
            cube_size=cube_size,
            gap=gap,
            jitter=jitter,
            rotation=self._rotation,
            both_rotations=both_rotations,
            alpha=alpha,
            beta=beta,
            hidden=hidden,
            dropout=dropout,
            option_names=names,
        )


class OrderingTask(RubikTask):
    """``ordering``: the Rubik's cube without rotations, the paper's "cube ordering" baseline.

    Parameters are those of :class:`RubikTask` without ``both_rotations`` and ``beta``.
    """

    name = "ordering"
    _rotation = False

    def __init__(
        self,
        n_perms: int = 100,
        perm_method: str = "max_min",
        perm_seed: int = 0,
        cube_size=None,
        gap: float = DEFAULT_GAP,
        jitter: bool = True,
        alpha: float = 1.0,
        hidden: int = 512,
        dropout: float = 0.0,
    ):
        super().__init__(
            n_perms=n_perms,
            perm_method=perm_method,
            perm_seed=perm_seed,
            cube_size=cube_size,
            gap=gap,
            jitter=jitter,
            alpha=alpha,
            hidden=hidden,
            dropout=dropout,
        )
