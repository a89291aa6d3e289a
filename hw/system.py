"""The KV260 system around the accelerator: IP identity, address map, PS ports, DMA and clock.

The Vivado flow (bitstreams/kv260), the PYNQ driver and the virtual KV260 all read these numbers
from ``sw/regmap.json`` (generated from here with the register map), never typed twice.
"""

from __future__ import annotations

__all__ = ["VLNV", "ACCELERATOR", "DMA", "DMA_LENGTH_WIDTH", "PL_CLOCK_MHZ", "PART", "BOARD_PART",
           "PS_PORTS", "DDR_WINDOWS", "AXI_MIN_WIDTH", "system_dict"]

# The packaged IP's identity; PYNQ binds the driver to it (DefaultIP.bindto).
VLNV = "skip2lora.org:accel:skip2lora:1.0"

# Instance name, base address and range on the PS's M_AXI_HPM0_FPD (the 0xA000_0000 window).
ACCELERATOR = {"name": "skip2lora_0", "base": 0xA000_0000, "range": 0x1_0000}
DMA = {"name": "axi_dma_0", "base": 0xA001_0000, "range": 0x1_0000}
DMA_LENGTH_WIDTH = 26   # simple-mode buffer length register: up to 64 MiB per transfer
PL_CLOCK_MHZ = 200      # pl_clk0, the accelerator's aclk
PART = "xck26-sfvc784-2LV-c"
BOARD_PART = "xilinx.com:kv260_som:part0"  # the flow picks the newest installed version

# The PS ports the design uses and their data widths. PYNQ programs the PS's port widths from the
# hardware handoff at download (C_MAXIGP0_DATA_WIDTH, C_SAXIGP2_DATA_WIDTH), so the build and the
# virtual board's handoff must agree: both take them from here.
PS_PORTS = {
    "control": {"port": "M_AXI_HPM0_FPD", "width": 32},   # registers of the accelerator and the DMA
    "data": {"port": "S_AXI_HP0_FPD", "width": 128},      # the DMA's path to DDR
    "cache": {"port": "S_AXI_HP1_FPD", "width": 128},     # the accelerator's DDR cache reads (m_axi_cache)
}
# The K26 SOM's 4 GB of DDR4 as the PS's HP ports see it: 2 GB in the PS's DDR_LOW aperture and 2 GB
# at the start of DDR_HIGH (whose aperture is 32 GB). The accelerator's m_axi_cache is given exactly
# these (segment, base, range): an address elsewhere gets a decode error from the SmartConnect
# (the core's DDR_READ error), never OCM, QSPI or PCIe behind the same HP port.
DDR_WINDOWS = (("DDR_LOW", 0x0_0000_0000, 0x8000_0000), ("DDR_HIGH", 0x8_0000_0000, 0x8000_0000))
# The narrowest AXI4 interface AMD's AXI infrastructure (SmartConnect, AXI Interconnect, the data
# width converter) and the PS's HP ports take (PG247: 32..1024 bits): a narrower m_axi_cache is
# left unconnected.
AXI_MIN_WIDTH = 32


def system_dict() -> dict:
    return {"vlnv": VLNV, "accelerator": dict(ACCELERATOR), "dma": dict(DMA),
            "dma_length_width": DMA_LENGTH_WIDTH, "pl_clock_mhz": PL_CLOCK_MHZ, "part": PART,
            "board_part": BOARD_PART, "ps_ports": {k: dict(v) for k, v in PS_PORTS.items()},
            "ddr_windows": [{"name": n, "base": b, "range": r} for n, b, r in DDR_WINDOWS],
            "axi_min_width": AXI_MIN_WIDTH}
