"""pytest set-up for the nbval runs of the chapters and assignments (``make test-notebooks``).

With ``-n 2`` both xdist workers start a Jupyter kernel at the same moment. Once (2026-12-05, on
a loaded 2-core machine) one of the two died before it answered (``RuntimeError: Kernel died
before replying to kernel_info``), and nbval errored every cell of that notebook. The likely
cause, not confirmed because nbval sends the kernel's stderr to /dev/null: jupyter_client picks
the kernel's TCP ports before the kernel binds them, so two kernels started together can race
for a port. A kernel that cannot start is therefore started once more; one that dies twice is a
real failure and is reported as before.

nbval stops each kernel with a kill, so nothing a notebook left for its interpreter's exit runs:
the temporary folder a chapter keeps its runs in (``tempfile.TemporaryDirectory``, removed when a
JupyterLab kernel shuts down) stayed in /tmp, 30 MB a ``make test``. Here every kernel of the
session gets one temporary folder (``TMPDIR``), removed when pytest ends.
"""

import logging
import os
import shutil
import tempfile

import nbval.kernel

_start_new_kernel = nbval.kernel.start_new_kernel
_log = logging.getLogger(__name__)


def _start_new_kernel_twice(*args, **kwargs):
    try:
        return _start_new_kernel(*args, **kwargs)
    except RuntimeError as err:
        _log.warning("kernel start failed (%s); starting it once more", err)
        return _start_new_kernel(*args, **kwargs)


nbval.kernel.start_new_kernel = _start_new_kernel_twice


_kernel_tmp: str | None = None
_saved_tmpdir: str | None = None


def pytest_configure(config):
    """Point the kernels' ``TMPDIR`` at a folder of this pytest process's own."""
    global _kernel_tmp, _saved_tmpdir
    _saved_tmpdir = os.environ.get("TMPDIR")
    _kernel_tmp = tempfile.mkdtemp(prefix="rubikkit-nbval-")
    os.environ["TMPDIR"] = _kernel_tmp


def pytest_unconfigure(config):
    """Remove what the kernels left in their temporary folder, and restore ``TMPDIR``."""
    if _kernel_tmp is None:
        return
    shutil.rmtree(_kernel_tmp, ignore_errors=True)
    if _saved_tmpdir is None:
        os.environ.pop("TMPDIR", None)
    else:
        os.environ["TMPDIR"] = _saved_tmpdir
