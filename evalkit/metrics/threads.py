"""BLAS thread control for the small dense linear algebra of metrics (threadpoolctl, where installed)."""

from __future__ import annotations

import contextlib
import os


def _cpu_oversubscribed() -> bool:
    """True when the 1-minute load average exceeds the CPUs this process may use (others compete)."""
    try:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        return os.getloadavg()[0] > cpus
    except OSError:
        return False


def single_thread_blas_when_oversubscribed() -> contextlib.AbstractContextManager:
    """Context limiting BLAS to one thread when the CPU is oversubscribed (threadpoolctl, if installed).

    The symmetric eigensolver's tridiagonal reduction (LAPACK ``dsytrd``) is half level-2 BLAS: with the
    CPU shared (load 6-10 on 2 cores) one OpenBLAS thread was 4x faster than two, whose hand-offs stall;
    on an idle machine two threads are 1.6x faster (d=2048: 0.40 s vs 0.65 s). Level-3 products
    (covariances, factors) keep all threads either way. The controller is made per call (~1 ms, beside an
    eigensolve of ~0.4 s): a library loaded since (OpenCV bundles its own OpenBLAS) is limited too."""
    if not _cpu_oversubscribed():
        return contextlib.nullcontext()
    try:
        from threadpoolctl import ThreadpoolController

        return ThreadpoolController().limit(limits=1, user_api="blas")
    except Exception:
        return contextlib.nullcontext()


def single_thread_blas() -> contextlib.AbstractContextManager:
    """Replicates multiply tiny matrices (N×64); a multi-threaded BLAS spends more on waking threads than on
    the work, 20× slower on a busy 2-core machine. threadpoolctl is optional."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(1, user_api="blas")
