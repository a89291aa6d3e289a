"""The P-lane multiply-accumulate array: fed one cache line (P codes q_j) per cycle.

* Forward pass of adapter k: R x P multipliers form A_k[r, j] * q_j and a balanced adder tree per
  rank sums them: ``sums[r] = A_k[r, line] . q_line`` (products one cycle after the inputs, sums
  one cycle after that).
* Backward pass of adapter k: R x P multiply-accumulators update the line's dA accumulators:
  ``acc[r][j] + t_k[r] * q_j`` (one cycle after the inputs). The datapath feeds them -t_k
  (the accumulators count down from `sgd_update.accumulator_start`; see there).

Forward and backward have their own multipliers (2 R P of them: DSP48E2 slices on the KV260),
so neither pays for operand multiplexers, and the backward multiply-add maps onto a DSP's
post-adder.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..fixed import formats as F
from .params import HwParams, require_params

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
        self.params = require_params(self, params)
        p = params
        self.prod_bits = F.W_BITS + p.code_bits
        self.sum_bits = self.prod_bits + (p.P - 1).bit_length()
        super().__init__({
            "codes": In(p.beat_bits),          # the cache line: P 4-bit codes
            "signed_codes": In(1),             # the line's tap uses signed codes
            "a_line": In(p.a_line_bits),       # forward: A words (r, j) at bits (r*P + j)*16
            "t": In(signed(F.T_BITS + 1)).array(p.R),  # backward: the factor per rank (-t_k fits too)
            "acc": In(p.R * p.P * p.da_bits),      # backward: the line's accumulators
            "sums": Out(signed(self.sum_bits)).array(p.R),  # forward, two cycles later
            "acc_next": Out(p.R * p.P * p.da_bits),         # backward, one cycle later
        })

    def elaborate(self, platform):
        m = Module()
        p = self.params
        q = []
        for j in range(p.P):
            raw = self.codes[4 * j:4 * j + 4]
            qj = Signal(signed(p.code_bits), name=f"q{j}")
            m.d.comb += qj.eq(raw.as_unsigned())
            with m.If(self.signed_codes):
                m.d.comb += qj.eq(raw.as_signed())
            q.append(qj)
        products = [[Signal(signed(self.prod_bits), name=f"p{r}_{j}") for j in range(p.P)] for r in range(p.R)]
        nxt = []
        for r in range(p.R):
            for j in range(p.P):
                i = r * p.P + j
                a = self.a_line[i * F.W_BITS:(i + 1) * F.W_BITS].as_signed()
                m.d.sync += products[r][j].eq(a * q[j])
                acc = Signal(signed(p.da_bits), name=f"g{r}_{j}")
                m.d.sync += acc.eq(self.acc[i * p.da_bits:(i + 1) * p.da_bits].as_signed() + self.t[r] * q[j])
                nxt.append(acc)
        m.d.comb += self.acc_next.eq(Cat(*nxt))
        for r in range(p.R):
            m.d.sync += self.sums[r].eq(adder_tree(m, products[r], self.sum_bits, f"r{r}"))
        return m
