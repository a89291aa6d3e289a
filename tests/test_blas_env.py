"""BLAS defaults: one thread, and OpenBLAS kernels forced only where its own detection fails (Zen 5)."""

import os
import subprocess
import sys

import pytest

from skip2lora.blas_env import openblas_core_override

AVX512 = "avx512f avx512dq avx512cd avx512bw avx512vl"


@pytest.mark.parametrize("cpu,expected", [
    ({"vendor_id": "AuthenticAMD", "cpu family": "26", "flags": f"avx2 {AVX512} avx512_bf16"}, "Cooperlake"),
    ({"vendor_id": "AuthenticAMD", "cpu family": "26", "flags": f"avx2 {AVX512}"}, "SkylakeX"),
    ({"vendor_id": "AuthenticAMD", "cpu family": "26", "flags": "avx2 fma"}, None),  # no AVX-512
    ({"vendor_id": "AuthenticAMD", "cpu family": "25", "flags": f"avx2 {AVX512} avx512_bf16"}, None),  # Zen 4
    ({"vendor_id": "GenuineIntel", "cpu family": "6", "flags": f"avx2 {AVX512} avx512_bf16"}, None),
    ({"vendor_id": "AuthenticAMD", "cpu family": "x", "flags": AVX512}, None),
    ({}, None),  # no /proc/cpuinfo (macOS, the KV260's ARM reports no x86 fields)
])
def test_openblas_core_override(cpu, expected):
    assert openblas_core_override(cpu) == expected


def test_the_environment_wins():
    env = dict(os.environ, OPENBLAS_NUM_THREADS="3", OPENBLAS_CORETYPE="Haswell")
    code = ("import os; from skip2lora.blas_env import apply_defaults, blas_note; apply_defaults(); "
            "print(os.environ['OPENBLAS_NUM_THREADS'], os.environ['OPENBLAS_CORETYPE'], blas_note())")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.stdout.split(None, 2) == ["3", "Haswell", "OpenBLAS Haswell kernels (OPENBLAS_CORETYPE)\n"]
