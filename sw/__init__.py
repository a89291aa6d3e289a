"""skip2lora: Skip2-LoRA on-device fine-tuning, from a NumPy reference down to a KV260 accelerator.

What lives where (the ``skip2lora`` package is sw/; hw/, sim/ and bitstreams/ are its subpackages):

* ``skip2lora.data``       -- the three real data sets (rotated Fashion-MNIST, UCI HAR, cooling-fan
  spectra), each split into source and target domains; fetched, verified by sha256 and cached;
  and a user's own data (arrays, an .npz file, an image folder) as the same `Dataset`.
* ``skip2lora.nn``         -- the NumPy networks (LeNet-5, the MLPs), their pretraining, and the
  pretrained base models (``pretrained/``: weights + metadata, input range included).
* ``skip2lora.methods``    -- the nine fine-tuning methods of the Skip2-LoRA paper in float
  (FT-*, LoRA-*, Skip-LoRA, Skip2-LoRA, Quant Skip2-LoRA), by their hyphenated names.
* ``skip2lora.finetune``, ``compare``, ``hparams`` -- one float run, the methods side by side,
  and the default settings per data set (chosen on held-out training data; a new data set's).
* ``skip2lora.workload``   -- a run's data set and base model: built in, or brought by the user
  (``--model FILE.onnx --data FILE.npz``), checked to fit each other.
* ``skip2lora.fixed``      -- the bit-exact fixed-point model: the accelerator's specification
  (formats, quantizer, packing, cycle model, build configurations).
* ``skip2lora.driver``     -- the host driver: `Session` and the fixed / sim / pynq backends
  (registry in its ``__init__``), adapters files, the simulator link and the virtual KV260.
* ``skip2lora.hw``         -- the Amaranth accelerator, its register map, Verilog export,
  resource report and the Vivado flow (needs the ``dev`` extra; Vivado for bitstreams).
* ``skip2lora.sim``        -- cocotb verification of the generated RTL and the simulation
  service the sim backend talks to (``dev`` extra).
* ``skip2lora.cli``, ``accel_job``, ``bench``, ``report`` -- the ``skip2lora`` command: its
  accelerator job runner, the performance report, and text tables and plots.
"""

from __future__ import annotations


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("skip2lora")
    except PackageNotFoundError:  # run from a source tree that is not installed
        return "unknown"


def __getattr__(name: str):  # PEP 562: the version is looked up only when asked for
    if name == "__version__":
        return _version()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
