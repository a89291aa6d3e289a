"""AXI4-Stream output: the adapter image (A lines, then B), TLAST on its last beat.

Same format as the adapter load (`skip2lora.fixed.packing`), so a read-back can be loaded again.
Backpressure is honoured beat by beat; nothing is dropped or repeated.
"""

from __future__ import annotations

from amaranth.hdl import Array, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .params import HwParams, require_params
from .stream_in import axis_signature

__all__ = ["AdapterStreamer"]


class AdapterStreamer(wiring.Component):
    def __init__(self, params: HwParams):
        self.params = require_params(self, params)
        p = params
        abits = p.line_bits
        self.segments = p.segments
        super().__init__({
            "m_axis": Out(axis_signature(p.beat_bits)),
            "start": In(1),
            "busy": Out(1),
            "a_addr": Out(abits), "a_data": In(p.a_line_bits),
            "b_beat": Out(16), "b_data": In(p.beat_bits),
        })

    def elaborate(self, platform):
        m = Module()
        p = self.params
        line = Signal(p.line_bits)
        seg = Signal(range(max(self.segments, 2)))
        bbeat = Signal(16)
        b_beats = p.layout.b_beats
        axis = self.m_axis
        # the A memory's registered read keeps the line on a_data while the address stays put
        segs = Array(self.a_data[i * p.beat_bits:(i + 1) * p.beat_bits] for i in range(self.segments))
        m.d.comb += [self.a_addr.eq(line), self.b_beat.eq(bbeat)]

        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [line.eq(0), seg.eq(0), bbeat.eq(0), self.busy.eq(1)]
                    m.next = "FETCH"
            with m.State("FETCH"):  # the A line's address is out; its data arrives READ_LATENCY later
                m.next = "FETCH2"
            with m.State("FETCH2"):
                m.next = "SEND_A"
            with m.State("SEND_A"):
                m.d.comb += [axis.valid.eq(1), axis.p.data.eq(segs[seg])]
                with m.If(axis.ready):
                    m.d.sync += seg.eq(seg + 1)
                    with m.If(seg == self.segments - 1):
                        m.d.sync += [seg.eq(0), line.eq(line + 1)]
                        with m.If(line == p.tap_lines - 1):
                            m.next = "SEND_B"
                        with m.Else():
                            m.next = "FETCH"
            with m.State("SEND_B"):
                m.d.comb += [axis.valid.eq(1), axis.p.data.eq(self.b_data), axis.p.last.eq(bbeat == b_beats - 1)]
                with m.If(axis.ready):
                    m.d.sync += bbeat.eq(bbeat + 1)
                    with m.If(bbeat == b_beats - 1):
                        m.d.sync += self.busy.eq(0)
                        m.next = "IDLE"
        # busy is a register (it leaves IDLE with the FSM): no state decode behind the core's command checks
        return m
