"""``skip2lora bench``: the project's performance report for the KV260 job, every figure measured in one run.

* the accelerator: cycles from the RTL simulation's cycle counter (checked equal to the cycle
  model), the projected time (cycles / an assumed clock, labelled so), MAC-lane utilization, and
  the anchors (InstantFT, the Raspberry Pi, the physical limit);
* the CPU: float Skip2-LoRA against float LoRA-All (whole job, and each epoch after the cache
  fill), and against PyTorch LoRA-All when torch is installed;
* resources from `skip2lora hw report`; the RTL simulation's wall time.
"""

from __future__ import annotations

from .blas_env import blas_note
from .fixed.config import KV260
from .fixed.cycles import CLOCK_MHZ, report as cycle_report

__all__ = ["ANCHORS", "physical_limit_ms", "accelerator_figures", "performance_report", "plot_results"]

KV260_JOB = {"samples": 1024, "epochs": 10, "batch": 16}

# Reference points (the seeds' publications): time for the same 1024-sample, 10-epoch job.
ANCHORS = {
    "instantft_kv260_ms": 340.0,             # InstantFT on the KV260 FPGA
    "rpi_zero2w_quant_skip2lora_ms": 4270.0,  # Quant Skip2-LoRA on a Raspberry Pi Zero 2W
    "design_physical_limit_ms": 0.9,         # DESIGN.md: ~3.2e8 MACs / (1248 DSP48E2 x 300 MHz)
}
DSP48E2 = 1248
DSP_CLOCK_MHZ = 300.0


def physical_limit_ms(macs: int) -> float:
    """All 1,248 DSP48E2 slices doing one MAC per cycle at 300 MHz."""
    return macs / (DSP48E2 * DSP_CLOCK_MHZ * 1e3)


def accelerator_figures(clock_mhz: float = CLOCK_MHZ) -> dict:
    r = cycle_report(KV260, KV260_JOB["samples"], KV260_JOB["batch"], KV260_JOB["epochs"], clock_mhz)
    # the same bound for the MACs this datapath actually performs (forward + backward passes)
    r["anchors_ms"] = dict(ANCHORS, physical_limit_ms=physical_limit_ms(r["macs"]))
    r["speedup_vs_instantft"] = ANCHORS["instantft_kv260_ms"] / r["projected_ms"]
    r["speedup_vs_rpi"] = ANCHORS["rpi_zero2w_quant_skip2lora_ms"] / r["projected_ms"]
    r["target_cycles"] = 2_000_000
    r["meets_target"] = r["cycles"] <= r["target_cycles"]
    return r


def _job_args(backend: str, data_dir, quiet: bool):
    from argparse import Namespace

    return Namespace(backend=backend, dataset="fmnist-rot75", samples=None, epochs=None, batch=None, lr=None,
                     seed=0, rank=4, data_dir=data_dir, json=quiet, bitfile=None)


def performance_report(*, model_only: bool = False, rtl: bool = True, synth: bool = True, torch: bool = True,
                       all_methods: bool = False, seeds: int = 1, data_dir=None, clock_mhz: float = CLOCK_MHZ,
                       quiet: bool = False) -> dict:
    """Every figure of the report measured in this one run (parts can be switched off; they are then null)."""
    import platform
    import time

    out = accelerator_figures(clock_mhz)
    out.update(cpu_speedup_vs_lora_all=None, cpu_epoch_speedup_vs_lora_all=None, cpu_speedup_vs_torch=None,
               sim_wall_seconds=None, resources=None, rtl=None, fixed=None, cpu=None, torch=None,
               machine=f"{platform.machine()}, {platform.python_version()}, {blas_note()}",
               date=time.strftime("%Y-%m-%d"))
    if model_only:
        return out
    from .compare import compare
    from .driver.job import run_job

    methods = None if all_methods else ["lora-all", "skip2-lora", "quant-skip2-lora"]
    cpu = compare("fmnist-rot75", methods=methods, seeds=seeds, data_dir=data_dir, progress=False if quiet else None)
    for row in cpu["results"]:
        row.pop("curves", None)
    out["cpu"] = cpu
    sp = cpu["speedup_vs_lora_all"].get("skip2-lora", {})
    out["cpu_speedup_vs_lora_all"], out["cpu_epoch_speedup_vs_lora_all"] = sp.get("job"), sp.get("epoch")
    out["fixed"] = run_job(_job_args("fixed", data_dir, quiet))
    if torch:
        from . import torch_baseline

        if torch_baseline.available():
            out["torch"] = _torch_run(data_dir)
            skip2 = next(r for r in cpu["results"] if r["method"] == "skip2-lora")
            out["cpu_speedup_vs_torch"] = out["torch"]["ft_seconds"] / skip2["ft_seconds"]
    if rtl:
        r = run_job(_job_args("sim", data_dir, quiet))
        out["rtl"] = r
        out["rtl_cycles"] = r["cycles"]  # run_job checks them equal to the cycle model
        out["sim_wall_seconds"] = r["job_seconds"]
    if synth:
        from .hw.export import resource_report

        out["resources"] = resource_report("kv260")
    return out


def _torch_run(data_dir) -> dict:
    import numpy as np

    from . import hparams
    from .data import load_dataset
    from .finetune import select_samples
    from .nn.pretrained import load_base
    from .torch_baseline import lora_all_torch

    ds = load_dataset("fmnist-rot75", data_dir)
    base, _ = load_base("fmnist-rot75", data_dir)
    d = hparams.defaults("fmnist-rot75", "lora-all")
    idx = select_samples(len(ds.finetune), d["samples"], 0)
    return lora_all_torch(base, np.asarray(ds.finetune.x[idx]), np.asarray(ds.finetune.y[idx]), ds.test.x, ds.test.y,
                          epochs=d["epochs"], batch=d["batch"], lr=d["lr"])


def plot_results(report: dict, path: str) -> None:
    """Accuracy against fine-tuning time: every float method, the bit-exact model, the RTL in
    simulation, and the accelerator's projected time on the KV260 (labelled as a projection)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for row in report["cpu"]["results"]:
        if row["accuracy"] is not None:
            ax.scatter(row["ft_seconds"], 100 * row["accuracy"], marker="o")
            ax.annotate(f"{row['method']} (NumPy, {row['seeds']} seeds)", (row["ft_seconds"], 100 * row["accuracy"]),
                        fontsize=7,
                        xytext=(4, 2), textcoords="offset points")
    points = []
    if report.get("torch"):
        points.append(("LoRA-All (PyTorch, seed 0)", report["torch"]["ft_seconds"], report["torch"]["accuracy"], "s"))
    if report.get("fixed"):
        points.append(("bit-exact model (seed 0)", report["fixed"]["ft_seconds"], report["fixed"]["accuracy"], "D"))
    if report.get("rtl"):
        points.append(("RTL simulation, wall (seed 0)", report["rtl"]["ft_seconds"], report["rtl"]["accuracy"], "^"))
        points.append((f"KV260, projected at an assumed {report['clock_mhz']:g} MHz (seed 0)",
                       report["projected_ms"] / 1e3, report["rtl"]["accuracy"], "*"))
    for label, x, acc, marker in points:
        ax.scatter(x, 100 * acc, marker=marker, s=60)
        ax.annotate(label, (x, 100 * acc), fontsize=7, xytext=(4, -8), textcoords="offset points")
    ax.axvline(ANCHORS["instantft_kv260_ms"] / 1e3, ls=":", c="grey")
    ax.annotate("InstantFT, KV260", (ANCHORS["instantft_kv260_ms"] / 1e3, ax.get_ylim()[0] + 1), fontsize=7, rotation=90)
    ax.set_xscale("log")
    ax.set_xlabel("fine-tuning time (s, log scale)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("KV260 job: LeNet-5, Fashion-MNIST rotated 75 deg, 1024 samples, 10 epochs")
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
