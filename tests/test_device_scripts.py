"""Argument checks of the scripts a lent GPU machine runs (experiments/device_*.sh).

A lease is a fixed slice of device time, so a mistyped argument must stop a script at once with
a message naming the argument, before it installs or trains anything."""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CONFIG = "experiments/adrenal28_ssl_resnet18.json"

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def _run(script, *args, env=None, cwd=REPO, timeout=60):
    return subprocess.run(
        ["bash", f"experiments/{script}", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={"PATH": "/usr/bin:/bin", "OUT": "/nonexistent-should-not-be-created", **(env or {})},
    )


def _fake_python(tmp_path, body):
    """An executable standing in for the machine's python3 (PYTHON=...): ``body`` is a case on
    its arguments ("$a")."""
    path = tmp_path / "fake_python"
    path.write_text(f'#!/usr/bin/env bash\na="$*"\ncase "$a" in\n{body}\nesac\n')
    path.chmod(0o755)
    return str(path)


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


@pytest.mark.parametrize(
    "script, args",
    [("device_run.sh", ("60", CONFIG)), ("device_lanes.sh", ("60", CONFIG, "rubik:0"))],
)
def test_device_scripts_name_missing_data_before_anything_runs(script, args):
    # Without .device_data every run of a MedMNIST, LIDC or BraTS grid failed, each only after
    # the install, tests and benchmarks had spent the lease's first minutes.
    proc = _run(script, *args, env={"RUBIKKIT_DATA": "/nonexistent-data-root"})
    assert proc.returncode == 2, proc.stderr
    assert "DATA" in proc.stderr and "/nonexistent-data-root/medmnist3d" in proc.stderr
    assert "make device-data" in proc.stderr
    assert not Path("/nonexistent-should-not-be-created").exists()


def test_device_run_goes_on_to_the_grids_after_a_failed_install_and_benchmarks(tmp_path):
    # A failed `rubikkit info` or benchmark ended the call (set -e, pipefail) before the grids.
    (tmp_path / "data" / "medmnist3d").mkdir(parents=True)  # the data check passes
    py = _fake_python(
        tmp_path, '  -c*) echo "torch 0 cuda False" ;;\n  *) echo "fake: $a"; exit 1 ;;'
    )
    out = tmp_path / "out"
    proc = _run(
        "device_run.sh",
        "600",
        "experiments/adrenal28_scratch_resnet18.json",
        env={
            "PYTHON": py,
            "OUT": str(out),
            "STEPS": "install bench exp",
            "RUBIKKIT_DATA": str(tmp_path / "data"),
        },
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    log = (out / "device_run.log").read_text()
    for said in (
        "install failed",
        "rubikkit info failed",
        "puzzle benchmark failed",
        "pre-training benchmark failed",
        "experiment experiments/adrenal28_scratch_resnet18.json failed",
        "done",
    ):
        assert said in log, log
    assert (out / "RESULTS.md").is_file() and (out / "install.log").is_file()


def _has_pid_namespace():
    if shutil.which("unshare") is None:
        return False
    probe = ["unshare", "-p", "-f", "--kill-child", "--mount-proc", "true"]
    return subprocess.run(probe, capture_output=True).returncode == 0


@pytest.mark.slow
@pytest.mark.skipif(
    not _has_pid_namespace(), reason="needs unshare into a PID namespace (the script pkills)"
)
def test_device_lanes_ends_at_the_deadline_when_the_paused_benchmark_hangs(tmp_path):
    # With CHECKS=1 the lanes' runs and their timeouts are paused for the puzzle benchmark: one
    # that hung held the lanes, so the call, past the deadline, and no records came back.
    tree = tmp_path / "tree"
    for d in ("experiments", "benchmarks", "rubikkit"):
        (tree / d).mkdir(parents=True)
    for script in ("device_run.sh", "device_lanes.sh", "device_data_check.sh"):
        shutil.copy(REPO / "experiments" / script, tree / "experiments" / script)
    (tree / "benchmarks" / "RESULTS.md").write_text("")
    (tree / "experiments" / "t.json").write_text('{"name": "t", "data": "phantoms:tumour"}')
    py = _fake_python(
        tmp_path,
        '  "-m pip"*) touch rubikkit/_C.fake.so ;;\n'
        '  "-m rubikkit experiment run"*) exec -a "python3 $a" sleep 1000 ;;\n'
        "  benchmarks/puzzle.py*) exec sleep 1000 ;;\n"
        '  *) echo "fake: $a" ;;',
    )
    out = tmp_path / "out"
    env = {"PATH": "/usr/bin:/bin", "PYTHON": py, "OUT": str(out), "CHECKS": "1"}
    t0 = time.monotonic()
    proc = subprocess.run(
        ["unshare", "-p", "-f", "--kill-child", "--mount-proc", "bash",
         "experiments/device_lanes.sh", "35", "experiments/t.json", "0"],
        cwd=tree, capture_output=True, text=True, timeout=150, env=env,
    )  # fmt: skip
    assert time.monotonic() - t0 < 90, proc.stdout
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "lanes paused for the puzzle benchmark" in proc.stdout, proc.stdout
    assert "lanes resumed" in proc.stdout, proc.stdout
    with tarfile.open(out / "logs.tgz") as tar:
        assert "./lane1.log" in tar.getnames()
    assert (tree / "rubikkit" / "_C.fake.so").is_file()
    assert os.listdir(out)


@pytest.mark.parametrize("status, call_status", [(0, 0), (124, 0), (1, 1)])
def test_device_lanes_status_says_whether_a_run_failed(tmp_path, status, call_status):
    # It ended with status 0 when every run failed; only the lane logs said so. A run stopped by
    # the deadline (timeout's 124) is no failure.
    tree = tmp_path / "tree"
    (tree / "experiments").mkdir(parents=True)
    for script in ("device_lanes.sh", "device_data_check.sh"):
        shutil.copy(REPO / "experiments" / script, tree / "experiments")
    (tree / "experiments" / "t.json").write_text('{"name": "t", "data": "phantoms:tumour"}')
    py = _fake_python(
        tmp_path, f'  "-m rubikkit experiment run"*) exit {status} ;;\n  *) echo "fake: $a" ;;'
    )
    env = {"PYTHON": py, "OUT": str(tmp_path / "out"), "INSTALL": "0"}
    proc = _run("device_lanes.sh", "120", "experiments/t.json", "0", "rubik:1", env=env, cwd=tree)
    assert proc.returncode == call_status, proc.stdout + proc.stderr
    failed = "runs that failed" in proc.stdout
    assert failed == bool(call_status), proc.stdout
    if failed:
        assert "scratch seed 0: status 1" in proc.stdout and "rubik seed 1: status 1" in proc.stdout
    with tarfile.open(tmp_path / "out" / "logs.tgz") as tar:  # the logs come back either way
        assert {"./lane1.log", "./lane2.log"} <= set(tar.getnames())
