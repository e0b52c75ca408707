"""pytest set-up for the nbval runs of the chapters and assignments (``make test-notebooks``).

With ``-n 2`` both xdist workers start a Jupyter kernel at the same moment. Once (2026-12-05, on
a loaded 2-core machine) one of the two died before it answered (``RuntimeError: Kernel died
before replying to kernel_info``), and nbval errored every cell of that notebook. The likely
cause, not confirmed because nbval sends the kernel's stderr to /dev/null: jupyter_client picks
the kernel's TCP ports before the kernel binds them, so two kernels started together can race
for a port. A kernel that cannot start is therefore started once more; one that dies twice is a
real failure and is reported as before.
"""

import logging

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
