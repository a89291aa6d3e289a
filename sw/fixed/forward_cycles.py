"""The forward engine's cycle model: one layer pass, a stream of samples and a whole integer base,
in closed form.

The forward engine (hw/forward_engine.py) computes one `base_int.IntLayer` per sample with
``lanes`` output channels and ``simd`` patch entries in parallel. A dense layer is the 1x1
convolution of a 1x1 image with ``fan_in`` channels (`engine_geometry`), so there is one loop nest:

    load   the input tensor, one activation per stream beat (``in_size`` beats, NHWC order), into
           one bank of a ping-pong buffer (the next sample loads into the other bank)
    issue  for each (pooled) output position, for each group of ``lanes`` output channels, for
           each of the P pool positions (4 with a 2x2 pool, else 1), for each of the
           Q = ceil(fan_in / simd) words of ``simd`` patch entries: simd x lanes products a cycle;
           after every window (P Q cycles) ``max(0, W - P Q)`` idle cycles, W =
           min(lanes, out channels), so the output serializer (one value a cycle) keeps up
    drain  the pipeline (`pipe_latency` register stages from issue to the output buffer), then
           the last group's values, one per cycle; ``done`` pulses the cycle after

A sample issues as soon as its bank is full and the previous sample's last window (and its idle
cycles) was issued; its bank is free again the cycle after its last issue, while its drain
overlaps the next sample's issue. With an always-valid input and an always-ready output the k-th
sample's ``done`` is at ``layer_cycles + k * layer_interval`` (k = 0, 1, ...) cycles after
``start``, the interval being the larger of the load (``in_size``) and the issue span of a sample
(windows x (P Q + idle)). Every value here is the RTL's count (the tests compare them cycle for
cycle); a stalled stream only adds its stall cycles. Projected throughputs are cycles / an
assumed clock (`CLOCK_MHZ`): no Vivado timing exists here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .base_int import IntBase, IntLayer

__all__ = ["CLOCK_MHZ", "READ_LATENCY", "SIMD_MAX", "PIPE_LATENCY", "FRONT_LATENCY", "EngineGeometry",
           "engine_geometry", "groups", "patch_words", "word_entries", "activation_words", "activation_bits",
           "ACT_LUTRAM_BITS", "tree_stages", "pipe_latency", "window_cycles",
           "layer_cycles", "layer_interval", "layer_done_cycles", "base_cycles", "WRITER_LATENCY",
           "base_report"]

CLOCK_MHZ = 200.0  # assumed clock for projections (as `fixed.cycles`)
READ_LATENCY = 2   # every memory read: the memory's read register + an output register (hw/memories.py)
SIMD_MAX = 32      # patch entries a cycle (each a multiplier per lane)


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


def _geometry(layer) -> EngineGeometry:
    return layer if isinstance(layer, EngineGeometry) else engine_geometry(layer)


def _lanes(lanes) -> int:
    if isinstance(lanes, bool) or not isinstance(lanes, (int, np.integer)):
        raise TypeError(f"lanes must be an int, not {lanes!r}")
    if lanes < 1:
        raise ValueError(f"lanes must be at least 1, not {lanes}")
    return int(lanes)


def _simd(simd) -> int:
    if isinstance(simd, bool) or not isinstance(simd, (int, np.integer)):
        raise TypeError(f"simd must be an int, not {simd!r}")
    if not 1 <= simd <= SIMD_MAX:
        raise ValueError(f"simd must be in 1..{SIMD_MAX}, not {simd}")
    return int(simd)


def tree_stages(simd: int) -> int:
    """Register stages of a lane's adder tree over ``simd`` products: one two-input add a stage."""
    return (_simd(simd) - 1).bit_length()


def pipe_latency(simd: int = 1) -> int:
    """Issue -> the output buffer: the activation and weight reads (2), the masked activations and
    weights (the DSPs' A/B registers), the products (M), the adder tree (`tree_stages`), the
    accumulator, the pool maximum, the rounding add, the shift, the saturation (one register
    stage each) and the output buffer's load. The same with two lanes a DSP (the engine's
    ``pack``: the borrows ride the tree's carry-ins, no stage is added)."""
    return READ_LATENCY + 1 + 1 + tree_stages(simd) + 1 + 1 + 1 + 1 + 1 + 1


PIPE_LATENCY = pipe_latency(1)  # at simd 1
#: ``start`` -> the first patch word issuable: the geometry registers, the loop counters, the
#: patch-offset table's read (2) and the address adds ahead of the issue (its "front end").
#: A sample issues at the earliest this many cycles after ``start`` plus one, so a layer with a
#: smaller input holds its first sample's last beat until then.
FRONT_LATENCY = 4


def groups(geometry: EngineGeometry, lanes: int) -> int:
    """Groups of ``lanes`` output channels (the last one may be partial)."""
    return -(-geometry.out_channels // lanes)


def patch_words(geometry: EngineGeometry, simd: int = 1) -> int:
    """Q: issue cycles of one sweep over a patch, ``simd`` entries a cycle (the last word may be
    partial: its entries past ``fan_in`` are masked)."""
    return -(-geometry.fan_in // _simd(simd))


def word_entries(geometry: EngineGeometry, simd: int = 1) -> int:
    """E: the activations (channels) a word of the engine's activation memory holds. A word is
    E consecutive channels of one position (a position's C channels in ceil(C / E) words, the
    last zero padded), and a cycle's ``simd`` entries are simd / E such words, read from simd / E
    replicas of the memory. E is the largest divisor of simd whose words still cover a patch in
    `patch_words` = ceil(fan_in / simd) cycles (so E = 1 keeps one activation a word and simd
    replicas; a dense layer's, one position of fan_in channels, is E = simd: one replica)."""
    g, simd = geometry, _simd(simd)
    q = patch_words(g, simd)
    kk = g.kernel * g.kernel
    return max(e for e in range(1, min(simd, g.channels) + 1)
               if simd % e == 0 and -(-kk * -(-g.channels // e) // (simd // e)) == q)


def activation_words(geometry: EngineGeometry, simd: int = 1) -> int:
    """Words of one bank of the activation memory: positions x ceil(C / E)."""
    return geometry.height * geometry.width * -(-geometry.channels // word_entries(geometry, simd))


def activation_bits(geometry: EngineGeometry, simd: int = 1) -> int:
    """Bits of one replica of the activation memory as built: two banks (the address's top bit)
    of 2**ceil(log2 `activation_words`) words of `word_entries` activations."""
    words = activation_words(geometry, simd)
    return 2 * (1 << max(1, (words - 1).bit_length())) * word_entries(geometry, simd) * 8


#: the forward engine keeps an activation replica of at most this many bits in LUTRAM
#: ("auto"), a larger one in block RAM
ACT_LUTRAM_BITS = 8192


def window_cycles(geometry: EngineGeometry, lanes: int, simd: int = 1) -> tuple[int, int]:
    """(issue cycles, idle cycles) of one window: one output group at one output position."""
    busy = geometry.pool_positions * patch_words(geometry, simd)
    return busy, max(0, min(_lanes(lanes), geometry.out_channels) - busy)


def _windows(g: EngineGeometry, lanes: int) -> int:
    return g.positions * groups(g, lanes)


def layer_cycles(layer: IntLayer | EngineGeometry, lanes: int, simd: int = 1) -> int:
    """Cycles of one layer pass: ``start`` sampled high -> ``done`` high (the cycles in between,
    counting the start cycle and not the done cycle), the input's first beat offered the cycle
    after ``start``:

        max(in_size, FRONT_LATENCY) + N P Q + (N - 1) idle + pipe_latency(simd) + last_group
    """
    g = _geometry(layer)
    lanes, simd = _lanes(lanes), _simd(simd)
    n = _windows(g, lanes)
    busy, idle = window_cycles(g, lanes, simd)
    last_group = g.out_channels - (groups(g, lanes) - 1) * lanes
    return max(g.in_size, FRONT_LATENCY) + n * busy + (n - 1) * idle + pipe_latency(simd) + last_group


def layer_interval(layer: IntLayer | EngineGeometry, lanes: int, simd: int = 1) -> int:
    """Cycles between consecutive samples' ``done`` pulses in steady state (an always-valid input,
    an always-ready output): max(in_size, N (P Q + idle)), the load or the issue side."""
    g = _geometry(layer)
    lanes, simd = _lanes(lanes), _simd(simd)
    busy, idle = window_cycles(g, lanes, simd)
    return max(g.in_size, _windows(g, lanes) * (busy + idle))


def layer_done_cycles(layer: IntLayer | EngineGeometry, lanes: int, simd: int, n: int) -> list[int]:
    """Each of ``n`` back-to-back samples' ``done`` cycle, counted from ``start`` (cycle 0), the
    input always valid from the cycle after ``start`` and the output always ready:
    ``layer_cycles + k layer_interval`` for sample k. Exact from the first sample on: sample k
    issues once both its load and sample k-1's issue span (with its idle cycles) are over, and
    the load of sample k+1 never waits for its bank (sample k-1's, free the cycle after its last
    issue) beyond that."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"n must be a non-negative int, not {n!r}")
    first, step = layer_cycles(layer, lanes, simd), layer_interval(layer, lanes, simd)
    return [first + k * step for k in range(int(n))]


def _per_layer(value, base: IntBase, label: str) -> list:
    if isinstance(value, (list, tuple)):
        if len(value) != len(base.layers):
            raise ValueError(f"{label} must have one value per layer ({len(base.layers)}), not {len(value)}")
        return list(value)
    return [value] * len(base.layers)


def base_cycles(base: IntBase, lanes: int) -> int:
    """Cycles per sample of a whole base, its layers one pass after the other through one engine
    (each pass loads its input from the stream: the previous pass's output), at simd 1."""
    if not isinstance(base, IntBase):
        raise TypeError(f"base must be an IntBase, not {type(base).__name__}")
    return sum(layer_cycles(layer, lanes) for layer in base.layers)


#: the cache writer (hw/cache_writer.py): a value taken -> its line written into the cache
WRITER_LATENCY = 6




def base_report(base: IntBase, lanes, simd=1, clock_mhz: float = CLOCK_MHZ) -> dict:
    """Per layer (one engine each; ``lanes`` and ``simd`` an int or one per layer): one pass's
    cycles, the streaming interval, MACs and multiplier use; in total the one-after-another
    latency (the passes' sum) and the streaming chain's cycles a sample (its slowest engine's
    interval: a bound, reached when every engine's input keeps up), and samples/s at an assumed
    clock."""
    if not isinstance(base, IntBase):
        raise TypeError(f"base must be an IntBase, not {type(base).__name__}")
    lanes_l, simd_l = _per_layer(lanes, base, "lanes"), _per_layer(simd, base, "simd")
    rows, latency, interval = [], 0, 0
    for layer, n_lanes, n_simd in zip(base.layers, lanes_l, simd_l):
        g = engine_geometry(layer)
        c, i = layer_cycles(g, n_lanes, n_simd), layer_interval(g, n_lanes, n_simd)
        latency, interval = latency + c, max(interval, i)
        rows.append({"layer": layer.name, "lanes": int(n_lanes), "simd": int(n_simd), "cycles": c,
                     "interval": i, "load": g.in_size, "macs": layer.macs, "multipliers": int(n_lanes * n_simd),
                     "utilization": round(layer.macs / (i * n_lanes * n_simd), 3)})
    return {"lanes": lanes, "simd": simd, "layers": rows, "latency_cycles": latency,
            "cycles_per_sample": interval, "clock_mhz_assumed": clock_mhz,
            "samples_per_s": round(clock_mhz * 1e6 / interval, 1),
            "note": f"cycles / an assumed {clock_mhz:g} MHz clock (no timing closure exists); "
                    "cycles_per_sample is the slowest engine's interval"}
