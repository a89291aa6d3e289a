"""A sequential restoring divider: one quotient bit per cycle, a subtraction and a multiplexer deep.

The scalar unit divides a handful of numbers per job and one per mini-batch; a divider that takes
``quotient_bits`` cycles costs one subtractor of ``divisor_bits + 1`` bits instead of an array.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .params import invalid

__all__ = ["Divider"]


class Divider(wiring.Component):
    """``quotient = dividend // divisor`` and ``remainder = dividend % divisor``.

    Precondition (the caller's): ``dividend < divisor * 2**quotient_bits`` and ``divisor > 0``.
    ``start`` latches the operands; ``done`` pulses ``quotient_bits + 1`` cycles later, and the
    results stay until the next start.
    """

    def __init__(self, dividend_bits: int, divisor_bits: int, quotient_bits: int):
        for name, v in (("dividend_bits", dividend_bits), ("divisor_bits", divisor_bits),
                        ("quotient_bits", quotient_bits)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise invalid(self, TypeError(f"{name} must be a positive integer, not {v!r}"))
        if quotient_bits > dividend_bits:
            raise invalid(self, ValueError(f"quotient_bits ({quotient_bits}) exceeds dividend_bits "
                                           f"({dividend_bits})"))
        self.dividend_bits, self.divisor_bits, self.quotient_bits = dividend_bits, divisor_bits, quotient_bits
        super().__init__({
            "start": In(1),
            "dividend": In(dividend_bits),
            "divisor": In(divisor_bits),
            "quotient": Out(quotient_bits),
            "remainder": Out(divisor_bits),
            "done": Out(1),
        })

    @staticmethod
    def latency(quotient_bits: int) -> int:
        return quotient_bits + 1

    def elaborate(self, platform):
        m = Module()
        qb, db = self.quotient_bits, self.divisor_bits
        low_bits = qb  # dividend bits shifted in one per cycle
        rem = Signal(db + 1)                 # < divisor, one spare bit for the shift
        low = Signal(low_bits)               # the dividend's bits still to come, MSB first
        divisor = Signal(db)
        count = Signal(range(qb + 1))
        busy = Signal()
        m.d.sync += self.done.eq(0)
        with m.If(self.start):
            m.d.sync += [rem.eq(self.dividend >> qb), low.eq(self.dividend[:qb]), divisor.eq(self.divisor),
                         count.eq(qb), busy.eq(1)]
        with m.Elif(busy):
            shifted = Signal(db + 1)
            diff = Signal(db + 2)
            m.d.comb += [shifted.eq(Cat(low[-1], rem[:db])), diff.eq(shifted - divisor)]
            take = ~diff[-1]
            m.d.sync += [low.eq(Cat(take, low[:-1])), count.eq(count - 1)]
            with m.If(take):
                m.d.sync += rem.eq(diff[:db + 1])
            with m.Else():
                m.d.sync += rem.eq(shifted)
            with m.If(count == 1):
                m.d.sync += [busy.eq(0), self.done.eq(1)]
        m.d.comb += [self.quotient.eq(low), self.remainder.eq(rem[:db])]
        return m
