"""notebooks/conftest.py: a kernel that dies at start is started once more, not twice more, and
what the kernels leave in their temporary folder goes when pytest ends."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

nbval_kernel = pytest.importorskip("nbval.kernel")
DIED = RuntimeError("Kernel died before replying to kernel_info")


def _wrapped_start(monkeypatch, errors):
    """Install a fake nbval start that raises ``errors`` in turn, then load the conftest over it."""
    calls = []

    def fake(**kwargs):
        calls.append(kwargs)
        if len(calls) <= len(errors):
            raise errors[len(calls) - 1]
        return "km", "kc"

    monkeypatch.setattr(nbval_kernel, "start_new_kernel", fake)
    path = REPO / "notebooks" / "conftest.py"
    spec = importlib.util.spec_from_file_location("notebooks_conftest", path)
    spec.loader.exec_module(importlib.util.module_from_spec(spec))
    return nbval_kernel.start_new_kernel, calls


def test_kernel_that_dies_once_is_started_again(monkeypatch):
    start, calls = _wrapped_start(monkeypatch, [DIED])
    assert start(kernel_name="k", cwd="x") == ("km", "kc")
    assert calls == [{"kernel_name": "k", "cwd": "x"}] * 2


@pytest.mark.parametrize(
    ("errors", "expected", "n_calls"),
    [([DIED, DIED], RuntimeError, 2), ([KeyError("no such kernel")], KeyError, 1)],
    ids=["dies-twice", "other-error"],
)
def test_kernel_start_failures_propagate(monkeypatch, errors, expected, n_calls):
    start, calls = _wrapped_start(monkeypatch, errors)
    with pytest.raises(expected):
        start(kernel_name="k")
    assert len(calls) == n_calls


def test_kernels_temporary_files_go_when_pytest_ends(tmp_path):
    """nbval kills its kernels, so a notebook's TemporaryDirectory is never cleaned by the kernel."""
    nbformat = pytest.importorskip("nbformat")
    shutil.copy(REPO / "notebooks" / "conftest.py", tmp_path / "conftest.py")
    probe = tmp_path / "probe.txt"
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(
            "import tempfile\n"
            "keep = tempfile.TemporaryDirectory(prefix='runs-')\n"
            f"open({str(probe)!r}, 'w').write(keep.name)"
        )
    ]
    nbformat.write(nb, tmp_path / "probe.ipynb")
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "--nbval-lax"]
    cmd += ["--nbval-current-env", "-c", os.devnull, "--rootdir", str(tmp_path), "probe.ipynb"]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    left = Path(probe.read_text())
    assert left.parent.name.startswith("rubikkit-nbval-"), left
    assert not left.exists() and not left.parent.exists()
