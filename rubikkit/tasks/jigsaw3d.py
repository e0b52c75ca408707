"""3D jigsaw puzzle (Noroozi & Favaro, ECCV 2016, in 3D), a baseline of TCPC (Sec. 3.2).

The volume is cut into a 3x3x3 grid of 27 cubes (with a gap, as for the Rubik's cube), the cubes
are shuffled by one of K permutations selected for large Hamming distance from a random pool
(27! cannot be enumerated; :func:`rubikkit.ops.hamming_permutations`), and a 27-branch Siamese
network classifies the permutation. No rotations. Metric: ``order_acc``.
"""

from __future__ import annotations

from rubikkit.tasks.rubik import DEFAULT_GAP, CubePuzzleTask


class Jigsaw3DTask(CubePuzzleTask):
    """``jigsaw3d``: order classification of 27 shuffled cubes.

    Parameters
    ----------
    n_perms : int
        K, the number of permutations (default 100).
    perm_method, perm_seed : str, int
        How the permutation set is chosen.
    pool_size : int
        Random candidate permutations the Hamming selection picks from.
    cube_size : int or 3 ints, optional
        Fixed cube size; default ``floor(cell * (1 - gap))`` per axis.
    gap : float
        Fraction of each grid cell left free (default 0.125).
    jitter : bool
        Random cube offsets inside the cells in training.
    hidden : int
        Hidden width of the ordering head.
    dropout : float
        Dropout in the head.
    """

    name = "jigsaw3d"

    def __init__(
        self,
        n_perms: int = 100,
        perm_method: str = "max_min",
        perm_seed: int = 0,
        pool_size: int = 100_000,
        cube_size=None,
        gap: float = DEFAULT_GAP,
        jitter: bool = True,
        hidden: int = 512,
        dropout: float = 0.0,
    ):
        super().__init__(
            grid=3,
            n_perms=n_perms,
            perm_method=perm_method,
            perm_seed=perm_seed,
            pool_size=pool_size,
            cube_size=cube_size,
            gap=gap,
            jitter=jitter,
            rotation=False,
            both_rotations=False,
            alpha=1.0,
            beta=0.0,
            hidden=hidden,
            dropout=dropout,
            option_names=(
                "n_perms",
                "perm_method",
                "perm_seed",
                "pool_size",
                "cube_size",
                "gap",
                "jitter",
                "hidden",
                "dropout",
            ),
        )
