"""Fine-tuning speed of an experiment config on this device, and which of its runs fit a time budget.

Not a test. For the first from-scratch fine-tuning run of each setting of each config (backbone,
head and label fraction; ``rubikkit.experiments.plan_grid``) it measures two things:

- the compute of one training step: the run's model (backbone, backbone options, head) trained on
  random volumes of the data's shape and batch size (Adam, mixed precision on CUDA, as
  ``rubikkit.train.finetune`` trains); median step time and the TFLOP/s torch counts for it;
- the real epoch: the run itself through the experiment driver for ``--epochs`` epochs (3) in a
  temporary folder, end to end (data, augmentation, training, per-epoch validation, selection,
  test evaluation, record), so it is also a smoke test of the whole path on this device. From its
  log: the seconds of a warm epoch (the last minus the one before) and the run's fixed cost.

A run of the recipe is then estimated at ``epochs * epoch_s + fixed_s + START_S`` (START_S: a
new process's imports). It prints one JSON line per config. With ``--plan BUDGET_S`` it then
prints ``CONFIG SEED`` lines: the runs, configs in the order given and seeds in config order,
whose estimates, run one after another, fit ``BUDGET_S``. ``experiments/device_run.sh``
(``PLAN=1``) uses it to size a lease's grids before it starts a run it could not finish.

One after another, not side by side: on an H200 (2026-11-30) four 28^3 runs started together
had not finished after 463 s, while one alone took 192 s, so sharing the GPU between processes
bought nothing there.

    python benchmarks/finetune_step.py experiments/adrenal28_scratch_resnet18.json
    python benchmarks/finetune_step.py --plan 400 experiments/adrenal28_scratch_resnet18.json

Configs with pre-training are planned for their scratch runs only (the line says so).
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

START_S = 10.0  # a new process: interpreter, torch and rubikkit imports


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _flops_per_step(model, x, y) -> float | None:
    """Forward + backward FLOPs of one step, counted by torch (None where it cannot)."""
    try:
        from torch.utils.flop_counter import FlopCounterMode

        with FlopCounterMode(display=False) as counter:
            loss = torch.nn.functional.cross_entropy(model(x).float(), y)
            loss.backward()
        model.zero_grad(set_to_none=True)
        return float(counter.get_total_flops())
    except Exception:  # noqa: BLE001 - an estimate only; the timing does not depend on it
        return None


def time_steps(settings: dict, device: torch.device, warmup: int, steps: int) -> dict:
    """Median seconds of one training step's compute for the run ``settings`` (plan_grid's)."""
    from rubikkit.models import build_backbone
    from rubikkit.train.finetune import build_target_model
    from rubikkit.train.runs import open_split

    train = open_split(settings["data"], "train", settings["data_options"])
    sample = train[0]["image"]
    n_classes = len(train.class_names)
    bs = int(settings["batch_size"])
    bb = build_backbone(
        settings["backbone"], in_channels=int(train.num_channels), **settings["backbone_options"]
    )
    model = build_target_model(settings["head"], bb, n_classes, settings.get("dropout") or 0.0)
    model = model.to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=float(settings["lr"]))
    amp = device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn((bs, *tuple(sample.shape)), generator=gen).to(device)
    # a class per volume, or per voxel for the segmentation heads
    per = tuple(sample.shape[1:]) if settings["head"] in ("unet", "duc") else ()
    y = torch.randint(0, n_classes, (bs, *per), generator=gen).to(device)
    flops = _flops_per_step(model, x, y)

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=amp):
            logits = model(x)
        loss = torch.nn.functional.cross_entropy(logits.float(), y)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        return float(loss.detach())  # one host sync per step, as the training loop's metrics make

    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        _sync(device)
        t0 = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - t0)
    step_s = statistics.median(times)
    return {"step_s": step_s, "tflops": None if flops is None else flops / step_s / 1e12}


def time_epochs(cfg, entry: dict, device: str, epochs: int) -> dict:
    """Run ``entry`` through the experiment driver for ``epochs`` epochs in a temporary folder.

    Returns the seconds of its last epoch (training plus the previous epoch's validation), the
    rest of its wall time (start, warm-up, test evaluation) as ``fixed_s``, and its steps per
    epoch.
    """
    from rubikkit.experiments import run_experiment

    # Only this entry's setting: one backbone, head and label fraction.
    cfg = copy.deepcopy(cfg)
    cfg["backbones"] = [entry["backbone"]]
    cfg["finetune"]["heads"] = [entry["head"]]
    cfg["finetune"]["label_fractions"] = [entry["label_fraction"]]
    with tempfile.TemporaryDirectory(prefix="finetune_step_") as tmp:
        t0 = time.perf_counter()
        done = run_experiment(
            cfg,
            seeds=[entry["seed"]],
            methods=["scratch"],
            device=device,
            results_dir=tmp,
            runs_dir=tmp,
            epochs=epochs,
            progress=False,
            log=lambda *a, **k: None,
        )
        wall = time.perf_counter() - t0
        log = Path(tmp) / cfg["name"] / done[0]["run"] / "log.jsonl"
        train = [
            r for r in map(json.loads, log.read_text().splitlines()) if r.get("split") == "train"
        ]
    if len(train) < 2:
        raise RuntimeError(f"{log}: expected {epochs} epochs of training records, got {len(train)}")
    epoch_s = train[-1]["time_s"] - train[-2]["time_s"]
    return {
        "epoch_s": epoch_s,
        "fixed_s": max(0.0, wall - len(train) * epoch_s),
        "steps_per_epoch": train[-1]["step"] - train[-2]["step"],
    }


def fit_budget(estimates, budget: float) -> list:
    """The leading ``(config, seed, seconds)`` entries whose seconds, summed, fit ``budget``.

    Stops at the first entry that does not fit (the order is the priority), so a later, cheaper
    run never jumps ahead of an earlier one.
    """
    chosen, used = [], 0.0
    for entry in estimates:
        if used + entry[2] > budget:
            break
        chosen.append(entry)
        used += entry[2]
    return chosen


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("configs", nargs="+", help="experiment config JSON files")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first (default 5)")
    p.add_argument("--steps", type=int, default=20, help="timed compute steps (default 20)")
    p.add_argument("--epochs", type=int, default=3, help="epochs of the real run (default 3)")
    p.add_argument("--plan", type=float, default=None, metavar="BUDGET_S")
    args = p.parse_args(argv)
    if args.warmup < 0 or args.steps < 1 or args.epochs < 2:
        p.error("--warmup must be >= 0, --steps >= 1 and --epochs >= 2")
    if args.plan is not None and not args.plan > 0:
        p.error(f"--plan: expected a positive number of seconds, got {args.plan:g}")

    from rubikkit.experiments import load_config, plan_grid
    from rubikkit.train.distributed import resolve_device

    device = resolve_device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as rubikkit.train.distributed.setup does
    plan: list[tuple[str, int, float]] = []
    for path in args.configs:
        cfg = load_config(path)
        runs = [e for e in plan_grid(cfg, methods=["scratch"]) if e["kind"] == "finetune"]
        if not runs:
            print(json.dumps({"config": path, "note": "no from-scratch fine-tuning runs"}))
            continue
        # Runs differing only in their seed cost the same: time one run per setting.
        groups: dict[tuple, list[dict]] = {}
        for e in runs:
            groups.setdefault((e["backbone"], e["head"], e["label_fraction"]), []).append(e)
        est_of = {}
        for key, members in groups.items():
            first = members[0]
            compute = time_steps(first["settings"], device, args.warmup, args.steps)
            real = time_epochs(cfg, first, device.type, args.epochs)
            epochs = int(first["settings"]["epochs"])
            est_of[key] = epochs * real["epoch_s"] + real["fixed_s"] + START_S
            line = {
                "config": path,
                "backbone": key[0],
                "head": key[1],
                "label_fraction": key[2],
                "device": str(device),
                "compute_ms_per_step": round(1000 * compute["step_s"], 2),
                "tflops": None if compute["tflops"] is None else round(compute["tflops"], 1),
                "epoch_s": round(real["epoch_s"], 3),
                "ms_per_step": round(1000 * real["epoch_s"] / max(1, real["steps_per_epoch"]), 2),
                "fixed_s": round(real["fixed_s"], 1),
                "runs": len(members),
                "epochs": epochs,
                "est_s_per_run": round(est_of[key], 1),
            }
            if cfg["pretrain"] is not None:
                line["note"] = "scratch runs only; pre-training is not planned here"
            print(json.dumps(line), flush=True)
        plan += [
            (path, e["seed"], est_of[(e["backbone"], e["head"], e["label_fraction"])]) for e in runs
        ]
    if args.plan is not None:
        chosen = fit_budget(plan, args.plan)
        for path, seed, _ in chosen:
            print(f"{path} {seed}")
        used = sum(s for _, _, s in chosen)
        print(f"# planned {used:.0f} s of {args.plan:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
