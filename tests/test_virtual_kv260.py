"""The backends side by side, and the PYNQ driver and notebooks on the virtual KV260.

The real `pynq` package (numpy < 2) lives in .venv-pynq (``scripts/setup.sh`` creates it); its
checks run there as subprocesses (tests/pynq_checks.py) while the RTL simulation they drive runs
in this environment (SKIP2LORA_SIM_PYTHON). Without .venv-pynq the tests marked ``requires_pynq``
skip with that reason, except in CI, where they fail (conftest.py).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

import pytest

from skip2lora.driver import AcceleratorError, FixedBackend, Session
from skip2lora.fixed.config import SMALL
from skip2lora.fixed.cycles import DDRTiming, job_cycles
from skip2lora.fixed.model import Geometry
from skip2lora.fixed.packing import Layout
from skip2lora.hw.regmap import VERSION
from skip2lora.sim.runner import require_simulator
from small_model import CONFIG, data, other_base, other_data, small_base

ROOT = Path(__file__).resolve().parents[1]
PYNQ_PYTHON = ROOT / ".venv-pynq" / "bin" / "python"


def pynq_env():
    """The environment of a .venv-pynq subprocess (the calling test is marked requires_pynq)."""
    require_simulator()
    return dict(os.environ, SKIP2LORA_SIM_PYTHON=sys.executable, PYTHONPATH=str(ROOT / "tests"))


def run_check(name, timeout=900):
    proc = subprocess.run([str(PYNQ_PYTHON), str(ROOT / "tests" / "pynq_checks.py"), name], env=pynq_env(),
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def fixed_reference():
    x, y = data(20)
    s = Session(small_base(), FixedBackend(CONFIG), seed=0)
    s.add_samples(x[:12], y[:12])
    first = s.finetune(epochs=2, batch=4, lr=0.2)
    s.add_samples(x[12:], y[12:])
    second = s.finetune(epochs=1, batch=5, lr=0.2)
    return s.adapters, [first["cycles"], second["cycles"]], [first["correct"], second["correct"]]


def sim_session():
    from skip2lora.driver.sim_backend import SimBackend

    require_simulator()
    x, y = data(20)
    with SimBackend(CONFIG) as backend:
        s = Session(small_base(), backend, seed=0)
        s.add_samples(x[:12], y[:12])
        first = s.finetune(epochs=2, batch=4, lr=0.2)
        s.add_samples(x[12:], y[12:])
        second = s.finetune(epochs=1, batch=5, lr=0.2)
        return s.adapters, [first["cycles"], second["cycles"]], [first["correct"], second["correct"]]


def test_fixed_and_sim_backends_are_bit_identical():
    ref, ref_cycles, ref_correct = fixed_reference()
    got, cycles, correct = sim_session()
    assert got.equals(ref) and cycles == ref_cycles and correct == ref_correct


# -- run-time geometry: one build, another model ------------------------------------------------

OTHER = Geometry((9, 5), 1, 2)  # other_base at rank 1 on the SMALL build (taps (12, 7, 5), rank 2, 3 classes)
STAT_KEYS = ("cycles", "cache", "correct", "correct_per_epoch", "loss_sum_per_epoch", "saturated_per_epoch")


def other_steps():
    """A session of `other_base` that starts on chip and outgrows the SMALL build's 64-entry cache."""
    x, y = other_data(72)
    return [(x[:12], y[:12], dict(epochs=2, batch=4, lr=0.2)), (x[12:], y[12:], dict(epochs=1, batch=8, lr=0.2))]


def run_other(backend):
    s = Session(other_base(), backend, seed=3, rank=1)
    out = []
    for x, y, kw in other_steps():
        s.add_samples(x, y)
        r = s.finetune(**kw)
        out.append({k: r[k] for k in STAT_KEYS})
    return s, out


def test_another_geometry_on_the_small_build_is_bit_and_cycle_identical_on_fixed_and_sim():
    """The SMALL bitstream runs a 9-5-2 model at rank 1 (its geometry in TAPk_DIM / CLASSES, the
    entries and adapters padded to the build's sizes): adapters and statistics bit for bit the fixed
    backend's, the RTL's cycle counter the cycle model's of that geometry on the build, on chip and
    from DDR (the simulated memory follows the shorter entries: 3 * 8 - 6 = 18 cycles)."""
    from importlib import import_module

    from skip2lora.driver.sim_backend import SimBackend

    register_backend = import_module("skip2lora.driver.register_backend")  # (the package's name is a function)

    require_simulator()
    ref_session, ref = run_other(FixedBackend(SMALL))
    assert ref_session.geometry == OTHER and ref_session.backend.ddr_timing.latency == 18
    layout = Layout(OTHER, SMALL.lanes)
    assert ref[0]["cycles"] == job_cycles(layout, 12, 4, 2, shuffle=True, build=SMALL)
    assert ref[1]["cycles"] == job_cycles(layout, 72, 8, 1, shuffle=True, ddr=DDRTiming(18), build=SMALL)
    with SimBackend(SMALL) as backend:
        first = Session(small_base(), backend, seed=0)  # the build's own model first: forgotten below
        x, y = data(12)
        first.add_samples(x, y)
        first.finetune(epochs=1, batch=4, lr=0.2)
        s, got = run_other(backend)
        assert backend.link.ddr_latency_cycles == 18 and backend.ddr_timing.latency == 18
        adapters = s.adapters
        # a geometry the build does not run, written behind the driver's back: BAD_CONFIG at the job's
        # INIT (no DONE), reported as such; the adapters are untouched
        real = register_backend.job_registers
        register_backend.job_registers = lambda job, g=None: dict(real(job, g), CLASSES=SMALL.geometry.classes + 1)
        try:
            with pytest.raises(AcceleratorError) as err:
                s.finetune(epochs=1, batch=8, lr=0.2)
        finally:
            register_backend.job_registers = real
        status = backend.status()
        after = s.adapters
    assert [r["cache"] for r in got] == ["chip", "ddr"]
    assert got == ref
    assert adapters.equals(ref_session.adapters) and after.equals(adapters)
    assert [m.shape for m in adapters.a] == [(1, 9), (1, 5)] and [m.shape for m in adapters.b] == [(2, 1)] * 2
    assert str(err.value).startswith("the fine-tuning job: the accelerator reports BAD_CONFIG")
    assert status["error"] == 0 and status["busy"] == 0


@pytest.mark.requires_pynq
def test_pynq_backend_on_the_virtual_kv260_runs_another_geometry_bit_identical():
    ref_session, ref = run_other(FixedBackend(SMALL))
    out = run_check("other_geometry")
    assert out["config"] == "small" and out["geometry"] == OTHER.to_dict()
    assert out["results"][0] == ref[0]  # on chip: the board's counter is the cycle model's
    assert [{k: r[k] for k in STAT_KEYS if k != "cycles"} for r in out["results"]] == \
        [{k: r[k] for k in STAT_KEYS if k != "cycles"} for r in ref]
    ref_a = ref_session.adapters
    for k in range(OTHER.taps):
        assert np.array_equal(np.array(out["a"][k]), ref_a.a[k]) and np.array_equal(np.array(out["b"][k]), ref_a.b[k])


@pytest.mark.requires_pynq
def test_pynq_backend_on_the_virtual_kv260_is_bit_identical():
    ref, ref_cycles, ref_correct = fixed_reference()
    out = run_check("equivalence")
    assert out["numpy"].startswith("1.")  # the board's numpy generation
    for k in range(CONFIG.geometry.taps):
        assert np.array_equal(np.array(out["a"][k]), ref.a[k]) and np.array_equal(np.array(out["b"][k]), ref.b[k])
    assert out["cycles"] == ref_cycles and out["correct"] == ref_correct
    assert out["flushes"] > 0 and out["invalidates"] > 0  # PYNQ's cache maintenance went to the device


@pytest.mark.parametrize("check,kind,message", [
    ("bad_id", "AcceleratorError", "no Skip2-LoRA accelerator here (ID register 0xdeadbeef"),
    ("bad_version", "AcceleratorError", f"the accelerator is version 9.0, this driver needs {VERSION[0]}.x"),
    ("dma_timeout", "AcceleratorError", "reading the adapters: the DMA did not finish within 3 s"),
    ("busy", "AcceleratorError", "the accelerator reports BUSY"),
    ("missing_bitstream", "FileNotFoundError", "no bitstream at /nonexistent/skip2lora.bit"),
])
@pytest.mark.requires_pynq
def test_pynq_driver_errors(check, kind, message):
    out = run_check(check)
    assert out["error"] == kind and message in out["message"], out
    if check == "busy":
        assert out["status_after_reset"] == {"busy": 0, "done": 0, "error": 0, "loading": 0, "sending": 0,
                                             "adapters": 0, "overrun": 0, "error_code": 0}


NOTEBOOKS = ["kv260_finetune.ipynb", "online_finetuning.ipynb", "byo_pytorch_model.ipynb"]


def test_every_notebook_runs_in_ci():
    assert sorted(p.name for p in (ROOT / "notebooks").glob("*.ipynb")) == sorted(NOTEBOOKS)


def run_pc_cells(notebook, where):
    """A notebook's cells tagged "pc" are the user's PC side (PyTorch: train, export to ONNX, save the
    data); they run here, where torch is, and write their files into ``where``. .venv-pynq has no
    torch, so the notebook there takes those files, as on a board."""
    nb = json.loads((ROOT / "notebooks" / notebook).read_text())
    code = ["".join(c["source"]) for c in nb["cells"] if "pc" in c["metadata"].get("tags", [])]
    if not code:
        return False
    try:
        import torch  # noqa: F401
    except ImportError:
        if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
            pytest.fail(f"{notebook}: its PC side needs torch, which CI installs (.ci/run)", pytrace=False)
        pytest.skip(f"{notebook}: its PC side needs torch (pip install torch)")
    proc = subprocess.run([sys.executable, "-c", "\n\n".join(code)], cwd=where, capture_output=True, text=True,
                          timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    print(proc.stdout)
    return True


@pytest.mark.slow
@pytest.mark.requires_pynq
@pytest.mark.requires_data("fmnist-rot75")
@pytest.mark.parametrize("notebook", NOTEBOOKS)
def test_notebook_runs_on_the_virtual_kv260(notebook, tmp_path):
    env = pynq_env()
    jupyter = PYNQ_PYTHON.parent / "jupyter-execute"
    pc_side = run_pc_cells(notebook, tmp_path)
    out = tmp_path / notebook
    out.write_bytes((ROOT / "notebooks" / notebook).read_bytes())
    proc = subprocess.run([str(jupyter), "--inplace", "--timeout=1800", str(out)], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=3600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    text = json.dumps(json.loads(out.read_text()))
    assert "Traceback" not in text and ("accuracy after fine-tuning" in text or "cached samples" in text)
    if pc_side:  # the board side took the PC side's files: .venv-pynq has no torch, as a board
        assert "PyTorch is not installed here" in text
