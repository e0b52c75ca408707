"""Argument checks of the scripts a lent GPU machine runs (experiments/device_*.sh).

A lease is a fixed slice of device time, so a mistyped argument must stop a script at once with
a message naming the argument, before it installs or trains anything."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CONFIG = "experiments/adrenal28_ssl_resnet18.json"

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def _run(script, *args):
    return subprocess.run(
        ["bash", f"experiments/{script}", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "OUT": "/nonexistent-should-not-be-created"},
    )


@pytest.mark.parametrize(
    "args, named",
    [
        ((), "usage"),
        (("soon", CONFIG, "0"), "DEADLINE_S"),
        (("60", "experiments/none.json", "0"), "CONFIG"),
        (("60", CONFIG, "rubik:"), "LANE"),
        (("60", CONFIG, "rubik:0,,1"), "LANE"),
        (("60", CONFIG, "Rubik!:0"), "LANE"),
        (("60", CONFIG, ":0"), "LANE"),
    ],
)
def test_device_lanes_names_a_bad_argument(args, named):
    proc = _run("device_lanes.sh", *args)
    assert proc.returncode == 2 and named in proc.stderr, proc.stderr
    assert not Path("/nonexistent-should-not-be-created").exists()


@pytest.mark.parametrize(
    "args, named",
    [((), "usage"), (("10m",), "BUDGET_S"), (("60", "experiments/none.json"), "CONFIG")],
)
def test_device_run_names_a_bad_argument(args, named):
    proc = _run("device_run.sh", *args)
    assert proc.returncode == 2 and named in proc.stderr, proc.stderr
