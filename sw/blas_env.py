"""BLAS settings for the models' small matrices, applied before NumPy loads its BLAS.

The command, the tests and the scripts call `apply_defaults` first; a variable the user already set
always wins.

* One thread: multithreaded BLAS was 10-30x slower than one thread on these small matrices on the
  2-core development machine.
* OpenBLAS up to 0.3.31 (the one in NumPy's wheels) does not recognise AMD Zen 5 (CPU family 26)
  and falls back to its Haswell kernels (OpenMathLib/OpenBLAS#6029, fixed by #6033). On such a CPU
  with AVX-512 we select the kernels the fixed detection picks (Cooperlake; SkylakeX without
  AVX-512 BF16): they run the adapters' skinny products about twice as fast.
"""

from __future__ import annotations

import os

__all__ = ["apply_defaults", "openblas_core_override", "blas_note"]

_THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
_AVX512 = {"avx512f", "avx512dq", "avx512cd", "avx512bw", "avx512vl"}
#: set when `apply_defaults` chose the OpenBLAS kernels (reported with benchmark figures)
_chosen: str | None = None


def _first_cpu(path: str = "/proc/cpuinfo") -> dict:
    info = {}
    try:
        with open(path) as f:
            for line in f:
                if not line.strip():
                    break  # the first processor's block is enough
                key, _, value = line.partition(":")
                info[key.strip()] = value.strip()
    except OSError:
        pass
    return info


def openblas_core_override(cpu: dict) -> str | None:
    """The OpenBLAS core type to force for this CPU, or None to keep OpenBLAS's own detection."""
    try:
        family = int(cpu.get("cpu family", "0"))
    except ValueError:
        return None
    flags = set(cpu.get("flags", "").split())
    if cpu.get("vendor_id") != "AuthenticAMD" or family < 26 or not _AVX512 <= flags:
        return None
    return "Cooperlake" if "avx512_bf16" in flags else "SkylakeX"


def apply_defaults() -> None:
    """Set the thread count and, on CPUs OpenBLAS misdetects, its kernels (unless already set)."""
    global _chosen
    for var in _THREAD_VARS:
        os.environ.setdefault(var, "1")
    if "OPENBLAS_CORETYPE" not in os.environ:
        core = openblas_core_override(_first_cpu())
        if core:
            os.environ["OPENBLAS_CORETYPE"] = _chosen = core


def blas_note() -> str:
    """One phrase for result tables: which OpenBLAS kernels were forced, if any."""
    core = os.environ.get("OPENBLAS_CORETYPE")
    if not core:
        return "OpenBLAS kernels auto-detected"
    return f"OpenBLAS {core} kernels ({'chosen for this CPU' if core == _chosen else 'OPENBLAS_CORETYPE'})"
