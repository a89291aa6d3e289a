"""The job cycle counter: counts every cycle the sequencer is busy (cleared when a job starts).

Its value is the figure the cycle model (`skip2lora.fixed.cycles.job_cycles`) predicts exactly.
"""

from __future__ import annotations

from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .params import invalid

__all__ = ["CycleCounter"]


class CycleCounter(wiring.Component):
    def __init__(self, width: int = 64):
        if isinstance(width, bool) or not isinstance(width, int) or width < 1:
            raise invalid(self, TypeError(f"Counter width must be a positive integer, not {width!r}"))
        self.width = width
        super().__init__({"enable": In(1), "clear": In(1), "count": Out(width)})

    def elaborate(self, platform):
        m = Module()
        with m.If(self.clear):
            m.d.sync += self.count.eq(0)
        with m.Elif(self.enable):
            m.d.sync += self.count.eq(self.count + 1)
        return m
