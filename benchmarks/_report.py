"""What the benchmarks share: the machine's CPU name and their sections of RESULTS.md."""

from __future__ import annotations

import os
import platform
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def write_section(header: str, body: str, path: Path = RESULTS) -> None:
    """Replace (or append) the section ``header`` (e.g. ``"## Puzzle op"``) of ``path``.

    The file is re-read right before writing, so sections other benchmarks wrote meanwhile stay
    as they are, and it is replaced atomically (temporary file + rename).
    """
    lines = path.read_text().splitlines() if path.exists() else ["# Benchmark results"]
    new = body.strip("\n").splitlines()
    if not new or new[0].strip() != header:
        new = [header, "", *new]
    start = next((i for i, line in enumerate(lines) if line.strip() == header), None)
    if start is None:
        while lines and not lines[-1].strip():
            lines.pop()
        lines += ["", *new]
    else:
        end = next((j for j in range(start + 1, len(lines)) if lines[j].startswith("## ")), None)
        lines[start : len(lines) if end is None else end] = new + ([""] if end is not None else [])
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text("\n".join(lines).rstrip("\n") + "\n")
    os.replace(tmp, path)
