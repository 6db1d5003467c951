"""What every RT-QIS process sets up at import: BLAS threads and malloc arenas."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest


def _child(code: str, **env: str) -> str:
    base = {k: v for k, v in os.environ.items() if k not in ("MALLOC_ARENA_MAX", "OPENBLAS_NUM_THREADS")}
    out = subprocess.run([sys.executable, "-c", code], env={**base, **env}, capture_output=True, text=True, check=True)
    return out.stdout.strip()


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc arenas are glibc's")
def test_malloc_arenas_are_capped_unless_the_user_chose() -> None:
    assert _child("import rtqis; print(rtqis._cap_malloc_arenas())") == "True"
    # the user's MALLOC_ARENA_MAX wins (glibc reads it itself)
    assert _child("import rtqis; print(rtqis._cap_malloc_arenas())", MALLOC_ARENA_MAX="4") == "False"


def test_one_blas_thread_unless_the_user_chose() -> None:
    assert _child("import rtqis, os; print(os.environ['OPENBLAS_NUM_THREADS'])") == "1"
    assert _child("import rtqis, os; print(os.environ['OPENBLAS_NUM_THREADS'])", OPENBLAS_NUM_THREADS="2") == "2"
