"""Benchmark of the Rubik's cube puzzle op (rubikkit.ops.puzzle); not a test.

One run measures, on the same inputs: the numpy reference, the idiomatic torch version (slice +
flip per cube), the C++ kernel and a plain memcpy of the same number of bytes; with a GPU also the
CUDA kernel, torch on the GPU and a device-to-device copy, and then (torch.profiler) the device
time of the kernel and of the copy alone, which splits a call's time into host work and kernel.
A second table times a small call with and without the Python layer (the host work of a call).
Bandwidth counts bytes read + written, 2x the output (the op reads exactly the voxels it
writes). The implementations run interleaved, one call each per round, so that a machine shared
with other work slows them alike.

    python benchmarks/puzzle.py                 # print the table
    python benchmarks/puzzle.py --write         # and record it in benchmarks/RESULTS.md

Targets (issue 2): C++ >= 70% of memcpy bandwidth and >= 3x the numpy reference; CUDA >= 70% of
the device copy and >= 3x torch on the GPU.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))  # the tests' input builders

from _report import cpu_model, write_section  # noqa: E402
from puzzle_inputs import benchmark_inputs  # noqa: E402

from rubikkit import _ext  # noqa: E402
from rubikkit.ops import backend_for, puzzle, reference  # noqa: E402
from rubikkit.ops._torch_impl import puzzle_torch  # noqa: E402

RESULTS = HERE / "RESULTS.md"
SECTION = "## Puzzle op"


def machine() -> str:
    ext = _ext.extension()
    omp = ext.openmp_max_threads() if ext is not None else "n/a (no extension)"
    parts = [
        f"CPU {cpu_model()}, {os.cpu_count()} cores",
        f"OpenMP threads {omp} (OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')})",
        f"torch threads {torch.get_num_threads()}",
        f"Python {platform.python_version()}, numpy {np.__version__}, torch {torch.__version__}",
    ]
    if torch.cuda.is_available():
        parts.append(f"GPU {torch.cuda.get_device_name()}")
    return "; ".join(parts)


def run_rounds(fns: dict, repeat: int, warmup: int, timer) -> dict:
    """Median seconds per call of every function, calls interleaved round by round."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            times[name].append(timer(fn))
    return {name: statistics.median(t) for name, t in times.items()}


def cpu_timer(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def cuda_timer(fn) -> float:
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    stop.record()
    stop.synchronize()
    return start.elapsed_time(stop) / 1e3


def host_timer(fn) -> float:
    """Seconds until ``fn`` returns, the GPU idle before: the host's share of a CUDA call (the
    kernel it queues runs afterwards); on the CPU the whole call."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def host_work(args) -> list[tuple[str, float]]:
    """Median seconds per call of the op with and without its Python layer, on a small input.

    The input is the Rubik's cube pre-training batch of AdrenalMNIST3D (``--host-batch`` volumes
    of 28^3, 12^3 cubes): there the copy is small and a call's cost is mostly fixed work. The
    rows call ``rubikkit.ops.puzzle`` (argument checks, dispatch) and the compiled entry point
    directly with the same, already checked arrays; the difference is the Python layer. With a
    GPU the CUDA rows time the host only: from the call until it returns, the kernel queued.
    """
    ext = _ext.extension()
    if ext is None:
        return []
    vols, origins, perms, rots, cube = benchmark_inputs(args.host_batch, 1, 28, 12, seed=args.seed)
    out = puzzle(vols, origins, cube, perms, rots)
    fns = {
        "rubikkit.ops.puzzle, numpy arrays": lambda: puzzle(
            vols, origins, cube, perms, rots, out=out
        ),
        "rubikkit._C.puzzle_cpu alone": lambda: ext.puzzle_cpu(
            vols, origins, perms, rots, cube, out
        ),
    }
    if torch.cuda.is_available() and _ext.cuda_compiled():
        gvols = torch.from_numpy(vols).cuda()
        gout = torch.empty(out.shape, device="cuda")
        stream = torch.cuda.current_stream().cuda_stream
        index = torch.cuda.current_device()
        shape, strides = list(gvols.shape), list(gvols.stride())
        fns["rubikkit.ops.puzzle, CUDA tensors (host)"] = lambda: puzzle(
            gvols, origins, cube, perms, rots, out=gout
        )
        fns["rubikkit._C.puzzle_cuda alone (host)"] = lambda: ext.puzzle_cuda(
            gvols.data_ptr(), shape, strides, 4, origins, perms, rots, cube,
            gout.data_ptr(), gout.numel(), index, stream,
        )  # fmt: skip
    rows = list(run_rounds(fns, args.host_repeat, 20, host_timer).items())
    if "rubikkit.ops.puzzle, CUDA tensors (host)" in fns:
        # The same small call on the device alone, beside a device copy of as many bytes: cubes
        # of 12^3 have rows of 12 elements, shorter than a warp, unlike the 64^3 case above.
        gsrc = torch.randn(gout.shape, device="cuda")
        gdst = torch.empty_like(gsrc)
        alone = device_rows(
            {
                "CUDA kernel, device time": (
                    fns["rubikkit.ops.puzzle, CUDA tensors (host)"],
                    "puzzle_kernel",
                ),
                "device-to-device copy, device time": (lambda: gdst.copy_(gsrc), "Memcpy DtoD"),
            },
            max(1, args.host_repeat // 5),
        )
        rows += list(alone.items())
    return rows


def host_table(rows, batch: int) -> str:
    """The host-work rows with the Python layer's share of each whole call."""
    t = dict(rows)
    out = [
        f"| call ({batch} volumes 1x28^3, 12^3 cubes) | median us | Python layer |",
        "|---|---:|---:|",
    ]
    pairs = (
        ("rubikkit.ops.puzzle, numpy arrays", "rubikkit._C.puzzle_cpu alone"),
        ("rubikkit.ops.puzzle, CUDA tensors (host)", "rubikkit._C.puzzle_cuda alone (host)"),
    )
    for whole, alone in pairs:
        if whole in t:
            share = (t[whole] - t[alone]) / t[whole]
            out.append(f"| {whole} | {t[whole] * 1e6:.1f} | {100 * share:.0f}% of the call |")
            out.append(f"| {alone} | {t[alone] * 1e6:.1f} | none |")
    kernel, copy = t.get("CUDA kernel, device time"), t.get("device-to-device copy, device time")
    if kernel and copy:
        out += [
            "",
            "| the same call on the device alone (torch.profiler) | mean us | of copy bandwidth |",
            "|---|---:|---:|",
            f"| CUDA kernel | {kernel * 1e6:.1f} | {100 * copy / kernel:.0f}% |",
            f"| device-to-device copy of the output | {copy * 1e6:.1f} | 100% |",
        ]
    return "\n".join(out)


def device_times(fn, calls: int, match: str, device: str = "cuda") -> list[float]:
    """Seconds each profiled event whose name contains ``match`` took on ``device``.

    Run ``fn`` ``calls`` times under torch.profiler. On a GPU the events are the kernels and
    copies themselves (device time, without the host work of the call that launched them), so
    they split a call's cost between the host and the device; on the CPU they are the torch ops.
    """
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU]
    if device == "cuda":
        activities.append(ProfilerActivity.CUDA)
        torch.cuda.synchronize()
    with profile(activities=activities) as prof:
        for _ in range(calls):
            fn()
        if device == "cuda":
            torch.cuda.synchronize()
    want = DeviceType.CUDA if device == "cuda" else DeviceType.CPU
    return [
        e.time_range.elapsed_us() / 1e6
        for e in prof.events()
        if e.device_type == want and match in e.name
    ]


def device_rows(fns: dict, calls: int) -> dict:
    """Mean device time per call of each ``name: (fn, event-name match)``; absent if no event."""
    rows = {}
    for name, (fn, match) in fns.items():
        times = device_times(fn, calls, match)
        if times:
            rows[name] = sum(times) / calls
    return rows


def measure(args) -> tuple[list, list, dict, int, float]:
    """CPU rows, GPU rows (whole calls), GPU device time alone ({'kernel', 'copy'}), bytes, load."""
    load = os.getloadavg()[0]  # other work on the machine slows everything, threads most
    vols, origins, perms, rots, cube = benchmark_inputs(
        args.batch, 1, args.size, args.cube, seed=args.seed
    )
    out = puzzle(vols, origins, cube, perms, rots)
    np.testing.assert_array_equal(out, reference.puzzle(vols, origins, cube, perms, rots))
    nbytes = out.nbytes
    # memcpy of an output-sized buffer; filled, so that its pages are real (not the zero page).
    src = np.random.default_rng(1).standard_normal(out.shape).astype(np.float32)
    dst = np.ones_like(src)
    tvols = torch.from_numpy(vols)
    tout = torch.empty(out.shape)
    # torch on the CPU is ~50x slower than the rest: timed on its own, with fewer calls, and
    # before the others so that its OpenMP pool (a second runtime beside ours) is idle by then.
    torch_cpu = run_rounds(
        {
            "torch (slice + flip), CPU": lambda: puzzle_torch(
                tvols, origins, cube, perms, rots, tout
            )
        },
        max(3, args.repeat // 4),
        1,
        cpu_timer,
    )
    time.sleep(0.5)
    cpu_fns = {
        "numpy reference": lambda: reference.puzzle(vols, origins, cube, perms, rots),
        f"C++ kernel ({backend_for(vols)})": lambda: puzzle(
            vols, origins, cube, perms, rots, out=out
        ),
        "memcpy (np.copyto)": lambda: np.copyto(dst, src),
    }
    cpu = run_rounds(cpu_fns, args.repeat, args.warmup, cpu_timer)
    cpu = {**dict(list(cpu.items())[:1]), **torch_cpu, **dict(list(cpu.items())[1:])}

    gpu, alone = {}, {}
    if torch.cuda.is_available():
        gvols = tvols.cuda()
        gout = torch.empty(out.shape, device="cuda")
        gsrc, gdst = torch.from_numpy(src).cuda(), torch.empty(out.shape, device="cuda")
        gpu_fns = {
            f"CUDA kernel ({backend_for(gvols)})": lambda: puzzle(
                gvols, origins, cube, perms, rots, out=gout
            ),
            "torch (slice + flip), GPU": lambda: puzzle_torch(
                gvols, origins, cube, perms, rots, gout
            ),
            "device-to-device copy": lambda: gdst.copy_(gsrc),
        }
        puzzle(gvols, origins, cube, perms, rots, out=gout)
        np.testing.assert_array_equal(gout.cpu().numpy(), out)
        gpu = run_rounds(gpu_fns, args.repeat, args.warmup, cuda_timer)
        # The same calls, device time only: how the whole call splits into host and kernel.
        kernel_fn, _, copy_fn = gpu_fns.values()
        alone = device_rows(
            {"kernel": (kernel_fn, "puzzle_kernel"), "copy": (copy_fn, "Memcpy DtoD")},
            args.repeat,
        )
    return list(cpu.items()), list(gpu.items()), alone, nbytes, load


def table(cpu, gpu, nbytes, alone=None) -> str:
    moved = 2 * nbytes  # read + written

    def rows(results, copy_name, base_name, base_label):
        copy_bw = moved / dict(results)[copy_name]
        base = dict(results)[base_name]
        lines = []
        for name, t in results:
            bw = moved / t
            lines.append(
                f"| {name} | {t * 1e3:.2f} | {bw / 1e9:.1f} | {100 * bw / copy_bw:.0f}% "
                f"| {base / t:.1f}x {base_label} |"
            )
        return lines

    out = [
        "| implementation | median ms | GB/s (read + write) | of copy bandwidth | speed-up |",
        "|---|---:|---:|---:|---:|",
    ]
    out += rows(cpu, "memcpy (np.copyto)", "numpy reference", "vs reference")
    if gpu:
        out += rows(gpu, "device-to-device copy", gpu[1][0], "vs torch GPU")
    if alone and len(alone) == 2:  # kernel and copy, profiled
        out += [
            "",
            "| device time only (torch.profiler) | ms | GB/s (read + write) | of copy bandwidth |",
        ]
        out += ["|---|---:|---:|---:|"]
        out += [
            f"| {label} | {alone[key] * 1e3:.3f} | {moved / alone[key] / 1e9:.1f} "
            f"| {100 * alone['copy'] / alone[key]:.0f}% |"
            for key, label in (("kernel", "CUDA kernel"), ("copy", "device-to-device copy"))
        ]
    return "\n".join(out)


def verdict(cpu, gpu, nbytes, alone=None) -> str:
    d = dict(cpu)
    cpp = next(n for n in d if n.startswith("C++"))
    frac = d["memcpy (np.copyto)"] / d[cpp]
    speed = d["numpy reference"] / d[cpp]
    ok = frac >= 0.7 and speed >= 3
    lines = [
        f"C++ kernel: {100 * frac:.0f}% of memcpy bandwidth (target >= 70%), "
        f"{speed:.1f}x the numpy reference (target >= 3x): {'met' if ok else 'NOT met'}."
    ]
    if gpu:
        g = dict(gpu)
        names = list(g)
        frac = g["device-to-device copy"] / g[names[0]]
        speed = g[names[1]] / g[names[0]]
        ok = frac >= 0.7 and speed >= 3
        lines.append(
            f"CUDA kernel: {100 * frac:.0f}% of device copy bandwidth (target >= 70%), "
            f"{speed:.1f}x torch on the GPU (target >= 3x): {'met' if ok else 'NOT met'}."
        )
        if alone and len(alone) == 2:
            kernel, copy = alone["kernel"], alone["copy"]
            lines.append(
                f"Device time alone: the kernel takes {kernel * 1e3:.3f} ms of the "
                f"{g[names[0]] * 1e3:.3f} ms call ({100 * kernel / g[names[0]]:.0f}%; the rest is "
                f"host work and launch) and reaches {100 * copy / kernel:.0f}% of the copy's "
                "bandwidth."
            )
        else:
            lines.append("Device time alone: the profiler recorded no kernel or no copy events.")
    else:
        lines.append("CUDA: no GPU on this machine, not measured.")
    return " ".join(lines)


def section(args, cpu, gpu, alone, nbytes, load, host=()) -> str:
    today = datetime.date.today().isoformat()
    text = [
        SECTION,
        "",
        f"`python benchmarks/puzzle.py --repeat {args.repeat} --runs {args.runs}` ({today}): "
        f"batch of {args.batch} "
        f"volumes 1x{args.size}^3 float32, 2x2x2 grid, {args.cube}^3 cubes, random origins, perms "
        f"and rotation codes; output {nbytes / 2**20:.0f} MiB. Median of {args.repeat} calls, the "
        "implementations interleaved (torch on the CPU, ~50x slower, timed apart with fewer "
        "calls); GB/s counts bytes read + written (2x the output)."
        + (
            f" Best of {args.runs} runs: the one whose memcpy was fastest, i.e. the least "
            "disturbed by other work on the machine."
            if args.runs > 1
            else ""
        ),
        "",
        f"Machine: {machine()}. 1-minute load average when the run started: {load:.1f} "
        f"(on {os.cpu_count()} cores; above 0 means other work shared them).",
    ]
    if args.note:
        text += ["", args.note]
    text += ["", table(cpu, gpu, nbytes, alone), "", verdict(cpu, gpu, nbytes, alone), ""]
    if host:
        text += [
            "Host work per call: the small input of the Rubik's cube pre-training on "
            f"AdrenalMNIST3D, median of {args.host_repeat} calls each, interleaved; the compiled "
            "entry points called directly with the same arrays, the difference being the Python "
            "layer (argument checks, dispatch)"
            + (
                "; CUDA rows: host time until the call returns, the GPU idle before it; then "
                "the same call's device time alone (torch.profiler, mean of a fifth as many "
                "calls) against a device copy of as many bytes."
                if any("CUDA" in name for name, _ in host)
                else "."
            ),
            "",
            host_table(host, args.host_batch),
            "",
        ]
    return "\n".join(text)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeat", type=int, default=20, help="timed calls per implementation")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls first")
    p.add_argument("--batch", type=int, default=8, help="volumes per batch")
    p.add_argument("--size", type=int, default=160, help="volume edge (voxels)")
    p.add_argument("--cube", type=int, default=64, help="cube edge (voxels)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--runs",
        type=int,
        default=1,
        help="repeat the whole measurement and keep the least disturbed run (fastest memcpy)",
    )
    p.add_argument("--pause", type=float, default=20.0, help="seconds between runs")
    p.add_argument("--host-batch", type=int, default=16, help="volumes of 28^3 in the host rows")
    p.add_argument("--host-repeat", type=int, default=500, help="timed calls per host row")
    p.add_argument("--note", default="", help="a line recorded with the table (e.g. load)")
    p.add_argument("--write", action="store_true", help=f"record the table in {RESULTS.name}")
    args = p.parse_args(argv)
    runs = []
    for i in range(args.runs):
        if i:
            time.sleep(args.pause)
        runs.append(measure(args))
        if args.runs > 1:
            cpu = dict(runs[-1][0])
            print(
                f"run {i + 1}/{args.runs} (load {runs[-1][4]:.1f}): "
                + ", ".join(f"{name} {t * 1e3:.2f} ms" for name, t in cpu.items()),
                flush=True,
            )
    # The least disturbed run: the one whose plain memcpy was fastest.
    cpu, gpu, alone, nbytes, load = min(runs, key=lambda r: dict(r[0])["memcpy (np.copyto)"])
    body = section(args, cpu, gpu, alone, nbytes, load, host_work(args))
    print(body)
    if args.write:
        write_section(SECTION, body)
        print(f"written to {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
