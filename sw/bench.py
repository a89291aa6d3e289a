"""``skip2lora bench``: the project's performance report for the KV260 job, every figure measured in one run.

* the accelerator: cycles from the RTL simulation's cycle counter (checked equal to the cycle
  model), the projected time (cycles / an assumed clock, labelled so), MAC-lane utilization, and
  the anchors (InstantFT, the Raspberry Pi, the physical limit);
* the CPU: float Skip2-LoRA against float LoRA-All (whole job, and each epoch after the cache
  fill), and against PyTorch LoRA-All when torch is installed;
* resources from `skip2lora hw report`; the RTL simulation's wall time.
"""

from __future__ import annotations

import math

from .blas_env import blas_note
from .fixed.config import KV260
from .fixed.cycles import CLOCK_MHZ, KV260_DDR, report as cycle_report

__all__ = ["ANCHORS", "physical_limit_ms", "pl_fill_figures", "pl_predict_figures", "accelerator_figures", "performance_report",
           "plot_results"]

KV260_JOB = {"samples": 1024, "epochs": 10, "batch": 16}
PREDICT_IMAGES = 10_000  # predictions after the job: a Fashion-MNIST test set

# Reference points (the Skip2-LoRA CNN / 4-bit cache paper, and InstantFT): time for the same 1024-sample,
# 10-epoch job.
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


def pl_fill_figures(train_cycles: int, clock_mhz: float = CLOCK_MHZ) -> dict:
    """The KV260 job end to end with the cache filled on the PL: the FILL of its 1024 images
    (`fill_plan.fill_command_cycles`: the FILL command's cycle count, exact against the core's RTL
    in amaranth.sim) through the shipped integer LeNet-5 at `fill_plan.plan_fill`'s plan, then the
    training cycles; times are cycles / an assumed clock."""
    from .fixed import fill_plan as FP
    from .fixed.config import fill_base_of

    base = fill_base_of(KV260)
    plan = FP.plan_fill(base)
    fill = FP.fill_command_cycles(base, plan, KV260_JOB["samples"], KV260.lanes * 4)
    return {
        "fill_cycles": fill, "cycles": train_cycles, "end_to_end_cycles": fill + train_cycles,
        "end_to_end_ms": (fill + train_cycles) / (clock_mhz * 1e3), "clock_mhz_assumed": clock_mhz,
        "fill_images_per_s": clock_mhz * 1e6 / plan.interval, "fill_interval_cycles": plan.interval,
        "fill_plan": [{"layer": p.name, "lanes": p.lanes, "simd": p.simd, "interval": p.interval, "dsps": p.dsps}
                      for p in plan.layers],
        "fill_dsps": plan.dsps,
        **pl_predict_figures(base, plan, clock_mhz),
        "configuration": (f"the kv260 configuration, its PL base the shipped integer LeNet-5 "
                          f"({KV260.fill_base!r}): FILL_CYCLES of its RTL equals this model"),
        "label": f"cycles / {clock_mhz:g} MHz (an assumed clock)",
    }


def pl_predict_figures(base, plan, clock_mhz: float = CLOCK_MHZ) -> dict:
    """Predictions on the PL after the job (the PREDICT command: images in, y with the adapters
    out): `fill_plan.predict_command_cycles` of `PREDICT_IMAGES` images (PREDICT_CYCLES, exact
    against the core's RTL in amaranth.sim) on the kv260 configuration; cycles / an assumed clock."""
    from .fixed import fill_plan as FP

    cycles = FP.predict_command_cycles(base, plan, PREDICT_IMAGES, KV260)
    return {"predict_images": PREDICT_IMAGES, "predict_cycles": cycles,
            "predict_ms": cycles / (clock_mhz * 1e3),
            "predict_images_per_s": PREDICT_IMAGES * clock_mhz * 1e6 / cycles}


def accelerator_figures(clock_mhz: float = CLOCK_MHZ) -> dict:
    """The KV260 job's cycles (the default recipe: a new sample order every epoch) and projections at
    assumed clocks (no timing closure exists here: `skip2lora hw report` gives the logic depth)."""
    r = cycle_report(KV260, KV260_JOB["samples"], KV260_JOB["batch"], KV260_JOB["epochs"], shuffle=True,
                     clock_mhz=clock_mhz)
    r["projections"] = [{"assumed_clock_mhz": mhz, "ms": r["cycles"] / (mhz * 1e3),
                         "label": f"cycles / {mhz:g} MHz (an assumed clock)"} for mhz in (200.0, 300.0)]
    # the same bound for the MACs this datapath actually performs (forward + backward passes)
    r["anchors_ms"] = dict(ANCHORS, physical_limit_ms=physical_limit_ms(r["macs"]))
    r["speedup_vs_instantft"] = ANCHORS["instantft_kv260_ms"] / r["projected_ms"]
    r["speedup_vs_rpi"] = ANCHORS["rpi_zero2w_quant_skip2lora_ms"] / r["projected_ms"]
    r["target_cycles"] = 1_930_000  # the training recipe in hardware: at most 10 % over one order, one rate
    r["meets_target"] = r["cycles"] <= r["target_cycles"]
    # the KV260 build's DDR cache (issue 17): the same recipe from DDR under the assumed memory
    r["ddr_jobs"] = [{key: d[key] for key in ("samples", "cycles", "projected_ms", "utilization", "ddr_latency")}
                     for d in (cycle_report(KV260, n, KV260_JOB["batch"], KV260_JOB["epochs"], shuffle=True,
                                            clock_mhz=clock_mhz, ddr=KV260_DDR)
                               for n in (KV260_JOB["samples"], 4096, 16384))]
    r["ddr_model"] = KV260_DDR.source
    # issue 15: the cache filled on the PL (beside it, the host fill: `performance_report` times it)
    r["pl_fill"] = pl_fill_figures(r["cycles"], clock_mhz)
    r["fill_cycles"], r["end_to_end_ms"] = r["pl_fill"]["fill_cycles"], r["pl_fill"]["end_to_end_ms"]
    r["predict_images_per_s"] = r["pl_fill"]["predict_images_per_s"]
    return r


def _job_args(backend: str, data_dir, quiet: bool, fill: str = "auto"):
    from argparse import Namespace

    return Namespace(backend=backend, dataset="fmnist-rot75", samples=None, epochs=None, batch=None, lr=None,
                     seed=0, rank=4, data_dir=data_dir, json=quiet, bitfile=None, fill=fill)


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
    from .accel_job import cycle_mismatch, run_job

    methods = None if all_methods else ["lora-all", "skip2-lora", "quant-skip2-lora"]
    cpu = compare("fmnist-rot75", methods=methods, seeds=seeds, data_dir=data_dir, progress=False if quiet else None)
    for row in cpu["results"]:
        row.pop("curves", None)
    out["cpu"] = cpu
    sp = cpu["speedup_vs_lora_all"].get("skip2-lora", {})
    out["cpu_speedup_vs_lora_all"], out["cpu_epoch_speedup_vs_lora_all"] = sp.get("job"), sp.get("epoch")
    out["fixed"] = run_job(_job_args("fixed", data_dir, quiet))  # the KV260 job as it runs: the PL fill
    # the alternative to the PL fill: the host's float base forward + quantization of the same images
    host = run_job(_job_args("fixed", data_dir, quiet, fill="host"))
    out["pl_fill"]["host_fill"] = {"seconds": host["fill_seconds"], "accuracy": host["accuracy"],
                                   "label": "the host's fill of the job's 1024 images (float base forward, "
                                            "quantizer, packing), measured on this CPU, not on the KV260's A53; "
                                            "the accuracy the job reaches on those entries"}
    if torch:
        from . import torch_baseline

        if torch_baseline.available():
            out["torch"] = _torch_run(data_dir)
            skip2 = next(r for r in cpu["results"] if r["method"] == "skip2-lora")
            out["cpu_speedup_vs_torch"] = out["torch"]["ft_seconds"] / skip2["ft_seconds"]
    if rtl:
        r = run_job(_job_args("sim", data_dir, quiet))
        if cycle_mismatch(r):
            raise RuntimeError(cycle_mismatch(r))
        out["rtl"] = r
        out["rtl_cycles"] = r["cycles"]  # equal to the cycle model's
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


def _results_rows(report: dict) -> list:
    """(label, kind, seconds, accuracy %, std %) of every point the report measured or cites."""
    rows = []
    for row in report["cpu"]["results"]:
        if row["accuracy"] is not None:
            n = row["seeds"] - row.get("diverged", 0)
            rows.append((f"{row['method']}, NumPy ({n} seed{'s' * (n > 1)})", "numpy", row["ft_seconds"],
                         100 * row["accuracy"], 100 * row["accuracy_std"] if n > 1 else None))
    if report.get("torch"):
        rows.append(("lora-all, PyTorch (seed 0)", "torch", report["torch"]["ft_seconds"],
                     100 * report["torch"]["accuracy"], None))
    if report.get("fixed"):
        rows.append(("accelerator's bit-exact model, host wall (seed 0)", "fixed", report["fixed"]["ft_seconds"],
                     100 * report["fixed"]["accuracy"], None))
    if report.get("rtl"):
        rows.append(("accelerator RTL, simulation wall (seed 0)", "rtl", report["rtl"]["ft_seconds"],
                     100 * report["rtl"]["accuracy"], None))
        rows.append(("accelerator on the KV260, projected (seed 0)", "projected", report["projected_ms"] / 1e3,
                     100 * report["rtl"]["accuracy"], None))
    rows.append(("InstantFT on the KV260 (published)", "published", ANCHORS["instantft_kv260_ms"] / 1e3, None, None))
    rows.append(("quant Skip2-LoRA, RPi Zero 2W (published)", "published",
                 ANCHORS["rpi_zero2w_quant_skip2lora_ms"] / 1e3, None, None))
    return sorted(rows, key=lambda r: r[2])


_KINDS = {  # colour and legend text of each kind of point
    "numpy": ("#1f77b4", "float methods, NumPy on this CPU"),
    "torch": ("#ff7f0e", "PyTorch on this CPU"),
    "fixed": ("#2ca02c", "bit-exact model of the accelerator, this CPU"),
    "rtl": ("#d62728", "accelerator RTL in simulation (Verilator), wall time"),
    "projected": ("#9467bd", "KV260: RTL cycles / an assumed clock (no timing closure)"),
    "published": ("#7f7f7f", "published times (accuracy not measured here)"),
}


def _seconds_text(s: float) -> str:
    return f"{s * 1e3:.3g} ms" if s < 1 else f"{s:.3g} s"


def plot_results(report: dict, path) -> None:
    """Every method and backend of the KV260 job, one row each (fastest at the top): test accuracy
    on the left, fine-tuning time (log scale) on the right, so that no label overlaps another."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    rows = _results_rows(report)
    n = len(rows)
    fig, (acc_ax, time_ax) = plt.subplots(1, 2, sharey=True, figsize=(11, 0.38 * n + 2.4),
                                          gridspec_kw={"width_ratios": [1, 1.3], "wspace": 0.05})
    y = list(range(n))[::-1]
    for yi, (label, kind, seconds, acc, std) in zip(y, rows):
        colour = _KINDS[kind][0]
        hatch = "//" if kind in ("projected", "published") else None
        time_ax.barh(yi, seconds, color=colour, alpha=0.85, hatch=hatch, edgecolor="white", height=0.7)
        time_ax.text(seconds * 1.08, yi, _seconds_text(seconds), va="center", fontsize=8)
        if acc is not None:
            acc_ax.errorbar(acc, yi, xerr=std, fmt="o", color=colour, ms=6, capsize=3)
            acc_ax.text(acc, yi + 0.3, f"{acc:.1f}", ha="center", va="bottom", fontsize=7)
    acc_ax.set_yticks(y, [r[0] for r in rows], fontsize=8)
    lows = [r[3] - (r[4] or 0) for r in rows if r[3] is not None]  # the error bars stay inside
    highs = [r[3] + (r[4] or 0) for r in rows if r[3] is not None]
    acc_ax.set_xlim(5 * math.floor((min(lows) - 1) / 5), 5 * math.ceil((max(highs) + 1) / 5))
    acc_ax.set_xlabel("test accuracy (%); bars: std over seeds")
    acc_ax.grid(axis="x", alpha=0.3)
    time_ax.set_xscale("log")
    times = [r[2] for r in rows]
    time_ax.set_xlim(min(times) / 2, max(times) * 6)
    time_ax.set_xlabel("fine-tuning time (s, log scale)")
    time_ax.grid(axis="x", alpha=0.3, which="both")
    acc_ax.set_ylim(-0.7, n - 0.3)
    used = [k for k in _KINDS if any(r[1] == k for r in rows)]
    fig.legend([Patch(color=_KINDS[k][0], hatch="//" if k in ("projected", "published") else None)
                for k in used], [_KINDS[k][1] for k in used], loc="lower center", ncol=2, fontsize=8,
               frameon=False)
    fig.suptitle("KV260 job: LeNet-5, Fashion-MNIST rotated 75\N{DEGREE SIGN}, 1024 samples, 10 epochs "
                 f"(projection at {report['clock_mhz']:g} MHz)", fontsize=11)
    fig.subplots_adjust(left=0.30, right=0.98, top=1 - 0.5 / (0.38 * n + 2.4), bottom=1.1 / (0.38 * n + 2.4))
    fig.savefig(path, dpi=120)
    plt.close(fig)
