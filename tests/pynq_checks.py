"""Checks that run inside the pynq environment (.venv-pynq) against the virtual KV260.

    .venv-pynq/bin/python tests/pynq_checks.py CHECK     -> prints one JSON object

The real `pynq` package drives the accelerator RTL (served by the development environment's
simulator, SKIP2LORA_SIM_PYTHON). tests/test_virtual_kv260.py runs these and asserts on the JSON.
"""

import json
import os
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from small_model import CONFIG, data, other_base, other_data, small_base  # noqa: E402

from skip2lora.driver import AcceleratorError, Session  # noqa: E402
from skip2lora.driver.pynq_backend import PynqBackend, load  # noqa: E402
from skip2lora.driver.virtual_kv260 import VirtualKV260  # noqa: E402


def _board(**kw):
    board = VirtualKV260(CONFIG, **kw)
    return board, load(board.bitfile, device=board, timeout=kw.get("timeout", 120))


def equivalence():
    """A session on the virtual KV260: the adapters and figures, for comparison with the other backends."""
    board, backend = _board()
    try:
        assert isinstance(backend, PynqBackend)
        assert type(backend.ip).__name__ == "Skip2LoRAIP"  # bound by VLNV
        x, y = data(20)
        s = Session(small_base(), backend, seed=0)
        s.add_samples(x[:12], y[:12])
        first = s.finetune(epochs=2, batch=4, lr=0.2)
        s.add_samples(x[12:], y[12:])  # online: append between jobs
        second = s.finetune(epochs=1, batch=5, lr=0.2)
        a = s.adapters
        with tempfile.TemporaryDirectory() as d:
            s.save_adapters(os.path.join(d, "a.npz"))
            s.load_adapters(os.path.join(d, "a.npz"))
        return {"a": [m.tolist() for m in a.a], "b": [m.tolist() for m in a.b],
                "cycles": [first["cycles"], second["cycles"]], "correct": [first["correct"], second["correct"]],
                "flushes": board.flushes, "invalidates": board.invalidates, "numpy": np.__version__}
    finally:
        board.close()


def _error(fn):
    try:
        fn()
    except (AcceleratorError, FileNotFoundError) as exc:
        return {"error": type(exc).__name__, "message": str(exc)}
    return {"error": None}


def bad_id():
    board = VirtualKV260(CONFIG, faults={"registers": {0x00: 0xDEADBEEF}})
    try:
        return _error(lambda: load(board.bitfile, device=board))
    finally:
        board.close()


def bad_version():
    board = VirtualKV260(CONFIG, faults={"registers": {0x04: 9 << 16}})
    try:
        return _error(lambda: load(board.bitfile, device=board))
    finally:
        board.close()


def dma_timeout():
    board, backend = _board(faults={"drop_s2mm": True}, timeout=3)
    try:
        return _error(backend.read_adapters)
    finally:
        board.close()


def busy():
    """A job started while one runs: the accelerator refuses the load and the driver says so."""
    board, backend = _board()
    try:
        x, y = data(24)
        s = Session(small_base(), backend, seed=0)
        s.add_samples(x[:16], y[:16])
        from skip2lora.driver.registers import job_registers

        for name, value in job_registers(s.job(epochs=50, batch=1, lr=0.1), s.geometry).items():
            backend.regs.write(name, value)
        backend.regs.write("CTRL", start=1)
        out = _error(lambda: s.add_samples(x[16:], y[16:]))
        backend.soft_reset()
        out["status_after_reset"] = backend.status()
        return out
    finally:
        board.close()


def other_geometry():
    """Another model than the build's own on the virtual SMALL board (found by its registers): a 9-5-2
    MLP at rank 1, on chip and then from DDR (tests/test_virtual_kv260.py's `other_steps`)."""
    from skip2lora.fixed.config import SMALL

    board = VirtualKV260(SMALL)
    try:
        backend = load(board.bitfile, device=board, timeout=120)
        s = Session(other_base(), backend, seed=3, rank=1)
        x, y = other_data(72)
        keys = ("cycles", "cache", "correct", "correct_per_epoch", "loss_sum_per_epoch", "saturated_per_epoch")
        results = []
        for lo, hi, kw in ((0, 12, dict(epochs=2, batch=4)), (12, 72, dict(epochs=1, batch=8))):
            s.add_samples(x[lo:hi], y[lo:hi])
            out = s.finetune(lr=0.2, **kw)
            results.append({k: out[k] for k in keys})
        a = s.adapters
        backend.close()
        return {"config": backend.config.name, "geometry": s.geometry.to_dict(), "results": results,
                "a": [m.tolist() for m in a.a], "b": [m.tolist() for m in a.b]}
    finally:
        board.close()


def missing_bitstream():
    return _error(lambda: load("/nonexistent/skip2lora.bit"))


CHECKS = {f.__name__: f for f in (equivalence, bad_id, bad_version, dma_timeout, busy, other_geometry,
                                  missing_bitstream)}

if __name__ == "__main__":
    print(json.dumps(CHECKS[sys.argv[1]]()))
