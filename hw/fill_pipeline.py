"""The cache fill on the PL: images in, their cache entries written into the cache, samples overlapped.

A chain of streaming forward engines (hw/forward_engine.py), one per layer of the integer base
(`skip2lora.fixed.base_int.IntBase`), each with the lanes and simd of a `fill_plan.FillPlan`,
beside the cache writer (hw/cache_writer.py):

    image  -> engine 0 and the writer's tap 0 (one stream, both take each beat)
    engine k's values -> engine k+1 and the writer's tap k+1
    the last engine's values -> the writer's logits
    label  -> the writer's label queue (one a sample, taken as early as the writer can queue it)

Every engine's input buffer is a ping-pong pair, so engine k works on sample n while engine k+1
works on sample n-1; the writer assembles each tap's lines on its own and writes them at their
entry's place, so the cache holds what the host's `IntBase.encode` + `packing.pack_cache_for`
would have streamed, bit for bit: entry n at ``first_line + n * ENTRY_LINES`` (the build's entry
lines `HwParams.sample_lines`, where the core's jobs read it), the base's own layout at its start;
the lines past it in a build with maxima (zeros in `pack_cache_for`) are left unwritten, as no job
of the base's geometry reads them. The base may be any model that fits the build's maxima. The chain's throughput is its slowest engine's interval
(`fill_plan.FillPlan.interval`); `fill_plan.fill_done_cycles` is its cycle model.
"""

from __future__ import annotations

from amaranth.hdl import Module
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from ..fixed import formats as F
from ..fixed.base_int import IntBase
from ..fixed.fill_plan import RING_ENTRIES, FillPlan, plan_fill
from ..fixed.model import Geometry
from ..fixed.packing import Layout
from .cache_writer import SHIFT_BITS, CacheWriter
from .forward_engine import ForwardEngine, activation_signature
from .params import HwParams, invalid, require_params
from .ports import write_port
from .register_slice import RegisterSlice

__all__ = ["FillPipeline", "base_geometry"]


def base_geometry(base: IntBase, params: HwParams) -> Geometry:
    """The geometry of the entries ``base`` fills: its taps and classes at the build's rank."""
    return Geometry(tuple(int(d) for d in base.tap_dims), params.R, int(base.classes))


def _broadcast(m, source, sinks):
    """One stream to several sinks: a beat moves when every sink takes it (each sink's valid
    waits for the others' ready, as a fork must)."""
    ready = 1
    for s in sinks:
        ready = ready & s.ready
    m.d.comb += source.ready.eq(ready)
    for i, s in enumerate(sinks):
        others = 1
        for j, o in enumerate(sinks):
            if j != i:
                others = others & o.ready
        m.d.comb += s.valid.eq(source.valid & others)


class FillPipeline(wiring.Component):
    """Ports: ``start`` (a pulse: a fill begins; the engines load their geometry, the writer
    takes ``first_line``), ``image`` (the quantized input integers, NHWC, sample after sample),
    ``label`` (one a sample), ``shift`` (per tap: the cache exponent less the tap's LSB exponent),
    ``write`` (the cache's write port), ``entries`` (entries written since ``start``), ``done``
    (a pulse per entry written). Only ``shift[0..K-1]`` of the base's K taps are used (the port
    has the build's tap slots)."""

    def __init__(self, base: IntBase, params: HwParams, plan: FillPlan | None = None):
        if not isinstance(base, IntBase):
            raise invalid(self, TypeError(f"base must be an IntBase, not {base!r}"))
        self.params = require_params(self, params)
        p = params
        self.geometry = g = base_geometry(base, p)
        if g.taps > p.K or g.classes > p.C or Layout(g, p.P).tap_lines > p.tap_lines:
            raise invalid(self, ValueError(f"the base's taps {g.dims} and {g.classes} classes do not fit the "
                                           f"build's {p.K} taps, {p.tap_lines} tap lines and {p.C} classes"))
        if plan is None:
            plan = plan_fill(base)
        if not isinstance(plan, FillPlan):
            raise invalid(self, TypeError(f"plan must be a FillPlan, not {plan!r}"))
        if len(plan.layers) != len(base.layers):
            raise invalid(self, ValueError(f"the plan has {len(plan.layers)} layers, the base {len(base.layers)}"))
        self.base, self.plan = base, plan
        # the blocks, made here so testbenches can watch them
        self.engines = [ForwardEngine(layer, lp.lanes, lp.simd) for layer, lp in zip(base.layers, plan.layers)]
        # entry n at first_line + n * ENTRY_LINES (PREDICT's ring: + (n mod RING_ENTRIES) * ENTRY_LINES)
        self.writer = CacheWriter(p, g, p.sample_lines, ring_entries=RING_ENTRIES)
        super().__init__({
            "start": In(1),
            "first_line": In(p.cache_addr_bits),
            "ring": In(1),       # at start: PREDICT's ring (entries wrap every RING_ENTRIES)
            "image": In(activation_signature()),
            "label": In(stream.Signature(F.LABEL_BITS)),
            "shift": In(SHIFT_BITS).array(p.K),
            "write": In(write_port(p.cache_addr_bits, p.beat_bits)),
            "entries": Out(16),
            "done": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        p, base = self.params, self.base
        engines, writer = self.engines, self.writer
        for k, e in enumerate(engines):
            m.submodules[f"engine{k}"] = e
        m.submodules.writer = writer
        K = len(base.tap_dims)
        m.d.comb += [writer.shift[k].eq(self.shift[k]) for k in range(K)]
        m.d.comb += [writer.tap_signed[k].eq(int(s)) for k, s in enumerate(base.tap_signed)]
        m.d.comb += [writer.start.eq(self.start), writer.first_line.eq(self.first_line),
                     writer.ring.eq(self.ring)]
        m.d.comb += [e.start.eq(self.start) for e in engines]
        wiring.connect(m, writer.write, wiring.flipped(self.write))
        wiring.connect(m, wiring.flipped(self.label), writer.label)

        # Every edge goes through register slices (hw/register_slice.py), one a sink, so no path
        # crosses from a block's ready to the block before it: a fork's valid and ready are
        # products of the slices' registers. Each slice adds a cycle (`fill_plan.SLICE_LATENCY`).
        def sliced(name, sink):
            s = m.submodules[name] = RegisterSlice(sink.p.shape())
            wiring.connect(m, s.o, sink)
            return s.i

        # image -> engine 0 and tap 0 (the raw integer, signed as the base's input)
        img = self.image
        e0, t0 = sliced("image_to_engine0", engines[0].act_in), sliced("image_to_tap0", writer.taps[0])
        m.d.comb += [e0.p.data.eq(img.p.data),
                     t0.p.eq(img.p.data.as_signed() if base.tap_signed[0] else img.p.data.as_unsigned())]
        _broadcast(m, img, [e0, t0])
        # engine k -> engine k+1 and tap k+1; the last engine -> the logits
        for k, e in enumerate(engines):
            out = e.values_out
            if k + 1 < len(engines):
                nxt = sliced(f"engine{k}_to_engine{k + 1}", engines[k + 1].act_in)
                tap = sliced(f"engine{k}_to_tap{k + 1}", writer.taps[k + 1])
                m.d.comb += [nxt.p.data.eq(out.p.data[:len(nxt.p.data)]), tap.p.eq(out.p.data)]
                _broadcast(m, out, [nxt, tap])
            else:
                logits = sliced(f"engine{k}_to_logits", writer.logits)
                m.d.comb += [logits.p.eq(out.p.data), logits.valid.eq(out.valid), out.ready.eq(logits.ready)]
        m.d.comb += [self.entries.eq(writer.entries), self.done.eq(writer.done)]
        return m
