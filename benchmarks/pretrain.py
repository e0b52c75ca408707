"""Pre-training throughput benchmark (issue 5): the Rubik's cube task with a 3D VGG; not a test.

Trains ``rubikkit.train.pretrain`` on hemorrhage phantoms for two epochs and reads the second
(warm) epoch's record of ``log.jsonl``: ``samples_per_s`` (volumes per second, all processes) and
``data_wait_frac`` (share of the epoch's wall time spent waiting for the DataLoader), the fields
the training loop writes for every epoch. It does so with mixed precision on and off (on a GPU;
on the CPU AMP does not apply and only the float32 row is measured), and samples the GPU
utilisation while it trains (``torch.cuda.utilization`` when pynvml is there, else
``nvidia-smi``).

    python benchmarks/pretrain.py                      # GPU defaults: 64^3 volumes, batch 16
    python benchmarks/pretrain.py --device cpu         # CPU defaults: 32^3, batch 4, few steps
    python benchmarks/pretrain.py --device cpu --write # record it in benchmarks/RESULTS.md

With ``--write`` the "## Pre-training throughput" section of RESULTS.md is replaced; rows measured
on another kind of device (a GPU row written by a GPU session) are kept.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import torch
from _report import cpu_model, write_section

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "RESULTS.md"
SECTION = "## Pre-training throughput"
HEADER = (
    "| device | AMP | volumes | batch | steps/epoch | samples/s | data wait | GPU util | machine |"
)

GPU_DEFAULTS = {"size": 64, "batch_size": 16, "steps": 20, "workers": 4}
CPU_DEFAULTS = {"size": 32, "batch_size": 4, "steps": 4, "workers": 0}


def machine(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (
        f"{cpu_model()}, {cores} cores, {torch.get_num_threads()} torch threads, "
        f"torch {torch.__version__}"
    )


class GpuSampler:
    """Sample the GPU utilisation (percent) every ``period`` seconds in a background thread."""

    def __init__(self, device: torch.device, period: float = 0.2):
        self.device = device
        self.period = period
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = None
        self.source = None

    def _read(self) -> float | None:
        try:
            self.source = "torch.cuda.utilization"
            return float(torch.cuda.utilization(self.device))
        except Exception:  # noqa: BLE001 - pynvml missing: fall back to nvidia-smi
            pass
        if shutil.which("nvidia-smi") is None:
            return None
        index = self.device.index or 0
        res = subprocess.run(
            [
                "nvidia-smi",
                f"--id={index}",
                "--query-gpu=utilization.gpu",
                "--format=csv,noheader,nounits",
            ],
            capture_output=True,
            text=True,
            timeout=5,
        )
        self.source = "nvidia-smi"
        try:
            return float(res.stdout.strip().splitlines()[0])
        except (ValueError, IndexError):
            return None

    def _loop(self):
        while not self._stop.wait(self.period):
            v = self._read()
            if v is not None:
                self.samples.append(v)

    def __enter__(self):
        if self.device.type == "cuda":
            self._thread = threading.Thread(target=self._loop, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def mean(self) -> float | None:
        return statistics.fmean(self.samples) if self.samples else None


def measure(args, device: torch.device, amp: bool) -> dict:
    """Two epochs of rubik pre-training; the second epoch's log record and the GPU utilisation."""
    from rubikkit.train import pretrain

    n = args.batch_size * args.steps
    with tempfile.TemporaryDirectory(prefix="rubikkit-bench-") as tmp:
        with GpuSampler(device) as sampler:
            pretrain(
                "rubik",
                "phantoms:hemorrhage",
                out=Path(tmp) / "run",
                backbone="vgg3d",
                backbone_options=args.backbone_options,
                data_options={"n": n, "size": args.size},
                epochs=2,
                batch_size=args.batch_size,
                device=str(device),
                workers=args.workers,
                amp=amp,
                val_split=None,
                progress=False,
            )
        rows = [json.loads(line) for line in (Path(tmp) / "run" / "log.jsonl").open()]
    warm = [r for r in rows if r["split"] == "train" and r["epoch"] == 2][0]
    return {
        "samples_per_s": warm["samples_per_s"],
        "data_wait_frac": warm["data_wait_frac"],
        "gpu_util": sampler.mean(),
        "gpu_util_source": sampler.source,
    }


def table_rows(args, device, results) -> list[str]:
    rows = []
    for amp, res in results:
        util = "n/a (CPU)" if device.type != "cuda" else _percent(res["gpu_util"])
        rows.append(
            f"| {device.type} | {'on' if amp else 'off'} | {args.size}^3 | {args.batch_size} "
            f"| {args.steps} | {res['samples_per_s']:.2f} | {100 * res['data_wait_frac']:.1f} % "
            f"| {util} | {machine(device)} |"
        )
    return rows


def _percent(v) -> str:
    return "–" if v is None else f"{v:.0f} %"


def section(args, device, rows: list[str], kept: list[str]) -> str:
    today = datetime.date.today().isoformat()
    gpu_rows = [r for r in rows + kept if r.startswith("| cuda |")]
    text = [
        SECTION,
        "",
        "`python benchmarks/pretrain.py` trains the Rubik's cube task (2x2x2 grid, 100 "
        "permutations) with a 3D VGG on hemorrhage phantoms for two epochs and reports the "
        "second (warm) epoch from the training log: samples/s (volumes per second), the share of "
        "the epoch spent waiting for data, and the mean GPU utilisation sampled while training. "
        f"Last written {today} with `{' '.join(['python', 'benchmarks/pretrain.py', *sys.argv[1:]])}`.",
        "",
        f"1-minute load average when the run started: {args.load:.2f} on {os.cpu_count()} CPUs "
        "(above 0 means other work shared them).",
        "",
        "CPU rows are CPU numbers (small volumes, few steps; AMP is CUDA-only); they say nothing "
        "about a GPU.",
        "",
        HEADER,
        "|---|---|---|---|---|---|---|---|---|",
        *kept,
        *rows,
    ]
    if not gpu_rows:
        text.append(
            "| cuda | on / off | 64^3 | 16 | 20 | – | – | – | not run yet: needs a GPU session |"
        )
    return "\n".join(text) + "\n"


def existing_rows(device_type: str) -> list[str]:
    """Rows of the current section measured on another kind of device (kept on --write)."""
    if not RESULTS.exists():
        return []
    lines = RESULTS.read_text().splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip() == SECTION), None)
    if start is None:
        return []
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    keep = []
    for line in lines[start:end]:
        if not line.startswith("| ") or line.startswith("| device") or "not run yet" in line:
            continue
        kind = line.split("|")[1].strip()
        if kind in ("cpu", "cuda") and kind != device_type:
            keep.append(line)
    return keep


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--size", type=int, default=None, help="volume edge (GPU 64, CPU 32)")
    p.add_argument("--batch-size", type=int, default=None, help="volumes per step (GPU 16, CPU 4)")
    p.add_argument("--steps", type=int, default=None, help="steps per epoch (GPU 20, CPU 4)")
    p.add_argument("--workers", type=int, default=None, help="DataLoader workers (GPU 4, CPU 0)")
    p.add_argument(
        "--widths",
        default=None,
        help="VGG stage widths, e.g. 16,32,64 (default: the full VGG-11 widths)",
    )
    p.add_argument("--write", action="store_true", help="record the table in RESULTS.md")
    args = p.parse_args(argv)
    from rubikkit.train.distributed import resolve_device

    device = resolve_device(args.device)
    defaults = GPU_DEFAULTS if device.type == "cuda" else CPU_DEFAULTS
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    for key in ("size", "batch_size", "steps"):
        if getattr(args, key) < 1:
            raise SystemExit(f"--{key.replace('_', '-')}: expected a positive integer")
    args.backbone_options = (
        {"widths": tuple(int(w) for w in args.widths.split(","))} if args.widths else {}
    )
    return args, device


def main(argv=None) -> int:
    args, device = parse_args(argv)
    args.load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    amps = (True, False) if device.type == "cuda" else (False,)
    results = [(amp, measure(args, device, amp)) for amp in amps]
    rows = table_rows(args, device, results)
    print(HEADER)
    print("|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    if device.type == "cuda":
        on, off = results[0][1]["samples_per_s"], results[1][1]["samples_per_s"]
        print(f"AMP speed-up: {on / off:.2f}x")
    if args.write:
        write_section(SECTION, section(args, device, rows, existing_rows(device.type)))
        print(f"wrote the section {SECTION!r} of {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
