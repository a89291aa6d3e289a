"""The on-chip cache: every cached sample's packed 4-bit tap codes, base logits and label.

One 4P-bit line per cycle in each direction: the stream loader writes lines as beats arrive, the
datapath reads one line per cycle (synchronous, one cycle latency). The KV260 build holds 1024
LeNet-5 samples x 44 lines x 256 bits (11.5 Mbit); the memory carries ``ram_style = "ultra"`` so
synthesis maps it to UltraRAM (`skip2lora hw report` shows the URAM count).
"""

from __future__ import annotations

from amaranth.hdl import Module
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out

from .params import HwParams, require_params

__all__ = ["CacheMemory"]

URAM_THRESHOLD_BITS = 1 << 20  # smaller caches are left to the tools (BRAM / LUTRAM)


class CacheMemory(wiring.Component):
    def __init__(self, params: HwParams):
        self.params = require_params(self, params)
        super().__init__({
            "wr_addr": In(params.cache_addr_bits),
            "wr_data": In(params.beat_bits),
            "wr_en": In(1),
            "rd_addr": In(params.cache_addr_bits),
            "rd_data": Out(params.beat_bits),
        })

    def elaborate(self, platform):
        m = Module()
        p = self.params
        attrs = {"ram_style": "ultra"} if p.cache_lines * p.beat_bits >= URAM_THRESHOLD_BITS else None
        m.submodules.mem = mem = memory.Memory(shape=p.beat_bits, depth=p.cache_lines, init=[], attrs=attrs)
        wp = mem.write_port()
        rp = mem.read_port()
        m.d.comb += [wp.addr.eq(self.wr_addr), wp.data.eq(self.wr_data), wp.en.eq(self.wr_en),
                     rp.addr.eq(self.rd_addr), self.rd_data.eq(rp.data)]
        return m
