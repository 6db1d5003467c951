"""RT-QIS: real-time quantitative intelligence for crypto markets."""

import os as _os

# One BLAS thread per process, unless the user says otherwise. Our linear algebra is small (a 600 x 2
# Huber fit, a 2 x 2 Kalman step) and every process of the pipeline already has a core's worth of
# work: OpenBLAS's default of one thread per core made a Huber fit 26 ms instead of 0.9 ms on a busy
# 2-core machine (thread oversubscription; measured, see bench/README.md). Set before numpy loads.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    _os.environ.setdefault(_var, "1")

__version__ = "0.1.0"
