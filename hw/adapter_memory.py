"""Adapter A and its gradient accumulators, one line (all R ranks x P lanes) per address.

* A memory: R*P 16-bit words per line (word r*P + j is A_k[r, line*P + j] of the line's tap),
  written either a whole line (SGD update) or one stream beat at a time (adapter load: the write
  port's granularity is one beat).
* dA memory: R*P accumulators of `HwParams.da_bits` bits, read-modify-written by the backward
  pass, read and cleared by the update.

B and its gradient sums are small (K*C*R words) and live in registers in the head unit.
"""

from __future__ import annotations

from amaranth.hdl import Module
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out

from .params import HwParams, require_params

__all__ = ["AdapterMemory"]


class AdapterMemory(wiring.Component):
    def __init__(self, params: HwParams):
        self.params = require_params(self, params)
        p = params
        abits = p.line_bits
        self.segments = p.segments
        super().__init__({
            "a_rd_addr": In(abits), "a_rd_data": Out(p.a_line_bits),
            "a_wr_addr": In(abits), "a_wr_data": In(p.a_line_bits), "a_wr_en": In(self.segments),
            "g_rd_addr": In(abits), "g_rd_data": Out(p.R * p.P * p.da_bits),
            "g_wr_addr": In(abits), "g_wr_data": In(p.R * p.P * p.da_bits), "g_wr_en": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        p = self.params
        # Block RAM: wide (R*P words) and shallow (SL lines); as LUTRAM they would cost ~15k LUTs.
        block = {"ram_style": "block"}
        m.submodules.a = a = memory.Memory(shape=p.a_line_bits, depth=p.SL, init=[], attrs=block)
        m.submodules.g = g = memory.Memory(shape=p.R * p.P * p.da_bits, depth=p.SL, init=[], attrs=block)
        arp, awp = a.read_port(), a.write_port(granularity=p.beat_bits)
        grp, gwp = g.read_port(), g.write_port()
        m.d.comb += [
            arp.addr.eq(self.a_rd_addr), self.a_rd_data.eq(arp.data),
            awp.addr.eq(self.a_wr_addr), awp.data.eq(self.a_wr_data), awp.en.eq(self.a_wr_en),
            grp.addr.eq(self.g_rd_addr), self.g_rd_data.eq(grp.data),
            gwp.addr.eq(self.g_wr_addr), gwp.data.eq(self.g_wr_data), gwp.en.eq(self.g_wr_en),
        ]
        return m
