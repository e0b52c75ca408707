"""``rubikkit pretrain``, ``rubikkit finetune`` and ``rubikkit evaluate``.

Examples::

    rubikkit pretrain --task rubik --data phantoms:hemorrhage --backbone vgg3d --out runs/rubik
    rubikkit finetune --init runs/rubik/best.pt --head classify --data phantoms:hemorrhage \\
        --label-fraction 0.1 --out runs/ft
    rubikkit evaluate runs/ft/best.pt --data phantoms:hemorrhage --split test
    torchrun --nproc_per_node=4 -m rubikkit pretrain --task tcpc --data lidc:lidc --out runs/t

Options given as ``KEY=VALUE`` (``--data-option size=64``) are converted with
:func:`rubikkit.data.spec.parse_value` (ints, floats, booleans, comma-separated tuples).
"""

from __future__ import annotations

import argparse
import json
import sys

__all__ = ["register"]

TASKS = ("rubik", "ordering", "jigsaw3d", "cpc3d", "tcpc")
BACKBONES = ("vgg3d", "resnet10", "resnet18", "resnet34")


def _key_value(text: str) -> tuple[str, object]:
    from rubikkit.data.spec import parse_value

    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key.strip().replace("-", "_"), parse_value(value)


def _options(pairs) -> dict:
    return dict(pairs or [])


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return v


def _fraction(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text!r}") from None
    if not 0 < v <= 1:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text!r}")
    return v


def _common(p: argparse.ArgumentParser, *, lr: float) -> None:
    g = p.add_argument_group("training")
    g.add_argument(
        "--epochs",
        type=_positive_int,
        default=None,
        help="epochs (default 10 unless --max-steps is given)",
    )
    g.add_argument(
        "--max-steps", type=_positive_int, default=None, help="stop after this many optimiser steps"
    )
    g.add_argument(
        "--batch-size",
        type=_positive_int,
        default=2,
        help="volumes per step and process (default 2, TCPC Sec. 3.2.1)",
    )
    g.add_argument("--lr", type=float, default=lr, help=f"Adam learning rate (default {lr:g})")
    g.add_argument("--weight-decay", type=float, default=0.0)
    g.add_argument(
        "--lr-milestones",
        type=_fractions,
        default=None,
        metavar="F,F",
        help="multiply the rate by --lr-gamma at these fractions of --epochs (e.g. 0.5,0.75)",
    )
    g.add_argument("--lr-gamma", type=float, default=0.1, help="factor at each milestone")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    g.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    g.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from last.pt (same step, same data order)",
    )
    g.add_argument(
        "--amp",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="mixed precision (default: on with CUDA, off on CPU)",
    )
    g.add_argument(
        "--val-split",
        default="val",
        help="split scored after each epoch for best.pt ('none': no validation; best.pt is then "
        "a pre-training's last epoch, a fine-tuning's lowest training loss)",
    )
    g.add_argument(
        "--checkpoint-every",
        type=_positive_int,
        default=None,
        help="also write last.pt every N steps",
    )
    g.add_argument("--no-progress", action="store_true", help="no progress bars")
    g.add_argument(
        "--data-option",
        dest="data_options",
        action="append",
        type=_key_value,
        metavar="KEY=VALUE",
        help="dataset option (repeatable), e.g. size=64",
    )


def _fractions(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected fractions like 0.5,0.75, got {text!r}"
        ) from None


def _val_split(text: str):
    return None if text is None or text.lower() in ("none", "") else text


def _reported(run):
    """Run a command; a bad argument, a missing file or a diverged loss is one line on stderr
    and exit code 2."""

    def wrapper(args) -> int:
        try:
            return run(args)
        except (ValueError, TypeError, FileNotFoundError, FloatingPointError) as exc:
            print(f"rubikkit {args.command}: error: {exc}", file=sys.stderr)
            return 2

    return wrapper


def _run_pretrain(args) -> int:
    from rubikkit.train.pretrain import pretrain

    pretrain(
        args.task,
        args.data,
        out=args.out,
        backbone=args.backbone,
        backbone_options=_options(args.backbone_options),
        task_options=_options(args.task_options),
        data_options=_options(args.data_options),
        **_training_kwargs(args),
    )
    return 0


def _training_kwargs(args) -> dict:
    """The keyword arguments that pretrain and finetune share, from the common CLI options."""
    return {
        "epochs": args.epochs,
        "max_steps": args.max_steps,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "weight_decay": args.weight_decay,
        "seed": args.seed,
        "device": args.device,
        "workers": args.workers,
        "resume": args.resume,
        "amp": args.amp,
        "val_split": _val_split(args.val_split),
        "progress": not args.no_progress,
        "checkpoint_every": args.checkpoint_every,
        "lr_milestones": args.lr_milestones,
        "lr_gamma": args.lr_gamma,
    }


def _run_finetune(args) -> int:
    from rubikkit.train.finetune import finetune

    finetune(
        args.init,
        args.data,
        out=args.out,
        head=args.head,
        label_fraction=args.label_fraction,
        backbone=args.backbone,
        backbone_options=_options(args.backbone_options),
        data_options=_options(args.data_options),
        dropout=args.dropout,
        **_training_kwargs(args),
        augment=args.augment,
        output_stride=args.output_stride,
        loss=args.loss,
        transfer_stages=args.transfer_stages,
    )
    return 0


def _run_evaluate(args) -> int:
    from rubikkit.train.evaluate import evaluate
    from rubikkit.train.loop import _no_nan

    result = evaluate(
        args.checkpoint,
        args.data,
        args.split,
        data_options=_options(args.data_options),
        batch_size=args.batch_size,
        device=args.device,
        workers=args.workers,
        amp=args.amp,
        seed=args.seed,
        draws=args.draws,
        stage_activity=args.stage_activity,
        out=args.out,
        progress=not args.no_progress,
    )
    # Undefined metrics (an AUC on a one-class split) as null, as in the files: NaN is not JSON.
    metrics = _no_nan(result["splits"][args.split])
    json.dump(metrics, sys.stdout, indent=2, sort_keys=True, allow_nan=False)
    sys.stdout.write("\n")
    return 0


def register(subparsers) -> None:
    """Add ``pretrain``, ``finetune`` and ``evaluate`` to the ``rubikkit`` command."""
    from rubikkit.train.finetune import DEFAULT_LR as FT_LR
    from rubikkit.train.pretrain import DEFAULT_LR as PT_LR

    p = subparsers.add_parser(
        "pretrain",
        help="self-supervised pre-training on a proxy task",
        description="Pre-train a 3D backbone on a proxy task; writes config.json, log.jsonl, "
        "last.pt, best.pt and metrics.json to --out.",
    )
    p.add_argument("--task", required=True, choices=TASKS)
    p.add_argument(
        "--data",
        required=True,
        metavar="SPEC",
        help="dataset spec, e.g. phantoms:hemorrhage, brats:PATH",
    )
    p.add_argument("--backbone", default="vgg3d", choices=BACKBONES)
    p.add_argument("--out", required=True, metavar="DIR", help="run folder")
    p.add_argument(
        "--task-option",
        dest="task_options",
        action="append",
        type=_key_value,
        metavar="KEY=VALUE",
        help="proxy task option (repeatable), e.g. n_perms=100",
    )
    p.add_argument(
        "--backbone-option",
        dest="backbone_options",
        action="append",
        type=_key_value,
        metavar="KEY=VALUE",
        help="backbone option (repeatable)",
    )
    _common(p, lr=PT_LR)
    p.set_defaults(func=_reported(_run_pretrain))

    f = subparsers.add_parser(
        "finetune",
        help="fine-tune a pre-trained (or fresh) backbone on labels",
        description="Transfer the backbone of --init (all tensors or an error) into a "
        "classifier, U-Net or DUC and train on a fraction of the labels.",
    )
    f.add_argument(
        "--init",
        required=True,
        metavar="CKPT|scratch",
        help="checkpoint to take the backbone from, or 'scratch'",
    )
    f.add_argument("--head", default="classify", choices=("classify", "unet", "duc"))
    f.add_argument("--data", required=True, metavar="SPEC")
    f.add_argument(
        "--label-fraction",
        type=_fraction,
        default=1.0,
        help="share of the training labels used (stratified per class)",
    )
    f.add_argument("--out", required=True, metavar="DIR")
    f.add_argument(
        "--backbone",
        default=None,
        choices=BACKBONES,
        help="backbone for --init scratch (default vgg3d); a checkpoint brings its own",
    )
    f.add_argument(
        "--backbone-option",
        dest="backbone_options",
        action="append",
        type=_key_value,
        metavar="KEY=VALUE",
        help="backbone option (--init scratch)",
    )
    f.add_argument("--dropout", type=float, default=0.0)
    f.add_argument(
        "--loss",
        default="ce",
        choices=("ce", "ce+dice"),
        help="training loss of a segmentation head: cross-entropy, or cross-entropy plus the "
        "soft Dice loss of the foreground classes",
    )
    f.add_argument(
        "--transfer-stages",
        type=int,
        default=None,
        metavar="N",
        help="transfer the init's first N encoder stages only; the deeper ones start from the "
        "weights a scratch run of the same seed starts from (default: all stages)",
    )
    f.add_argument(
        "--output-stride",
        type=int,
        default=None,
        metavar="N",
        help="--head duc: run the encoder at output stride N, its deeper stages dilated "
        "(default: the backbone's total stride)",
    )
    f.add_argument(
        "--augment",
        default=None,
        choices=("voxel_scale",),
        help="voxel_scale: training volumes times U(0,1), evaluated ones times 0.5 (MedMNIST v2 "
        "shape datasets)",
    )
    _common(f, lr=FT_LR)
    f.set_defaults(func=_reported(_run_finetune))

    e = subparsers.add_parser(
        "evaluate",
        help="score a checkpoint on a split",
        description="Score a pretrain (proxy metrics) or finetune (accuracy/AUC or mIoU/Dice) "
        "checkpoint on a split; prints the metrics as JSON.",
    )
    e.add_argument("checkpoint", metavar="CKPT")
    e.add_argument(
        "--data", default=None, metavar="SPEC", help="dataset spec (default: the checkpoint's)"
    )
    e.add_argument("--split", default="test")
    e.add_argument("--out", default=None, help="write the result JSON here (file or folder)")
    e.add_argument("--batch-size", type=_positive_int, default=None)
    e.add_argument("--seed", type=int, default=None)
    e.add_argument(
        "--draws",
        type=_positive_int,
        default=1,
        help="puzzles scored per volume (a pre-training checkpoint; for splits of a few volumes)",
    )
    e.add_argument(
        "--stage-activity",
        choices=("running", "batch"),
        default=None,
        help="also count, per stage of the backbone, the channels the split's whole volumes never "
        "switch on (batch norm with the checkpoint's running statistics or each batch's own)",
    )
    e.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    e.add_argument("--workers", type=int, default=0)
    e.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None)
    e.add_argument("--no-progress", action="store_true")
    e.add_argument(
        "--data-option", dest="data_options", action="append", type=_key_value, metavar="KEY=VALUE"
    )
    e.set_defaults(func=_reported(_run_evaluate))
