"""The batch fetcher: asks the DDR reader for a mini-batch's cache entries, in the epoch's order.

In DDR mode (CACHE_MODE.ddr) the sequencer starts a fetch of the next mini-batch (its first
position ``s0`` in the epoch's order, its size ``nb``, the batch buffer's half) while the current
one runs its passes; the fetcher reads each position's sample index from the order buffer (or,
without SHUFFLE, takes the position itself), and hands (entry, slot) requests to `DDRReader`,
slot ``half * ddr_batch + k`` for the batch's k-th sample. ``ready`` (a register) is 1 when every
requested entry has been written to the batch buffer; the sequencer's BATCH waits for it.

A request takes five cycles (the order buffer's read, then the handshake); the reader needs
`Layout.sample_lines` cycles of data per entry, so the requests stay ahead of the data.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from ..fixed import formats as F
from .ddr_reader import request_layout
from .job import JOB_LAYOUT
from .memories import READ_LATENCY
from .params import HwParams, bits_for, invalid, require_params
from .ports import read_port

__all__ = ["BatchFetcher", "control_signature"]

POSITION_BITS = bits_for(F.SAMPLES_MAX)


def control_signature(params: HwParams) -> wiring.Signature:
    """Sequencer -> fetcher, the sequencer's view: ``start`` (a pulse; ``s0``, ``nb``, ``half`` are
    taken with it); ``ready`` (no fetch running: the last one's entries are all in the buffer)."""
    return wiring.Signature({"start": Out(1), "s0": Out(POSITION_BITS), "nb": Out(bits_for(params.ddr_batch)),
                             "half": Out(1), "ready": In(1, init=1)})


def slot_count(params: HwParams) -> int:
    return 2 * params.ddr_batch


class BatchFetcher(wiring.Component):
    def __init__(self, params: HwParams):
        self.params = require_params(self, params)
        p = params
        if not p.ddr:
            raise invalid(self, ValueError(f"the build {p.config.name!r} has no DDR path"))
        self.slot_bits = bits_for(slot_count(p) - 1)
        super().__init__({
            "ctl": In(control_signature(p)),
            "job": In(JOB_LAYOUT),  # shuffle
            "order_rd": In(read_port(bits_for(p.order_depth - 1), p.order_bits)),
            "requests": Out(stream.Signature(request_layout(POSITION_BITS, self.slot_bits))),
            "filled": In(stream.Signature(self.slot_bits, always_ready=True)),
        })

    def elaborate(self, platform):
        m = Module()
        p = self.params
        s0 = Signal(POSITION_BITS, reset_less=True)
        nb = Signal.like(self.ctl.nb, reset_less=True)
        half = Signal(reset_less=True)
        k = Signal.like(nb)
        remaining = Signal.like(nb)   # entries requested or to request, not yet written
        wait = Signal(range(READ_LATENCY + 2))
        ready = self.ctl.ready  # a register, 1 from reset
        m.d.comb += self.order_rd.addr.eq(s0 + k)
        with m.If(self.filled.valid):
            m.d.sync += remaining.eq(remaining - 1)
            with m.If(remaining == 1):
                m.d.sync += ready.eq(1)
        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.ctl.start):
                    m.d.sync += [s0.eq(self.ctl.s0), nb.eq(self.ctl.nb), half.eq(self.ctl.half), k.eq(0),
                                 remaining.eq(self.ctl.nb), ready.eq(0), wait.eq(READ_LATENCY + 1)]
                    m.next = "READ"
            with m.State("READ"):  # the order buffer's registered read of position s0 + k
                m.d.sync += wait.eq(wait - 1)
                with m.If(wait == 1):
                    m.d.sync += [self.requests.valid.eq(1),
                                 self.requests.p.entry.eq(Mux(self.job.shuffle, self.order_rd.data, s0 + k)),
                                 self.requests.p.slot.eq(Mux(half, p.ddr_batch + k, k))]
                    m.next = "REQUEST"
            with m.State("REQUEST"):
                with m.If(self.requests.ready):
                    m.d.sync += [self.requests.valid.eq(0), k.eq(k + 1), wait.eq(READ_LATENCY + 1)]
                    with m.If(k + 1 == nb):
                        m.next = "IDLE"
                    with m.Else():
                        m.next = "READ"
        return m
