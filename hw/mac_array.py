"""The P-lane multiply-accumulate array: R x P multipliers fed one cache line per cycle.

Lane j multiplies the line's code q_j by one operand per rank r:

* forward pass  (``backward = 0``): the operand is the A word A_k[r, j] of the same line, and the
  array sums each rank's P products (``sums[r] = A_k[r, line] . q_line``);
* backward pass (``backward = 1``): the operand is the per-sample factor t_k[r] (the same for
  every lane), and the array hands out the products t_k[r] * q_j for the dA accumulators.

Two register stages: products one cycle after the inputs, sums one cycle after the products.
"""

from __future__ import annotations

from amaranth.hdl import Module, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..fixed import formats as F
from .params import HwParams, invalid

__all__ = ["MacArray", "adder_tree"]


def adder_tree(m: Module, terms, width: int, name: str):
    """Balanced tree of additions (log2 depth, combinational); returns the sum signal."""
    level = list(terms)
    depth = 0
    while len(level) > 1:
        nxt = []
        for i in range(0, len(level) - 1, 2):
            s = Signal(signed(width), name=f"{name}_l{depth}_{i // 2}")
            m.d.comb += s.eq(level[i] + level[i + 1])
            nxt.append(s)
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
        depth += 1
    out = Signal(signed(width), name=f"{name}_sum")
    m.d.comb += out.eq(level[0])
    return out


class MacArray(wiring.Component):
    def __init__(self, params: HwParams):
        if not isinstance(params, HwParams):
            raise invalid(self, TypeError(f"params must be HwParams, not {params!r}"))
        self.params = params
        p = params
        self.prod_bits = p.mul_bits + p.code_bits
        self.sum_bits = F.W_BITS + p.code_bits + (p.P - 1).bit_length()
        super().__init__({
            "valid": In(1),
            "backward": In(1),
            "codes": In(p.beat_bits),          # the cache line: P 4-bit codes
            "signed_codes": In(1),             # the line's tap uses signed codes
            "a_line": In(p.a_line_bits),       # A words (r, j) at bits (r*P + j)*16
            "t": In(signed(F.T_BITS)).array(p.R),  # backward operand per rank
            "products": Out(signed(self.prod_bits)).array(p.R, p.P),  # stage 1
            "products_valid": Out(1),
            "sums": Out(signed(self.sum_bits)).array(p.R),           # stage 2 (forward)
            "sums_valid": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        p = self.params
        backward_1 = Signal()
        for j in range(p.P):
            raw = self.codes[4 * j:4 * j + 4]
            q = Signal(signed(p.code_bits), name=f"q{j}")
            m.d.comb += q.eq(raw.as_unsigned())
            with m.If(self.signed_codes):
                m.d.comb += q.eq(raw.as_signed())
            for r in range(p.R):
                w = (r * p.P + j) * F.W_BITS
                operand = Signal(signed(p.mul_bits), name=f"op{r}_{j}")
                m.d.comb += operand.eq(self.a_line[w:w + F.W_BITS].as_signed())
                with m.If(self.backward):
                    m.d.comb += operand.eq(self.t[r])
                m.d.sync += self.products[r][j].eq(operand * q)
        m.d.sync += [self.products_valid.eq(self.valid), backward_1.eq(self.backward)]
        for r in range(p.R):
            total = adder_tree(m, [self.products[r][j] for j in range(p.P)], self.sum_bits, f"r{r}")
            m.d.sync += self.sums[r].eq(total)
        m.d.sync += self.sums_valid.eq(self.products_valid & ~backward_1)
        return m
