"""AXI4-Stream output: the adapter image (A lines, then B), or PREDICT's results; TLAST on the last beat.

The adapter image has the adapter load's format (`skip2lora.fixed.packing`), so a read-back can
be loaded again. PREDICT's results (docs/pl-predict.md) come from the head unit (``result``) into a
FIFO of `RESULT_DEPTH`; each is `result_beats` beats: the build's C y words (int16, Z format), then
the class word, zero padded (`packing.unpack_results` reads them). ``pass_issued`` counts the
forward passes whose results are still to come; ``room`` says one more fits the FIFO (the
sequencer waits for it). An ``abort`` ends the frame: the result being sent is finished, then one
beat of 0xFFFF words with TLAST (the host's receive DMA completes; its class word 0xFFFF is no
class), and the results still to come are dropped as they arrive.
Backpressure is honoured beat by beat; nothing is dropped or repeated. A beat is selected (the A
line's segment, or B's beat from the head unit) into a register and then written into a small
buffered FIFO whose registered output drives the AXI4-Stream interface: no select sits in front
of the interface or of the FIFO's storage.
"""

from __future__ import annotations

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from ..fixed.packing import result_beats
from .head import result_signature
from .params import HwParams, require_params
from .ports import read_port
from .stream_in import axis_signature

__all__ = ["AdapterStreamer", "OUT_DEPTH", "RESULT_DEPTH"]

OUT_DEPTH = 5  # beats the output FIFO holds: the smallest depth that keeps one beat a cycle (4 loses a quarter)
RESULT_DEPTH = 4  # PREDICT's results waiting for the stream (a pass takes ~100 cycles, a result 3 beats)


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
            "a_busy": Out(1),                              # the A memory's read port is the streamer's
            # PREDICT: the command (``count`` results), the head's results, a pass issued, room for
            # its result, the sequencer still issues, an abort; the last result beat was taken
            "predict": In(1),
            "count": In(16),
            "result": In(result_signature(p)),
            "pass_issued": In(1),
            "room": Out(1),
            "issuing": In(1),
            "abort": In(1),
            "r_done": Out(1),
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
        wr_valid, wr_b, wr_r = Signal(), Signal(), Signal()
        wr_a = Signal(p.beat_bits, reset_less=True)      # the A and the B beat select into their own
        wr_bdata = Signal(p.beat_bits + 1, reset_less=True)  # registers; a select of registers into the FIFO
        wr_rdata = Signal(p.beat_bits + 1, reset_less=True)  # (PREDICT's result beats have their own)
        room = Signal()
        m.d.comb += [out.w_en.eq(wr_valid), out.w_data.eq(Mux(wr_r, wr_rdata, Mux(wr_b, wr_bdata, wr_a))),
                     # level + wr_valid <= OUT_DEPTH - 2, as compares of the small level alone
                     room.eq((out.level <= OUT_DEPTH - 3) | ((out.level == OUT_DEPTH - 2) & ~wr_valid))]
        m.d.sync += wr_valid.eq(0)
        sending = Signal()  # beats still to be selected
        m.d.sync += self.busy.eq(sending | wr_valid | (out.level != 0))  # a register: STATUS reads it
        # the A memory's registered read keeps the line on a_rd.data while the address stays put
        segs = Array(self.a_rd.data[i * p.beat_bits:(i + 1) * p.beat_bits] for i in range(self.segments))
        m.d.comb += [self.a_rd.addr.eq(line), self.b_rd.addr.eq(bbeat)]

        # -- PREDICT's results: a FIFO, the passes whose results are still to come, the beat shifter
        C, RB = p.C, result_beats(p.C, p.beat_bits)
        rbits = (C + 1) * 16
        m.submodules.results = results = SyncFIFOBuffered(width=rbits, depth=RESULT_DEPTH)
        r_mode = Signal()                     # a PREDICT runs: results are taken
        res = self.result
        m.d.comb += [results.w_en.eq(res.valid & r_mode),
                     results.w_data.eq(Cat(*[res.p.y[c] for c in range(C)], res.p.cls.as_unsigned()[:16]))]
        outstanding = Signal(range(RESULT_DEPTH + 2))  # passes issued whose result is not taken yet
        pop = Signal()
        m.d.sync += outstanding.eq(outstanding + self.pass_issued - pop)
        m.d.comb += self.room.eq(outstanding < RESULT_DEPTH)
        rw = Signal(RB * p.beat_bits, reset_less=True)  # the result being sent, a beat at a time
        rbeat = Signal(range(max(RB, 2)))
        r_left = Signal(16)                   # results still to send (this one included)
        r_one = Signal(reset_less=True)       # r_left == 1
        m.d.sync += r_one.eq(r_left == 1)
        aborted = Signal()
        with m.If(self.abort):
            m.d.sync += aborted.eq(1)
        m.d.comb += [self.a_busy.eq(self.busy & ~r_mode),
                     self.r_done.eq(r_mode & axis.valid & axis.ready & axis.p.last)]

        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [line.eq(0), seg.eq(0), bbeat.eq(0), sending.eq(1), self.busy.eq(1)]
                    m.next = "FETCH"
                with m.Elif(self.predict):
                    m.d.sync += [r_mode.eq(1), r_left.eq(self.count), outstanding.eq(0), aborted.eq(0),
                                 sending.eq(1), self.busy.eq(1)]
                    m.next = "R_WAIT"
            with m.State("R_WAIT"):  # the next result from the FIFO
                with m.If(aborted):
                    m.next = "R_ABORT"
                with m.Elif(results.r_rdy):
                    m.d.comb += [results.r_en.eq(1), pop.eq(1)]
                    m.d.sync += [rw.eq(results.r_data), rbeat.eq(0)]
                    m.next = "R_SEND"
            with m.State("R_SEND"):
                with m.If(room):
                    end = rbeat == RB - 1
                    m.d.sync += [wr_valid.eq(1), wr_r.eq(1), wr_rdata.eq(Cat(rw[:p.beat_bits], end & r_one)),
                                 rw.eq(rw >> p.beat_bits), rbeat.eq(rbeat + 1)]
                    with m.If(end):
                        m.d.sync += r_left.eq(r_left - 1)
                        with m.If(r_one):
                            m.d.sync += sending.eq(0)
                            m.next = "R_END"
                        with m.Else():
                            m.next = "R_WAIT"
            with m.State("R_ABORT"):  # one beat of 0xFFFF words with TLAST ends the frame
                with m.If(room):
                    m.d.sync += [wr_valid.eq(1), wr_r.eq(1), wr_rdata.eq(Cat(Const(-1, p.beat_bits), Const(1, 1)))]
                    m.next = "R_FLUSH"
            with m.State("R_FLUSH"):  # the results still to come are dropped as they arrive
                m.d.comb += [results.r_en.eq(results.r_rdy), pop.eq(results.r_rdy)]
                with m.If(~self.issuing & (outstanding == 0)):
                    m.d.sync += sending.eq(0)
                    m.next = "R_END"
            with m.State("R_END"):  # r_mode falls once the output FIFO is empty
                with m.If(~wr_valid & (out.level == 0)):
                    m.d.sync += r_mode.eq(0)
                    m.next = "IDLE"
            with m.State("FETCH"):  # the A line's address is out; its data arrives READ_LATENCY later
                m.next = "FETCH2"
            with m.State("FETCH2"):
                m.next = "SEND_A"
            with m.State("SEND_A"):
                with m.If(room):
                    m.d.sync += [wr_valid.eq(1), wr_b.eq(0), wr_r.eq(0), wr_a.eq(segs[seg]), seg.eq(seg + 1)]
                    with m.If(seg == self.segments - 1):
                        m.d.sync += [seg.eq(0), line.eq(line + 1)]
                        with m.If(line == p.tap_lines - 1):
                            m.next = "SEND_B"
                        with m.Else():
                            m.next = "FETCH"
            with m.State("SEND_B"):
                with m.If(room):
                    m.d.sync += [wr_valid.eq(1), wr_b.eq(1), wr_r.eq(0), wr_bdata.eq(Cat(self.b_rd.data, bbeat == b_beats - 1)),
                                 bbeat.eq(bbeat + 1)]
                    with m.If(bbeat == b_beats - 1):
                        m.d.sync += sending.eq(0)
                        m.next = "IDLE"
        return m
