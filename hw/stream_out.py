"""AXI4-Stream output: the adapter image (A lines, then B), TLAST on its last beat.

Same format as the adapter load (`skip2lora.fixed.packing`), so a read-back can be loaded again.
Backpressure is honoured beat by beat; nothing is dropped or repeated. A beat is selected (the A
line's segment, or B's beat from the head unit) into a register and then written into a small
buffered FIFO whose registered output drives the AXI4-Stream interface: no select sits in front
of the interface or of the FIFO's storage.
"""

from __future__ import annotations

from amaranth.hdl import Array, Cat, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from .params import HwParams, require_params
from .ports import read_port
from .stream_in import axis_signature

__all__ = ["AdapterStreamer", "OUT_DEPTH"]

OUT_DEPTH = 5  # beats the output FIFO holds: the smallest depth that keeps one beat a cycle (4 loses a quarter)


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
            "a_rd": In(read_port(abits, p.a_line_bits)),   # the A memory, a line at a time
            "b_rd": In(read_port(16, p.beat_bits)),        # B, a beat at a time (head unit 0)
        })

    def elaborate(self, platform):
        m = Module()
        p = self.params
        line = Signal(p.line_bits)
        seg = Signal(range(max(self.segments, 2)))
        bbeat = Signal(16)
        b_beats = p.layout.b_beats
        axis = self.m_axis
        m.submodules.out = out = SyncFIFOBuffered(width=p.beat_bits + 1, depth=OUT_DEPTH)
        m.d.comb += [axis.valid.eq(out.r_rdy), axis.p.data.eq(out.r_data[:-1]), axis.p.last.eq(out.r_data[-1]),
                     out.r_en.eq(axis.ready)]
        # A beat is selected into a register, then written into the FIFO the next cycle; one is
        # selected only while the FIFO keeps room for it (at most one write in flight).
        wr_valid, wr_b = Signal(), Signal()
        wr_a = Signal(p.beat_bits, reset_less=True)      # the A and the B beat select into their own
        wr_bdata = Signal(p.beat_bits + 1, reset_less=True)  # registers; one 2:1 select into the FIFO
        room = Signal()
        m.d.comb += [out.w_en.eq(wr_valid), out.w_data.eq(Mux(wr_b, wr_bdata, wr_a)),
                     # level + wr_valid <= OUT_DEPTH - 2, as compares of the small level alone
                     room.eq((out.level <= OUT_DEPTH - 3) | ((out.level == OUT_DEPTH - 2) & ~wr_valid))]
        m.d.sync += wr_valid.eq(0)
        sending = Signal()  # beats still to be selected
        m.d.sync += self.busy.eq(sending | wr_valid | (out.level != 0))  # a register: STATUS reads it
        # the A memory's registered read keeps the line on a_rd.data while the address stays put
        segs = Array(self.a_rd.data[i * p.beat_bits:(i + 1) * p.beat_bits] for i in range(self.segments))
        m.d.comb += [self.a_rd.addr.eq(line), self.b_rd.addr.eq(bbeat)]

        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [line.eq(0), seg.eq(0), bbeat.eq(0), sending.eq(1), self.busy.eq(1)]
                    m.next = "FETCH"
            with m.State("FETCH"):  # the A line's address is out; its data arrives READ_LATENCY later
                m.next = "FETCH2"
            with m.State("FETCH2"):
                m.next = "SEND_A"
            with m.State("SEND_A"):
                with m.If(room):
                    m.d.sync += [wr_valid.eq(1), wr_b.eq(0), wr_a.eq(segs[seg]), seg.eq(seg + 1)]
                    with m.If(seg == self.segments - 1):
                        m.d.sync += [seg.eq(0), line.eq(line + 1)]
                        with m.If(line == p.tap_lines - 1):
                            m.next = "SEND_B"
                        with m.Else():
                            m.next = "FETCH"
            with m.State("SEND_B"):
                with m.If(room):
                    m.d.sync += [wr_valid.eq(1), wr_b.eq(1), wr_bdata.eq(Cat(self.b_rd.data, bbeat == b_beats - 1)),
                                 bbeat.eq(bbeat + 1)]
                    with m.If(bbeat == b_beats - 1):
                        m.d.sync += sending.eq(0)
                        m.next = "IDLE"
        return m
