"""The sequencer: runs epochs x mini-batches with no host involvement, issuing one line per cycle.

Per mini-batch of nb samples the line passes go out in the order

    F0, F1, G0, F2, G1, ..., F(nb-1), G(nb-2), G(nb-1), [2 idle], U, [2 idle]

(F = forward pass over a sample's S lines, G = backward pass over its SL tap lines, U = SGD update
of the SL A lines), so the head unit works on sample j while the MAC array runs F(j+1).
F(j+1) starts no earlier than ``head_latency - S`` cycles after F(j) ends, which makes t_j
ready exactly when G(j) is due (the last G waits for it). A job starts with SL lines of CLR.
`skip2lora.fixed.cycles` is the closed form of this schedule; the cycle counter must equal it.
"""

from __future__ import annotations

from amaranth.hdl import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..fixed import cycles
from .datapath import Op
from .params import HwParams, require_params

__all__ = ["Sequencer"]


class Sequencer(wiring.Component):
    def __init__(self, params: HwParams):
        self.params = require_params(self, params)
        p = params
        super().__init__({
            "start": In(1),          # configuration already checked
            "samples": In(16), "batch": In(16), "epochs": In(16),
            "busy": Out(1),
            "done": Out(1),          # one-cycle pulse at the end of a job
            # to the datapath
            "issue_valid": Out(1),
            "issue_op": Out(Op),
            "issue_line": Out(p.line_addr_bits),
            "issue_base": Out(p.cache_addr_bits),
            "issue_last": Out(1),
            "issue_epoch_first": Out(1),
            "t_take": Out(1),
            # to and from the head unit
            "t_ready": In(1),
            "b_update": Out(1),
            "clear_grads": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        p = self.params
        S, SL = p.S, p.SL
        L = cycles.forward_to_t(p.K, p.C)  # cycles from the end of F(j) until t_j is ready
        line = Signal(p.line_addr_bits)
        sample = Signal(16)   # first sample of the batch
        nb = Signal(16)       # samples in the batch
        jf = Signal(16)       # next sample to run forward (batch-relative)
        jg = Signal(16)       # next sample to run backward
        epoch = Signal(16)
        base_f = Signal(p.cache_addr_bits)
        base_g = Signal(p.cache_addr_bits)
        wait = Signal(range(max(L, S) + 2))  # cycles until t of the last forwarded sample is ready
        drain = Signal(2)

        remaining = Signal(16)
        m.d.comb += remaining.eq(self.samples - sample)
        with m.If(wait != 0):
            m.d.sync += wait.eq(wait - 1)
        m.d.sync += [self.done.eq(0)]

        def issue(op, last, base):
            m.d.comb += [self.issue_valid.eq(1), self.issue_op.eq(op), self.issue_line.eq(line),
                         self.issue_last.eq(last), self.issue_base.eq(base)]

        def begin_batch(first_sample):
            m.d.sync += [sample.eq(first_sample), jf.eq(0), jg.eq(0), line.eq(0)]

        with m.FSM() as fsm:
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [line.eq(0), epoch.eq(0), base_f.eq(0), wait.eq(0)]
                    begin_batch(0)
                    m.d.comb += self.clear_grads.eq(1)
                    m.next = "CLR"
            with m.State("CLR"):
                issue(Op.CLR, line == SL - 1, 0)
                m.d.sync += line.eq(line + 1)
                with m.If(line == SL - 1):
                    m.d.sync += [line.eq(0), nb.eq(_min(self.batch, remaining)), base_g.eq(base_f)]
                    m.next = "F"
            with m.State("F"):  # F(j+1) starts once t_j will be ready by the time it ends
                with m.If((line != 0) | (wait <= S)):
                    issue(Op.FWD, line == S - 1, base_f)
                    m.d.comb += self.issue_epoch_first.eq((sample == 0) & (jf == 0))
                    m.d.sync += line.eq(line + 1)
                    with m.If(line == S - 1):
                        m.d.sync += [line.eq(0), jf.eq(jf + 1), base_f.eq(base_f + S), wait.eq(L)]
                        with m.If((jf == 0) & (nb != 1)):
                            m.next = "F"
                        with m.Else():
                            m.next = "G"
            with m.State("G"):  # G(j) needs t_j from the head unit
                with m.If((line != 0) | self.t_ready):
                    issue(Op.BWD, line == SL - 1, base_g)
                    m.d.comb += self.t_take.eq(line == 0)
                    m.d.sync += line.eq(line + 1)
                    with m.If(line == SL - 1):
                        m.d.sync += [line.eq(0), jg.eq(jg + 1), base_g.eq(base_g + S)]
                        with m.If(jf < nb):
                            m.next = "F"
                        with m.Elif(jg + 1 < nb):
                            m.next = "G"
                        with m.Else():
                            m.d.sync += drain.eq(0)
                            m.next = "DRAIN_G"
            with m.State("DRAIN_G"):  # the last dA writes land
                m.d.sync += drain.eq(drain + 1)
                with m.If(drain == 1):
                    m.d.comb += self.b_update.eq(1)
                    m.next = "U"
            with m.State("U"):
                issue(Op.UPD, line == SL - 1, 0)
                m.d.sync += line.eq(line + 1)
                with m.If(line == SL - 1):
                    m.d.sync += [line.eq(0), drain.eq(0)]
                    m.next = "DRAIN_U"
            with m.State("DRAIN_U"):  # the last A writes land; then the next batch or the end
                m.d.sync += drain.eq(drain + 1)
                with m.If(drain == 1):
                    next_sample = sample + nb
                    with m.If(next_sample == self.samples):
                        with m.If(epoch + 1 == self.epochs):
                            m.d.sync += self.done.eq(1)
                            m.next = "IDLE"
                        with m.Else():
                            m.d.sync += [epoch.eq(epoch + 1), base_f.eq(0), base_g.eq(0),
                                         nb.eq(_min(self.batch, self.samples))]
                            begin_batch(0)
                            m.next = "F"
                    with m.Else():
                        m.d.sync += [base_g.eq(base_f), nb.eq(_min(self.batch, self.samples - next_sample))]
                        begin_batch(next_sample)
                        m.next = "F"
        m.d.comb += self.busy.eq(~fsm.ongoing("IDLE"))
        return m


def _min(a, b):
    from amaranth.hdl import Mux

    return Mux(a < b, a, b)
