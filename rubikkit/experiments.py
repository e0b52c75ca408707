"""Experiment grids on real data: configs, a resumable driver, records and result pages.

An experiment is one JSON file under ``experiments/`` (:func:`load_config` validates it; every error
names the field). ``rubikkit experiment run CONFIG`` walks its grid: for every seed and backbone,
the fine-tuning runs from scratch, then for every pre-training method one pre-training run (its
proxy accuracies on ``eval_split`` recorded when ``proxy_eval`` is true) followed by the fine-tuning
runs that start from it, each scored on ``eval_split``. Every scored run appends one record to
``results/<name>.jsonl`` with the fields of :data:`rubikkit.results.RECORD_FIELDS` and a few more
(``experiment``, ``run``, ``config_hash``, ``protocol``, ``data_options``, ``selected_epoch``,
``selected_by`` (a fine-tuning's selection: split, metric and the selected checkpoint's value),
``steps``, ``pretrain_epochs``, ``pretrain_wall_s``, ``init_digest``: the pre-trained weights a
fine-tuning started from, noted in its run folder when it starts). A run whose record (same
``run`` and ``config_hash``) is already there is skipped, so an interrupted grid resumes where it
stopped (an interrupted run folder is resumed from its ``last.pt``; a last record a crash cut
is dropped, and its run scored again). Two drivers of one grid (lanes split by ``--seeds`` or
``--methods``) never train one run folder at once: the second waits, then takes what the first
finished. A proxy record scores one
set of weights: when a pre-training's ``best.pt`` no longer has the ``init_digest`` its proxy
records name (trained again after its folder was lost, on another machine, say), the proxy is
scored again and a record for the new weights added. A pre-training that another
experiment in the same runs folder finished with the same settings is taken over (its checkpoints
linked in, :func:`same_pretraining`) instead of trained again; ``--no-reuse`` trains it.

``rubikkit experiment table results/*.jsonl`` renders the records as markdown tables, one per
experiment and protocol (the real epochs of the runs), our mean ± sd over seeds beside the
published numbers, which are marked *published, not run here*. A setting of the grid that no run
produced shows :data:`rubikkit.results.MISSING`: a cell is never filled without a run.

Config fields
-------------
``name`` (str, the records file stem), ``description`` (str), ``data`` (dataset spec, relative
paths under the data root), ``data_options`` (dict), ``dataset_name`` (str, the records'
``dataset``; default ``data``), ``backbones`` (list), ``backbone_options`` (dict or
{backbone: dict}), ``seeds`` (list of int), ``eval_split`` (str), ``metrics`` (list),
``published`` (list of {"dataset": ..., optional "backbone", "head", "method"} selecting rows of
:data:`rubikkit.results.PUBLISHED`), ``recipe`` (str), ``recipe_epochs`` (int, the published
protocol's fine-tuning epochs), ``proxy_eval`` (bool), ``proxy_draws`` (int, puzzles scored per
volume in the proxy records, default 1; more for a split of a few volumes), ``pretrain`` (section
or null: ``methods``, ``data``, ``data_options``, ``epochs``, ``max_steps``, ``batch_size``, ``lr``,
``task_options`` {method: dict}, ``val_split``, ``epochs_by_method`` {method: int} for tasks that
need another budget, ``seed``: null for one pre-training per seed, or an int for one pre-training
with that seed shared by every fine-tuning seed, ``variants`` {method: list of variants}, see
below), ``finetune`` (section or null: ``methods``,
``heads``, ``label_fractions``, ``epochs``, ``max_steps``, ``batch_size``, ``lr``,
``lr_milestones``, ``lr_gamma``, ``augment``, ``dropout``, ``val_split``,
``duc_output_stride`` (int or null: the DUC runs its encoder at this output stride, the deeper
stages dilated, :meth:`rubikkit.models.Backbone.dilate_`; the other heads ignore it), ``loss``
(``"ce"``, the default, or ``"ce+dice"`` for the segmentation heads, see
:func:`rubikkit.train.finetune.soft_dice_loss`), ``transfer_stages`` (int, list of ints or null:
the pre-trained fine-tunings transfer only the first N encoder stages, the deeper ones starting
from the weights the scratch run of the same seed starts from; a list fine-tunes each
pre-training once a value, ``-t<N>`` ending the run ids; records carry it and tables keep it
apart from full transfers), ``variants`` {method: list of variant names, ``"default"`` for the
configured pre-training}: fine-tune only these pre-trainings of the method, e.g. the one lever
whose checkpoints are worth fine-tuning; a method not listed fine-tunes all of its
pre-trainings), ``workers`` (int), ``notes`` (list of str, printed above the grid's tables),
``seed_tables`` (list of fine-tuning metrics of ``metrics``: the tables page shows each of them
seed by seed, one column a method, for pairing the runs by eye; default none).

Variants (levers)
-----------------
``pretrain.variants`` tries the levers of a method beside its configured pre-training: each
variant is an object with any of ``task_options`` (merged over the method's, e.g.
``{"n_perms": 10}``, ``{"gap": 0.25}``, ``{"jitter": false}``, ``{"cube_size": 10}``),
``data_options`` (merged over ``pretrain.data_options``: other pre-training volumes, e.g. LIDC
crops off the nodule's centre, ``{"shift": 8}``; fine-tuning data stay the same), ``epochs``,
``lr``, ``batch_size`` and ``seed`` (another seed for the shared pre-training, so ``{"seed": 1}``
repeats the configured pre-training to measure its own spread; needs ``pretrain.seed``), and an
optional ``name`` (default: its settings, ``n_perms=10``). A variant is pre-trained and fine-tuned
like its method; its records carry ``variant`` (the name; null for the configured pre-training)
and its rows read ``rubik [n_perms=10]``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import platform
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path

from rubikkit.results import (
    METHODS,
    MISSING,
    PUBLISHED,
    SETTING_KEYS,
    append_record,
    device_key,
    machine_name,
    method_label,
    seed_table,
    summarise,
)

__all__ = [
    "ExperimentConfig",
    "against_configured",
    "against_scratch",
    "describe_device",
    "diagnose",
    "load_config",
    "plan_grid",
    "pooled_pretrainings",
    "pretraining_seeds",
    "register",
    "render_page",
    "render_tables",
    "run_experiment",
    "same_pretraining",
    "weights_digest",
]

TASK_METHODS = tuple(m for m in METHODS if m != "scratch")
#: The test scores a method's proxy records carry, which the tables show when ``proxy_eval`` is on.
PROXY_SCORES = {
    "rubik": ("order_acc", "rot_acc"),
    "ordering": ("order_acc",),
    "jigsaw3d": ("order_acc",),
    "cpc3d": ("cpc_acc",),
    "tcpc": ("cpc_acc",),
}
HEADS = ("classify", "unet", "duc")
BACKBONES = ("vgg3d", "resnet10", "resnet18", "resnet34")
PAGE_BEGIN = "<!-- experiment tables: begin (rubikkit experiment table --write) -->"
PAGE_END = "<!-- experiment tables: end -->"
#: Fine-tuning settings a record carries where its grid sets them (off their defaults).
FINETUNE_RECORD_KEYS = ("output_stride", "loss", "transfer_stages")
#: The name ``--variants`` gives the configured pre-training (and scratch); no variant may take it.
DEFAULT_VARIANT = "default"

_TOP_FIELDS = {
    "name": str,
    "description": str,
    "data": str,
    "data_options": dict,
    "dataset_name": str,
    "backbones": list,
    "backbone_options": dict,
    "seeds": list,
    "eval_split": str,
    "metrics": list,
    "published": list,
    "recipe": str,
    "recipe_epochs": (int, type(None)),
    "proxy_eval": bool,
    "proxy_draws": int,
    "pretrain": (dict, type(None)),
    "finetune": (dict, type(None)),
    "workers": int,
    "notes": list,
    "seed_tables": list,
}
_PRETRAIN_FIELDS = {
    "methods": list,
    "data": str,
    "data_options": dict,
    "epochs": (int, type(None)),
    "max_steps": (int, type(None)),
    "batch_size": int,
    "lr": (int, float),
    "task_options": dict,
    "val_split": (str, type(None)),
    "seed": (int, type(None)),
    "epochs_by_method": dict,
    "variants": dict,
}
_VARIANT_FIELDS = {
    "name": str,
    "task_options": dict,
    "data_options": dict,
    "epochs": int,
    "lr": (int, float),
    "batch_size": int,
    "seed": int,
}
_FINETUNE_FIELDS = {
    "methods": list,
    "heads": list,
    "label_fractions": list,
    "epochs": (int, type(None)),
    "max_steps": (int, type(None)),
    "batch_size": int,
    "lr": (int, float),
    "lr_milestones": (list, type(None)),
    "lr_gamma": (int, float),
    "augment": (str, type(None)),
    "dropout": (int, float),
    "val_split": (str, type(None)),
    "variants": dict,
    "duc_output_stride": (int, type(None)),
    "loss": str,
    "transfer_stages": (int, list, type(None)),
}
_REQUIRED = ("name", "data", "backbones", "seeds", "metrics")


class ExperimentConfig(dict):
    """A validated experiment config (a dict with defaults filled in); see :func:`load_config`."""

    @property
    def name(self) -> str:
        return self["name"]


def _type_name(t) -> str:
    ts = t if isinstance(t, tuple) else (t,)
    return " or ".join("null" if x is type(None) else x.__name__ for x in ts)


def _check_fields(obj: dict, fields: dict, where: str) -> None:
    for key, value in obj.items():
        if key not in fields:
            raise ValueError(f"{where}{key}: unknown field; known fields: {', '.join(fields)}")
        t = fields[key]
        ok = isinstance(value, t) and not (isinstance(value, bool) and t in (int, (int, float)))
        if not ok:
            raise ValueError(
                f"{where}{key}: expected {_type_name(t)}, got {type(value).__name__} {value!r}"
            )


def _check_methods(methods, where: str, allowed, noun: str = "method") -> list[str]:
    """A non-empty list of distinct members of ``allowed`` (methods, or pre-training names)."""
    if not isinstance(methods, list) or not methods:
        raise ValueError(f"{where}: expected a non-empty list of {noun}s")
    for m in methods:
        if m not in allowed:
            raise ValueError(f"{where}: unknown {noun} {m!r}; expected one of {tuple(allowed)}")
    if len(set(methods)) != len(methods):
        raise ValueError(f"{where}: a {noun} is listed twice")
    return list(methods)


def validate_config(raw: dict, source: str = "config") -> ExperimentConfig:
    """Check a config dict and fill in defaults.

    Raises
    ------
    ValueError
        Whose message starts with the offending field (``finetune.label_fractions: ...``).
    """
    if not isinstance(raw, dict):
        raise ValueError(f"{source}: expected a JSON object, got {type(raw).__name__}")
    _check_fields(raw, _TOP_FIELDS, "")
    for key in _REQUIRED:
        if key not in raw:
            raise ValueError(f"{key}: missing (required fields: {', '.join(_REQUIRED)})")
    cfg = ExperimentConfig(
        description="",
        data_options={},
        backbone_options={},
        eval_split="test",
        published=[],
        recipe="",
        recipe_epochs=None,
        proxy_eval=False,
        proxy_draws=1,
        pretrain=None,
        finetune=None,
        workers=0,
        notes=[],
        seed_tables=[],
    )
    cfg.update(json.loads(json.dumps(raw)))
    if not cfg["name"] or not all(c.isalnum() or c in "_-" for c in cfg["name"]):
        raise ValueError(f"name: use letters, digits, '_' and '-' only, got {cfg['name']!r}")
    from rubikkit.data.spec import parse_spec

    try:
        parse_spec(cfg["data"])
    except ValueError as exc:
        raise ValueError(f"data: {exc}") from None
    cfg.setdefault("dataset_name", cfg["data"])
    if not cfg["backbones"]:
        raise ValueError("backbones: expected a non-empty list")
    for b in cfg["backbones"]:
        if b not in BACKBONES:
            raise ValueError(f"backbones: unknown backbone {b!r}; expected one of {BACKBONES}")
    if not cfg["seeds"] or not all(
        isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in cfg["seeds"]
    ):
        raise ValueError(
            f"seeds: expected a non-empty list of non-negative ints, got {cfg['seeds']}"
        )
    if not cfg["metrics"] or not all(isinstance(m, str) for m in cfg["metrics"]):
        raise ValueError("metrics: expected a non-empty list of metric names")
    for m in cfg["seed_tables"]:
        if not isinstance(m, str) or m not in cfg["metrics"] or m in _PROXY_METRICS:
            raise ValueError(
                f"seed_tables: {m!r} is not a fine-tuning metric of metrics "
                f"({', '.join(x for x in cfg['metrics'] if x not in _PROXY_METRICS)})"
            )
    for i, sel in enumerate(cfg["published"]):
        if not isinstance(sel, dict) or not sel:
            raise ValueError(f"published[{i}]: expected an object such as {{'dataset': ...}}")
        if not any(_matches(p, sel) for p in PUBLISHED):
            raise ValueError(f"published[{i}]: no row of rubikkit.results.PUBLISHED matches {sel}")
    if isinstance(cfg["proxy_draws"], bool) or cfg["proxy_draws"] < 1:
        raise ValueError(f"proxy_draws: expected a positive int, got {cfg['proxy_draws']!r}")
    if cfg["pretrain"] is None and cfg["finetune"] is None:
        raise ValueError("pretrain, finetune: give at least one of the two sections")
    pt = cfg["pretrain"]
    if pt is not None:
        _check_fields(pt, _PRETRAIN_FIELDS, "pretrain.")
        pt.setdefault("data", cfg["data"])
        pt.setdefault("data_options", dict(cfg["data_options"]))
        pt.setdefault("epochs", None)
        pt.setdefault("max_steps", None)
        pt.setdefault("batch_size", 2)
        pt.setdefault("lr", 1e-3)
        pt.setdefault("task_options", {})
        pt.setdefault("val_split", "val")
        pt.setdefault("seed", None)
        pt.setdefault("epochs_by_method", {})
        for m, ep in pt["epochs_by_method"].items():
            if m not in pt["methods"]:
                raise ValueError(f"pretrain.epochs_by_method: {m!r} is not in pretrain.methods")
            if not isinstance(ep, int) or isinstance(ep, bool) or ep < 1:
                raise ValueError(f"pretrain.epochs_by_method: expected a positive int for {m!r}")
        if pt["seed"] is not None and (isinstance(pt["seed"], bool) or pt["seed"] < 0):
            raise ValueError(
                f"pretrain.seed: expected null or a non-negative int, got {pt['seed']!r}"
            )
        pt["methods"] = _check_methods(pt.get("methods"), "pretrain.methods", TASK_METHODS)
        if pt["epochs"] is None and pt["max_steps"] is None:
            raise ValueError("pretrain.epochs: give epochs or max_steps")
        for m in pt["task_options"]:
            if m not in pt["methods"]:
                raise ValueError(f"pretrain.task_options: {m!r} is not in pretrain.methods")
        pt["variants"] = _check_variants(pt.get("variants", {}), pt["methods"], pt["seed"])
        if cfg["proxy_eval"]:
            for m in pt["methods"]:
                absent = [s for s in PROXY_SCORES[m] if s not in cfg["metrics"]]
                if absent:
                    raise ValueError(
                        f"metrics: proxy_eval scores {m}'s proxy by "
                        f"{', '.join(PROXY_SCORES[m])}; add {', '.join(map(repr, absent))} "
                        "to metrics, or the tables leave its proxy row empty"
                    )
    elif cfg["proxy_eval"]:
        raise ValueError("proxy_eval: needs a pretrain section")
    ft = cfg["finetune"]
    if ft is not None:
        _check_fields(ft, _FINETUNE_FIELDS, "finetune.")
        ft.setdefault("heads", ["classify"])
        ft.setdefault("label_fractions", [1.0])
        ft.setdefault("epochs", None)
        ft.setdefault("max_steps", None)
        ft.setdefault("batch_size", 2)
        ft.setdefault("lr", 1e-4)
        ft.setdefault("lr_milestones", None)
        ft.setdefault("lr_gamma", 0.1)
        ft.setdefault("augment", None)
        ft.setdefault("dropout", 0.0)
        ft.setdefault("val_split", "val")
        ft.setdefault("duc_output_stride", None)
        ft.setdefault("loss", "ce")
        ft.setdefault("transfer_stages", None)
        ft["methods"] = _check_methods(ft.get("methods"), "finetune.methods", METHODS)
        for m in ft["methods"]:
            if m != "scratch" and (pt is None or m not in pt["methods"]):
                raise ValueError(
                    f"finetune.methods: {m!r} needs a pre-training run; add it to pretrain.methods"
                )
        ft["variants"] = _check_finetuned(ft.get("variants", {}), ft["methods"], pt)
        for h in ft["heads"]:
            if h not in HEADS:
                raise ValueError(f"finetune.heads: unknown head {h!r}; expected one of {HEADS}")
        lfs = ft["label_fractions"]
        if not lfs or not all(
            isinstance(f, (int, float)) and not isinstance(f, bool) and 0 < f <= 1 for f in lfs
        ):
            raise ValueError(f"finetune.label_fractions: expected numbers in (0, 1], got {lfs!r}")
        if ft["epochs"] is None and ft["max_steps"] is None:
            raise ValueError("finetune.epochs: give epochs or max_steps")
        from rubikkit.train.schedule import check_augment, check_milestones

        try:
            check_milestones(ft["lr_milestones"], ft["lr_gamma"], ft["epochs"])
            check_augment(ft["augment"])
        except ValueError as exc:
            raise ValueError(f"finetune.{exc}") from None
        _check_output_stride(cfg)
        _check_transfer_stages(cfg)
        from rubikkit.train.finetune import check_loss

        for head in ft["heads"]:
            try:
                check_loss(ft["loss"], head)
            except ValueError as exc:
                raise ValueError(f"finetune.{exc}") from None
    return cfg


def _check_output_stride(cfg: dict) -> None:
    """``finetune.duc_output_stride`` must suit every backbone of the grid (checked before any
    pre-training runs, on shapes only)."""
    ft = cfg["finetune"]
    value = ft["duc_output_stride"]
    if value is None:
        return
    if "duc" not in ft["heads"]:
        raise ValueError("finetune.duc_output_stride: set, but finetune.heads has no 'duc'")
    import torch

    from rubikkit.models import build_backbone

    for bb in cfg["backbones"]:
        try:
            with torch.device("meta"):
                build_backbone(bb, **_bb_options(cfg, bb)).dilate_(value)
        except ValueError as exc:
            raise ValueError(f"finetune.duc_{exc}") from None


def _check_transfer_stages(cfg: dict) -> None:
    """``finetune.transfer_stages`` must name stages every backbone of the grid has."""
    ft = cfg["finetune"]
    value = ft["transfer_stages"]
    if value is None:
        return
    if not any(m != "scratch" for m in ft["methods"]):
        raise ValueError("finetune.transfer_stages: set, but finetune.methods has no pre-training")
    values = value if isinstance(value, list) else [value]
    if not values or any(isinstance(v, bool) or not isinstance(v, int) for v in values):
        raise ValueError(
            f"finetune.transfer_stages: expected an int or a list of ints, got {value!r}"
        )
    if len(set(values)) != len(values):
        raise ValueError(f"finetune.transfer_stages: {value!r} repeats a value")
    import torch

    from rubikkit.models import build_backbone

    for bb in cfg["backbones"]:
        with torch.device("meta"):
            n = len(build_backbone(bb, **_bb_options(cfg, bb)).stage_channels)
        for v in values:
            if not 1 <= v <= n:
                raise ValueError(
                    f"finetune.transfer_stages: expected 1 to {n} (the stages of {bb}), got {v}"
                )


def _transfers(cfg: dict, pretrained: bool) -> list[tuple[int | None, str]]:
    """(stages transferred, run-id suffix) of each fine-tuning of one pre-training: a list of
    ``finetune.transfer_stages`` gives one run a value, ``-t<N>`` in its id; an int one run, its
    id as with a full transfer."""
    value = cfg["finetune"]["transfer_stages"]
    if not pretrained or value is None:
        return [(None, "")]
    if isinstance(value, list):
        return [(v, f"-t{v}") for v in value]
    return [(value, "")]


def variant_name(variant: dict) -> str:
    """The default name of a variant: its settings as ``key=value`` joined by commas."""
    items = {**variant.get("task_options", {}), **variant.get("data_options", {})}
    skip = ("name", "task_options", "data_options")
    items.update({k: v for k, v in variant.items() if k not in skip})
    return ",".join(f"{k}={json.dumps(v) if isinstance(v, (bool, list)) else v}"
                    for k, v in sorted(items.items()))  # fmt: skip


def _check_variants(variants: dict, methods: list[str], shared_seed) -> dict[str, list[dict]]:
    out = {}
    for m, vs in variants.items():
        where = f"pretrain.variants.{m}"
        if m not in methods:
            raise ValueError(f"pretrain.variants: {m!r} is not in pretrain.methods")
        if not isinstance(vs, list) or not vs:
            raise ValueError(f"{where}: expected a non-empty list of variants")
        checked = []
        for i, v in enumerate(vs):
            if not isinstance(v, dict) or not set(v) - {"name"}:
                raise ValueError(f"{where}[{i}]: expected an object that changes a setting")
            _check_fields(v, _VARIANT_FIELDS, f"{where}[{i}].")
            for k in ("epochs", "batch_size"):
                if k in v and v[k] < 1:
                    raise ValueError(f"{where}[{i}].{k}: expected a positive int, got {v[k]}")
            if "lr" in v and not v["lr"] > 0:
                raise ValueError(f"{where}[{i}].lr: expected a positive number, got {v['lr']}")
            if "seed" in v:
                if v["seed"] < 0:
                    raise ValueError(
                        f"{where}[{i}].seed: expected a non-negative int, got {v['seed']!r}"
                    )
                if shared_seed is None:
                    raise ValueError(
                        f"{where}[{i}].seed: needs pretrain.seed (one pre-training shared by the "
                        "fine-tuning seeds); with pretrain.seed null each seed pre-trains anyway"
                    )
            v = dict(v)
            v.setdefault("name", variant_name(v))
            if not v["name"] or not all(c.isalnum() or c in "_-=.,+" for c in v["name"]):
                raise ValueError(
                    f"{where}[{i}].name: use letters, digits and _-=.,+ only, got {v['name']!r}"
                )
            if v["name"] == DEFAULT_VARIANT:
                raise ValueError(f"{where}[{i}].name: {DEFAULT_VARIANT!r} names the configured run")
            checked.append(v)
        names = [v["name"] for v in checked]
        if len(set(names)) != len(names):
            raise ValueError(f"{where}: two variants share a name ({', '.join(names)})")
        out[m] = checked
    return out


def _check_finetuned(chosen: dict, methods: list[str], pt: dict | None) -> dict[str, list[str]]:
    # finetune.variants: which pre-trainings of a method are fine-tuned (names, "default").
    out = {}
    for m, names in chosen.items():
        if m == "scratch" or m not in methods:
            raise ValueError(
                f"finetune.variants: {m!r} is not a pre-trained method of finetune.methods"
            )
        known = [DEFAULT_VARIANT] + [v["name"] for v in pt["variants"].get(m, [])]
        out[m] = _check_methods(names, f"finetune.variants.{m}", known, "pre-training")
    return out


def _finetuned(cfg: dict, method: str, variant: str | None) -> bool:
    """Whether ``finetune.variants`` lets the pre-training ``variant`` of ``method`` be fine-tuned."""
    chosen = ((cfg.get("finetune") or {}).get("variants") or {}).get(method)
    return chosen is None or (variant or DEFAULT_VARIANT) in chosen


def load_config(path: str | os.PathLike) -> ExperimentConfig:
    """Read and validate an experiment config (JSON).

    Raises
    ------
    FileNotFoundError
        No file at ``path``.
    ValueError
        Not JSON, or a field is wrong (the message names it).
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"config: {p} not found")
    try:
        raw = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"config: {p} is not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"config {p.name}: expected a JSON object, got {type(raw).__name__}")
    try:
        cfg = validate_config(raw, str(p))
    except ValueError as exc:
        raise ValueError(f"config {p.name}: {exc}") from None
    if cfg["name"] != p.stem:
        raise ValueError(f"config {p.name}: name: {cfg['name']!r} differs from the file stem")
    return cfg


# --------------------------------------------------------------------------- the grid
def _lf_tag(lf: float) -> str:
    return f"{lf:g}".replace(".", "p")


def _hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:12]


def _bb_options(cfg: dict, backbone: str) -> dict:
    opts = cfg["backbone_options"]
    if backbone in opts and isinstance(opts[backbone], dict):
        return dict(opts[backbone])
    return {k: v for k, v in opts.items() if k not in BACKBONES}


def _pretrain_settings(cfg: dict, method: str, backbone: str, variant: dict | None = None) -> dict:
    pt = cfg["pretrain"]
    settings = {
        "task": method,
        "data": pt["data"],
        "data_options": pt["data_options"],
        "backbone": backbone,
        "backbone_options": _bb_options(cfg, backbone),
        "task_options": pt["task_options"].get(method, {}),
        "epochs": pt["epochs_by_method"].get(method, pt["epochs"]),
        "max_steps": pt["max_steps"],
        "batch_size": pt["batch_size"],
        "lr": pt["lr"],
        "val_split": pt["val_split"],
    }
    if variant is not None:  # the configured pre-training keeps its settings (and config_hash)
        settings["task_options"] = {**settings["task_options"], **variant.get("task_options", {})}
        settings["data_options"] = {**settings["data_options"], **variant.get("data_options", {})}
        settings.update({k: variant[k] for k in ("epochs", "lr", "batch_size") if k in variant})
    return settings


def _finetune_settings(cfg: dict, backbone: str, head: str, lf: float) -> dict:
    ft = cfg["finetune"]
    return {
        "data": cfg["data"],
        "data_options": cfg["data_options"],
        "backbone": backbone,
        "backbone_options": _bb_options(cfg, backbone),
        "head": head,
        "label_fraction": float(lf),
        "epochs": ft["epochs"],
        "max_steps": ft["max_steps"],
        "batch_size": ft["batch_size"],
        "lr": ft["lr"],
        "lr_milestones": ft["lr_milestones"],
        "lr_gamma": ft["lr_gamma"],
        "augment": ft["augment"],
        "dropout": ft["dropout"],
        "val_split": ft["val_split"],
        "eval_split": cfg["eval_split"],
        # only where set, so the config hashes of the grids that never set it stay as they were
        **(
            {"output_stride": ft["duc_output_stride"]}
            if head == "duc" and ft["duc_output_stride"] is not None
            else {}
        ),
        **({"loss": ft["loss"]} if ft["loss"] != "ce" else {}),
    }


def _finetune_entries(cfg, seed, bb, method, init_id, init_settings, variant=None) -> list[dict]:
    ft = cfg["finetune"]
    if ft is None or method not in ft["methods"] or not _finetuned(cfg, method, variant):
        return []
    tag = method if variant is None else f"{method}-{variant}"
    entries = []
    for head in ft["heads"]:
        for lf in ft["label_fractions"]:
            for n, suffix in _transfers(cfg, pretrained=init_id is not None):
                settings = _finetune_settings(cfg, bb, head, lf)
                if n is not None:  # only where set, so that full transfers keep their hashes
                    settings["transfer_stages"] = n
                entries.append(
                    {
                        "kind": "finetune",
                        "run": f"s{seed}/{bb}/ft-{tag}-{head}-lf{_lf_tag(lf)}{suffix}",
                        "seed": seed,
                        "backbone": bb,
                        "method": method,
                        "variant": variant,
                        "head": head,
                        "label_fraction": float(lf),
                        "init": init_id,
                        "settings": settings,
                        "config_hash": _hash([settings, init_settings, seed]),
                    }
                )
    return entries


def plan_grid(
    cfg: ExperimentConfig, seeds=None, methods=None, variants=None, transfer_stages=None
) -> list[dict]:
    """The runs of the grid, in execution order.

    Every entry has ``kind`` (``"pretrain"``, ``"proxy"`` or ``"finetune"``), ``run`` (a path-like
    id, also the run folder under ``runs/<name>/``), ``seed``, ``backbone``, ``method`` and
    ``settings``; finetune entries add ``head``, ``label_fraction`` and ``init`` (the id of their
    pre-training run, or None), and a ``config_hash`` over everything that defines the run
    (pre-training included). Pretrain entries produce no record; proxy and finetune entries do.

    With ``pretrain.seed`` set, each method is pre-trained once, with that seed, and every
    fine-tuning seed starts from that run (listed before the first seed's runs). ``methods``
    keeps only the runs of these methods (``"scratch"`` included); ``variants`` only the runs of
    these variant names, :data:`DEFAULT_VARIANT` standing for the configured pre-training and for
    scratch. ``transfer_stages`` keeps only the fine-tunings that transfer that many encoder
    stages (one depth of a ``finetune.transfer_stages`` grid) and the pre-trainings they start
    from: scratch, full transfers and proxy evaluations are left out.
    """
    seeds = list(cfg["seeds"] if seeds is None else seeds)
    pt = cfg["pretrain"]
    shared = pt["seed"] if pt is not None else None
    keep = None if methods is None else set(methods)

    def pretrain_entries(seed, bb, method, variant) -> tuple[list[dict], str, dict]:
        settings = _pretrain_settings(cfg, method, bb, variant)
        vname = None if variant is None else variant["name"]
        pid = f"s{seed}/{bb}/pt-{method}" + ("" if vname is None else f"-{vname}")
        entries = [
            {
                "kind": "pretrain",
                "run": pid,
                "seed": seed,
                "backbone": bb,
                "method": method,
                "variant": vname,
                "settings": settings,
                "config_hash": _hash([settings, seed]),
            }
        ]
        if cfg["proxy_eval"]:
            entries.append(
                {
                    "kind": "proxy",
                    "run": f"{pid}/proxy-{cfg['eval_split']}",
                    "seed": seed,
                    "backbone": bb,
                    "method": method,
                    "variant": vname,
                    "head": "proxy",
                    "label_fraction": None,
                    "init": pid,
                    "settings": {"eval_split": cfg["eval_split"], "draws": cfg["proxy_draws"]},
                    # One draw, the default, keeps the hash records had before draws existed.
                    "config_hash": _hash(
                        [settings, seed, cfg["eval_split"]]
                        + ([cfg["proxy_draws"]] if cfg["proxy_draws"] != 1 else [])
                    ),
                }
            )
        # A shared pre-training enters the fine-tuning hash with its seed.
        init_key = settings if shared is None else dict(settings, pretrain_seed=seed)
        return entries, pid, init_key

    plan = []
    pretrainings = [
        (method, variant)
        for method in (pt["methods"] if pt is not None else [])
        for variant in [None, *pt["variants"].get(method, [])]
    ]
    shared_runs = {}
    if shared is not None:
        for bb in cfg["backbones"]:
            for i, (method, variant) in enumerate(pretrainings):
                seed = _shared_seed(pt, variant)
                entries, pid, init_key = pretrain_entries(seed, bb, method, variant)
                plan += entries
                shared_runs[bb, i] = (pid, init_key)
    for seed in seeds:
        for bb in cfg["backbones"]:
            plan += _finetune_entries(cfg, seed, bb, "scratch", None, None)
            for i, (method, variant) in enumerate(pretrainings):
                if shared is None:
                    entries, pid, init_key = pretrain_entries(seed, bb, method, variant)
                    plan += entries
                else:
                    pid, init_key = shared_runs[bb, i]
                vname = None if variant is None else variant["name"]
                plan += _finetune_entries(cfg, seed, bb, method, pid, init_key, vname)
    if keep is not None:
        plan = [e for e in plan if e["method"] in keep]
    if variants is not None:
        plan = [e for e in plan if (e.get("variant") or DEFAULT_VARIANT) in set(variants)]
    if transfer_stages is not None:
        depths = set(transfer_stages)
        plan = [
            e
            for e in plan
            if e["kind"] == "pretrain"
            or (e["kind"] == "finetune" and e["settings"].get("transfer_stages") in depths)
        ]
        needed = {e["init"] for e in plan if e["kind"] == "finetune"}
        plan = [e for e in plan if e["kind"] != "pretrain" or e["run"] in needed]
    return plan


# --------------------------------------------------------------------------- running
def describe_device(device: str = "auto") -> str:
    """A one-line description of the machine a run uses (device model, cores, torch threads).

    It names no host and no path, so it can go into committed records.
    """
    import torch

    from rubikkit.train.distributed import resolve_device

    dev = resolve_device(device)
    torch_part = f"torch {torch.__version__}"
    if dev.type == "cuda":
        name = torch.cuda.get_device_name(dev)
        mem = torch.cuda.get_device_properties(dev).total_memory / 2**30
        return f"cuda: {name} ({mem:.0f} GiB); {torch_part}"
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    threads = torch.get_num_threads()
    plural = "s" if threads != 1 else ""
    return f"cpu: {cpu}, {cores} cores, {threads} torch thread{plural}; {torch_part}"


def _default_data_root() -> str | None:
    return os.environ.get("RUBIKKIT_DATA") or os.environ.get("RUBIKKIT_TEST_DATA") or None


@contextlib.contextmanager
def _data_root(root):
    # open_dataset resolves relative paths (and MedMNIST's default root) under $RUBIKKIT_DATA.
    old = os.environ.get("RUBIKKIT_DATA")
    if root is not None:
        os.environ["RUBIKKIT_DATA"] = str(Path(root).expanduser().resolve())
    try:
        yield
    finally:
        if root is not None:
            if old is None:
                os.environ.pop("RUBIKKIT_DATA", None)
            else:
                os.environ["RUBIKKIT_DATA"] = old


def _with_cache(spec: str, options: dict, cache_dir: Path) -> dict:
    # LIDC and BraTS cache resampled volumes under the data root by default; the shared data must
    # stay read-only, so the cache goes next to the runs.
    from rubikkit.data.spec import parse_spec

    opts = dict(options)
    if parse_spec(spec)[0] in ("lidc", "brats") and "cache_dir" not in opts:
        opts["cache_dir"] = str(cache_dir)
    return opts


def _check_folder(path, name: str) -> None:
    """Raise ValueError when ``path``, or the nearest of its parents that exists, is no folder
    (the driver would otherwise fail after training its first run, when it writes there)."""
    for p in (Path(path), *Path(path).parents):
        if p.exists():
            if not p.is_dir():
                raise ValueError(f"{name}: {p} is a file, not a folder; choose another path")
            return


def _mend_records(records_path: Path, log) -> None:
    """Complete or drop a last line that a crash cut (every record ends with a newline).

    A cut line that still reads as a record only lost its newline: it gets one, else the next
    record would be glued onto it. Anything else is a part of a record that was never complete:
    it is dropped, so the grid resumes (its run is scored again). Done under the lock that
    :func:`rubikkit.results.append_record` takes, so a line another driver is writing is left
    alone.
    """
    if not records_path.is_file():
        return
    from rubikkit.results import validate_record

    with open(records_path, "rb+") as fh:
        with contextlib.suppress(ImportError):
            import fcntl

            fcntl.flock(fh, fcntl.LOCK_EX)  # released when the file closes
        data = fh.read()
        if not data or data.endswith(b"\n"):
            return
        start = data.rfind(b"\n") + 1
        try:
            validate_record(json.loads(data[start:].decode("utf-8")))
        except (UnicodeDecodeError, ValueError, TypeError):
            fh.truncate(start)
            log(
                f"mend     {records_path}: dropped its cut last line ({len(data) - start} bytes, "
                "a record a crash left half-written); its run is scored again"
            )
        else:
            fh.write(b"\n")


@contextlib.contextmanager
def _run_lock(out: Path, log, what: str):
    """Hold the run folder ``out`` for this process; wait while another driver holds it.

    Two drivers of one grid (lanes split by ``--seeds`` or ``--methods``) can both need a run, a
    pre-training shared by every seed above all; trained by both in one folder at once, its log
    doubles and its checkpoints are replaced under the other. Yields whether it waited.
    The lock file sits beside the folder (hidden), and the lock goes with the process.
    """
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        yield False
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.parent / f".{out.name}.lock", "a") as fh:
        waited = False
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"wait     {what} (another process is running it)")
            fcntl.flock(fh, fcntl.LOCK_EX)
            waited = True
        yield waited


def _existing(records_path: Path) -> tuple[set[tuple[str, str]], dict[tuple[str, str], set[str]]]:
    """``(run, config_hash)`` of every record, and per proxy ``(run, config_hash)`` the
    ``init_digest`` of the weights its records scored (records that name them)."""
    done: set[tuple[str, str]] = set()
    scored: dict[tuple[str, str], set[str]] = {}
    if not records_path.exists():
        return done, scored
    from rubikkit.results import load_records

    for r in load_records(records_path):
        key = (r.get("run"), r.get("config_hash"))
        done.add(key)
        if r.get("head") == "proxy" and r.get("init_digest"):
            scored.setdefault(key, set()).add(r["init_digest"])
    return done, scored


def _shared_seed(pt: dict, variant: dict | None) -> int:
    """The seed of a shared pre-training: its variant's, else the config's ``pretrain.seed``."""
    return pt["seed"] if variant is None else variant.get("seed", pt["seed"])


def _variant(pt: dict, method: str, name: str | None) -> dict | None:
    """The variant of ``method`` called ``name``; None for the configured pre-training."""
    return next((v for v in pt["variants"].get(method, []) if v["name"] == name), None)


def _needed(
    entry: dict,
    plan: list[dict],
    done: set[tuple[str, str]],
    scored: dict[tuple[str, str], set[str]],
    digest_of: Callable[[str], str | None],
) -> bool:
    """Whether ``entry`` has to run: a scored run lacks its record, or a pre-training has a
    proxy or fine-tuning run (``init`` pointing at it) that lacks one. The dry run and the real
    run both decide by this, so ``--dry-run`` lists what a run would start.

    A proxy record scores one set of pre-trained weights. When the pre-training's checkpoint
    now holds other weights (``digest_of(run)``, e.g. a pre-training trained again after its
    folder was lost, on another machine), the proxy runs again and adds a record for them;
    proxy records that name no ``init_digest`` (older ones) count as scoring whatever is there.
    ``scored`` maps a proxy's ``(run, config_hash)`` to the digests its records name.
    """

    def lacks(d: dict) -> bool:
        key = (d["run"], d["config_hash"])
        if key not in done:
            return True
        named = scored.get(key) if d["kind"] == "proxy" else None
        if not named:
            return False
        digest = digest_of(d["init"])
        return digest is not None and digest not in named

    if entry["kind"] != "pretrain":
        return lacks(entry)
    return any(d.get("init") == entry["run"] and lacks(d) for d in plan)


def _protocol(cfg: dict, entry: dict, pt_settings: dict | None, planned: dict) -> str:
    """The training budget of a record, saying when it is less than the config's (or recipe's).

    ``planned`` maps ``"pretrain"`` / ``"finetune"`` to the epochs of the config file, before
    command-line overrides.
    """

    def budget(s: dict, section: str) -> str:
        parts = []
        if s.get("epochs") is not None:
            parts.append(f"{s['epochs']} epochs")
        if s.get("max_steps") is not None:
            parts.append(f"max {s['max_steps']} steps")
        text = " / ".join(parts)
        want = planned.get(section)
        if section == "pretrain":
            want = planned.get("pretrain_by_method", {}).get(s.get("task"), want)
            key = (s.get("task"), entry.get("variant"))
            want = planned.get("pretrain_by_variant", {}).get(key, want)
        if section == "finetune" and cfg.get("recipe_epochs") is not None:
            want = cfg["recipe_epochs"]
        source = "recipe" if section == "finetune" else "config"
        epochs = s.get("epochs")
        if want is not None and (s.get("max_steps") is not None or (epochs or 0) < want):
            text += f" (reduced: the {source} has {want} epochs)"
        elif want is not None and epochs != want:  # a longer run is no reduced one
            text += f" (extended: the {source} has {want} epochs)"
        return text

    pt_text = None
    if pt_settings is not None:
        pt_text = f"pre-train {budget(pt_settings, 'pretrain')}"
        if (cfg["pretrain"] or {}).get("seed") is not None:
            pt = cfg["pretrain"]
            seed = _shared_seed(pt, _variant(pt, entry["method"], entry.get("variant")))
            pt_text += f", one pre-training (seed {seed}) for all seeds"
    if entry["kind"] == "proxy":
        return pt_text
    n = entry["settings"].get("transfer_stages")
    if pt_text is not None and n is not None:
        pt_text += f", its first {n} stages transferred"
    text = f"fine-tune {budget(entry['settings'], 'finetune')}"
    return text if pt_text is None else f"{text}, {pt_text}"


def run_experiment(
    cfg: ExperimentConfig,
    *,
    seeds=None,
    methods=None,
    variants=None,
    transfer_stages=None,
    device: str = "auto",
    results_dir="results",
    runs_dir="runs",
    data_root=None,
    dry_run: bool = False,
    epochs: int | None = None,
    pretrain_epochs: int | None = None,
    max_steps: int | None = None,
    time_budget: float | None = None,
    keep_last: bool = False,
    reuse: bool = True,
    progress: bool = True,
    log=print,
) -> list[dict]:
    """Run (or list, ``dry_run``) the grid of ``cfg``, appending one record per scored run.

    Parameters
    ----------
    cfg : ExperimentConfig
        From :func:`load_config`.
    seeds : list of int, optional
        Override ``cfg["seeds"]``.
    methods : list of str, optional
        Run only these methods' runs (e.g. ``["scratch"]``), so that two processes can share a
        grid.
    variants : list of str, optional
        Run only these variants' runs (``"default"``: the configured pre-training and scratch).
    transfer_stages : list of int, optional
        Run only the fine-tunings that transfer these numbers of encoder stages (depths listed
        in ``finetune.transfer_stages``) and the pre-trainings they start from, so that one
        depth of a grid can be run, or two processes can share it.
    device : {"auto", "cpu", "cuda"}
    results_dir, runs_dir : path-like
        Records go to ``results_dir/<name>.jsonl``, run folders to ``runs_dir/<name>/<run>``.
    data_root : path-like, optional
        Root for relative dataset paths (default ``$RUBIKKIT_DATA``, else
        ``$RUBIKKIT_TEST_DATA``).
    dry_run : bool
        Only list the runs (and whether their record exists).
    epochs, pretrain_epochs, max_steps : int, optional
        Override the fine-tuning epochs, the pre-training epochs, or both sections' step limit
        (quick checks). The records keep the real values and their ``protocol`` says when they
        differ from the recipe.
    time_budget : float, optional
        Seconds after which no further run is started (a run already going finishes): for a
        machine lent for a fixed time. The runs not started keep ``status`` ``"planned"``; the
        next call resumes with them.
    keep_last : bool
        Keep ``last.pt`` of every finished fine-tuning. By default it is removed once the run is
        scored: the record scores ``best.pt``, and a grid of 3D ResNet-18 fine-tunings would
        otherwise keep two checkpoints of hundreds of MB (weights and Adam state) per run.
        Pre-training runs keep theirs.
    reuse : bool
        Take a pre-training that another experiment under ``runs_dir`` already finished with the
        same settings (:func:`same_pretraining`) instead of training it again: its checkpoints are
        hard-linked into this grid's run folder (copied where links are not possible), which
        notes the source in ``adopted_from.txt``, and the records' ``init_digest`` equals the
        source's. A run folder with a ``last.pt`` of its own is resumed instead.

    Returns
    -------
    list of dict
        The plan entries, each with ``status`` (``"done"``, ``"skipped"``, ``"planned"``) and,
        for scored runs that ran, ``record``.
    """
    if time_budget is not None and not time_budget > 0:
        raise ValueError(f"time_budget: expected a positive number of seconds, got {time_budget!r}")
    cfg = ExperimentConfig(json.loads(json.dumps(cfg)))
    planned = {s: (cfg[s] or {}).get("epochs") for s in ("pretrain", "finetune")}
    planned["pretrain_by_method"] = dict((cfg["pretrain"] or {}).get("epochs_by_method", {}))
    planned["pretrain_by_variant"] = {
        (m, v["name"]): v["epochs"]
        for m, vs in (cfg["pretrain"] or {}).get("variants", {}).items()
        for v in vs
        if "epochs" in v
    }
    for section, value in (("finetune", epochs), ("pretrain", pretrain_epochs)):
        if value is not None and cfg[section] is not None:
            cfg[section]["epochs"] = int(value)  # milestones are fractions: they follow
            if section == "pretrain":
                cfg[section]["epochs_by_method"] = {}
                # A variant that only changed the epochs is the configured run now: drop it.
                levers = cfg[section].get("variants", {})
                chosen = (cfg["finetune"] or {}).get("variants", {})
                for m, vs in list(levers.items()):
                    vs = [{k: x for k, x in v.items() if k != "epochs"} for v in vs]
                    levers[m] = [v for v in vs if set(v) - {"name"}]
                    kept = {v["name"] for v in levers[m]}
                    if m in chosen:  # a dropped lever is fine-tuned as the configured run
                        names = [n if n in kept else DEFAULT_VARIANT for n in chosen[m]]
                        chosen[m] = list(dict.fromkeys(names))
                    if not levers[m]:
                        del levers[m]
    if max_steps is not None:
        for section in ("pretrain", "finetune"):
            if cfg[section] is not None:
                cfg[section]["max_steps"] = int(max_steps)
    cfg = validate_config(dict(cfg))
    if methods is not None:
        allowed = {"scratch"} | set((cfg["pretrain"] or {}).get("methods", ()))
        for m in methods:
            if m not in allowed:
                raise ValueError(
                    f"methods: {m!r} is not a method of {cfg['name']}: {sorted(allowed)}"
                )
    if variants is not None:
        known = {DEFAULT_VARIANT} | {
            v["name"] for vs in (cfg["pretrain"] or {}).get("variants", {}).values() for v in vs
        }
        for v in variants:
            if v not in known:
                raise ValueError(
                    f"variants: {v!r} is not a variant of {cfg['name']}: {sorted(known)}"
                )
    if transfer_stages is not None:
        value = (cfg["finetune"] or {}).get("transfer_stages")
        depths = [] if value is None else [n for n, _ in _transfers(cfg, pretrained=True)]
        for n in transfer_stages:
            if n not in depths:
                raise ValueError(
                    f"transfer_stages: {n!r} is not a depth of {cfg['name']} "
                    f"(finetune.transfer_stages: {value!r})"
                )
    _check_folder(results_dir, "results_dir")
    _check_folder(runs_dir, "runs_dir")
    plan = plan_grid(cfg, seeds, methods, variants, transfer_stages)
    records_path = Path(results_dir) / f"{cfg['name']}.jsonl"
    if records_path.is_dir():
        raise ValueError(f"results_dir: {records_path} is a folder, not a records file")
    run_root = Path(runs_dir) / cfg["name"]
    _mend_records(records_path, log)
    done, scored = _existing(records_path)
    digests: dict[str, str | None] = {}  # pre-training run -> digest of its best.pt (None: none)

    def digest_of(run: str) -> str | None:
        if run not in digests:
            best = run_root / run / "best.pt"
            digests[run] = weights_digest(best) if best.exists() else None
        return digests[run]

    def source_of(e):  # a finished pre-training of another experiment to take, or None
        out = run_root / e["run"]
        if not reuse or _finished(out) or (out / "last.pt").exists():
            return None
        return same_pretraining(run_root.parent, e["config_hash"], exclude=out)

    if dry_run:
        for e in plan:
            e["status"] = "planned" if _needed(e, plan, done, scored, digest_of) else "skipped"
            note = ""
            if e["kind"] == "pretrain" and e["status"] == "planned":
                if _finished(run_root / e["run"]):
                    note = " (finished in an earlier call: kept, not trained again)"
                elif (source := source_of(e)) is not None:
                    note = f" (reuses {source})"
            log(f"{e['status']:8s} {e['kind']:8s} {e['run']}{note}")
        return plan

    root = data_root if data_root is not None else _default_data_root()
    device_text = describe_device(device)
    from rubikkit.train.runs import git_commit

    commit = git_commit()
    pretrained: dict[str, dict] = {}
    started = time.perf_counter()
    for e in plan:
        e["status"] = "planned"

    def budget_spent() -> bool:
        """True (and logged) once ``time_budget`` is spent: no further run starts."""
        if time_budget is None or time.perf_counter() - started <= time_budget:
            return False
        left = sum(d["status"] == "planned" for d in plan)
        log(f"stop     time budget of {time_budget:g} s spent; {left} runs not started")
        return True

    with _data_root(root), contextlib.ExitStack() as held:
        for e in plan:
            held.close()  # the run folder of the previous entry
            if not _needed(e, plan, done, scored, digest_of):
                e["status"] = "skipped"
                why = "record exists" if e["kind"] != "pretrain" else "its runs have records"
                log(f"skip     {e['kind']:8s} {e['run']} ({why})")
                continue
            if budget_spent():
                break
            out = run_root / e["run"]
            if e["kind"] != "proxy" and held.enter_context(
                _run_lock(out, log, f"{e['kind']:8s} {e['run']}")
            ):
                # Another driver held it: what it finished counts (records, new weights).
                _mend_records(records_path, log)
                now_done, now_scored = _existing(records_path)
                done |= now_done
                for key, digests_scored in now_scored.items():
                    scored.setdefault(key, set()).update(digests_scored)
                digests.pop(e["run"], None)
                if not _needed(e, plan, done, scored, digest_of):
                    e["status"] = "skipped"
                    log(f"skip     {e['kind']:8s} {e['run']} (run meanwhile by another process)")
                    continue
                if budget_spent():
                    break
            source = source_of(e) if e["kind"] == "pretrain" else None
            if e["kind"] == "pretrain" and _finished(out):
                log(f"keep     {e['kind']:8s} {e['run']} (finished in an earlier call)")
            elif source is None:
                log(f"run      {e['kind']:8s} {e['run']}")
            else:
                log(f"reuse    {e['kind']:8s} {e['run']} from {source} (the same settings)")
            t0 = time.perf_counter()
            if e["kind"] == "pretrain":
                pretrained[e["run"]] = _run_pretrain(
                    cfg, e, out, run_root, device, progress, source=source
                )
                digests.pop(e["run"], None)  # its best.pt may hold new weights now
                e["status"] = "done"
                continue
            pt_summary = pretrained.get(e["init"]) if e["init"] else None
            if e["init"] and pt_summary is None:
                pt_summary = _load_summary(run_root / e["init"])
            if e["kind"] == "proxy":
                metrics, summary = _run_proxy(cfg, e, run_root, device, progress)
                wall_s = round(time.perf_counter() - t0, 2)  # the evaluation only
                fields = {
                    "epochs": pt_summary["epochs"],
                    "selected_epoch": (pt_summary.get("best") or {}).get("epoch"),
                    "steps": pt_summary.get("steps"),
                }
                pt_settings = _plan_settings(plan, e["init"])
            else:
                start = digest_of(e["init"]) if e["init"] else None
                metrics, summary = _run_finetune(cfg, e, out, run_root, device, progress, start)
                fields = {
                    "epochs": summary["epochs"],
                    "selected_epoch": (summary.get("best") or {}).get("epoch"),
                    "selected_by": _selection(summary.get("best")),
                    "steps": summary.get("steps"),
                }
                # Training summed over the sessions of a resumed run, plus the test evaluation.
                wall_s = round(summary["wall_s"] + summary["eval_wall_s"], 2)
                pt_settings = _plan_settings(plan, e["init"]) if e["init"] else None
            from rubikkit.train.runs import finite_metrics

            record = {
                "dataset": cfg["dataset_name"],
                "method": e["method"],
                "variant": e.get("variant"),
                "backbone": e["backbone"],
                "head": e["head"],
                # the fine-tuning options a grid sets only where they are not the default
                **{k: v for k, v in e.get("settings", {}).items() if k in FINETUNE_RECORD_KEYS},
                "label_fraction": e["label_fraction"],
                "seed": e["seed"],
                "split": cfg["eval_split"],
                "metrics": {
                    k: v for k, v in finite_metrics(metrics).items() if not k.startswith("n_")
                },
                **fields,
                "commit": commit,
                "device": device_text,
                "wall_s": wall_s,
                "experiment": cfg["name"],
                "run": e["run"],
                "config_hash": e["config_hash"],
                "protocol": _protocol(cfg, e, pt_settings, planned),
                # a proxy score's volumes are the pre-training's
                "data_options": _shown_options(
                    pt_settings["data_options"] if e["kind"] == "proxy" else cfg["data_options"]
                ),
                "pretrain_epochs": pt_summary["epochs"] if pt_summary else None,
                "pretrain_wall_s": round(pt_summary["wall_s"], 2) if pt_summary else None,
                # a fine-tuning's note of the weights it started from (older run folders have
                # none: then what the pre-training holds now); a proxy's, the weights it scored
                "init_digest": (summary.get("init_digest") if e["kind"] == "finetune" else None)
                or (digest_of(e["init"]) if e["init"] else None),
            }
            # A proxy record is one per set of weights scored (see _needed).
            unique = ("run", "config_hash") + (("init_digest",) if e["kind"] == "proxy" else ())
            written = append_record(records_path, record, unique_by=unique)
            done.add((e["run"], e["config_hash"]))
            if e["kind"] == "proxy" and record["init_digest"]:
                scored.setdefault((e["run"], e["config_hash"]), set()).add(record["init_digest"])
            if e["kind"] == "finetune" and not keep_last:
                (out / "last.pt").unlink(missing_ok=True)
            e["status"] = "done"
            e["record"] = record
            if not written:  # another driver scored the same run meanwhile
                log(f"skip     {e['kind']:8s} {e['run']} (recorded meanwhile by another process)")
                continue
            log(f"record   {e['run']}: " + _metric_text(record["metrics"], cfg["metrics"]))
    return plan


def _shown_options(options: dict) -> dict:
    return {k: v for k, v in options.items() if k not in ("root", "cache_dir")}


INIT_DIGEST_FILE = "init_digest.txt"  # in a fine-tuning's run folder: the weights it started from


def weights_digest(path: str | os.PathLike) -> str:
    """A short sha256 of a checkpoint's model weights (names, dtypes, shapes and values).

    Fine-tuning records carry the digest of the pre-training they started from (``init_digest``),
    so two records of one setting that started from different pre-trained weights (a pre-training
    run again after its checkpoint was lost, say) can be told apart.
    """
    import torch

    from rubikkit.train.checkpoint import load_checkpoint

    state = load_checkpoint(path)["model"]
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name]
        if isinstance(t, torch.Tensor):
            t = t.detach().cpu().contiguous()
            h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        else:
            h.update(f"{name}:{t!r}".encode())
    return h.hexdigest()[:16]


def _metric_text(metrics: dict, names) -> str:
    shown = [n for n in names if n in metrics] or list(metrics)[:4]
    return ", ".join(f"{n}={metrics[n]:.4f}" for n in shown)


def _plan_settings(plan, run_id):
    for d in plan:
        if d["run"] == run_id:
            return d["settings"]
    return None


def _load_summary(out: Path) -> dict:
    p = out / "metrics.json"
    if not p.exists():
        raise FileNotFoundError(f"init: the pre-training run {out} has no metrics.json")
    return json.loads(p.read_text(encoding="utf-8"))


def _finished(out: Path) -> bool:
    # metrics.json is written last, after the final checkpoint.
    return (out / "metrics.json").exists() and (out / "best.pt").exists()


def same_pretraining(runs_dir, config_hash: str, exclude=None) -> Path | None:
    """A finished pre-training run folder under ``runs_dir`` with this ``config_hash``, or None.

    Pre-training runs of any experiment live at ``runs_dir/<experiment>/s<seed>/<backbone>/pt-*``,
    and their ``metrics.json`` carries the hash of everything that defines them (task, data and
    its options, backbone, task options, budget, seed), so a run of another experiment with the
    same hash trained the pre-training asked for (the data root is not part of the hash: one
    runs folder, one data root). ``exclude`` (a run folder) is skipped; of several matches the
    first in sorted path order is returned.
    """
    root = Path(runs_dir)
    if not root.is_dir():
        return None
    skip = Path(exclude).resolve() if exclude is not None else None
    for metrics in sorted(root.glob("*/s*/*/pt-*/metrics.json")):
        folder = metrics.parent
        if (skip is not None and folder.resolve() == skip) or not _finished(folder):
            continue
        try:
            found = json.loads(metrics.read_text(encoding="utf-8")).get("config_hash")
        except (OSError, ValueError):
            continue  # a folder being written or a damaged one is not a source
        if found == config_hash:
            return folder
    return None


def _adopt(source: Path, out: Path) -> None:
    # Checkpoints are hard-linked (a copy where links are not possible): every writer of this
    # package replaces a file instead of rewriting it, so the two folders never change each
    # other. metrics.json goes last, as a finished run writes it last.
    import shutil

    out.mkdir(parents=True, exist_ok=True)
    files = sorted(
        (p for p in source.iterdir() if p.is_file() and not p.name.startswith(".")),
        key=lambda p: p.name == "metrics.json",
    )
    for f in files:
        tmp = out / f".{f.name}.adopt.tmp"
        tmp.unlink(missing_ok=True)
        linked = False
        if f.suffix == ".pt":
            with contextlib.suppress(OSError):
                os.link(f, tmp)
                linked = True
        if not linked:  # the small JSON and log files, or no links on this file system
            shutil.copy2(f, tmp)
        os.replace(tmp, out / f.name)
    (out / "adopted_from.txt").write_text(f"{source}\n", encoding="utf-8")


def _selection(best: dict | None) -> dict | None:
    """A fine-tuning's selected checkpoint as a record field: the split, metric and its value.

    ``{"split": "val", "metric": "auc", "value": 0.61}`` says the checkpoint scored was the one
    with the best validation AUC, 0.61 (the best of every epoch); None when nothing was selected.
    """
    if not best or best.get("value") is None or not math.isfinite(best["value"]):
        return None
    return {"split": best.get("split"), "metric": best.get("key"), "value": float(best["value"])}


def _run_pretrain(cfg, e, out: Path, run_root: Path, device, progress, source=None) -> dict:
    from rubikkit.train import pretrain

    if source is not None:  # chosen only for a folder with nothing finished or resumable
        _adopt(source, out)
    if _finished(out):
        summary = _load_summary(out)
        if summary.get("config_hash") == e["config_hash"]:
            return summary
        raise ValueError(
            f"runs_dir: {out} holds a finished pre-training run of other settings; remove it"
        )
    s = e["settings"]
    summary = pretrain(
        s["task"],
        s["data"],
        out=out,
        backbone=s["backbone"],
        backbone_options=s["backbone_options"],
        task_options=s["task_options"],
        data_options=_with_cache(s["data"], s["data_options"], run_root.parent / "cache"),
        epochs=s["epochs"],
        max_steps=s["max_steps"],
        batch_size=s["batch_size"],
        lr=s["lr"],
        seed=e["seed"],
        device=device,
        workers=cfg["workers"],
        resume=(out / "last.pt").exists(),
        val_split=s["val_split"],
        progress=progress,
    )
    summary["config_hash"] = e["config_hash"]
    from rubikkit.train.loop import write_json

    write_json(summary, out / "metrics.json")
    return summary


def _run_proxy(cfg, e, run_root: Path, device, progress):
    from rubikkit.train import evaluate

    pt_out = run_root / e["init"]
    s = e["settings"]
    res = evaluate(
        pt_out / "best.pt",
        split=s["eval_split"],
        device=device,
        draws=s["draws"],
        progress=progress,
    )
    return res["splits"][s["eval_split"]], res


def _run_finetune(cfg, e, out: Path, run_root: Path, device, progress, start: str | None):
    """Fine-tune (or take the finished run in ``out``) and score it; ``start`` is the digest of
    the pre-trained weights it would start from (None from scratch)."""
    from rubikkit.train import evaluate, finetune

    s = e["settings"]
    init = "scratch" if e["init"] is None else run_root / e["init"] / "best.pt"
    data_options = _with_cache(s["data"], s["data_options"], run_root.parent / "cache")
    # The digest of the weights a fine-tuning starts from, written when it starts, so that a
    # record made later (after a resume, or rescored after the records were lost) names them
    # even if the pre-training's best.pt has changed since.
    started_from = out / INIT_DIGEST_FILE
    fresh = not _finished(out) and not (out / "last.pt").exists()
    if start is not None and fresh:  # (again, if a start before wrote it and left no last.pt)
        from rubikkit.data.io import atomic_path

        with atomic_path(started_from) as tmp:
            tmp.write_text(start + "\n", encoding="utf-8")
    if _finished(out) and _load_summary(out).get("config_hash") == e["config_hash"]:
        summary = _load_summary(out)
    else:
        summary = finetune(
            init,
            s["data"],
            out=out,
            head=s["head"],
            label_fraction=s["label_fraction"],
            backbone=s["backbone"],
            backbone_options=s["backbone_options"] if e["init"] is None else None,
            data_options=data_options,
            dropout=s["dropout"],
            epochs=s["epochs"],
            max_steps=s["max_steps"],
            batch_size=s["batch_size"],
            lr=s["lr"],
            seed=e["seed"],
            device=device,
            workers=cfg["workers"],
            resume=(out / "last.pt").exists(),
            lr_milestones=s["lr_milestones"],
            lr_gamma=s["lr_gamma"],
            augment=s["augment"],
            val_split=s["val_split"],
            progress=progress,
            output_stride=s.get("output_stride"),
            loss=s.get("loss", "ce"),
            transfer_stages=s.get("transfer_stages"),
        )
        summary["config_hash"] = e["config_hash"]
        from rubikkit.train.loop import write_json

        write_json(summary, out / "metrics.json")
    res = evaluate(
        out / "best.pt",
        s["data"],
        s["eval_split"],
        data_options=data_options,
        device=device,
        progress=progress,
    )
    if started_from.exists():
        summary = dict(summary, init_digest=started_from.read_text(encoding="utf-8").strip())
    return res["splits"][s["eval_split"]], dict(summary, eval_wall_s=res["wall_s"])


# --------------------------------------------------------------------------- tables
def _fmt(stat: dict | None) -> str:
    if stat is None:
        return MISSING
    if stat["n"] > 1:
        return f"{stat['mean']:.3f} ± {stat['sd']:.3f} (n={stat['n']})"
    return f"{stat['mean']:.3f} (n=1)"


def _matches(p: dict, sel: dict) -> bool:
    return all(p.get(k) == v for k, v in sel.items())


def _published_rows(cfg: dict | None) -> list[dict]:
    if not cfg:
        return []
    rows = []
    for sel in cfg.get("published", []):
        rows += [p for p in PUBLISHED if _matches(p, sel) and p not in rows]
    return rows


def _lf_label(lf) -> str:
    return "proxy" if lf is None else f"{lf:g}"


def _share_of_labels(lf) -> str:
    # How much of the labels a fine-tuning used, in the diagnostics' prose.
    return "all the labels" if lf == 1 else f"{_lf_label(lf)} of the labels"


def _labels(method: str, pt: dict | None, finetuned: dict | None = None) -> list[str]:
    # The row labels of a method: itself, then its variants (levers) in config order; with
    # ``finetuned`` (the config) only the pre-trainings its fine-tuning section takes.
    variants = (pt or {}).get("variants", {}).get(method, []) if method != "scratch" else []
    names = [None] + [v["name"] for v in variants]
    if finetuned is not None:
        names = [n for n in names if _finetuned(finetuned, method, n)]
    return [method if n is None else method_label(method, n) for n in names]


def _num(x) -> str:
    return f"{x:g}" if isinstance(x, (int, float)) else str(x)


def _budget_text(proxy: bool, epochs, pretrain_epochs) -> str:
    """How a group of records was trained, e.g. '100 fine-tuning epochs after 10 pre-training'."""
    if proxy:
        return f"{_num(pretrain_epochs if pretrain_epochs is not None else epochs)} pre-training epochs (proxy scores)"
    if pretrain_epochs is None:
        return f"{_num(epochs)} epochs from scratch"
    return f"{_num(epochs)} fine-tuning epochs after {_num(pretrain_epochs)} pre-training epochs"


def _budget_order(budget: tuple) -> list:
    # Budgets (or label fractions) in numeric order (50 epochs before 100), unknown (None) last.
    return [(x is None, x if isinstance(x, (int, float)) else 0) for x in budget]


def _seed_tables(recs: list[dict], metrics: list[str]) -> list[str]:
    # A config's seed_tables: the fine-tuning runs of each setting seed by seed, so a reader
    # can pair the methods' runs without the prose repeating every number.
    groups: dict[tuple, list[dict]] = {}
    for r in recs:
        if r["head"] != "proxy":
            groups.setdefault(tuple(r.get(k) for k in SETTING_KEYS), []).append(r)
    out = []
    for key in sorted(groups, key=str):
        sub = groups[key]
        for m in metrics:
            if not any(m in r["metrics"] for r in sub):
                continue
            r0 = sub[0]
            out.append(
                f"Seed by seed, {m} ({r0['backbone']}, {r0['head']}, "
                f"{_share_of_labels(r0['label_fraction'])}):"
            )
            # top_share (one class for nearly every volume) is a classifier's collapse
            flag = "top_share" if r0["head"] == "classify" else None
            out += ["", seed_table(sub, m, flag=flag), ""]
    return out


def render_tables(records: list[dict], cfg: dict | None = None) -> str:
    """Markdown for one experiment: a table per protocol, our runs beside published numbers.

    Rows are (method, backbone, head), columns label fraction x metric; the settings of the
    grid in ``cfg`` appear even with no run (cells :data:`~rubikkit.results.MISSING`). A table of
    one shared pre-training seed lists the planned pre-trained rows of that seed; a row whose seed
    has no table of its own stays, missing, in every table, so no setting of the grid goes unseen.
    """
    name = (cfg or {}).get("name") or (records[0].get("experiment") if records else "?")
    metrics = list((cfg or {}).get("metrics") or sorted({m for r in records for m in r["metrics"]}))
    ft = (cfg or {}).get("finetune")
    pt = (cfg or {}).get("pretrain")
    planned: list[tuple] = []
    fractions: list = []
    # The seed of each row's shared pre-training (None: scratch, or none shared): a table of one
    # pre-training seed lists the planned rows of that seed only, as one of a reduced budget
    # lists no epoch lever (below); the rest have tables of their own.
    pt_seed: dict[str, int] = {}
    if pt and pt.get("seed") is not None:
        pt_seed = {m: pt["seed"] for m in pt["methods"]}
        for m, vs in pt["variants"].items():
            pt_seed.update({method_label(m, v["name"]): _shared_seed(pt, v) for v in vs})
    if cfg:
        if ft:
            fractions += [float(f) for f in ft["label_fractions"]]
            for m in ft["methods"]:
                for label in _labels(m, pt, cfg):
                    for bb in cfg["backbones"]:
                        for h in ft["heads"]:
                            planned.append((label, bb, h))
        if cfg.get("proxy_eval") and pt:
            fractions.append(None)
            for m in pt["methods"]:
                for label in _labels(m, pt):
                    for bb in cfg["backbones"]:
                        planned.append((label, bb, "proxy"))
    # A lever of the epochs has no run at a reduced or extended budget (the override replaces it).
    epoch_levers = {
        method_label(m, v["name"])
        for m, vs in ((pt or {}).get("variants") or {}).items()
        for v in vs
        if "epochs" in v
    }
    groups = _protocol_groups(records)
    seed_re = re.compile(r"one pre-training \(seed (-?\d+)\)")
    group_seeds = {int(m.group(1)) for proto, _ in groups if (m := seed_re.search(proto or ""))}
    out = []
    for proto, recs in groups:
        rows = summarise(recs)
        fr = list(fractions)
        for r in rows:
            if r["label_fraction"] not in fr:
                fr.append(r["label_fraction"])
        fr = sorted(set(fr), key=lambda x: _budget_order((x,)))
        pt_budget = (proto or "").partition("pre-train ")[2]
        seed = seed_re.search(pt_budget)
        settings = [
            s
            for s in planned
            if (_as_configured(pt_budget) or s[0] not in epoch_levers)
            and (
                seed is None
                or pt_seed.get(s[0]) in (None, int(seed.group(1)))
                or pt_seed[s[0]] not in group_seeds  # no table of its own: missing in each
            )
        ]
        for r in rows:
            key = (method_label(r["method"], r["variant"]), r["backbone"], r["head"])
            if key not in settings:
                settings.append(key)
        index = {
            (
                method_label(r["method"], r["variant"]),
                r["backbone"],
                r["head"],
                r["label_fraction"],
            ): r
            for r in rows
        }
        devices = sorted({device_key(r["device"]) for r in recs})
        budgets = sorted(
            {(r["head"] == "proxy", r.get("epochs"), r.get("pretrain_epochs")) for r in recs},
            key=_budget_order,
        )
        out.append(f"**{name}**" + (f" — {proto}" if proto else " — no runs yet"))
        out.append("")
        if recs:
            ep = "; ".join(_budget_text(*b) for b in budgets)
            n = len(recs)
            out.append(f"Runs: {n} record{'s' if n != 1 else ''}; trained: {ep}.")
            out.append("Device: " + "; ".join(devices) + ".")
            out.append("")
        cols = [(lf, m) for lf in fr for m in metrics if (lf is None) == (m in _PROXY_METRICS)]
        header = ["method", "backbone", "head"] + [f"{m} @ {_lf_label(lf)}" for lf, m in cols]
        out.append("| " + " | ".join(header) + " |")
        out.append("|" + "---|" * len(header))
        for method, bb, head in settings:
            cells = []
            for lf, m in cols:
                r = index.get((method, bb, head, lf))
                cells.append(_fmt(r["metrics"].get(m)) if r else MISSING)
            if any(c != MISSING for c in cells) or (method, bb, head) in planned:
                out.append("| " + " | ".join([method, bb, head, *cells]) + " |")
        for p in _published_rows(cfg):
            cells = []
            for lf, m in cols:
                v = p["metrics"].get(m)
                same_lf = p["label_fraction"] == lf
                cells.append(f"{v:.3f}" if v is not None and same_lf else MISSING)
            if all(c == MISSING for c in cells):
                continue  # published at other label fractions or metrics only
            label = f"{p['method']} — published, not run here ({p['source']}; {p['dataset']})"
            out.append("| " + " | ".join([label, p["backbone"], p["head"], *cells]) + " |")
        out.append("")
        lines = against_scratch(recs, [m for m in metrics if m not in _PROXY_METRICS])
        if lines:
            out.append(
                "Against scratch (a claim needs a margin larger than the seed sd of both; "
                "'by' is the mean ± sd of the per-seed differences, and from 3 pairs on the "
                "95 % t interval of that mean follows; it does not change the verdict):"
            )
            out.append("")
            out += [f"- {line}" for line in lines]
            out.append("")
        out += _seed_tables(recs, (cfg or {}).get("seed_tables") or [])
        flags = diagnose(recs)
        if flags:
            out.append("Diagnostics:")
            out.append("")
            out += [f"- {line}" for line in flags]
            out.append("")
    repeats = pretraining_seeds(records, cfg, metrics) + pooled_pretrainings(records, cfg, metrics)
    if repeats:
        out.append(
            f"**{name}** — pre-training seeds (a repeated pre-training against the configured "
            "one, fine-tuned with the same seeds, then a method's pre-trainings pooled against "
            "scratch; the rule above):"
        )
        out.append("")
        out += [f"- {line}" for line in repeats]
        out.append("")
    return "\n".join(out)


def against_scratch(records: list[dict], metrics) -> list[str]:
    """One verdict per pre-trained setting and metric, against scratch at the same label fraction.

    ``records`` are of one protocol group. A method *beats* (or *trails*) scratch when the
    difference of the means is larger than the larger of the two sample sds; otherwise it is
    *within seed noise*. With fewer than 2 runs on either side there is no sd and no verdict.
    Seeds run by both sides are compared pairwise as well (same seed, same labelled subset): how
    many the method wins and, with 2 or more pairs, the mean ± sd of the per-seed differences,
    marked *beyond its paired sd* when the mean is larger than that sd, and with 3 or more
    pairs the 95 % t interval of that mean (n - 1 degrees of freedom). The interval does not
    change the verdict; it is a sound test only when the number of seeds was fixed before the
    runs, not when seeds are added until it leaves zero. Pairing removes the
    spread the two sides share (which volumes are labelled, their order), so it can see a
    difference the unpaired rule calls noise; with one pre-training behind every seed of a
    method, it still says nothing about the pre-training's own seed (:func:`pretraining_seeds`).
    """
    return _verdicts(
        records,
        metrics,
        lambda method, variant: None if method == "scratch" else ("scratch", None),
        ("beats", "trails"),
    )


def against_configured(records: list[dict], metrics) -> list[str]:
    """Each pre-training lever (a variant) against its method's configured pre-training.

    For every fine-tuning setting both have run, the rule of :func:`against_scratch` with the
    configured pre-training in the place of scratch, paired by fine-tuning seed: the difference is
    what the lever changed in what the pre-training passes on, where :func:`against_scratch` says
    what either is worth. A lever is one pre-training as the configured run is one, so a
    difference here is read against what a second seed of the same pre-training moves
    (:func:`pretraining_seeds`), not against the fine-tuning spread alone.
    """
    return _verdicts(
        records,
        metrics,
        lambda method, variant: None if variant is None else (method, None),
        ("above", "below"),
    )


def _verdicts(records: list[dict], metrics, base_of, words: tuple[str, str]) -> list[str]:
    """The lines of :func:`against_scratch` and :func:`against_configured`.

    ``base_of(method, variant)`` names the (method, variant) a setting's fine-tunings meet, or
    None for a setting that meets nothing; the base is compared at the same backbone, head and
    label fraction, by :func:`_compare_seeds` with ``words``. Lines by method, backbone, head and
    increasing label fraction, then the configured pre-training before its variants: a method
    fine-tuned from one pre-training across grids that name it differently (``one_pretraining``)
    reads in label-fraction order.
    """
    by_key: dict[tuple, dict[int, dict]] = {}
    machines: dict[tuple, set[str]] = {}
    for r in records:
        if r.get("head") == "proxy":
            continue
        # a partial transfer (finetune.transfer_stages) is a setting of its own
        key = (r["method"], r.get("variant") or None, r.get("transfer_stages"))
        key += (r["backbone"], r["head"], r["label_fraction"])
        by_key.setdefault(key, {})[r["seed"]] = r["metrics"]
        if r.get("device"):
            machines.setdefault(key, set()).add(machine_name(r["device"]))
    lines = []

    def order(item):  # see the docstring; a full transfer before the partial ones
        method, variant, n, bb, head, lf = item[0]
        return (method, bb, head, -1.0 if lf is None else lf, variant or "", n is not None, n or 0)

    for (method, variant, n, bb, head, lf), runs in sorted(by_key.items(), key=order):
        against = base_of(method, variant)
        if against is None:
            continue
        # scratch transfers nothing; a configured pre-training is met at the same transfer
        base_key = (*against, None if against[0] == "scratch" else n, bb, head, lf)
        base = by_key.get(base_key)
        if base is None:
            continue
        label = method_label(method, variant) + (f" (first {n} stages)" if n is not None else "")
        # A seed pairs runs of one machine: on another CPU a fine-tuning rounds otherwise.
        ours, theirs = machines.get((method, variant, n, bb, head, lf)), machines.get(base_key)
        across = ""
        if ours and theirs and ours != theirs:
            across = (
                f"; paired across machines ({', '.join(sorted(ours))} against "
                f"{', '.join(sorted(theirs))})"
            )
        for m in metrics:
            text = _compare_seeds(runs, base, m, words, method_label(*against))
            if text is not None:
                lines.append(f"{label} ({bb}, {head}, {_share_of_labels(lf)}), {m}: {text}{across}")
    return lines


def _compare_seeds(
    runs: dict, base: dict, m: str, words: tuple[str, str], base_name: str
) -> str | None:
    """``runs`` against ``base`` ({seed: metrics}) in metric ``m``: the rule of :func:`against_scratch`.

    ``words`` name the two directions (``("beats", "trails")``); the text starts at the difference.
    None when either side has no run with ``m``.
    """
    from rubikkit.results import _mean_sd

    a = [v[m] for v in runs.values() if m in v]
    b = [v[m] for v in base.values() if m in v]
    if not a or not b:
        return None
    if len(a) < 2 or len(b) < 2:
        return f"n={len(a)} vs n={len(b)}, no verdict (needs 2 runs each)"
    (ma, sa), (mb, sb) = _mean_sd(a), _mean_sd(b)
    diff, spread = ma - mb, max(sa, sb)
    if diff > spread:
        verdict = f"{words[0]} {base_name}"
    elif diff < -spread:
        verdict = f"{words[1]} {base_name}"
    else:
        verdict = "within seed noise"
    paired = sorted(set(runs) & set(base))
    diffs = [runs[s][m] - base[s][m] for s in paired if m in runs[s] and m in base[s]]
    wins = sum(d > 0 for d in diffs)
    pair_note = ""
    if len(diffs) >= 2:
        pm, ps = _mean_sd(diffs)
        beyond = " (beyond its paired sd)" if abs(pm) > ps else ""
        pair_note = f", by {pm:+.3f} ± {ps:.3f}{beyond}"
        if len(diffs) >= 3:
            lo, hi = _paired_interval(pm, ps, len(diffs))
            pair_note += f"; 95 % interval {lo:+.3f} to {hi:+.3f} (t, {len(diffs) - 1} df)"
    return (
        f"{diff:+.3f} ({ma:.3f} vs {mb:.3f}; sd {sa:.3f} vs {sb:.3f}, n={len(a)} vs {len(b)}): "
        f"**{verdict}**; higher on {wins} of {len(diffs)} paired seeds{pair_note}"
    )


def _paired_interval(mean: float, sd: float, n: int, level: float = 0.95) -> tuple[float, float]:
    """The two-sided ``level`` t interval of the mean of ``n`` paired differences (mean, sample sd)."""
    from scipy.stats import t

    half = float(t.ppf(0.5 + level / 2, n - 1)) * sd / n**0.5
    return mean - half, mean + half


def _stages_text(n: int | None) -> str:
    # A partial transfer's depth where a line names its setting ("" for a full transfer).
    return "" if n is None else f", first {n} stages"


def _repeated_variant(v: dict, variants: list[dict]):
    """The pre-training a seed variant repeats: None (the configured one), the name of the variant
    with the same settings but the seed, or False when there is none."""
    rest = {k: x for k, x in v.items() if k not in ("name", "seed")}
    if not rest:
        return None
    for w in variants:
        if "seed" not in w and {k: x for k, x in w.items() if k != "name"} == rest:
            return w["name"]
    return False


def pretraining_seeds(records: list[dict], cfg: dict | None, metrics) -> list[str]:
    """A repeated pre-training (a variant with a ``seed``) against the one it repeats.

    The configured pre-training for a variant that changes the seed only; for one that also
    changes other settings, the variant with those settings and no seed (none: no line).

    For every fine-tuning setting both have run, the rule of :func:`against_scratch` with the
    pre-training it repeats in the place of scratch, paired by fine-tuning seed: the difference is
    what the pre-training's own seed changes, the spread a single pre-training per row hides. The
    proxy scores of the two pre-trainings (the proxy metrics among ``metrics``) follow, side by
    side.
    """
    pt = (cfg or {}).get("pretrain") or {}
    lines = []
    for method, variants in pt.get("variants", {}).items():
        for v in (v for v in variants if "seed" in v):
            base = _repeated_variant(v, variants)
            if base is False:
                continue
            label, base_label = method_label(method, v["name"]), method_label(method, base)
            seeds = f"pre-training seed {v['seed']} vs {pt['seed']}"
            by_setting: dict[tuple, dict] = {}
            proxy = {}
            for r in records:
                if r["method"] != method or r.get("variant") not in (base, v["name"]):
                    continue
                side = "repeat" if r.get("variant") == v["name"] else "configured"
                if r["head"] == "proxy":
                    proxy[side] = r["metrics"]
                    continue
                # as in _verdicts, a partial transfer is a setting of its own
                key = (r["backbone"], r["head"], r["label_fraction"], r.get("transfer_stages"))
                by_setting.setdefault(key, {"repeat": {}, "configured": {}})[side][r["seed"]] = r[
                    "metrics"
                ]
            for (bb, head, lf, n), sides in sorted(by_setting.items(), key=str):
                if not sides["repeat"] or not sides["configured"]:
                    continue
                where = (
                    f"{label} against {base_label} ({seeds}; {bb}, {head}, "
                    f"{_share_of_labels(lf)}{_stages_text(n)})"
                )
                for m in metrics:
                    if m in _PROXY_METRICS:
                        continue
                    text = _compare_seeds(
                        sides["repeat"], sides["configured"], m, ("above", "below"), method
                    )
                    if text is not None:
                        lines.append(f"{where}, {m}: {text}")
            if len(proxy) == 2:
                shown = [
                    m
                    for m in metrics
                    if m in _PROXY_METRICS and m in proxy["repeat"] and m in proxy["configured"]
                ]
                if shown:
                    pairs = ", ".join(
                        f"{m} {proxy['repeat'][m]:.3f} vs {proxy['configured'][m]:.3f}"
                        for m in shown
                    )
                    lines.append(
                        f"{label} against {base_label} ({seeds}), proxy test scores: {pairs}"
                    )
    return lines


def pooled_pretrainings(records: list[dict], cfg: dict | None, metrics) -> list[str]:
    """A method's pre-trainings (the configured one and its seed variants) pooled against scratch.

    Where two or more of a method's pre-trainings were fine-tuned with the same seeds (at least
    2 of them), each of those fine-tuning seeds gets the mean over the pre-trainings, and these
    means meet scratch by the rule of :func:`against_scratch`: an estimate of the method that no
    single pre-training's luck decides. The line also gives each pre-training's mean, the sd of
    those means (between pre-trainings) and what fine-tuning noise alone would make it: the
    fine-tuning sd within a pre-training (root mean square over them) over the root of the
    number of seeds. A between-sd well above that is the pre-training's own seed at work.
    """
    from rubikkit.results import _mean_sd

    pt = (cfg or {}).get("pretrain") or {}
    lines = []
    groups: list[tuple[str, dict]] = []  # (method, {variant or None: pre-training seed})
    for method, variants in pt.get("variants", {}).items():
        by_base: dict = {}
        for v in (v for v in variants if "seed" in v):
            base = _repeated_variant(v, variants)
            if base is not False:
                by_base.setdefault(base, {base: pt.get("seed")})[v["name"]] = v["seed"]
        groups += [(method, seeds) for seeds in by_base.values()]
    for method, seeds in groups:
        base = next(iter(seeds))
        runs: dict[tuple, dict] = {}  # (bb, head, lf, stages) -> {variant: {ft seed: metrics}}
        scratch_runs: dict[tuple, dict] = {}  # (bb, head, lf) -> {ft seed: metrics}
        for r in records:
            if r["head"] == "proxy":
                continue
            key = (r["backbone"], r["head"], r["label_fraction"])
            if r["method"] == "scratch" and not r.get("variant"):
                scratch_runs.setdefault(key, {})[r["seed"]] = r["metrics"]
            elif r["method"] == method and r.get("variant") in seeds:
                key += (r.get("transfer_stages"),)  # each depth of a partial transfer apart
                runs.setdefault(key, {}).setdefault(r.get("variant"), {})[r["seed"]] = r["metrics"]
        for (bb, head, lf, n), sides in sorted(runs.items(), key=str):
            scratch = scratch_runs.get((bb, head, lf), {})
            for m in metrics:
                if m in _PROXY_METRICS:
                    continue
                per = {v: {s: x[m] for s, x in ft.items() if m in x} for v, ft in sides.items()}
                per = {v: ft for v, ft in per.items() if ft}
                common = sorted(set.intersection(*(set(ft) for ft in per.values()))) if per else []
                if len(per) < 2 or len(common) < 2:
                    continue
                order = sorted(per, key=lambda v: seeds[v])
                stats = [_mean_sd([per[v][s] for s in common]) for v in order]
                means = [mean for mean, _ in stats]
                within = (sum(sd**2 for _, sd in stats) / len(stats)) ** 0.5
                pooled = {s: {m: sum(per[v][s] for v in order) / len(order)} for s in common}
                shown = ", ".join(f"{x:.3f}" for x in means)
                where = (
                    f"{method_label(method, base)} over {len(order)} pre-trainings (seeds "
                    f"{', '.join(str(seeds[v]) for v in order)}; {bb}, {head}, "
                    f"{_share_of_labels(lf)}{_stages_text(n)}, fine-tuning seeds "
                    f"{', '.join(map(str, common))})"
                )
                noise = within / len(common) ** 0.5
                text = (
                    f"{where}, {m}: pre-training means {shown}, sd {_mean_sd(means)[1]:.3f} "
                    f"between them, where fine-tuning noise alone gives {noise:.3f} (the sd "
                    f"within them, {within:.3f}, over the root of {len(common)} seeds)"
                )
                vs = _compare_seeds(pooled, scratch, m, ("beats", "trails"), "scratch")
                if vs is not None:
                    text += f"; their mean per fine-tuning seed against scratch: {vs}"
                lines.append(text)
    return lines


_PROXY_METRICS = (
    "order_acc",
    "rot_acc",
    "hor_acc",
    "ver_acc",
    "cpc_acc",
    "loss_order",
    "order_ceiling",
    "rot_ceiling",
    "constant_cubes",
    "order_chance",
    "rot_chance",
    "cpc_ceiling",
    "cpc_chance",
)
#: A proxy ceiling below this is worth a diagnostic line...
CEILING_NOTED = 0.99
#: ...when it accounts for at least this share of what the accuracy misses of 1.
CEILING_SHARE = 1 / 3
#: A proxy accuracy at most this many times its chance level counts as not learned...
NEAR_CHANCE = 1.5
#: ...and an ordering accuracy over recorded ``puzzles`` does when a one-sided binomial test
#: against chance gives at least this p-value (the count, not the ratio, tells 3 of 139 from
#: 300 of 13900).
CHANCE_P = 0.05
#: A proxy accuracy at or above this is "nearly solved"; a top_share at or above it, a collapse.
SATURATED = 0.95


def _at_chance(metric: str, runs: list[dict], chance: float) -> bool:
    # See diagnose: a binomial test for orders over counted puzzles, else the ratio rule.
    if metric == "order_acc" and all(v.get("puzzles") for v in runs):
        from scipy.stats import binom

        n = sum(int(v["puzzles"]) for v in runs)
        hits = sum(round(v[metric] * v["puzzles"]) for v in runs)
        return float(binom.sf(hits - 1, n, chance)) >= CHANCE_P
    return max(v[metric] for v in runs) <= NEAR_CHANCE * chance


def diagnose(records: list[dict]) -> list[str]:
    """Observations that help explain a verdict against scratch, from the records alone.

    * A proxy task whose test accuracy (``order_acc``, ``rot_acc``, ``cpc_acc``) is at least
      :data:`SATURATED` is *nearly solved*: once the network gets it right, its loss no longer
      pushes the features, and a task that can be solved from a shortcut (edges running across
      the gap, the position of a shape in the volume) need not teach anatomy.
    * A fine-tuned classifier whose ``top_share`` (the share of test volumes given the class it
      predicts most) is at least :data:`SATURATED` has *collapsed* onto one class at the selected
      epoch: its ACC is that class's share of the split, whatever its AUC. Records made before
      ``top_share`` existed are counted apart.
    * A proxy accuracy within :data:`NEAR_CHANCE` times its chance level (``order_chance``,
      ``rot_chance``, ``cpc_chance``) in every run was not learned. When every run records its
      ``puzzles``, ``order_acc`` (one decision per puzzle) is tested instead: not learned when
      the puzzles solved, pooled over the runs, are not above chance at the :data:`CHANCE_P`
      level of a one-sided binomial test. Puzzles drawn several to a volume (``proxy_draws``)
      are not independent, so there the test leans towards "learned".
    * A proxy record with a ceiling below :data:`CEILING_NOTED` is read against that ceiling
      when the ceiling accounts for at least :data:`CEILING_SHARE` of what the accuracy misses
      of 1 (far below it, the ceiling explains nothing):
      ``order_ceiling`` and ``rot_ceiling``, the best any model can do when rotations or swaps
      leave the cubes unchanged (:meth:`rubikkit.tasks.rubik.CubePuzzleTask.ceiling`), and
      ``cpc_ceiling``, the best when target cubes are identical
      (:func:`rubikkit.tasks.cpc3d.target_ceiling`).
    * A fine-tuned binary classifier whose ``acc_val_thr`` (test ACC at the cut chosen on the
      validation split) beats its ``acc`` (at the softmax's 0.5) by more than the seed sd of
      ``acc`` loses its ACC to the threshold, not to its ranking of the volumes (read against
      ``majority_acc``, the ACC of calling every volume the most frequent class).
    * A fine-tuning selected by validation AUC (``selected_by``) whose selected value is at most
      0.5 never ranked the validation volumes above chance, at any epoch: with a few labelled
      volumes, the rule they taught (often an inverted one) does not carry to other volumes, and
      its test AUC tends to fall below 0.5 as well. Records made before ``selected_by`` existed
      are not counted.
    * Fine-tuning records of one setting whose ``init_digest`` differ started from different
      pre-trained weights: their spread is not fine-tuning noise alone. Proxy records of one
      pre-training run whose ``init_digest`` differ scored different weights of it.
    """
    from rubikkit.results import _mean_sd

    lines = []
    proxies: dict[tuple, list[dict]] = {}
    heads: dict[tuple, list[dict]] = {}
    chosen: dict[tuple, list[tuple]] = {}  # (selected validation AUC, test AUC) per run
    inits: dict[tuple, set] = {}
    proxy_inits: dict[tuple, set] = {}
    for r in records:
        label = method_label(r["method"], r.get("variant"))
        if r.get("head") == "proxy":
            proxies.setdefault((label, r["backbone"]), []).append(r["metrics"])
            if r.get("init_digest"):  # one pre-training run scored with other weights
                key = (label, r["backbone"], r.get("run") or f"seed {r.get('seed')}")
                proxy_inits.setdefault(key, set()).add(r["init_digest"])
        elif r.get("init_digest"):
            inits.setdefault((label, r["backbone"], r["head"]), set()).add(r["init_digest"])
        if r.get("head") == "classify":
            key = (label, r["backbone"], r["label_fraction"])
            heads.setdefault(key, []).append(r["metrics"])
            sel = r.get("selected_by") or {}
            if sel.get("metric") == "auc" and sel.get("split") != r.get("split"):
                chosen.setdefault(key, []).append((sel["value"], r["metrics"].get("auc")))
    for (method, bb), runs in sorted(proxies.items()):
        for m in ("order_acc", "rot_acc", "cpc_acc"):
            vals = [v[m] for v in runs if m in v]
            if vals and min(vals) >= SATURATED:
                mean = _mean_sd(vals)[0]
                lines.append(
                    f"{method} ({bb}) proxy {m} {mean:.3f} (n={len(vals)}): nearly solved, "
                    "little left for its loss to teach"
                )
        for m, chance_key, ceil, reason in (
            ("order_acc", "order_chance", "order_ceiling", "orders that swap identical cubes"),
            ("rot_acc", "rot_chance", "rot_ceiling", "what leaves a cube unchanged"),
            ("cpc_acc", "cpc_chance", "cpc_ceiling", "identical target cubes"),
        ):
            chance = [v[chance_key] for v in runs if chance_key in v]
            vals = [v[m] for v in runs if m in v]
            if chance and vals and _at_chance(m, [v for v in runs if m in v], max(chance)):
                lines.append(
                    f"{method} ({bb}) proxy {m} {_mean_sd(vals)[0]:.3f} (n={len(vals)}): at chance "
                    f"({max(chance):.3f}), not learned in these epochs"
                )
                continue  # far below any ceiling: the ceiling explains nothing here
            pairs = [(v[m], v[ceil]) for v in runs if m in v and ceil in v]
            if not pairs:
                continue
            acc, top = (_mean_sd([p[i] for p in pairs])[0] for i in (0, 1))
            if top < CEILING_NOTED and 1 - top >= CEILING_SHARE * (1 - acc):
                const = [v["constant_cubes"] for v in runs if "constant_cubes" in v]
                why = (
                    f"; {_mean_sd(const)[0]:.0%} of the test cubes hold a single value"
                    if const
                    else ""
                )
                lines.append(
                    f"{method} ({bb}) proxy {m} {acc:.3f} of a ceiling of {top:.3f} "
                    f"(n={len(pairs)}): no model can tell apart {reason}{why}"
                )
    for (method, bb, lf), runs in sorted(heads.items(), key=lambda kv: str(kv[0])):
        shares = [v["top_share"] for v in runs if "top_share" in v]
        collapsed = sum(s >= SATURATED for s in shares)
        if collapsed:
            older = len(runs) - len(shares)
            lines.append(
                f"{method} ({bb}, {_share_of_labels(lf)}): {collapsed} of {len(shares)} "
                f"runs predict one class for at least {SATURATED:.0%} of the test volumes "
                "(collapse: ACC is that class's share, AUC still ranks)"
                + (f"; {older} older runs have no top_share" if older else "")
            )
        cut = [(v["acc"], v["acc_val_thr"]) for v in runs if "acc" in v and "acc_val_thr" in v]
        if len(cut) >= 2:
            (at_half, sd), (at_cut, _) = (_mean_sd([c[i] for c in cut]) for i in (0, 1))
            if at_cut - at_half > sd:
                higher = sum(t > a for a, t in cut)
                majority = [v["majority_acc"] for v in runs if "majority_acc" in v]
                lines.append(
                    f"{method} ({bb}, {_share_of_labels(lf)}): ACC {at_half:.3f} at the "
                    f"softmax's 0.5 but {at_cut:.3f} at the cut chosen on validation (n={len(cut)}, "
                    f"higher in {higher}): the threshold costs the ACC, not the ranking"
                    + (
                        f"; calling every test volume the majority class scores {majority[0]:.3f}"
                        if majority
                        else ""
                    )
                )
    for (method, bb, lf), runs in sorted(chosen.items(), key=lambda kv: str(kv[0])):
        blind = [t for v, t in runs if v <= 0.5]
        if not blind:
            continue
        line = (
            f"{method} ({bb}, {_share_of_labels(lf)}): {len(blind)} of {len(runs)} runs "
            "never ranked the validation volumes above chance (validation AUC at most 0.5 at "
            "every epoch, so also at the one selected): what their labels taught does not carry "
            "to other volumes"
        )
        tested = [t for t in blind if t is not None]
        others = [t for v, t in runs if v > 0.5 and t is not None]
        if tested:
            line += f"; test AUC {_mean_sd(tested)[0]:.3f} in those runs"
            if others:
                line += f", {_mean_sd(others)[0]:.3f} in the others"
        lines.append(line)
    for (label, bb, head), found in sorted(inits.items()):
        if len(found) > 1:
            lines.append(
                f"{label} ({bb}, {head}): fine-tuned from {len(found)} different pre-trained "
                "checkpoints (init_digest): the seed spread includes the pre-training's"
            )
    for (label, bb, run), found in sorted(proxy_inits.items()):
        if len(found) > 1:
            lines.append(
                f"{label} ({bb}) proxy {run}: the records score {len(found)} different "
                "checkpoints of its pre-training (init_digest), e.g. one trained again on another "
                "machine"
            )
    return lines


def _protocol_parts(record: dict) -> tuple[str | None, str | None]:
    """(fine-tuning budget, pre-training budget) of a record's ``protocol``; None where absent."""
    proto = record.get("protocol") or "unknown protocol"
    if record.get("head") == "proxy":
        return None, proto
    ft, sep, pt = proto.partition(", pre-train ")
    return ft, ("pre-train " + pt) if sep else None


_CONFIGURED = "pre-train as configured"


def _as_configured(pt: str) -> bool:
    """Whether a pre-training budget is the config's (not reduced, not extended)."""
    return "(reduced" not in pt and "(extended" not in pt


def _configured_budgets(records: list[dict], parts: list[tuple]) -> dict[str, str]:
    """Pre-training budgets that are each method's configured one, mapped to a shared key.

    A config may give methods different budgets (``pretrain.epochs_by_method``: 5 epochs of tcpc
    cost what 10 of rubik do). Such records compare like with like, each method at its configured
    budget, so they share a table. Reduced and extended budgets keep their own; so does everything
    when one row (method, variant, backbone, head) would mix budgets.
    """
    budget_of: dict[tuple, set] = {}
    for r, (_, pt) in zip(records, parts):
        if pt is not None and _as_configured(pt):
            row = (r["method"], r.get("variant"), r["backbone"], r["head"])
            budget_of.setdefault(row, set()).add(pt.split(",")[0])
    if any(len(b) > 1 for b in budget_of.values()):
        return {}
    keys = {}
    for _, pt in parts:
        if pt is not None and _as_configured(pt):
            _, sep, rest = pt.partition(",")
            keys[pt] = _CONFIGURED + sep + rest
    return keys


def _leading_number(text: str) -> tuple:
    # "5 epochs" before "10 epochs"; text that starts with no number last.
    head = text.split(" ")[0]
    try:
        return (0, float(head), text)
    except ValueError:
        return (1, 0.0, text)


def _configured_title(pt: str, members: list[dict]) -> str:
    """'pre-train as configured: 5 epochs (tcpc), 10 epochs (rubik, ordering), ...'."""
    order = {m: i for i, m in enumerate(METHODS)}
    by_budget: dict[str, set] = {}
    for r in members:
        own = _protocol_parts(r)[1]
        if own is not None:
            budget = own.removeprefix("pre-train ").split(",")[0]
            label = method_label(r["method"], r.get("variant"))
            by_budget.setdefault(budget, set()).add((order.get(r["method"], len(order)), label))
    if len(by_budget) == 1:
        return "pre-train " + next(iter(by_budget)) + pt[len(_CONFIGURED) :]
    listed = ", ".join(
        f"{b} ({', '.join(label for _, label in sorted(by_budget[b]))})"
        for b in sorted(by_budget, key=_leading_number)
    )
    return f"{_CONFIGURED}: {listed}" + pt[len(_CONFIGURED) :]


def _protocol_groups(records: list[dict]) -> list[tuple[str | None, list[dict]]]:
    """Records grouped so that a table compares like with like.

    A pre-trained fine-tuning group is one (fine-tuning, pre-training) budget; the scratch runs of
    the same fine-tuning budget and the proxy records of the same pre-training budget join it, so
    scratch stands beside every pre-trained group it can be compared with. Methods pre-trained at
    their own configured budgets share one group (:func:`_configured_budgets`).
    """
    parts = [_protocol_parts(r) for r in records]
    shared = _configured_budgets(records, parts)
    parts = [(ft, shared.get(pt, pt)) for ft, pt in parts]
    pairs = sorted({p for p in parts if p[0] is not None and p[1] is not None})
    ft_done = {ft for ft, _ in pairs}
    pt_done = {pt for _, pt in pairs}
    keys = list(pairs)
    keys += sorted({(ft, None) for ft, pt in parts if pt is None and ft not in ft_done})
    keys += sorted({(None, pt) for ft, pt in parts if ft is None and pt not in pt_done})
    groups = []
    for ft, pt in keys:
        members = [
            r
            for r, (rf, rp) in zip(records, parts)
            if (rf, rp) == (ft, pt)
            or (ft is not None and pt is not None and rf == ft and rp is None)
            or (ft is not None and pt is not None and rf is None and rp == pt)
        ]
        if pt is not None and pt.startswith(_CONFIGURED):
            pt = _configured_title(pt, members)
        title = "; ".join(x for x in (ft, pt) if x is not None)
        groups.append((title, members))
    return groups or [(None, [])]


def _load_configs(config_dir) -> dict[str, dict]:
    configs = {}
    d = Path(config_dir)
    if d.is_dir():
        for p in sorted(d.glob("*.json")):
            try:
                configs[p.stem] = load_config(p)
            except (ValueError, FileNotFoundError) as exc:
                print(f"warning: {exc}", file=sys.stderr)
    return configs


def render_page(
    record_paths,
    config_dir="experiments",
    plots_dir=None,
    include_unrun: bool = True,
) -> str:
    """Markdown of every experiment: description, recipe, tables and (optionally) plots.

    Parameters
    ----------
    record_paths : iterable of path-like
        ``results/*.jsonl`` files (missing files give no records).
    config_dir : path-like
        Where ``<experiment>.json`` configs are looked up (for the planned grid, the metrics and
        the published rows).
    plots_dir : path-like, optional
        Write one label-fraction plot per experiment and metric there (PNG, only where an
        experiment has runs at two or more label fractions); the page links them relative to
        the page's folder when it is the plots folder's parent.
    include_unrun : bool
        Also list the configs without a records file (every cell missing).
    """
    from rubikkit.results import load_records

    configs = _load_configs(config_dir)
    by_exp: dict[str, list[dict]] = {}
    for p in record_paths:
        p = Path(p)
        if p.exists():
            by_exp.setdefault(p.stem, []).extend(load_records(p))
    names = list(by_exp)
    if include_unrun:
        names += [n for n in configs if n not in by_exp]
    lines = []
    for name in sorted(names):
        cfg = configs.get(name)
        recs = by_exp.get(name, [])
        lines.append(f"### {name}")
        lines.append("")
        if cfg and cfg.get("description"):
            lines.append(cfg["description"])
            lines.append("")
        if cfg and cfg.get("recipe"):
            lines.append(f"Recipe: {cfg['recipe']}")
            lines.append("")
        for note in (cfg or {}).get("notes", []):
            lines.append(f"- {note}")
        if cfg and cfg.get("notes"):
            lines.append("")
        lines.append(render_tables(recs, cfg))
        if plots_dir is not None and recs:
            lines += _plots(name, recs, cfg, Path(plots_dir))
    return "\n".join(lines).rstrip() + "\n"


def _plots(name, recs, cfg, plots_dir: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from rubikkit.results import plot_label_fractions

    lines = []
    metrics = (cfg or {}).get("metrics") or sorted({m for r in recs for m in r["metrics"]})
    # One plot per table (the tables' protocol groups), so scratch is drawn beside the methods
    # pre-trained for the same fine-tuning budget, as it stands beside them in the table.
    for proto, members in _protocol_groups(recs):
        proto = proto or ""
        sub = [r for r in members if r["label_fraction"]]
        if len({r["label_fraction"] for r in sub}) < 2:
            continue
        for m in metrics:
            if not any(m in r["metrics"] for r in sub):
                continue
            plots_dir.mkdir(parents=True, exist_ok=True)
            tag = _hash(proto)[:6]
            path = plots_dir / f"{name}_{m}_{tag}.png"
            fig, ax = plt.subplots(figsize=(4.5, 3.2), dpi=72)
            plot_label_fractions(sub, sub[0]["dataset"], m, ax=ax, split=sub[0]["split"])
            ax.set_title(f"{name}: {m}\n{proto}", fontsize=7)
            fig.tight_layout()
            fig.savefig(path)
            plt.close(fig)
            lines.append(f"![{name} {m}]({plots_dir.name}/{path.name})")
            lines.append("")
    return lines


def write_page(page_path, body: str) -> None:
    """Replace the text between :data:`PAGE_BEGIN` and :data:`PAGE_END` of ``page_path``.

    A file without the markers gets them (and ``body``) appended.
    """
    p = Path(page_path)
    text = p.read_text(encoding="utf-8") if p.exists() else ""
    block = f"{PAGE_BEGIN}\n\n{body}\n{PAGE_END}\n"
    if PAGE_BEGIN in text and PAGE_END in text:
        head, rest = text.split(PAGE_BEGIN, 1)
        tail = rest.split(PAGE_END, 1)[1].lstrip("\n")
        text = head + block + tail
    else:
        text = text.rstrip("\n") + ("\n\n" if text else "") + block
    from rubikkit.data.io import atomic_path

    with atomic_path(p) as tmp:
        tmp.write_text(text, encoding="utf-8")


# --------------------------------------------------------------------------- CLI
def _int_list(text: str, example: str, minimum: int, what: str) -> list[int]:
    # A comma-separated list of integers of at least ``minimum`` (a command-line argument).
    import argparse

    try:
        values = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what} like {example}, got {text!r}") from None
    if not values or min(values) < minimum:
        raise argparse.ArgumentTypeError(f"expected {what} of at least {minimum}, got {text!r}")
    return values


def _seeds(text: str) -> list[int]:
    return _int_list(text, "0,1,2", 0, "seeds")


def _depths(text: str) -> list[int]:
    return _int_list(text, "3 or 1,2", 1, "stage counts")


def _methods(text: str) -> list[str]:
    import argparse

    methods = [t.strip() for t in text.split(",") if t.strip()]
    bad = [m for m in methods if m not in METHODS]
    if not methods or bad:
        raise argparse.ArgumentTypeError(f"expected methods from {METHODS}, got {text!r}")
    return methods


def _cmd_run(args) -> int:
    cfg = load_config(args.config)
    plan = run_experiment(
        cfg,
        seeds=args.seeds,
        methods=args.methods,
        variants=args.variants,
        transfer_stages=args.transfer_stages,
        device=args.device,
        results_dir=args.results_dir,
        runs_dir=args.runs_dir,
        data_root=args.data_root,
        dry_run=args.dry_run,
        epochs=args.epochs,
        pretrain_epochs=args.pretrain_epochs,
        max_steps=args.max_steps,
        time_budget=args.time_budget,
        keep_last=args.keep_last,
        reuse=not args.no_reuse,
        progress=not args.no_progress,
    )
    n = {s: sum(e.get("status") == s for e in plan) for s in ("done", "skipped", "planned")}
    print(f"{cfg['name']}: {len(plan)} runs; " + ", ".join(f"{k} {v}" for k, v in n.items()))
    return 0


def _cmd_table(args) -> int:
    # A mistyped records file or an unmatched glob must not render a page without its tables.
    missing = [str(p) for p in args.records if not Path(p).is_file()]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise FileNotFoundError(f"RECORDS: no records file {missing[0]}{more}")
    if not Path(args.configs).is_dir():
        if not args.records:
            raise FileNotFoundError(
                f"--configs: no folder {args.configs}, and no RECORDS given: nothing to render"
            )
        print(
            f"warning: --configs: no folder {args.configs}; the tables show the records only, "
            "without the configs' planned grids and published rows",
            file=sys.stderr,
        )
    body = render_page(
        args.records,
        config_dir=args.configs,
        plots_dir=args.plots,
        include_unrun=not args.only_run,
    )
    if args.write:
        write_page(args.write, body)
        print(f"wrote the tables into {args.write}")
    else:
        sys.stdout.write(body)
    return 0


def _reported(fn):
    def wrapper(args) -> int:
        try:
            return fn(args)
        except (ValueError, TypeError, FileNotFoundError) as exc:
            print(f"rubikkit experiment: error: {exc}", file=sys.stderr)
            return 2

    return wrapper


def register(subparsers) -> None:
    """Add ``rubikkit experiment run|table``."""
    p = subparsers.add_parser(
        "experiment",
        help="run experiment grids on real data and render their result tables",
        description="Run the grid of an experiments/*.json config (resumable: runs with a "
        "record are skipped) or render results/*.jsonl as markdown tables.",
    )
    sub = p.add_subparsers(dest="experiment_command", metavar="ACTION", required=True)
    r = sub.add_parser("run", help="run (or --dry-run list) the grid of a config")
    r.add_argument("config", metavar="CONFIG", help="experiments/<name>.json")
    r.add_argument("--seeds", type=_seeds, default=None, help="override the seeds, e.g. 0,1,2")
    r.add_argument(
        "--methods",
        type=_methods,
        default=None,
        help="run only these methods, e.g. scratch or rubik,ordering",
    )
    r.add_argument(
        "--variants",
        type=lambda t: [x.strip() for x in t.split(";") if x.strip()],
        default=None,
        help="run only these pre-training variants, separated by ';' ('default': the configured "
        "pre-training and scratch)",
    )
    r.add_argument(
        "--transfer-stages",
        type=_depths,
        default=None,
        metavar="N",
        help="run only the fine-tunings that transfer N encoder stages, e.g. 3 or 1,2 (depths "
        "of finetune.transfer_stages), and the pre-trainings they start from",
    )
    r.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    r.add_argument("--dry-run", action="store_true", help="list the runs, run nothing")
    r.add_argument("--results-dir", default="results", help="records go to DIR/<name>.jsonl")
    r.add_argument("--runs-dir", default="runs", help="run folders go to DIR/<name>/")
    r.add_argument(
        "--data-root",
        default=None,
        help="root of relative dataset paths (default $RUBIKKIT_DATA, else $RUBIKKIT_TEST_DATA)",
    )
    r.add_argument("--epochs", type=int, default=None, help="override the fine-tuning epochs")
    r.add_argument("--pretrain-epochs", type=int, default=None, help="override pre-train epochs")
    r.add_argument("--max-steps", type=int, default=None, help="cap every run (quick checks)")
    r.add_argument(
        "--time-budget",
        type=float,
        default=None,
        metavar="SECONDS",
        help="start no run after SECONDS (a lent machine); the next call resumes the grid",
    )
    r.add_argument(
        "--keep-last",
        action="store_true",
        help="keep last.pt of finished fine-tunings (by default only best.pt, the one scored)",
    )
    r.add_argument(
        "--no-reuse",
        action="store_true",
        help="train every pre-training here, even one another experiment in the runs folder "
        "finished with the same settings (by default its checkpoints are linked in)",
    )
    r.add_argument("--no-progress", action="store_true")
    r.set_defaults(func=_reported(_cmd_run))
    t = sub.add_parser("table", help="render results/*.jsonl as markdown tables")
    t.add_argument("records", nargs="*", metavar="RECORDS", help="results/<name>.jsonl files")
    t.add_argument("--configs", default="experiments", help="folder of the experiment configs")
    t.add_argument("--plots", default=None, metavar="DIR", help="write label-fraction plots here")
    t.add_argument("--write", default=None, metavar="PAGE", help="replace the tables in PAGE")
    t.add_argument("--only-run", action="store_true", help="skip configs without records")
    t.set_defaults(func=_reported(_cmd_table))
