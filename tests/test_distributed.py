"""Two CPU processes under torchrun (Gloo): DDP training completes and only rank 0 writes."""

from __future__ import annotations

import json
import os
import signal
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


_DISAGREE = """
import sys
import torch
from rubikkit.train import distributed as D
from rubikkit.train.loop import fit

ctx = D.setup("cpu")
# Rank 1 sees twice the items of rank 0 (as with another copy of the data on another node).
items = [{"image": torch.ones(1, 2, 2, 2)} for _ in range(4 * (1 + ctx.rank))]
model = torch.nn.Linear(1, 1)


def step_fn(m, batch, gen):
    return m(batch["image"].mean(dim=(1, 2, 3, 4))[:, None]).pow(2).mean(), {}


try:
    fit(model=model, train_set=items, step_fn=step_fn, evaluate_fn=None, config={},
        out=sys.argv[1], ctx=ctx, epochs=2, max_steps=None, batch_size=2, lr=1e-3,
        progress=False)
except ValueError as exc:
    print(f"rank {ctx.rank}: {exc}", flush=True)
    sys.exit(2)
finally:
    D.cleanup(ctx)
"""


def test_ranks_that_read_different_data_stop_with_an_error(tmp_path):
    # Before: rank 0 finished its epoch first and waited in a collective for rank 1 forever.
    script = tmp_path / "disagree.py"
    script.write_text(_DISAGREE)
    out = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone"]
    proc = subprocess.Popen(
        [*cmd, str(script), str(out)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        text, _ = proc.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the ranks too, not only the launcher
        proc.communicate()
        pytest.fail("the ranks hang when they read different numbers of items")
    assert proc.returncode != 0
    for rank in (0, 1):
        assert f"rank {rank}: data: the 2 processes disagree" in text, text[-3000:]
    assert "n_train=4" in text and "n_train=8" in text
    assert not out.exists()  # stopped before anything was written


def test_the_process_group_waits_longer_than_nccls_ten_minutes(monkeypatch):
    # Validation runs on rank 0 while the others wait in a collective; NCCL's default timeout of
    # 10 minutes would end a run whose validation takes longer.
    from datetime import timedelta

    from rubikkit.train import distributed as D

    seen = {}
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(D.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(D.dist, "init_process_group", lambda **kw: seen.update(kw))
    monkeypatch.setattr(D.dist, "get_rank", lambda: 0)
    monkeypatch.setattr(D.dist, "get_world_size", lambda: 2)
    ctx = D.setup("cpu")
    assert ctx.initialised_here and seen["backend"] == "gloo"
    assert seen["timeout"] >= timedelta(minutes=30)
