"""pytest set-up for the nbval runs of the chapters and assignments (``make test-notebooks``).

With ``-n 2`` both xdist workers start a Jupyter kernel at the same moment. Now and then one of
the two dies before it answers (``RuntimeError: Kernel died before replying to kernel_info``):
jupyter_client picks the kernel's TCP ports before the kernel binds them, so two kernels
started together can race for a port. nbval then errors every cell of that notebook. A kernel
that cannot start is therefore started once more; one that dies twice is a real failure and is
reported as before.
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
