"""The SGD update unit: new weight = saturate(weight - round(gradient sum * 2**-shift)).

One instance updates an A line (R*P weights) per cycle from the dA accumulators; the head unit
updates B a tap at a time with another. The learning rate is already inside the accumulated
sums (docs/numerics.md), so the step is a shift, an addition and a saturation.

The accumulators do not hold the gradient sum g itself but ``start(shift) - g``: they restart
from ``2**(shift-1) - 1`` and the passes subtract their products. Then

    w - round_half_up(g / 2**shift) == w + floor((2**(shift-1) - 1 - g) / 2**shift)

so the rounding costs no adder: the update is ``w + (acc >> shift)``, saturated (the bit-exact
model computes the left-hand side; the tests prove the two agree).
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..fixed import formats as F
from .arith import saturate
from .params import invalid

__all__ = ["SgdUpdate", "accumulator_start"]


def accumulator_start(shift: int) -> int:
    """The value a gradient accumulator restarts from (see the module docstring)."""
    return (1 << (shift - 1)) - 1 if shift > 0 else 0


class SgdUpdate(wiring.Component):
    """``count`` weights of ``W_BITS`` bits and their accumulators of ``acc_bits`` bits, one register stage."""

    def __init__(self, count: int, acc_bits: int, shift: int):
        for name, v in (("count", count), ("acc_bits", acc_bits)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise invalid(self, TypeError(f"{name} must be a positive integer, not {v!r}"))
        if isinstance(shift, bool) or not isinstance(shift, int) or shift < 0:
            raise invalid(self, ValueError(f"shift must be a non-negative integer, not {shift!r}"))
        self.count, self.acc_bits, self.shift = count, acc_bits, shift
        super().__init__({
            "weights": In(count * F.W_BITS),
            "accs": In(count * acc_bits),        # start(shift) - gradient sum
            "updated": Out(count * F.W_BITS),    # registered
        })

    def elaborate(self, platform):
        m = Module()
        w, a = F.W_BITS, self.acc_bits
        outs = []
        for i in range(self.count):
            weight = self.weights[i * w:(i + 1) * w].as_signed()
            step = self.accs[i * a:(i + 1) * a].as_signed() >> self.shift  # floor
            outs.append(saturate(m, weight + step, w, f"new{i}"))
        m.d.sync += self.updated.eq(Cat(*outs))
        return m
