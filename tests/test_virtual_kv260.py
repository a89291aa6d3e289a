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

from skip2lora.driver import FixedBackend, Session
from skip2lora.hw.regmap import VERSION
from skip2lora.sim.runner import require_simulator
from small_model import CONFIG, data, small_base

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
