"""Two CPU processes under torchrun (Gloo): DDP training completes and only rank 0 writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rubikkit.train import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(
    not torch.distributed.is_available(), reason="torch.distributed is not built in"
)


def test_two_process_pretrain_on_cpu(tmp_path):
    out = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--standalone",
        "-m",
        "rubikkit",
        "pretrain",
        "--task",
        "rubik",
        "--data",
        "phantoms:hemorrhage",
        "--data-option",
        "n=8",
        "--data-option",
        "size=16",
        "--backbone-option",
        "widths=4,8",
        "--task-option",
        "n_perms=6",
        "--task-option",
        "hidden=8",
        "--out",
        str(out),
        "--max-steps",
        "2",
        "--batch-size",
        "2",
        "--device",
        "cpu",
        "--no-progress",
    ]
    res = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    # Everything written once, by rank 0, and nothing else (no temporary files, no rank copies).
    assert {p.name for p in out.iterdir()} == {
        "config.json",
        "log.jsonl",
        "last.pt",
        "best.pt",
        "metrics.json",
    }
    config = json.loads((out / "config.json").read_text())
    assert config["world_size"] == 2
    log = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert [r["split"] for r in log] == ["train", "val"]  # one record per split, not per rank
    assert log[0]["step"] == 2
    ckpt = load_checkpoint(out / "last.pt")
    assert ckpt["step"] == 2 and ckpt["world_size"] == 2
    assert len(ckpt["rng"]) == 2  # each rank's random streams, for an exact resume
    assert not any(k.startswith("module.") for k in ckpt["model"])  # saved unwrapped
    assert json.loads((out / "metrics.json").read_text())["world_size"] == 2
