"""notebooks/conftest.py: a kernel that dies at start is started once more, not twice more."""

from __future__ import annotations

import importlib.util

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
