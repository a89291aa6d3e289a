"""The cache fill on the PL, functionally complete: an image in, its cache entry written into the cache.

A chain of forward engines (hw/forward_engine.py), one per layer of the integer base
(`skip2lora.fixed.base_int.IntBase`), with the cache writer (hw/cache_writer.py) beside it. A
sample runs as:

    start     every engine opens its input; the label is taken
    image     the quantized input integers (NHWC) go to engine 0 and, as tap 0, to the writer
    layer k   engine k's outputs go to engine k+1 (its input) and, as tap k+1, to the writer;
              the last engine's outputs are the base logits, the writer's tail
    label     the cycle after the last logit, the label goes to the writer; ``done`` pulses when
              the entry's last line is written

Exactly one source feeds the writer at any time (the chain runs layer after layer within a
sample), so the writer sees the entry's values in its order, and the cache holds what the host's
`IntBase.encode` + `packing.pack_cache` would have streamed. This increment is for correctness:
the engines run one after the other (`forward_cycles.fill_cycles` a sample); the
throughput the issue needs (engines working on different samples at once, and lanes over output
positions as well as channels) is the next step.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..fixed import formats as F
from ..fixed.base_int import IntBase
from .cache_writer import SHIFT_BITS, CacheWriter
from .forward_engine import ForwardEngine, activation_signature
from .params import HwParams, invalid, require_params
from .ports import write_port

__all__ = ["FillPipeline"]


class FillPipeline(wiring.Component):
    def __init__(self, base: IntBase, params: HwParams, lanes: int = 8):
        if not isinstance(base, IntBase):
            raise invalid(self, TypeError(f"base must be an IntBase, not {base!r}"))
        self.params = require_params(self, params)
        p = params
        g = p.model_geometry
        if tuple(base.tap_dims) != tuple(g.dims) or base.classes != g.classes:
            raise invalid(self, ValueError(f"the base's taps {tuple(base.tap_dims)} and {base.classes} classes do "
                                           f"not match the build's model {tuple(g.dims)} and {g.classes}"))
        self.base, self.lanes = base, lanes
        super().__init__({
            "start": In(1),                        # a sample begins (the chain is idle: ``busy`` low)
            "label": In(F.LABEL_BITS),             # taken at ``start``
            "image": In(activation_signature()),   # the quantized input integers, NHWC
            "origin": In(1),                       # first_line is the next entry's first line
            "first_line": In(p.cache_addr_bits),
            "shift": In(SHIFT_BITS).array(p.K),    # per tap: the cache exponent - the tap's LSB exponent
            "write": In(write_port(p.cache_addr_bits, p.beat_bits)),
            "busy": Out(1),
            "done": Out(1),                        # one-cycle pulse: a sample's entry is written
        })

    def elaborate(self, platform):
        m = Module()
        p, base = self.params, self.base
        engines = [ForwardEngine(layer, min(self.lanes, layer.out_channels)) for layer in base.layers]
        for k, e in enumerate(engines):
            m.submodules[f"engine{k}"] = e
        m.submodules.writer = writer = CacheWriter(p)
        m.d.comb += [writer.shift[k].eq(self.shift[k]) for k in range(p.K)]
        m.d.comb += [writer.tap_signed[k].eq(int(s)) for k, s in enumerate(base.tap_signed)]
        m.d.comb += [writer.start.eq(self.origin), writer.first_line.eq(self.first_line)]
        wiring.connect(m, writer.write, wiring.flipped(self.write))
        m.d.comb += [e.start.eq(self.start) for e in engines]
        label = Signal(F.LABEL_BITS, reset_less=True)
        with m.If(self.start):
            m.d.sync += label.eq(self.label)

        # image -> engine 0 and tap 0
        img, e0 = self.image, engines[0].act_in
        m.d.comb += [e0.valid.eq(img.valid), e0.p.data.eq(img.p.data), img.ready.eq(e0.ready)]
        feeds = [(img.valid & e0.ready,
                  Mux(int(base.tap_signed[0]), img.p.data.as_signed(), img.p.data.as_unsigned()))]
        # engine k -> engine k+1 and tap k+1; the last engine -> the logits
        for k, e in enumerate(engines):
            out = e.values_out
            if k + 1 < len(engines):
                nxt = engines[k + 1].act_in
                m.d.comb += [nxt.valid.eq(out.valid), nxt.p.data.eq(out.p.data[:len(nxt.p.data)]),
                             out.ready.eq(nxt.ready)]
                feeds.append((out.valid & nxt.ready, out.p.data))
            else:
                m.d.comb += out.ready.eq(1)
                feeds.append((out.valid, out.p.data))
        last = engines[-1].values_out
        label_next = Signal()
        m.d.sync += label_next.eq(last.valid & last.p.last)
        feeds.append((label_next, label))
        valid = Signal()
        value = Signal.like(writer.values.p)
        for taken, v in feeds:  # one source at a time (see the module docstring)
            with m.If(taken):
                m.d.comb += [valid.eq(1), value.eq(v)]
        m.d.comb += [writer.values.valid.eq(valid), writer.values.p.eq(value)]
        # done: the writer's entry; busy from start to done
        m.d.comb += self.done.eq(writer.done)
        with m.If(self.start):
            m.d.sync += self.busy.eq(1)
        with m.Elif(writer.done):
            m.d.sync += self.busy.eq(0)
        return m
