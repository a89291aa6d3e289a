"""The Vivado-facing top level: flat AXI port names, ``aclk`` and active-low ``aresetn``.

Vivado's IP packager infers ``s_axi_control`` (AXI4-Lite), ``s_axis`` / ``m_axis`` (AXI4-Stream)
and the ``interrupt`` line from these names (the flow in hw/vivado maps them explicitly); a build
with the DDR cache path adds ``m_axi_cache`` (an AXI4 read-only manager).

``m_axis_tkeep`` is all ones: every byte of every beat the accelerator sends is data. The AXI DMA's
S2MM side counts bytes by TKEEP; driving it here makes that explicit rather than leaving it to the
tools' tie-off of an unconnected input (PYNQ's base designs tie TKEEP to ones the same way). The
input stream has no TKEEP: the accelerator only takes whole beats.
"""

from __future__ import annotations

from amaranth.hdl import ClockDomain, ClockSignal, Module, ResetSignal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..fixed.config import AcceleratorConfig, fill_base_of
from .core import Skip2LoRACore
from .params import HwParams
from .axi4 import AXI4ReadSignature
from .regmap import DDR_ADDR_BITS, REGISTER_MAP

__all__ = ["Skip2LoRATop", "TOP_NAME"]

TOP_NAME = "skip2lora"

_AXIL = ["awaddr", "awprot", "awvalid", "awready", "wdata", "wstrb", "wvalid", "wready", "bresp",
         "bvalid", "bready", "araddr", "arprot", "arvalid", "arready", "rdata", "rresp", "rvalid", "rready"]


class Skip2LoRATop(wiring.Component):
    """The core of ``config`` with Vivado's port names; a configuration with a PL base
    (``config.fill_base``) gets its FILL command (`Skip2LoRACore`'s ``fill_base``: the shipped
    integer base, `fill_plan.plan_fill`'s plan)."""

    def __init__(self, config: AcceleratorConfig):
        self.config = config
        p = HwParams(config)
        aw = REGISTER_MAP.address_width
        w = p.beat_bits
        members = {
            "aclk": In(1), "aresetn": In(1), "interrupt": Out(1),
            "s_axi_control_awaddr": In(aw), "s_axi_control_awprot": In(3), "s_axi_control_awvalid": In(1),
            "s_axi_control_awready": Out(1), "s_axi_control_wdata": In(32), "s_axi_control_wstrb": In(4),
            "s_axi_control_wvalid": In(1), "s_axi_control_wready": Out(1), "s_axi_control_bresp": Out(2),
            "s_axi_control_bvalid": Out(1), "s_axi_control_bready": In(1), "s_axi_control_araddr": In(aw),
            "s_axi_control_arprot": In(3), "s_axi_control_arvalid": In(1), "s_axi_control_arready": Out(1),
            "s_axi_control_rdata": Out(32), "s_axi_control_rresp": Out(2), "s_axi_control_rvalid": Out(1),
            "s_axi_control_rready": In(1),
            "s_axis_tdata": In(w), "s_axis_tvalid": In(1), "s_axis_tready": Out(1), "s_axis_tlast": In(1),
            "m_axis_tdata": Out(w), "m_axis_tkeep": Out(w // 8), "m_axis_tvalid": Out(1), "m_axis_tready": In(1),
            "m_axis_tlast": Out(1),
        }
        if p.ddr:  # the DDR cache's AXI4 read manager: m_axi_cache_araddr, ... (Vivado infers the interface)
            for name, member in AXI4ReadSignature(DDR_ADDR_BITS, w).members.items():
                members[f"m_axi_cache_{name}"] = member
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        m.domains.sync = ClockDomain("sync")
        m.d.comb += [ClockSignal("sync").eq(self.aclk), ResetSignal("sync").eq(~self.aresetn)]
        m.submodules.core = core = Skip2LoRACore(self.config, fill_base=fill_base_of(self.config))
        for name in _AXIL:
            outer = getattr(self, f"s_axi_control_{name}")
            inner = getattr(core.bus, name)
            if name in ("awready", "wready", "bresp", "bvalid", "arready", "rdata", "rresp", "rvalid"):
                m.d.comb += outer.eq(inner)
            else:
                m.d.comb += inner.eq(outer)
        m.d.comb += [
            core.s_axis.p.data.eq(self.s_axis_tdata), core.s_axis.p.last.eq(self.s_axis_tlast),
            core.s_axis.valid.eq(self.s_axis_tvalid), self.s_axis_tready.eq(core.s_axis.ready),
            self.m_axis_tdata.eq(core.m_axis.p.data), self.m_axis_tlast.eq(core.m_axis.p.last),
            self.m_axis_tkeep.eq((1 << (len(self.m_axis_tdata) // 8)) - 1),
            self.m_axis_tvalid.eq(core.m_axis.valid), core.m_axis.ready.eq(self.m_axis_tready),
            self.interrupt.eq(core.irq),
        ]
        if self.config.ddr:
            for name, member in core.m_axi.signature.members.items():
                outer, inner = getattr(self, f"m_axi_cache_{name}"), getattr(core.m_axi, name)
                m.d.comb += outer.eq(inner) if member.flow == Out else inner.eq(outer)
        return m
