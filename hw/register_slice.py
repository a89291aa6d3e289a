"""A register slice (skid buffer): one stream in, the same stream out, every output registered.

Between two blocks that each decide their ``ready`` from deep state (an engine's input counters,
another engine's pipeline enable), a direct connection chains both decisions into one path. The
slice cuts it in both directions: ``i.ready`` is a register (the skid register is empty, kept
as such so no inverter follows it) and ``o.valid`` / ``o.payload`` are registers, so no path
crosses the slice. It takes a beat every
cycle while ``o`` is taken every cycle (full throughput) and adds one cycle of latency; when ``o``
stalls, the beat already accepted waits in the skid register. Hand-written because
amaranth.lib.fifo's two-entry FIFOs read their memory combinationally (no registered ``ready``).
"""

from __future__ import annotations

from amaranth.hdl import Module, Shape, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from .params import invalid

__all__ = ["RegisterSlice"]


class RegisterSlice(wiring.Component):
    """``payload``: the stream's payload shape (or layout); ``i`` the sink, ``o`` the source."""

    def __init__(self, payload):
        try:
            Shape.cast(payload)
        except TypeError:
            raise invalid(self, TypeError(f"payload must be a shape-castable object, not {payload!r}")) from None
        self.payload_shape = payload
        super().__init__({"i": In(stream.Signature(payload)), "o": Out(stream.Signature(payload))})

    def elaborate(self, platform):
        m = Module()
        room = Signal(init=1)  # the skid register is empty: ``i.ready`` itself, a flop (no inverter)
        skid = Signal.like(self.o.payload, reset_less=True, name="skid")
        m.d.comb += self.i.ready.eq(room)
        with m.If(self.o.ready | ~self.o.valid):
            # o loads: the waiting beat first, else the input's
            with m.If(~room):
                m.d.sync += [self.o.payload.eq(skid), self.o.valid.eq(1), room.eq(1)]
            with m.Else():
                m.d.sync += [self.o.payload.eq(self.i.payload), self.o.valid.eq(self.i.valid)]
        with m.Elif(self.i.valid & room):
            # o holds: the beat taken now waits
            m.d.sync += [skid.eq(self.i.payload), room.eq(0)]
        return m
