"""The SGD update unit: new weight = saturate(weight - round(gradient sum * 2**-shift)).

One instance updates an A line (R*P weights) per cycle from the dA accumulators; the head unit
updates B a tap at a time with another. The learning rate is already inside the accumulated
sums (docs/numerics.md), so the step is a rounding shift, a subtraction and a saturation.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..fixed import formats as F
from .arith import round_shift, saturate

from .params import invalid

__all__ = ["SgdUpdate"]


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
            "grads": In(count * acc_bits),
            "updated": Out(count * F.W_BITS),  # registered
        })

    def elaborate(self, platform):
        m = Module()
        w, a = F.W_BITS, self.acc_bits
        outs = []
        for i in range(self.count):
            weight = self.weights[i * w:(i + 1) * w].as_signed()
            grad = self.grads[i * a:(i + 1) * a].as_signed()
            step = round_shift(m, grad, self.shift, a + 1, f"step{i}")
            new = saturate(m, weight - step, w, f"new{i}")
            outs.append(new)
        m.d.sync += self.updated.eq(Cat(*outs))
        return m
