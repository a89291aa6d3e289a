"""The forward engine's cycle model: one layer pass and a whole integer base, in closed form.

The forward engine (hw/forward_engine.py) computes one `base_int.IntLayer` per pass with
``lanes`` output channels in parallel. A dense layer is the 1x1 convolution of a 1x1 image with
``fan_in`` channels (`engine_geometry`), so there is one loop nest:

    LOAD   the input tensor, one activation per stream beat (``in_size`` beats, NHWC order)
    RUN    for each (pooled) output position, for each group of ``lanes`` output channels, for
           each of the P pool positions (4 with a 2x2 pool, else 1), for each of the ``fan_in``
           patch entries (channel, ky, kx): one multiply-accumulate per lane and cycle;
           after a window (P x fan_in cycles) ``max(0, W - P fan_in)`` idle cycles, W =
           min(lanes, out channels), so the output serializer (one value a cycle) keeps up
           with a window (not after the last window)
    drain  the pipeline (`PIPE_LATENCY` register stages from issue to the output buffer),
           then the last group's values, one per cycle; ``done`` pulses the cycle after

Every value here is the RTL's count with an always-valid input stream and an always-ready output
stream (the tests compare them cycle for cycle); a stalled stream only adds its stall cycles.
Projected throughputs are cycles / an assumed clock (`CLOCK_MHZ`): no Vivado timing exists here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .base_int import IntBase, IntLayer

__all__ = ["CLOCK_MHZ", "READ_LATENCY", "PIPE_LATENCY", "EngineGeometry", "engine_geometry", "groups",
           "window_cycles", "layer_cycles", "base_cycles", "WRITER_LATENCY", "fill_cycles", "base_report"]

CLOCK_MHZ = 200.0  # assumed clock for projections (as `fixed.cycles`)
READ_LATENCY = 2   # every memory read: the memory's read register + an output register (hw/memories.py)
#: issue -> the output buffer: the memory reads (2), the masked activation and weights (the DSP's
#: A/B registers), the product (M), the accumulator (P), the pool maximum, the rounding add,
#: the shift, the saturation (each one register stage) and the output buffer's load.
PIPE_LATENCY = READ_LATENCY + 1 + 1 + 1 + 1 + 1 + 1 + 1 + 1


@dataclass(frozen=True)
class EngineGeometry:
    """A layer as the engine's loop nest sees it: a stride-1 convolution of an NHWC image."""

    height: int
    width: int
    channels: int
    kernel: int
    padding: int
    pool: bool
    out_channels: int
    signed: bool       # the input activations are int8 (else uint8)
    out_lo: int
    out_hi: int

    @property
    def fan_in(self) -> int:
        return self.channels * self.kernel * self.kernel

    @property
    def in_size(self) -> int:
        return self.height * self.width * self.channels

    @property
    def conv_shape(self) -> tuple[int, int]:
        o = 2 * self.padding - self.kernel + 1
        return self.height + o, self.width + o

    @property
    def out_hw(self) -> tuple[int, int]:
        """The (pooled) output's height and width."""
        h, w = self.conv_shape
        return (h // 2, w // 2) if self.pool else (h, w)

    @property
    def positions(self) -> int:
        h, w = self.out_hw
        return h * w

    @property
    def pool_positions(self) -> int:
        return 4 if self.pool else 1

    @property
    def out_size(self) -> int:
        return self.positions * self.out_channels


def engine_geometry(layer: IntLayer) -> EngineGeometry:
    if not isinstance(layer, IntLayer):
        raise TypeError(f"layer must be an IntLayer, not {type(layer).__name__}")
    if layer.kind == "dense":
        return EngineGeometry(1, 1, layer.fan_in, 1, 0, False, layer.out_channels, layer.in_signed,
                              layer.out_lo, layer.out_hi)
    h, w, c = (int(d) for d in layer.in_shape)
    return EngineGeometry(h, w, c, int(layer.kernel), int(layer.padding), bool(layer.pool), layer.out_channels,
                          layer.in_signed, layer.out_lo, layer.out_hi)


def _lanes(lanes) -> int:
    if isinstance(lanes, bool) or not isinstance(lanes, (int, np.integer)):
        raise TypeError(f"lanes must be an int, not {lanes!r}")
    if lanes < 1:
        raise ValueError(f"lanes must be at least 1, not {lanes}")
    return int(lanes)


def groups(geometry: EngineGeometry, lanes: int) -> int:
    """Groups of ``lanes`` output channels (the last one may be partial)."""
    return -(-geometry.out_channels // lanes)


def window_cycles(geometry: EngineGeometry, lanes: int) -> tuple[int, int]:
    """(issue cycles, idle cycles) of one window: one output group at one output position."""
    busy = geometry.pool_positions * geometry.fan_in
    return busy, max(0, min(lanes, geometry.out_channels) - busy)


def layer_cycles(layer: IntLayer | EngineGeometry, lanes: int) -> int:
    """Cycles of one layer pass: ``start`` sampled high -> ``done`` high (the cycles in between,
    counting the start cycle and not the done cycle)."""
    g = layer if isinstance(layer, EngineGeometry) else engine_geometry(layer)
    lanes = _lanes(lanes)
    n_groups = groups(g, lanes)
    windows = g.positions * n_groups
    busy, idle = window_cycles(g, lanes)
    last_group = g.out_channels - (n_groups - 1) * lanes
    return g.in_size + windows * busy + (windows - 1) * idle + PIPE_LATENCY + last_group


def base_cycles(base: IntBase, lanes: int) -> int:
    """Cycles per sample of a whole base, its layers one pass after the other through one engine
    (each pass loads its input from the stream: the previous pass's output)."""
    if not isinstance(base, IntBase):
        raise TypeError(f"base must be an IntBase, not {type(base).__name__}")
    return sum(layer_cycles(layer, lanes) for layer in base.layers)


#: the cache writer (hw/cache_writer.py): a value taken -> its line written into the cache
WRITER_LATENCY = 6


def fill_cycles(base: IntBase, lanes: int) -> int:
    """Cycles per sample of the PL fill (hw/fill_pipeline.py), first image beat to ``done``: the
    passes one after the other (`base_cycles`), except that each engine after the first loads its
    input while the previous one emits it (its LOAD hidden) and starts its run a cycle before its
    predecessor's done; then the label and the writer's last line, WRITER_LATENCY - 2 cycles past
    the last engine's done."""
    return base_cycles(base, lanes) - sum(d + 1 for d in base.tap_dims[1:]) + WRITER_LATENCY - 2


def base_report(base: IntBase, lanes: int, clock_mhz: float = CLOCK_MHZ) -> dict:
    """Per layer and in total: cycles, MACs, lane utilization, and samples/s at an assumed clock."""
    rows, total = [], 0
    for layer in base.layers:
        g = engine_geometry(layer)
        c = layer_cycles(g, lanes)
        total += c
        rows.append({"layer": layer.name, "cycles": c, "load": g.in_size, "macs": layer.macs,
                     "utilization": round(layer.macs / (c * lanes), 3)})
    return {"lanes": lanes, "layers": rows, "cycles_per_sample": total,
            "clock_mhz_assumed": clock_mhz,
            "samples_per_s": round(clock_mhz * 1e6 / total, 1),
            "note": f"cycles / an assumed {clock_mhz:g} MHz clock (no timing closure exists)"}
