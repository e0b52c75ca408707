"""Experiment records: one JSON line per run, summarised into tables beside published numbers.

Every fine-tuning or proxy-task run of an experiment appends one record to
``results/<experiment>.jsonl`` (:func:`append_record`). A record has the fields of
:data:`RECORD_FIELDS`; ``metrics`` maps metric names (``acc``, ``auc``, ``miou``, ``dice``,
``order_acc``, ``rot_acc``) to floats. :func:`summarise` groups records by setting and reports
mean ± sample standard deviation over seeds; :func:`markdown_table` renders them with the published
numbers of :data:`PUBLISHED` in rows marked *published (not run here)*. A cell that no run produced
is shown as ``–``: it is never filled in.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

RECORD_FIELDS = (
    "dataset",
    "method",
    "backbone",
    "head",
    "label_fraction",
    "seed",
    "split",
    "metrics",
    "epochs",
    "commit",
    "device",
    "wall_s",
)
METHODS = ("scratch", "rubik", "ordering", "jigsaw3d", "cpc3d", "tcpc")
MISSING = "–"

# Published numbers, copied as facts from the papers named in ``source``; never produced here.
# Values are fractions (accuracy 0.721, not 72.1 %).
PUBLISHED: list[dict] = [
    {
        "dataset": "medmnist3d:adrenal",
        "method": "scratch",
        "backbone": "resnet18",
        "head": "classify",
        "label_fraction": 1.0,
        "metrics": {"acc": 0.721, "auc": 0.827},
        "source": "MedMNIST v2 (Yang et al., Sci. Data 2023), ResNet-18+3D, 28^3",
    },
    # Zhuang et al. 2019, Table 1 (proxy accuracies, private hemorrhage CT and BraTS-2018).
    {
        "dataset": "hemorrhage CT (private)",
        "method": "ordering",
        "backbone": "vgg3d",
        "head": "proxy",
        "label_fraction": None,
        "metrics": {"order_acc": 0.997},
        "source": "Zhuang et al. MICCAI 2019, Table 1",
    },
    {
        "dataset": "hemorrhage CT (private)",
        "method": "rubik",
        "backbone": "vgg3d",
        "head": "proxy",
        "label_fraction": None,
        "metrics": {"order_acc": 0.920, "rot_acc": 0.931},
        "source": "Zhuang et al. MICCAI 2019, Table 1",
    },
    {
        "dataset": "BraTS-2018",
        "method": "ordering",
        "backbone": "vgg3d",
        "head": "proxy",
        "label_fraction": None,
        "metrics": {"order_acc": 0.995},
        "source": "Zhuang et al. MICCAI 2019, Table 1",
    },
    {
        "dataset": "BraTS-2018",
        "method": "rubik",
        "backbone": "vgg3d",
        "head": "proxy",
        "label_fraction": None,
        "metrics": {"order_acc": 0.929, "rot_acc": 0.821},
        "source": "Zhuang et al. MICCAI 2019, Table 1",
    },
    # Zhuang et al. 2019, Table 2 (fine-tuning).
    *[
        {
            "dataset": "hemorrhage CT (private)",
            "method": m,
            "backbone": "vgg3d",
            "head": "classify",
            "label_fraction": 1.0,
            "metrics": {"acc": a},
            "source": "Zhuang et al. MICCAI 2019, Table 2",
        }
        for m, a in (("scratch", 0.726), ("ordering", 0.811), ("rubik", 0.838))
    ],
    *[
        {
            "dataset": "BraTS-2018",
            "method": m,
            "backbone": "vgg3d",
            "head": head,
            "label_fraction": 1.0,
            "metrics": {"miou": v},
            "source": "Zhuang et al. MICCAI 2019, Table 2",
        }
        for m, head, v in (
            ("scratch", "unet", 0.733),
            ("scratch", "duc", 0.740),
            ("ordering", "unet", 0.739),
            ("ordering", "duc", 0.750),
            ("rubik", "unet", 0.762),
            ("rubik", "duc", 0.773),
        )
    ],
    # Zhou et al. (TCPC), Table 1: lung nodules (1 % of LUNA16 labels) and hemorrhage CT.
    *[
        {
            "dataset": ds,
            "method": m,
            "backbone": bb,
            "head": "classify",
            "label_fraction": lf,
            "metrics": {"acc": acc, "auc": auc},
            "source": "Zhou et al. (TCPC), Table 1",
        }
        for ds, lf, bb, rows in (
            (
                "hemorrhage CT (private)",
                1.0,
                "vgg3d",
                (
                    ("scratch", 0.7230, 0.889),
                    ("cpc3d", 0.7635, 0.895),
                    ("jigsaw3d", 0.7331, 0.891),
                    ("rubik", 0.7736, 0.902),
                    ("tcpc", 0.7838, 0.921),
                ),
            ),
            (
                "hemorrhage CT (private)",
                1.0,
                "resnet18",
                (
                    ("scratch", 0.8108, 0.937),
                    ("cpc3d", 0.8379, 0.921),
                    ("jigsaw3d", 0.8581, 0.951),
                    ("rubik", 0.8750, 0.945),
                    ("tcpc", 0.8817, 0.955),
                ),
            ),
            (
                "LUNA16 nodules",
                0.01,
                "vgg3d",
                (
                    ("scratch", 0.8406, 0.911),
                    ("cpc3d", 0.9219, 0.966),
                    ("jigsaw3d", 0.8943, 0.940),
                    ("rubik", 0.8642, 0.924),
                    ("tcpc", 0.9586, 0.987),
                ),
            ),
            (
                "LUNA16 nodules",
                0.01,
                "resnet18",
                (
                    ("scratch", 0.9418, 0.982),
                    ("cpc3d", 0.9570, 0.989),
                    ("jigsaw3d", 0.9812, 0.992),
                    ("rubik", 0.9733, 0.993),
                    ("tcpc", 0.9888, 0.996),
                ),
            ),
        )
        for m, acc, auc in rows
    ],
]


def validate_record(record: dict) -> dict:
    """Check a run record has every field of :data:`RECORD_FIELDS` with sane types.

    Raises
    ------
    ValueError
        Naming the first missing or malformed field.
    """
    if not isinstance(record, dict):
        raise TypeError(f"record: expected a dict, got {type(record).__name__}")
    for field in RECORD_FIELDS:
        if field not in record:
            raise ValueError(f"record: missing field {field!r}")
    if record["method"] not in METHODS:
        raise ValueError(f"record: method {record['method']!r} is not one of {METHODS}")
    if record.get("variant") is not None and not isinstance(record["variant"], str):
        raise ValueError(f"record: variant must be a name or null, got {record['variant']!r}")
    if not isinstance(record["metrics"], dict) or not record["metrics"]:
        raise ValueError("record: 'metrics' must be a non-empty dict of name -> float")
    for name, value in record["metrics"].items():
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"record: metric {name!r} must be a finite number, got {value!r}")
    lf = record["label_fraction"]
    if lf is not None and not (0 < float(lf) <= 1):
        raise ValueError(f"record: label_fraction must be in (0, 1] or null, got {lf!r}")
    return record


def append_record(
    path: str | os.PathLike, record: dict, *, unique_by: Sequence[str] | None = None
) -> bool:
    """Append one validated record as a JSON line (one ``write`` call, so lines never interleave).

    Parameters
    ----------
    path : path-like
    record : dict
    unique_by : sequence of str, optional
        Field names (the driver uses ``("run", "config_hash")``): the record is not written when
        the file already holds one with the same values. The check and the write happen under an
        exclusive lock of the file (POSIX), so two drivers that scored the same run concurrently
        leave one record.

    Returns
    -------
    bool
        Whether the record was written.
    """
    validate_record(record)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(record, sort_keys=True) + "\n"
    with open(path, "a+", encoding="utf-8") as fh:
        if unique_by:
            try:
                import fcntl
            except ImportError:  # not POSIX: the check still runs, without the lock
                fcntl = None
            if fcntl is not None:
                fcntl.flock(fh, fcntl.LOCK_EX)  # released when the file closes
            fh.seek(0)
            key = tuple(record.get(k) for k in unique_by)
            for old in fh:
                if old.strip() and tuple(json.loads(old).get(k) for k in unique_by) == key:
                    return False
        fh.write(line)
    return True


def load_records(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> list[dict]:
    """Read records from one ``.jsonl`` file, several, or every ``*.jsonl`` in a folder.

    A missing folder gives no records; a malformed line is an error naming the file and line.
    """
    if isinstance(paths, (str, os.PathLike)):
        p = Path(paths)
        files = sorted(p.glob("*.jsonl")) if p.is_dir() else ([p] if p.exists() else [])
    else:
        files = [Path(p) for p in paths]
    records = []
    for f in files:
        for i, line in enumerate(f.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                validate_record(rec)
            except (json.JSONDecodeError, ValueError, TypeError) as exc:
                raise ValueError(f"{f}:{i}: bad record: {exc}") from exc
            rec.setdefault("experiment", f.stem)
            records.append(rec)
    return records


def _mean_sd(values: Sequence[float]) -> tuple[float, float]:
    n = len(values)
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else float("nan")
    return mean, sd


GROUP_KEYS = ("dataset", "method", "variant", "backbone", "head", "label_fraction", "split")


def device_key(device: str | None) -> str | None:
    """A record's ``device`` as one machine is named by every record: records written before
    the singular was fixed say ``"1 torch threads"``."""
    return device.replace(" 1 torch threads;", " 1 torch thread;") if device else device


def machine_name(device: str | None) -> str:
    """The machine of a record's ``device`` without its cores, threads, torch version and
    trademark signs: ``"cpu: AMD EPYC, 2 cores, 1 torch thread; torch 2.13.0+cpu"`` gives
    ``"AMD EPYC"``, and ``"cpu: Intel(R) Xeon(R) Processor, 2 cores, ..."`` gives
    ``"Intel Xeon Processor"``."""
    if not device:
        return "unknown machine"
    head = re.split(r", \d+ cores", device.split(";")[0])[0]
    head = re.sub(r"\((R|TM)\)", "", head).strip()
    return head.split(": ", 1)[1] if head.startswith(("cpu: ", "cuda: ")) else head


def method_label(method: str, variant: str | None = None) -> str:
    """A method's name in tables and legends: ``rubik``, or ``rubik [n_perms=10]`` for a variant."""
    return method if not variant else f"{method} [{variant}]"


def summarise(records: Iterable[dict], keys: Sequence[str] = GROUP_KEYS) -> list[dict]:
    """Group records by ``keys`` and give, per metric, mean, sd (over seeds) and the seeds used."""
    groups: dict[tuple, list[dict]] = {}
    for rec in records:
        groups.setdefault(tuple(rec.get(k) for k in keys), []).append(rec)
    out = []
    for key, recs in groups.items():
        row = dict(zip(keys, key))
        metric_names = sorted({m for r in recs for m in r["metrics"]})
        row["n"] = len(recs)
        row["seeds"] = sorted(r["seed"] for r in recs)
        row["metrics"] = {}
        for m in metric_names:
            vals = [float(r["metrics"][m]) for r in recs if m in r["metrics"]]
            mean, sd = _mean_sd(vals)
            row["metrics"][m] = {"mean": mean, "sd": sd, "n": len(vals)}
        out.append(row)
    return out


def _fmt(stat: dict | None, digits: int = 3) -> str:
    if stat is None:
        return MISSING
    if stat["n"] > 1:
        return f"{stat['mean']:.{digits}f} ± {stat['sd']:.{digits}f} (n={stat['n']})"
    return f"{stat['mean']:.{digits}f} (n=1)"


def markdown_table(
    records: Iterable[dict],
    dataset: str,
    metrics: Sequence[str],
    *,
    split: str = "test",
    methods: Sequence[str] = METHODS,
    published: Iterable[dict] | None = None,
    columns: Sequence[float | None] | None = None,
) -> str:
    """A markdown table: rows (method, backbone, head), columns label fraction x metric.

    Rows of ``published`` (default: :data:`PUBLISHED` entries for ``dataset``) are added at the bottom and
    marked *published*. Every (row, column) that no run produced shows ``–``.
    """
    rows = [r for r in summarise(records) if r["dataset"] == dataset and r["split"] == split]
    pub = [p for p in (PUBLISHED if published is None else published) if p["dataset"] == dataset]
    fractions = (
        list(columns)
        if columns is not None
        else sorted({r["label_fraction"] for r in rows + pub}, key=lambda x: (x is None, x))
    )
    header = ["method", "backbone", "head"] + [
        f"{m} @ {'proxy' if lf is None else f'{lf:g}'}" for lf in fractions for m in metrics
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    index: dict[tuple, dict] = {}
    for r in rows:
        index[(r["method"], r["backbone"], r["head"], r["label_fraction"])] = r["metrics"]
    settings = sorted(
        {(r["method"], r["backbone"], r["head"]) for r in rows},
        key=lambda s: (methods.index(s[0]) if s[0] in methods else 99, s[1], s[2]),
    )
    for method, backbone, head in settings:
        cells = []
        for lf in fractions:
            stats = index.get((method, backbone, head, lf), {})
            cells += [_fmt(stats.get(m)) for m in metrics]
        lines.append("| " + " | ".join([method, backbone, head, *cells]) + " |")
    for p in pub:
        cells = []
        for lf in fractions:
            for m in metrics:
                v = p["metrics"].get(m) if p["label_fraction"] == lf else None
                cells.append(MISSING if v is None else f"{v:.3f}")
        label = f"{p['method']} (published: {p['source']})"
        lines.append("| " + " | ".join([label, p["backbone"], p["head"], *cells]) + " |")
    return "\n".join(lines)


SETTING_KEYS = ("dataset", "backbone", "head", "label_fraction", "split", "epochs")


def seed_table(
    records: Iterable[dict],
    metric: str,
    *,
    flag: str | None = "top_share",
    flag_at: float = 0.95,
    digits: int = 3,
) -> str:
    """One setting's runs seed by seed: rows seeds, columns methods, last row mean ± sd.

    Seeds pair the runs: a fine-tuning seed fixes the head's initialisation, the labelled subset's
    order and the augmentation, so scratch and a pre-trained method with the same seed differ in
    the starting weights only. A cell whose record has ``metrics[flag] >= flag_at`` (by default: the
    classifier predicts one class for at least 95 % of the volumes) is marked with ``*``.

    Parameters
    ----------
    records : iterable of dict
        Records of one setting (equal values of :data:`SETTING_KEYS`), one or more methods.
    metric : str
        The metric in the cells, e.g. ``"auc"``.
    flag, flag_at : str or None, float
        Mark a cell with ``*`` when its record's ``metrics[flag] >= flag_at``; ``flag=None`` marks
        nothing (a segmenter's records have no ``top_share``: a run that labels no voxel as the
        lesion shows as a Dice of 0 in its own cell).
    digits : int
        Decimals of the cells.

    Returns
    -------
    str
        A markdown table, with a note under it when a cell is marked or a record lacks ``flag``.
    """
    recs = list(records)
    if not recs:
        raise ValueError("records: expected at least one record")
    settings = {tuple(r.get(k) for k in SETTING_KEYS) for r in recs}
    if len(settings) > 1:
        raise ValueError(
            f"records: expected one setting ({', '.join(SETTING_KEYS)}), got {len(settings)}: "
            + "; ".join(str(s) for s in sorted(settings, key=str))
        )
    if not any(metric in r["metrics"] for r in recs):
        raise ValueError(f"metric: no record has {metric!r}")
    rank = {m: i for i, m in enumerate(METHODS)}
    labels = sorted(
        {(r["method"], r.get("variant")) for r in recs},
        key=lambda mv: (rank.get(mv[0], len(rank)), mv[1] or ""),
    )
    cells: dict[tuple, dict] = {}
    for r in recs:
        key = (r["seed"], r["method"], r.get("variant"))
        if key in cells:
            raise ValueError(f"records: two records for seed {key[0]} of {method_label(*key[1:])}")
        cells[key] = r["metrics"]
    seeds = sorted({r["seed"] for r in recs})
    header = ["seed"] + [method_label(*mv) for mv in labels]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    flagged = False
    for seed in seeds:
        row = [str(seed)]
        for mv in labels:
            m = cells.get((seed, *mv))
            if m is None or metric not in m:
                row.append(MISSING)
                continue
            mark = "*" if flag is not None and m.get(flag, -math.inf) >= flag_at else ""
            flagged = flagged or bool(mark)
            row.append(f"{m[metric]:.{digits}f}{mark}")
        lines.append("| " + " | ".join(row) + " |")
    stats = []
    for mv in labels:
        vals = [cells[(s, *mv)][metric] for s in seeds if metric in cells.get((s, *mv), {})]
        mean, sd = _mean_sd(vals) if vals else (None, None)
        stats.append(
            _fmt(None if mean is None else {"mean": mean, "sd": sd, "n": len(vals)}, digits)
        )
    lines.append("| mean ± sd | " + " | ".join(stats) + " |")
    unchecked = sorted(
        {
            method_label(r["method"], r.get("variant"))
            for r in recs
            if flag is not None and flag not in r["metrics"]
        }
    )
    notes = [f"`*`: {flag} ≥ {flag_at:g} in that run."] if flagged else []
    if unchecked:
        notes.append(f"Records of {', '.join(unchecked)} lack {flag}: not checked.")
    if notes:
        lines += ["", " ".join(notes)]
    return "\n".join(lines)


def one_pretraining(
    records: Iterable[dict], experiments: Sequence[str], anchor: str, method: str = "rubik"
) -> list[dict]:
    """Scratch and the fine-tunings that started from one pre-training, across ``experiments``.

    The pre-training is the one behind ``anchor``'s configured (variant-free) ``method``
    fine-tunings, told by their ``init_digest``: the grids fine-tune it under whatever variant name,
    and a re-trained pre-training with other weights is left out. Classification runs only; the
    result is empty of pre-trained runs when ``anchor`` has none.
    """
    runs = [r for r in records if r["experiment"] in experiments and r.get("head") == "classify"]
    digests = {
        r.get("init_digest")
        for r in runs
        if r["experiment"] == anchor and r["method"] == method and not r.get("variant")
    } - {None}
    return [
        r
        for r in runs
        if (r["method"] == "scratch" and not r.get("variant")) or r.get("init_digest") in digests
    ]


def transfer_depths(records: Iterable[dict], metric: str, n_stages: int) -> list[dict]:
    """Each pre-training's ``metric`` by how many encoder stages its fine-tunings transferred.

    A fine-tuning with ``transfer_stages`` N took the first N stages of its pre-training and the
    deeper ones from the scratch run of its seed (:func:`rubikkit.train.finetune`); one without it
    took all ``n_stages``; scratch took none, so it is every curve's depth 0. Each depth is read
    against scratch seed by seed, as the fine-tuning seed pairs the runs. A variant whose
    fine-tunings started from different weights (``init_digest``: its pre-training trained again,
    on another machine say) gives one curve per set of weights, labelled ``@`` and the digest's
    first 8 characters, in the order the records first name them, and ``init_digest`` set;
    otherwise ``init_digest`` is None.

    A seed pairs runs of one machine: on another CPU the same fine-tuning rounds differently and
    can end elsewhere. So scratch may come from several machines (``device``, the whole string),
    one set of seeds each; then each curve is read against the scratch of the machine its runs
    came from, which must be one of them.

    Parameters
    ----------
    records : iterable of dict
        Fine-tuning records of one setting (:data:`SETTING_KEYS`), one record per (pre-training,
        depth, seed); scratch among them.
    metric : str
        E.g. ``"dice"``.
    n_stages : int
        Stages of the backbone, the depth of a full transfer (5 for the 3D VGG and the ResNets).

    Returns
    -------
    list of dict
        One row per (pre-training, depth), pre-trainings in label order and depths rising:
        ``label``, ``method``, ``variant``, ``init_digest``, ``scratch_device`` (the ``device``
        of the scratch runs it is read against), ``depth``, ``n``, ``mean``, ``sd`` and, over the
        seeds scratch shares, ``paired_n``, ``paired_mean``, ``paired_sd`` (the run minus
        scratch) and ``wins`` (seeds above scratch). Depth 0 is that scratch itself, for every
        pre-training.

    Raises
    ------
    ValueError
        Two records for one (pre-training, depth, seed) or for one scratch seed on one machine,
        a depth outside 0 to ``n_stages``, mixed settings, no scratch record with ``metric``, or,
        with scratch from several machines, a pre-training whose runs came from another machine
        or from more than one.
    """
    recs = [r for r in records if r.get("head") != "proxy" and metric in r["metrics"]]
    settings = {tuple(r.get(k) for k in SETTING_KEYS) for r in recs}
    if len(settings) > 1:
        raise ValueError(
            f"records: expected one setting ({', '.join(SETTING_KEYS)}), got {len(settings)}"
        )
    # One pre-training's variant name can stand for several sets of weights (the same settings
    # trained again on another machine, say): a curve must not join them, so those are split.
    weights: dict[tuple, dict] = {}  # (method, variant) -> {digest: order of first record}
    for r in recs:
        if r["method"] != "scratch":
            seen = weights.setdefault((r["method"], r.get("variant")), {})
            seen.setdefault(r.get("init_digest"), len(seen))
    cells: dict[tuple, dict[int, float]] = {}
    bases: dict[str | None, dict[int, float]] = {}  # scratch by the machine it ran on
    devices: dict[tuple, set] = {}  # the machines a pre-training's runs came from
    for r in recs:
        scratch = r["method"] == "scratch"
        depth = 0 if scratch else r.get("transfer_stages", n_stages)
        if not 0 <= depth <= n_stages:
            raise ValueError(f"n_stages: a record transferred {depth} stages, more than {n_stages}")
        mv = (r["method"], None if scratch else r.get("variant"))
        digest = r.get("init_digest") if len(weights.get(mv, ())) > 1 else None
        if scratch:
            seeds = bases.setdefault(device_key(r.get("device")), {})
        else:
            seeds = cells.setdefault((*mv, digest, depth), {})
            devices.setdefault((*mv, digest), set()).add(device_key(r.get("device")))
        if r["seed"] in seeds:
            raise ValueError(
                f"records: two records for seed {r['seed']} of {method_label(*mv)} "
                f"at depth {depth}{' on one machine' if scratch else ''}; "
                "pass one experiment's runs of each"
            )
        seeds[r["seed"]] = float(r["metrics"][metric])
    if not bases:
        raise ValueError(f"records: no scratch record with {metric!r}, the depth 0 of every curve")
    rank = {m: i for i, m in enumerate(METHODS)}
    pretrainings = sorted(
        {k[:3] for k in cells},
        key=lambda k: (rank.get(k[0], len(rank)), k[1] or "", weights[k[:2]].get(k[2], 0)),
    )
    rows = []
    for method, variant, digest in pretrainings:
        depths = sorted(k[3] for k in cells if k[:3] == (method, variant, digest))
        label = method_label(method, variant)
        if len(weights[method, variant]) > 1:
            label += f" @{digest[:8]}" if digest else " @unknown weights"
        if len(bases) == 1:
            device, base = next(iter(bases.items()))
        else:
            ran_on = devices[method, variant, digest]
            device = next(iter(ran_on))
            if len(ran_on) > 1 or device not in bases:
                raise ValueError(
                    f"records: scratch ran on {len(bases)} machines, and each pre-training is "
                    f"read against its own machine's; {label} ran on "
                    f"{' and '.join(sorted(map(repr, ran_on)))}"
                    + ("" if len(ran_on) > 1 else ", where no scratch ran")
                )
            base = bases[device]
        for depth in [0] + depths:
            runs = base if depth == 0 else cells[(method, variant, digest, depth)]
            mean, sd = _mean_sd(list(runs.values()))
            diffs = [runs[s] - base[s] for s in sorted(set(runs) & set(base))]
            pm, ps = _mean_sd(diffs) if diffs else (math.nan, math.nan)
            rows.append(
                {
                    "label": label,
                    "method": method,
                    "variant": variant,
                    "init_digest": digest,
                    "scratch_device": device,
                    "depth": depth,
                    "n": len(runs),
                    "mean": mean,
                    "sd": sd,
                    "paired_n": len(diffs),
                    "paired_mean": pm,
                    "paired_sd": ps,
                    "wins": sum(d > 0 for d in diffs),
                }
            )
    return rows


def transfer_depth_table(rows: Sequence[dict], digits: int = 3) -> str:
    """:func:`transfer_depths` as markdown: a row per pre-training, a column per depth; each cell
    the mean, and below depth 0 the paired difference to scratch with its sd and the seeds won.
    Where the rows read scratch from more than one machine, depth 0 names the machine."""
    depths = sorted({r["depth"] for r in rows})
    machines = len({r.get("scratch_device") for r in rows}) > 1
    labels = list(dict.fromkeys(r["label"] for r in rows))
    cell = {(r["label"], r["depth"]): r for r in rows}
    head = ["pre-training"] + [f"{d} stages" if d != 1 else "1 stage" for d in depths]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label in labels:
        row = [label]
        for d in depths:
            r = cell.get((label, d))
            if r is None:
                row.append(MISSING)
            elif d == 0:
                on = f", {machine_name(r['scratch_device'])}" if machines else ""
                row.append(f"{r['mean']:.{digits}f} (scratch{on})")
            else:
                paired = (
                    f"{r['paired_mean']:+.{digits}f} ± {r['paired_sd']:.{digits}f}, "
                    f"{r['wins']} of {r['paired_n']}"
                    if r["paired_n"] > 1
                    else f"n={r['paired_n']} paired"
                )
                row.append(f"{r['mean']:.{digits}f} ({paired})")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def plot_transfer_depths(rows: Sequence[dict], metric: str, ax=None):
    """The paired difference to scratch (mean ± sd over seeds) against the stages transferred,
    one line per pre-training of :func:`transfer_depths`; 0 is scratch's level."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(4.5, 3.2), dpi=72)
    labels = list(dict.fromkeys(r["label"] for r in rows))
    for i, label in enumerate(labels):
        rs = [r for r in rows if r["label"] == label]
        x = [r["depth"] + 0.06 * (i - (len(labels) - 1) / 2) for r in rs]  # apart, not on top
        y = [r["paired_mean"] for r in rs]
        e = [0.0 if math.isnan(r["paired_sd"]) else r["paired_sd"] for r in rs]
        ax.errorbar(x, y, yerr=e, marker="o", capsize=3, label=label)
    ax.axhline(0.0, color="grey", lw=0.8)
    ax.set_xticks(sorted({r["depth"] for r in rows}))
    ax.set_xlabel("encoder stages transferred (0: scratch)")
    ax.set_ylabel(f"{metric} minus scratch's, same seed")
    if labels:
        ax.legend(fontsize=7)
    return ax


def plot_label_fractions(
    records: Iterable[dict], dataset: str, metric: str, ax=None, split="test", label_by=None
):
    """Mean ± sd of ``metric`` against label fraction, one line per (method, backbone, head).

    ``label_by`` maps a summary row of :func:`summarise` (``method``, ``variant``, ``backbone``,
    ``head``, ``label_fraction``) to the name of its line, to join rows the default keeps apart:
    one pre-training fine-tuned by several experiments under different variant names, say. Two
    rows of one line at the same label fraction are an error, as their points would overlap.
    """
    import matplotlib.pyplot as plt

    rows = [
        r
        for r in summarise(records)
        if r["dataset"] == dataset
        and r["split"] == split
        and r["label_fraction"] is not None
        and metric in r["metrics"]
    ]
    if label_by is None:

        def label_by(r):
            return f"{method_label(r['method'], r.get('variant'))} ({r['backbone']}, {r['head']})"

    if ax is None:
        _, ax = plt.subplots(figsize=(4.5, 3.2), dpi=72)
    series: dict[str, list] = {}
    for r in rows:
        series.setdefault(label_by(r), []).append(r)
    for label, rs in sorted(series.items()):
        rs.sort(key=lambda r: r["label_fraction"])
        fractions = [r["label_fraction"] for r in rs]
        if len(set(fractions)) < len(fractions):
            raise ValueError(
                f"label_by: line {label!r} has two settings at one label fraction "
                f"({sorted(fractions)}); name them apart"
            )
        y = [r["metrics"][metric]["mean"] for r in rs]
        e = [
            0.0 if math.isnan(r["metrics"][metric]["sd"]) else r["metrics"][metric]["sd"]
            for r in rs
        ]
        ax.errorbar(fractions, y, yerr=e, marker="o", capsize=3, label=label)
    ax.set_xscale("log")
    ax.set_xlabel("label fraction")
    ax.set_ylabel(metric)
    ax.set_title(dataset)
    if series:
        ax.legend(fontsize=7)
    return ax
