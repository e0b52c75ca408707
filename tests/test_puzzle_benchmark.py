"""benchmarks/puzzle.py: runs on the CPU, and splits a call's time by the profiler's events."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest
import torch

from rubikkit import _ext

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("puzzle_bench", REPO / "benchmarks" / "puzzle.py")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(REPO / "benchmarks"))  # its helpers, as when run as a script
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    return module


def test_device_times_counts_one_event_per_matching_call(bench):
    a, b = torch.ones(64), torch.ones(64)
    times = bench.device_times(lambda: torch.add(a, b), 5, "aten::add", device="cpu")
    assert len(times) == 5 and all(t > 0 for t in times)
    assert bench.device_times(lambda: torch.add(a, b), 3, "no_such_op", device="cpu") == []


def test_small_run_prints_the_cpu_table(bench, capsys):
    args = ["--batch", "2", "--size", "32", "--cube", "12", "--repeat", "2", "--warmup", "0"]
    assert bench.main([*args, "--host-batch", "2", "--host-repeat", "3"]) == 0
    out = capsys.readouterr().out
    assert "| numpy reference |" in out and "| memcpy (np.copyto) |" in out
    if _ext.extension() is not None:  # the host rows need the compiled entry points
        assert "| call (2 volumes 1x28^3, 12^3 cubes) |" in out
        assert re.search(r"\| rubikkit\.ops\.puzzle, numpy arrays \| [\d.]+ \| -?\d+% of", out)
    if not torch.cuda.is_available():
        assert "CUDA: no GPU on this machine, not measured." in out


def test_profiled_rows_get_their_own_table_and_verdict(bench):
    cpu = [("numpy reference", 4e-3), ("C++ kernel (cpp)", 1e-3), ("memcpy (np.copyto)", 1e-3)]
    gpu = [
        ("CUDA kernel (cuda)", 4e-4),
        ("torch (slice + flip), GPU", 2e-3),
        ("device-to-device copy", 1e-4),
    ]
    alone = {"kernel": 2e-4, "copy": 1e-4}
    nbytes = 10**6
    text = bench.table(cpu, gpu, nbytes, alone)
    first, second = text.split("\n\n")
    assert "| device-to-device copy | 0.10 | 20.0 | 100% |" in first  # whole calls
    assert "device time only" in second and "| CUDA kernel | 0.200 | 10.0 | 50% |" in second
    assert "\n\n" not in bench.table(cpu, gpu, nbytes)  # not profiled: one table
    verdict = bench.verdict(cpu, gpu, nbytes, alone)
    assert "25% of device copy bandwidth" in verdict  # whole call: 0.1 ms copy / 0.4 ms
    assert "takes 0.200 ms of the 0.400 ms call (50%" in verdict
    assert "reaches 50% of the copy's bandwidth" in verdict
    missing = bench.verdict(cpu, gpu, nbytes, {"copy": 1e-4})
    assert "no kernel or no copy events" in missing


def test_host_table_gives_the_python_layers_share(bench):
    rows = [
        ("rubikkit.ops.puzzle, numpy arrays", 40e-6),
        ("rubikkit._C.puzzle_cpu alone", 30e-6),
        ("rubikkit.ops.puzzle, CUDA tensors (host)", 500e-6),
        ("rubikkit._C.puzzle_cuda alone (host)", 400e-6),
    ]
    text = bench.host_table(rows, 16)
    assert "| call (16 volumes 1x28^3, 12^3 cubes) |" in text
    assert "| rubikkit.ops.puzzle, numpy arrays | 40.0 | 25% of the call |" in text
    assert "| rubikkit.ops.puzzle, CUDA tensors (host) | 500.0 | 20% of the call |" in text
    assert "| rubikkit._C.puzzle_cuda alone (host) | 400.0 | none |" in text
    assert "CUDA" not in bench.host_table(rows[:2], 16)  # no GPU: the CPU pair only
    assert "device alone" not in text  # no profiled device times given


def test_host_table_gives_the_small_calls_device_time(bench):
    rows = [
        ("rubikkit.ops.puzzle, numpy arrays", 100e-6),
        ("rubikkit._C.puzzle_cpu alone", 60e-6),
        ("CUDA kernel, device time", 8e-6),
        ("device-to-device copy, device time", 2e-6),
    ]
    text = bench.host_table(rows, 16)
    assert "| CUDA kernel | 8.0 | 25% |" in text
    assert "| device-to-device copy of the output | 2.0 | 100% |" in text


class _Parsed(Exception):
    """Raised in place of running a benchmark once its command line is parsed."""


def test_make_bench_runs_only_scripts_that_need_no_arguments(monkeypatch):
    # `make bench` ran every benchmarks/*.py, and stopped at finetune_step.py, which needs configs.
    import argparse

    listed = re.search(r"^BENCHMARKS := (.+)$", (REPO / "Makefile").read_text(), re.M)
    scripts = listed.group(1).split()
    assert scripts and all((REPO / s).is_file() for s in scripts)
    parse = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, args=None, namespace=None):
        parse(self, [], namespace)  # SystemExit when an argument is required
        raise _Parsed

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    for script in scripts:
        spec = importlib.util.spec_from_file_location(Path(script).stem + "_bench", REPO / script)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        with pytest.raises(_Parsed):
            module.main([])
