"""The cycle model: a job's exact cycle count in closed form, following the RTL's schedule.

The sequencer (hw/sequencer.py) issues one cache line per cycle. Per mini-batch of nb samples:

    F0, F1, G0, F2, G1, ..., F(nb-1), G(nb-2), G(nb-1), 2 idle, U, 2 idle

with a = S lines per forward pass (taps and tail), g = SL tap lines per backward pass and update,
and L = cycles from the end of a forward pass until the head unit has that sample's t ready.
F(j+1) never starts before t_j will be ready at its end, so the MAC array stalls only when the
head unit is the bottleneck (L > a + g: small geometries) or at a batch's edges:

    nb = 1:  a + L + g
    nb > 1:  a + max(a, L) + (nb - 2) max(a + g, L) + max(g, L) + g
    batch(nb) = that + 2 + g + 2,    job = g (clearing dA) + epochs * sum of its batches.

The projected time is cycles / an assumed clock (200 MHz by default): Vivado timing is not
available here, so every projection says so.
"""

from __future__ import annotations

from .config import AcceleratorConfig
from .packing import Layout

__all__ = ["FWD_TO_HEAD", "DRAIN_G", "DRAIN_U", "DIV_CYCLES", "softmax_latency", "head_latency",
           "forward_to_t", "batch_cycles", "job_cycles", "useful_macs", "report", "CLOCK_MHZ"]

FWD_TO_HEAD = 3   # end of a forward pass -> head unit start (MAC, adder tree, accumulate, u_k)
DRAIN_G = 2       # idle cycles after the last backward line (dA writes land)
DRAIN_U = 2       # idle cycles after the last update line (A writes land)
DIV_CYCLES = 17   # quotient bits of floor(2**31 / sum e)
CLOCK_MHZ = 200.0  # assumed clock for projections


def softmax_latency(classes: int) -> int:
    """MAX (C) + EXP (C + 1) + DIV (17) + PG (C + 1) + 1."""
    return 3 * classes + DIV_CYCLES + 2


def head_latency(taps: int, classes: int) -> int:
    """Head unit start -> t ready: Y (K + 1), y out (1), softmax start (1), softmax, SB (K + 1)."""
    return (taps + 1) + 2 + softmax_latency(classes) + (taps + 1)


def forward_to_t(taps: int, classes: int) -> int:
    return FWD_TO_HEAD + head_latency(taps, classes)


def batch_cycles(layout: Layout, nb: int) -> int:
    if nb < 1:
        raise ValueError(f"a batch has at least one sample, not {nb}")
    a, g = layout.sample_lines, layout.tap_lines
    lat = forward_to_t(layout.geometry.taps, layout.geometry.classes)
    if nb == 1:
        span = a + lat + g
    else:
        span = a + max(a, lat) + (nb - 2) * max(a + g, lat) + max(g, lat) + g
    return span + DRAIN_G + g + DRAIN_U


def job_cycles(layout: Layout, samples: int, batch: int, epochs: int) -> int:
    """Cycles the accelerator's counter reports for a job (from the first CLR line to the end)."""
    for name, v in (("samples", samples), ("batch", batch), ("epochs", epochs)):
        if v < 1:
            raise ValueError(f"{name} must be at least 1, not {v}")
    full, rest = divmod(samples, batch)
    per_epoch = full * batch_cycles(layout, batch) + (batch_cycles(layout, rest) if rest else 0)
    return layout.tap_lines + epochs * per_epoch


def useful_macs(layout: Layout, samples: int, epochs: int) -> int:
    """Multiply-accumulates of the forward and backward passes (2 R sum d_k per sample)."""
    g = layout.geometry
    return 2 * g.rank * g.total_dim * samples * epochs


def report(config: AcceleratorConfig, samples: int, batch: int, epochs: int,
           clock_mhz: float = CLOCK_MHZ) -> dict:
    layout = Layout(config.geometry, config.lanes)
    cyc = job_cycles(layout, samples, batch, epochs)
    lanes = config.lanes * config.geometry.rank
    return {
        "config": config.name, "samples": samples, "batch": batch, "epochs": epochs,
        "cycles": cyc, "clock_mhz": clock_mhz, "projected_ms": cyc / (clock_mhz * 1e3),
        "projection": f"cycles / {clock_mhz:g} MHz (an assumed clock: no timing closure here)",
        "lanes": config.lanes, "multipliers": lanes,
        "utilization": useful_macs(layout, samples, epochs) / (lanes * cyc),
        "macs": useful_macs(layout, samples, epochs),
    }
