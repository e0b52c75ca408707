"""Shared fixtures: real data location, random generators, device lists."""

from __future__ import annotations

import os
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
