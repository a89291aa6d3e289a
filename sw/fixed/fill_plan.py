"""The PL fill's plan and cycle model: how many lanes each layer's engine gets, and the fill's cycles.

The fill pipeline (hw/fill_pipeline.py) is a chain of streaming forward engines, one per layer of
the integer base, with samples overlapped across them: while engine k computes sample n, engine
k+1 computes sample n-1 (each engine's input buffer is a ping-pong pair). Its throughput is the
slowest engine's interval (`forward_cycles.layer_interval`), so the plan gives each layer the
fewest DSP48E2s (ceil(lanes / 2) x simd: the engine packs two lanes a DSP) whose interval meets a
target: LeNet-5's conv2 (240,000 MACs a sample) gets many, its last dense layer (840) few.

`plan_fill(base, interval)` chooses; `fill_done_cycles(base, plan, n)` is the cycle, counted from
the fill's ``start``, at which each of n back-to-back samples' cache entry is written (every
value the RTL's, with an always-valid image stream: tests/test_fill_pipeline.py compares them).
Projected times are cycles / an assumed clock (`forward_cycles.CLOCK_MHZ`); no timing closure
exists here.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from . import forward_cycles as FC
from .base_int import IntBase
from .packing import LABEL_BYTES

__all__ = ["SIMD_MAX", "TARGET_INTERVAL", "WRITER_TAIL", "SLICE_LATENCY", "BRAM_BUDGET", "LayerPlan", "FillPlan", "engine_bram18",
           "plan_fill", "fill_done_cycles", "first_byte_lag", "COMMAND_LAG", "fill_command_cycles", "fill_report"]

SIMD_MAX = FC.SIMD_MAX  # patch entries an engine multiplies a cycle (the engine's own limit)
#: cycles a sample: 111,111 images/s at an assumed 200 MHz. Issue 15's inference figure is
#: 100,000 images/s; at 2,000 cycles a job of any length stays just below it (the first image's
#: latency), docs/pl-predict.md. LeNet-5's plan at 1,800 takes 129 DSPs, 14 more than at 2,000.
TARGET_INTERVAL = 1800
# PREDICT's ring (docs/pl-predict.md): entry slots past the cache's entries, so images in flight
# between the loader's first beat and their forward pass (`predict_command_cycles` checks the bound)
RING_ENTRIES = 10
#: the cache writer (hw/cache_writer.py): the last engine's ``done`` -> the entry's ``done`` (the
#: label after the last logit, the tail's last line through the writer's stages and its count)
WRITER_TAIL = 7
#: hw/register_slice.py: every edge of the chain (image -> engine 0, engine k -> engine k+1, the
#: last engine -> the writer's logits) goes through a register slice, a cycle each
SLICE_LATENCY = 1
#: RAMB36 (equivalents) the fill's engines may take by default: the KV260 build's training core
#: leaves ~36 of the XCK26's 144 free
BRAM_BUDGET = 30

#: block RAM shapes (width, depth) of a RAMB18 and of a RAMB36 (SDP at 36 / 72 bits)
_RAMB18 = ((1, 16384), (2, 8192), (4, 4096), (9, 2048), (18, 1024), (36, 512))
_RAMB36 = ((1, 32768), (2, 16384), (4, 8192), (9, 4096), (18, 2048), (36, 1024), (72, 512))


def _ramb18(width: int, depth: int) -> int:
    """RAMB18 units (a RAMB36 is two) of the cheapest tiling of a width x depth memory."""
    return min(min(-(-width // w) * -(-depth // d) for w, d in _RAMB18),
               min(2 * -(-width // w) * -(-depth // d) for w, d in _RAMB36))


def engine_bram18(geometry: FC.EngineGeometry, lanes: int, simd: int, pack: bool = True) -> int:
    """An estimate of the RAMB18 units (two a RAMB36) of a forward engine (hw/forward_engine.py),
    as yosys maps it: its simd / E activation replicas (words of E = `word_entries` activations,
    two banks; in LUTRAM up to `ACT_LUTRAM_BITS` each) and its weight banks (words of simd entries
    of ceil(lanes / 2) packed pairs of 17 bits, or lanes int8; banks of up to 512 words, a bank of
    at most 4 Kbit, or of at most 256 words and 32 Kbit, a LUT ROM: as measured on LeNet-5). The
    patch table and the channel memory are LUTs."""
    g = geometry
    e = FC.word_entries(g, simd)
    units = 0
    bits = FC.activation_bits(g, simd)
    if bits > FC.ACT_LUTRAM_BITS:
        units += simd // e * _ramb18(e * 8, bits // (e * 8))
    pairs = lanes // 2 if pack else 0
    width = simd * (17 * pairs + 8 * (lanes - 2 * pairs))
    words = FC.groups(g, lanes) * FC.patch_words(g, simd)
    for start in range(0, words, 512):
        depth = min(512, words - start)
        bits = depth * width
        if bits > 4096 and (depth > 256 or bits > 32768):
            units += _ramb18(width, depth)
    return units


@dataclass(frozen=True)
class LayerPlan:
    name: str
    lanes: int      # output channels in parallel
    simd: int       # patch entries in parallel
    interval: int   # the engine's cycles between samples, alone (`forward_cycles.layer_interval`)
    bram18: int = 0  # block RAM, RAMB18 units (`engine_bram18`: an estimate of yosys's mapping)

    @property
    def multipliers(self) -> int:
        return self.lanes * self.simd

    @property
    def dsps(self) -> int:
        """DSP48E2s: two lanes share one per patch entry (the engine packs lane pairs)."""
        return -(-self.lanes // 2) * self.simd

    @property
    def brams(self) -> float:
        """RAMB36 equivalents (`bram18` / 2)."""
        return self.bram18 / 2


@dataclass(frozen=True)
class FillPlan:
    layers: tuple[LayerPlan, ...]

    @property
    def lanes(self) -> tuple[int, ...]:
        return tuple(p.lanes for p in self.layers)

    @property
    def simd(self) -> tuple[int, ...]:
        return tuple(p.simd for p in self.layers)

    @property
    def interval(self) -> int:
        """The chain's cycles between samples: its slowest engine's."""
        return max(p.interval for p in self.layers)

    @property
    def multipliers(self) -> int:
        return sum(p.multipliers for p in self.layers)

    @property
    def dsps(self) -> int:
        return sum(p.dsps for p in self.layers)

    @property
    def bram18(self) -> int:
        return sum(p.bram18 for p in self.layers)

    @property
    def brams(self) -> float:
        """RAMB36 equivalents of the engines (an estimate, `engine_bram18`)."""
        return self.bram18 / 2


def _check_base(base):
    if not isinstance(base, IntBase):
        raise TypeError(f"base must be an IntBase, not {type(base).__name__}")


def plan_fill(base: IntBase, interval: int = TARGET_INTERVAL, *, lanes_max: int = 64,
              simd_max: int = SIMD_MAX, bram_budget: float | None = BRAM_BUDGET) -> FillPlan:
    """The (lanes, simd) of each layer whose interval is at most ``interval``, with the fewest
    DSP48E2s in total (`LayerPlan.dsps`: ceil(lanes / 2) x simd, the engine packing two lanes a
    DSP) among the plans whose block RAM (`engine_bram18`, an estimate) stays within
    ``bram_budget`` RAMB36 (None: any); ties: less block RAM, fewer multipliers, then fewer lanes
    (fewer output registers). A layer that cannot meet the interval (its input stream alone takes
    longer) gets its fastest plan; if no combination fits the budget, the least block RAM wins."""
    _check_base(base)
    if isinstance(interval, bool) or not isinstance(interval, int) or interval < 1:
        raise ValueError(f"interval must be a positive int, not {interval!r}")
    if bram_budget is not None and (isinstance(bram_budget, bool) or not isinstance(bram_budget, (int, float))
                                    or bram_budget < 0):
        raise ValueError(f"bram_budget must be a non-negative number or None, not {bram_budget!r}")
    options = []  # per layer: its plans of least DSPs for their block RAM (a Pareto front)
    for layer in base.layers:
        g = FC.engine_geometry(layer)
        meets, fastest = [], None
        for lanes in range(1, min(lanes_max, g.out_channels) + 1):
            for simd in range(1, min(simd_max, g.fan_in) + 1):
                t = FC.layer_interval(g, lanes, simd)
                if t > interval and fastest is not None and t > fastest[0][0]:
                    continue
                lp = LayerPlan(layer.name, lanes, simd, t, engine_bram18(g, lanes, simd))
                key = (lp.dsps, lp.bram18, lp.multipliers, lanes)
                if t <= interval:
                    meets.append((key, lp))
                if fastest is None or (t, key) < fastest[0]:
                    fastest = ((t, key), lp)
        meets = sorted(meets, key=lambda x: x[0]) or [(fastest[0][1], fastest[1])]
        front, least = [], None
        for _, lp in meets:  # by DSPs: each plan with less block RAM than every one before it
            if least is None or lp.bram18 < least:
                front.append(lp)
                least = lp.bram18
        options.append(front)
    budget = None if bram_budget is None else int(2 * bram_budget)
    best = None
    for combo in itertools.product(*options):
        b18 = sum(p.bram18 for p in combo)
        over = budget is not None and b18 > budget
        key = (over, b18 if over else 0, sum(p.dsps for p in combo), b18, sum(p.multipliers for p in combo),
               sum(p.lanes for p in combo))
        if best is None or key < best[0]:
            best = (key, combo)
    return FillPlan(tuple(best[1]))


def _first_done(base: IntBase, plan: FillPlan) -> int:
    """The first entry's ``done``, counted from ``start``, its image's first beat offered the
    cycle after: engine 0 takes the image (`layer_cycles`) through a register slice; each later
    engine's last input beat is its predecessor's last value, taken the cycle before that one's
    ``done``, a slice later, and its ``done`` is its pass less its load after that beat; then the
    last value's slice to the writer and the writer's tail (the label after the last logit, the
    tail's last line: `WRITER_TAIL`)."""
    t = 0
    for k, (layer, lp) in enumerate(zip(base.layers, plan.layers)):
        c = FC.layer_cycles(layer, lp.lanes, lp.simd)
        t = SLICE_LATENCY + (c if k == 0 else t - 1 + c - FC.engine_geometry(layer).in_size)
    return t + SLICE_LATENCY + WRITER_TAIL


def fill_done_cycles(base: IntBase, plan: FillPlan, n: int) -> list[int]:
    """Each of ``n`` back-to-back samples' entry-written cycle (``done``), counted from the fill's
    ``start``, with an always-valid image stream: the first entry's latency, then one
    `FillPlan.interval` a sample (the slowest engine sets the pace; the engines before it are
    held by its ping-pong buffer, the ones after it keep up)."""
    _check_base(base)
    if not isinstance(plan, FillPlan) or len(plan.layers) != len(base.layers):
        raise ValueError("plan must be a FillPlan of this base's layers")
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative int, not {n!r}")
    first, step = _first_done(base, plan), plan.interval
    return [first + i * step for i in range(n)]


def fill_report(base: IntBase, plan: FillPlan, samples: int, clock_mhz: float = FC.CLOCK_MHZ) -> dict:
    """The fill of ``samples`` images: cycles (the last entry's ``done``), the plan per layer,
    images/s in steady state; times are cycles / an assumed clock."""
    last = fill_done_cycles(base, plan, samples)[-1] if samples else 0
    return {
        "samples": samples, "fill_cycles": last, "interval_cycles": plan.interval,
        "multipliers": plan.multipliers, "dsps": plan.dsps, "brams_estimate": plan.brams,
        "layers": [{"layer": p.name, "lanes": p.lanes, "simd": p.simd, "dsps": p.dsps, "brams_estimate": p.brams,
                    "interval": p.interval}
                   for p in plan.layers],
        "clock_mhz_assumed": clock_mhz,
        "fill_ms": round(last / (clock_mhz * 1e3), 3),
        "images_per_s": round(clock_mhz * 1e6 / plan.interval, 1),
        "note": f"cycles / an assumed {clock_mhz:g} MHz clock (no timing closure exists)",
    }


# The core registers an accepted FILL before the loader sees it (hw/core.py: the command's decode
# stays off the loader's registers), so the loader is armed, and the pipeline starts, two cycles
# after the command's cycle.
COMMAND_LAG = 2


def first_byte_lag(beat_bits: int) -> int:
    """The fill feeder (hw/fill_feeder.py): cycles from the cycle a FILL's first beat is taken to the
    cycle its first image byte is offered: 1 (the beat register), 2 when a beat is the label alone."""
    return 2 if beat_bits // 8 == LABEL_BYTES else 1


def fill_command_cycles(base: IntBase, plan: FillPlan, n: int, beat_bits: int, first_beat: int = 1) -> int:
    """FILL_CYCLES (the core's count, from the cycle the loader is armed, `COMMAND_LAG` cycles after
    the FILL command, to the cycle before its commit) of ``n`` images whose first beat is offered
    ``first_beat`` (>= 1) cycles after the command, the stream never idle after it: the pipeline
    starts the cycle the loader is armed, the loader takes the first beat then or when it comes,
    its first image byte comes `first_byte_lag` after that, and the commit follows the last
    entry's ``done``."""
    if n < 1:
        raise ValueError(f"a fill has at least one image, not {n!r}")
    if isinstance(first_beat, bool) or not isinstance(first_beat, int) or first_beat < 1:
        raise ValueError(f"first_beat must be an int >= 1, not {first_beat!r}")
    wait = max(first_beat, COMMAND_LAG) - COMMAND_LAG
    return wait + fill_done_cycles(base, plan, n)[-1] + first_byte_lag(beat_bits)


# PREDICT (hw/sequencer.py's forward-only mode, docs/pl-predict.md): an entry's ``done`` -> its
# pass's first line issued: the writer's ``entries`` register, the sequencer's registered
# "entry written" flag, P_WAIT.
PASS_WAIT = 3
# the last pass line issued + the datapath (`cycles.fwd_latency`) + the head unit's y and softmax
# -> the result's first beat on m_axis: the result FIFO's write and buffered read, the streamer's
# pop, its beat register, its output FIFO (hw/stream_out.py).
RESULT_LAG = 4


def predict_schedule(base: IntBase, plan: FillPlan, n: int, config, first_beat: int = 1) -> dict:
    """PREDICT of ``n`` images on the build ``config`` (an `AcceleratorConfig` whose PL base is
    ``base``), m_axis always ready, the input's first beat offered ``first_beat`` cycles after
    the command and never idle after it. Cycles count from the cycle the loader is armed, as
    PREDICT_CYCLES does: ``done`` (each entry written, `fill_command_cycles` less one), ``issue``
    (each pass's first line: `PASS_WAIT` after its entry, or when the head unit is free again:
    a pass is the job's entry lines then max(F_GAP, 2) + 1 cycles), ``result`` (each result's
    first beat), and ``cycles`` (PREDICT_CYCLES: the last result's last beat, counted inclusive).
    The results never wait for the stream (a result's beats and the streamer's pop fit a pass;
    checked). The ring's credits are assumed not to bind: ``in_flight`` estimates the most images
    between their first beat and their pass (an image's first beat taken its ``done`` less the
    first image's latency, plus one waiting in engine 0's second buffer), and it must leave a slot
    spare (`RING_ENTRIES`); the RTL tests check that no first beat waited for a slot."""
    from . import cycles as CY  # the job schedule's latencies (cycles imports config, not this module)
    from .model import Geometry
    from .packing import Layout, result_beats
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"a PREDICT has at least one image, not {n!r}")
    g = Geometry(tuple(base.tap_dims), config.geometry.rank, base.classes)
    tm = CY.Timing.of(Layout(g, config.lanes), config)
    build = tm.geometry
    lines = tm.layout.sample_lines
    period = lines + max(tm.f_gap, 2) + 1
    beats = result_beats(build.classes, 4 * config.lanes)
    if beats + 1 > period:
        raise ValueError(f"{beats} result beats a pass of {period} cycles: the stream would bind (not modelled)")
    y_latency = build.taps + (3 + CY.tree_levels(build.rank) + 1) + 3
    to_result = lines + tm.fwd + y_latency + CY.softmax_latency(build.classes) + RESULT_LAG
    done = [c - 1 for c in (fill_command_cycles(base, plan, i + 1, 4 * config.lanes, first_beat) for i in range(n))]
    issue = []
    for d in done:
        issue.append(d + PASS_WAIT if not issue else max(d + PASS_WAIT, issue[-1] + period))
    result = [i + to_result for i in issue]
    # images started (each estimated at its done less the first image's latency) before pass j's
    # last line, less the j passed before: in the ring then; one more may wait in engine 0
    in_flight = max(sum(d - done[0] < i + lines for d in done) - j for j, i in enumerate(issue)) + 1
    if in_flight >= RING_ENTRIES:
        raise ValueError(f"about {in_flight} images in flight: the ring's {RING_ENTRIES} slots would bind")
    return {"done": done, "issue": issue, "result": result, "cycles": result[-1] + beats,
            "period": period, "in_flight": in_flight, "result_beats": beats}


def predict_command_cycles(base: IntBase, plan: FillPlan, n: int, config, first_beat: int = 1) -> int:
    """PREDICT_CYCLES of ``n`` images (`predict_schedule`)."""
    return predict_schedule(base, plan, n, config, first_beat)["cycles"]
