"""A minimal Vivado hardware handoff (.hwh) of the KV260 system, for the virtual KV260.

A real build gets its .hwh from Vivado (bitstreams/kv260). The virtual board needs one that
PYNQ's parser accepts with the same instances, addresses, VLNV, PS port widths and DMA parameters,
so the PYNQ driver runs unmodified: it is generated here from the system description in
sw/regmap.json (which is generated from hw/system.py) and the accelerator's stream width, and
tests/test_bitstream_flow.py checks it with the same checker as the real build's handoff.

A build with the DDR cache path has the accelerator's AXI4 read manager ``m_axi_cache`` on the
PS's S_AXI_HP1_FPD (``ps_ports["cache"]``): the handoff then has HP1 enabled at its width (PYNQ sets
the PS's HP1 fabric width from C_SAXIGP3_DATA_WIDTH at download) and, in the accelerator's memory
map, the DDR windows its m_axi_cache reaches, as Vivado writes them.
"""

from __future__ import annotations

from .registers import regmap

__all__ = ["make_hwh", "DDR_WINDOWS"]

# The PS's DDR as the K26 SOM has it and the accelerator's m_axi_cache sees it (segment, base,
# range), from the system description (hw/system.py, through sw/regmap.json).
DDR_WINDOWS = tuple((w["name"], w["base"], w["range"]) for w in regmap()["system"]["ddr_windows"])


def _params(pairs):
    return "\n".join(f'        <PARAMETER NAME="{k}" VALUE="{v}"/>' for k, v in pairs)


def _ps_params(clock_mhz: float, ps_ports: dict, cache: bool):
    pairs = []
    for i in range(4):  # PYNQ's clock view reads all four PL clocks
        pairs += [(f"PSU__FPGA_PL{i}_ENABLE", 1 if i == 0 else 0),
                  (f"PSU__CRL_APB__PL{i}_REF_CTRL__SRCSEL", "IOPLL"),
                  (f"PSU__CRL_APB__PL{i}_REF_CTRL__DIVISOR0", 15 if i else 5),
                  (f"PSU__CRL_APB__PL{i}_REF_CTRL__DIVISOR1", 1),
                  (f"PSU__CRL_APB__PL{i}_REF_CTRL__FREQMHZ", clock_mhz if i == 0 else 100),
                  (f"PSU__CRL_APB__PL{i}_REF_CTRL__ACT_FREQMHZ", clock_mhz if i == 0 else 100)]
    control, data = ps_ports["control"]["width"], ps_ports["data"]["width"]
    # Vivado writes the user parameter (PSU__*) and the HDL generic (C_*); PYNQ sets the PS's port
    # widths from the C_* ones at download.
    pairs += [("PSU__MAXIGP0__DATA_WIDTH", control), ("C_MAXIGP0_DATA_WIDTH", control),
              ("PSU__SAXIGP2__DATA_WIDTH", data), ("C_SAXIGP2_DATA_WIDTH", data),
              ("PSU__USE__S_AXI_GP3", int(cache))]
    if cache:  # S_AXI_HP1_FPD, the accelerator's DDR cache reads
        width = ps_ports["cache"]["width"]
        pairs += [("PSU__SAXIGP3__DATA_WIDTH", width), ("C_SAXIGP3_DATA_WIDTH", width)]
    return pairs


def _dma_params(stream_bits: int, length_width: int):
    mm_bits = max(32, stream_bits)  # the memory side: at least 32 bits (as the build sets it)
    values = {"include_sg": 0, "sg_length_width": length_width, "micro_dma": 0, "include_mm2s": 1,
              "include_s2mm": 1, "m_axi_mm2s_data_width": mm_bits, "m_axi_s2mm_data_width": mm_bits,
              "m_axis_mm2s_tdata_width": stream_bits, "s_axis_s2mm_tdata_width": stream_bits,
              "include_mm2s_dre": 0, "include_s2mm_dre": 0, "mm2s_burst_size": 16, "s2mm_burst_size": 16,
              "addr_width": 64}
    # Vivado writes both the HDL generics (C_*) and the user parameters (c_*); PYNQ reads c_*.
    return [(f"C_{k.upper()}", v) for k, v in values.items()] + [(f"c_{k}", v) for k, v in values.items()]


def _registers():
    out = []
    for reg in regmap()["registers"]:
        fields = "".join(
            f'<FIELD NAME="{f["name"]}"><PROPERTY NAME="DESCRIPTION" VALUE="{_xml(f["doc"])}"/>'
            f'<PROPERTY NAME="BIT_OFFSET" VALUE="{f["offset"]}"/><PROPERTY NAME="BIT_WIDTH" VALUE="{f["width"]}"/>'
            f'<PROPERTY NAME="ACCESS" VALUE="{"read-only" if f["access"] == "RO" else "read-write"}"/></FIELD>'
            for f in reg["fields"])
        out.append(f'            <REGISTER NAME="{reg["name"]}"><PROPERTY NAME="DESCRIPTION" VALUE="{_xml(reg["doc"])}"/>'
                   f'<PROPERTY NAME="ADDRESS_OFFSET" VALUE="{reg["address"]:#x}"/><PROPERTY NAME="SIZE" VALUE="32"/>'
                   f'<PROPERTY NAME="ACCESS" VALUE="read-write"/><PROPERTY NAME="IS_ENABLED" VALUE="true"/>'
                   f'<FIELDS>{fields}</FIELDS></REGISTER>')
    return "\n".join(out)


def _xml(text: str) -> str:
    return text.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;").replace(">", "&gt;")


def _cache_memory_map(ps_name: str, ps_port: str) -> str:
    """The accelerator's m_axi_cache view of the DDR (a master's MEMRANGEs, as in Vivado's hwh)."""
    ranges = "\n".join(
        f'        <MEMRANGE ADDRESSBLOCK="HP1_{name}" BASENAME="C_BASEADDR" BASEVALUE="0x{base:08X}" '
        f'HIGHNAME="C_HIGHADDR" HIGHVALUE="0x{base + rng - 1:08X}" INSTANCE="{ps_name}" IS_DATA="TRUE" '
        f'IS_INSTRUCTION="TRUE" MASTERBUSINTERFACE="m_axi_cache" MEMTYPE="MEMORY" SLAVEBUSINTERFACE="{ps_port}"/>'
        for name, base, rng in DDR_WINDOWS)
    return f"""
      <MEMORYMAP>
{ranges}
      </MEMORYMAP>"""


def make_hwh(stream_bits: int, *, cache_bits: int | None = None) -> str:
    """The handoff of the build with ``stream_bits``-bit streams. ``cache_bits``: the width of its
    DDR cache manager ``m_axi_cache`` (default: one beat, ``stream_bits``, as hw/top.py has it;
    0: a build without the DDR path). A manager narrower than 32 bits is not connected (no AXI
    SmartConnect takes it), so its handoff has HP1 off, as the build's."""
    sysd = regmap()["system"]
    acc, dma = sysd["accelerator"], sysd["dma"]
    cache_bits = stream_bits if cache_bits is None else cache_bits
    cache = cache_bits >= sysd["axi_min_width"] and "cache" in sysd["ps_ports"]
    ps_name = "zynq_ultra_ps_e_0"
    ps_cache_port = sysd["ps_ports"]["cache"]["port"] if cache else ""

    def hx(v):
        return f"0x{v:08X}"

    return f"""<?xml version="1.0" encoding="UTF-8" standalone="no" ?>
<EDKSYSTEM EDWVERSION="1.2" TIMESTAMP="virtual" VIVADOVERSION="virtual">
  <SYSTEMINFO ARCH="zynquplus" BOARD="{sysd['board_part']}" DEVICE="xck26" NAME="skip2lora" PACKAGE="sfvc784" SPEEDGRADE="-2LV"/>
  <EXTERNALPORTS/>
  <EXTERNALINTERFACES/>
  <MODULES>
    <MODULE FULLNAME="/{ps_name}" INSTANCE="{ps_name}" IPTYPE="PERIPHERAL" MODTYPE="zynq_ultra_ps_e" VLNV="xilinx.com:ip:zynq_ultra_ps_e:3.5">
      <PARAMETERS>
{_params(_ps_params(sysd['pl_clock_mhz'], sysd['ps_ports'], cache))}
      </PARAMETERS>
      <MEMORYMAP>
        <MEMRANGE ADDRESSBLOCK="Reg" BASENAME="C_BASEADDR" BASEVALUE="{hx(acc['base'])}" HIGHNAME="C_HIGHADDR" HIGHVALUE="{hx(acc['base'] + acc['range'] - 1)}" INSTANCE="{acc['name']}" IS_DATA="TRUE" IS_INSTRUCTION="TRUE" MASTERBUSINTERFACE="M_AXI_HPM0_FPD" MEMTYPE="REGISTER" SLAVEBUSINTERFACE="s_axi_control"/>
        <MEMRANGE ADDRESSBLOCK="Reg" BASENAME="C_BASEADDR" BASEVALUE="{hx(dma['base'])}" HIGHNAME="C_HIGHADDR" HIGHVALUE="{hx(dma['base'] + dma['range'] - 1)}" INSTANCE="{dma['name']}" IS_DATA="TRUE" IS_INSTRUCTION="TRUE" MASTERBUSINTERFACE="M_AXI_HPM0_FPD" MEMTYPE="REGISTER" SLAVEBUSINTERFACE="S_AXI_LITE"/>
      </MEMORYMAP>
      <PORTS>
        <PORT CLKFREQUENCY="{int(sysd['pl_clock_mhz'] * 1e6)}" DIR="O" NAME="pl_clk0" SIGIS="clk"/>
        <PORT DIR="O" NAME="pl_resetn0" SIGIS="rst"/>
      </PORTS>
      <BUSINTERFACES>
        <BUSINTERFACE BUSNAME="ps_axi_periph" NAME="M_AXI_HPM0_FPD" TYPE="MASTER" VLNV="xilinx.com:interface:aximm:1.0"/>
        <BUSINTERFACE BUSNAME="dma_axi_hp" NAME="S_AXI_HP0_FPD" TYPE="SLAVE" VLNV="xilinx.com:interface:aximm:1.0"/>{
        f'{chr(10)}        <BUSINTERFACE BUSNAME="cache_axi_hp" NAME="{ps_cache_port}" TYPE="SLAVE" VLNV="xilinx.com:interface:aximm:1.0"/>'
        if cache else ''}
      </BUSINTERFACES>
    </MODULE>
    <MODULE FULLNAME="/{dma['name']}" HWVERSION="7.1" INSTANCE="{dma['name']}" IPTYPE="PERIPHERAL" MODCLASS="DMA" MODTYPE="axi_dma" VLNV="xilinx.com:ip:axi_dma:7.1">
      <PARAMETERS>
{_params(_dma_params(stream_bits, sysd['dma_length_width']))}
      </PARAMETERS>
      <PORTS>
        <PORT DIR="O" NAME="mm2s_introut" SIGIS="INTERRUPT"/>
        <PORT DIR="O" NAME="s2mm_introut" SIGIS="INTERRUPT"/>
      </PORTS>
      <BUSINTERFACES>
        <BUSINTERFACE BUSNAME="ps_axi_periph_dma" NAME="S_AXI_LITE" TYPE="SLAVE" VLNV="xilinx.com:interface:aximm:1.0"/>
        <BUSINTERFACE BUSNAME="dma_mm2s" NAME="M_AXI_MM2S" TYPE="MASTER" VLNV="xilinx.com:interface:aximm:1.0"/>
        <BUSINTERFACE BUSNAME="dma_s2mm" NAME="M_AXI_S2MM" TYPE="MASTER" VLNV="xilinx.com:interface:aximm:1.0"/>
        <BUSINTERFACE BUSNAME="dma_to_accel" NAME="M_AXIS_MM2S" TYPE="INITIATOR" VLNV="xilinx.com:interface:axis:1.0"/>
        <BUSINTERFACE BUSNAME="accel_to_dma" NAME="S_AXIS_S2MM" TYPE="TARGET" VLNV="xilinx.com:interface:axis:1.0"/>
      </BUSINTERFACES>
    </MODULE>
    <MODULE FULLNAME="/{acc['name']}" HWVERSION="1.0" INSTANCE="{acc['name']}" IPTYPE="PERIPHERAL" MODTYPE="skip2lora" VLNV="{sysd['vlnv']}">
      <PARAMETERS>
        <PARAMETER NAME="C_S_AXI_CONTROL_DATA_WIDTH" VALUE="32"/>{
        f'{chr(10)}        <PARAMETER NAME="C_M_AXI_CACHE_DATA_WIDTH" VALUE="{cache_bits}"/>' if cache_bits else ''}
      </PARAMETERS>
      <ADDRESSBLOCKS>
        <ADDRESSBLOCK ACCESS="read-write" INTERFACE="s_axi_control" NAME="Reg" RANGE="{acc['range']}" USAGE="register">
          <REGISTERS>
{_registers()}
          </REGISTERS>
        </ADDRESSBLOCK>
      </ADDRESSBLOCKS>{_cache_memory_map(ps_name, ps_cache_port) if cache else ''}
      <PORTS>
        <PORT DIR="O" NAME="interrupt" SENSITIVITY="LEVEL_HIGH" SIGIS="INTERRUPT"/>
      </PORTS>
      <BUSINTERFACES>
        <BUSINTERFACE BUSNAME="ps_axi_periph_accel" NAME="s_axi_control" TYPE="SLAVE" VLNV="xilinx.com:interface:aximm:1.0"/>
        <BUSINTERFACE BUSNAME="dma_to_accel" NAME="s_axis" TYPE="TARGET" VLNV="xilinx.com:interface:axis:1.0"/>
        <BUSINTERFACE BUSNAME="accel_to_dma" NAME="m_axis" TYPE="INITIATOR" VLNV="xilinx.com:interface:axis:1.0"/>{
        f'{chr(10)}        <BUSINTERFACE BUSNAME="{"cache_axi_hp" if cache else "__NOC__"}" NAME="m_axi_cache" TYPE="MASTER" VLNV="xilinx.com:interface:aximm:1.0"/>'
        if cache_bits else ''}
      </BUSINTERFACES>
    </MODULE>
  </MODULES>
</EDKSYSTEM>
"""
