"""RT-QIS: real-time quantitative intelligence for crypto markets."""

import os as _os

# One BLAS thread per process, unless the user says otherwise. Our linear algebra is small (a 600 x 2
# Huber fit, a 2 x 2 Kalman step) and every process of the pipeline already has a core's worth of
# work: OpenBLAS's default of one thread per core made a Huber fit 26 ms instead of 0.9 ms on a busy
# 2-core machine (thread oversubscription; measured, see bench/README.md). Set before numpy loads.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    _os.environ.setdefault(_var, "1")

__version__ = "0.1.0"


def _cap_malloc_arenas(n: int = 2) -> bool:
    """At most ``n`` glibc malloc arenas, unless ``MALLOC_ARENA_MAX`` is set (then glibc applies it).

    glibc gives threads their own arenas (up to 8 per core) and keeps their freed pages: the worker's
    Kafka consumer thread and executor threads made its RSS 313-342 MB after a 1 M-tick replay against
    293-311 MB with two arenas, at the same throughput (bench/README.md). Called before any thread
    starts; a no-op (False) off glibc.
    """
    if "MALLOC_ARENA_MAX" in _os.environ:
        return False
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        return bool(libc.mallopt(-8, n))  # M_ARENA_MAX
    except (OSError, AttributeError):
        return False


_cap_malloc_arenas()
