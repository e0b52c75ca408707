"""The ``rubikkit`` command line (also ``python -m rubikkit``).

Each sub-command lives beside the code it drives and registers itself through a
``register(subparsers)`` function that adds its parser and sets ``func`` (called with the parsed
arguments, returning an exit code). This file only collects them.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys

# Modules providing ``register(subparsers)``, in help order.
COMMAND_MODULES = (
    "rubikkit.train.cli",  # pretrain, finetune, evaluate
    "rubikkit.assignments",  # assignments release / check
    "rubikkit.experiments",  # experiment run / table
)


def _module_exists(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:  # the parent package is missing
        return False


def build_parser() -> argparse.ArgumentParser:
    import rubikkit

    parser = argparse.ArgumentParser(
        prog="rubikkit",
        description="Self-supervised learning on 3D medical images (Rubik's cube recovery, TCPC).",
    )
    parser.add_argument("--version", action="version", version=f"rubikkit {rubikkit.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    info = sub.add_parser("info", help="versions, compiled extensions, threads and devices")
    info.set_defaults(func=lambda args: importlib.import_module("rubikkit._info").main(args))
    for name in COMMAND_MODULES:
        if not _module_exists(name):
            continue  # that part of the toolkit is not in this build
        importlib.import_module(name).register(sub)
    _no_abbreviations(parser)
    return parser


def _no_abbreviations(parser: argparse.ArgumentParser) -> None:
    # argparse takes a prefix of an option for the option: ``finetune --checkpoint x.pt`` was read
    # as --checkpoint-every and failed with "expected a positive integer". Options are spelled
    # out, so a mistyped one is reported as unrecognised.
    parser.allow_abbrev = False
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _no_abbreviations(child)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:
        # The reader went away (``rubikkit experiment run --dry-run ... | head``): stop quietly
        # rather than with a traceback, and point stdout at the null device so that the
        # interpreter's last flush at exit cannot fail a second time.
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, sys.stdout.fileno())
        os.close(null)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
