"""Shared fixtures: real data location, random generators, device lists."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def _shared_data_dir() -> Path | None:
    env = os.environ.get("RUBIKKIT_TEST_DATA")
    if env:
        return Path(env)
    default = REPO.parent / "shared" / "data"
    return default if default.is_dir() else None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Root of the real datasets (../shared/data). Skips locally when absent; fails in CI."""
    root = _shared_data_dir()
    if root is None or not root.is_dir():
        msg = "real data not found: set RUBIKKIT_TEST_DATA to the shared/data folder"
        if os.environ.get("CI"):
            pytest.fail(msg + " (CI must have ../shared/data)")
        pytest.skip(msg)
    return root


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)


def cuda_available() -> bool:
    try:
        import torch

        from rubikkit import _ext

        return torch.cuda.is_available() and _ext.cuda_compiled()
    except Exception:  # noqa: BLE001
        return False


requires_cuda = pytest.mark.skipif(
    not cuda_available(), reason="needs a CUDA GPU and rubikkit._C built with the CUDA kernels"
)


def run_direct_call(script: str, *args: str, what: str) -> str:
    """Run ``script`` in a child Python (the repository and tests/ importable) and return its
    stdout; fail, naming ``what`` and how the child ended, unless it exits with status 0.

    Bad direct calls of ``rubikkit._C`` run this way: should one crash its process instead of
    raising, it fails one test and says which call it was, and the rest of the run goes on.
    """
    tests = Path(__file__).resolve().parent
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tests.parent), str(tests)]))
    proc = subprocess.run(
        [sys.executable, "-X", "faulthandler", "-c", script, *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 0, (
        f"{what}: the process ended with status {proc.returncode} instead of raising "
        f"ValueError\n{proc.stderr[-3000:]}"
    )
    return proc.stdout
