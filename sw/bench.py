"""``skip2lora bench``: the project's performance report for the KV260 job, every figure measured.

Cycle figures come from the cycle model (and, with ``--rtl``, from the accelerator's cycle counter
in RTL simulation, checked equal); projected times are cycles / an assumed clock and say so.
"""

from __future__ import annotations

from .fixed.config import KV260
from .fixed.cycles import CLOCK_MHZ, report as cycle_report

__all__ = ["ANCHORS", "physical_limit_ms", "accelerator_figures"]

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
