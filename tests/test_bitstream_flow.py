"""The Vivado bitstream flow without Vivado: generation, description sync, parsers, and a mock run.

* the dry run (CLI) exports the small build and writes ``build.tcl`` + the exact command;
* the kv260 script is generated from ``hw/system.py``/the top/the register map (no Verilog needed);
* its address map, VLNV and DMA parameters equal ``sw/regmap.json``'s "system" and ``hw/system.py``;
* every Xilinx IP and the board part are looked up without a version; a hidden catalog entry
  (xlconcat where Vivado has the inline-HDL ilconcat) is never preferred to a visible one;
* the Tcl comes from the package's template files, every field filled, none left over;
* a changed (copied) system description shows up in the script: nothing is hand-synced;
* the timing-summary parser, the hwh checker and the manifest writer work on realistic samples;
* the generated script runs start to finish in a Tcl interpreter against a mock of the Vivado
  commands (syntax, control flow, IP lookups, connections, address map, outputs). The mock models
  what would otherwise only fail in Vivado: the DMA's S2MM widths ignore a value set without
  VALUE_SRC=USER, inline-HDL cells need ``-type inline_hdl``, and the accelerator's stream
  parameters (TDATA bytes, TKEEP, TLAST) follow the packaged port maps and the Verilog's ports;
* the virtual KV260's generated .hwh passes the same check as a real build's;
* the DDR cache path: the accelerator's m_axi_cache is packaged as a read-only AXI4 manager with an
  address space, connected through a SmartConnect to S_AXI_HP1_FPD (enabled at the description's
  width), and sees exactly the K26's DDR (DDR_LOW and DDR_HIGH, 2 GB each); a bad "cache" port is
  refused; a build without the path is built as before; a manager too narrow for AXI
  infrastructure (the small build's 16 bits) is left unconnected, with a warning.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import os
import re
from contextlib import redirect_stdout
from pathlib import Path

import pytest

from skip2lora.fixed.config import KV260, config_named

from skip2lora.cli import main
from skip2lora.hw import system as S
from skip2lora.hw import vivado as V
from skip2lora.hw.regmap import REGISTER_MAP
from skip2lora.driver.hwh import make_hwh
from skip2lora.driver.registers import regmap as shipped_regmap

REPO = Path(__file__).resolve().parents[1]
IN_CI = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


@pytest.fixture(scope="module")
def kv260_tcl():
    return V.tcl_text("kv260", jobs=3)


def _assignments(tcl):
    """{cell: (offset, range)} from the explicit assign_bd_address statements."""
    out = {}
    for m in re.finditer(r"^assign_bd_address\s+-target_address_space\s+\S+\s+-offset\s+(0x[0-9A-Fa-f]+)\s+"
                         r"-range\s+(0x[0-9A-Fa-f]+)\s+\[s2l_slave_segments\s+(\S+)\s+(\S+)\]", tcl, re.M):
        out[m.group(3)] = (int(m.group(1), 16), int(m.group(2), 16), m.group(4))
    return out


def _settings(tcl):
    return dict(re.findall(r"^set S2L\((\w+)\)\s+\"?([^\"\n]*?)\"?\s*$", tcl, re.M))


def _configs(tcl, var):
    """CONFIG key/values of the s2l_configure call on cell variable ``var``."""
    m = re.search(r"^s2l_configure \$" + var + r" \[list \\\n(.*?)\n\]", tcl, re.M | re.S)
    assert m, f"no s2l_configure for ${var}"
    toks = m.group(1).replace("\\\n", " ").split()
    return dict(zip(toks[0::2], toks[1::2]))


# -------------------------------------------------------------------------------------------------
# Dry run and generation
# -------------------------------------------------------------------------------------------------

def test_dry_run_small(tmp_path):
    buf = io.StringIO()
    with redirect_stdout(buf):
        rc = main(["hw", "bitstream", "--config", "small", "--out", str(tmp_path), "--jobs", "3",
                   "--dry-run", "--json"])
    assert rc == 0
    r = json.loads(buf.getvalue())
    assert r["dry_run"] and r["ok"] and r["config"] == "small"
    assert Path(r["tcl"]) == tmp_path / "build.tcl" and (tmp_path / "build.tcl").is_file()
    assert (tmp_path / "skip2lora.v").is_file() and (tmp_path / "regmap.json").is_file()
    assert "module skip2lora(" in (tmp_path / "skip2lora.v").read_text()
    assert r["command"] == ["vivado", "-mode", "batch", "-nojournal", "-log", "vivado.log",
                            "-source", "build.tcl", "-tclargs", "jobs=3"]
    assert r["command_line"].startswith(f"cd {tmp_path} && vivado -mode batch")
    tcl = (tmp_path / "build.tcl").read_text()
    st = _settings(tcl)
    assert st["config"] == "small" and st["stream_width"] == "16" and st["mm_width"] == "32"
    assert json.loads((tmp_path / "design.json").read_text())["stream_width"] == 16
    # The small build's 16-bit m_axi_cache is too narrow to connect: said in the result and the script.
    assert r["cache_path"]["connected"] is False and r["cache_path"]["width"] == 16
    assert r["warnings"] == list(V.design("small").warnings) and "16 bits wide" in r["warnings"][0]
    assert st["cache_master"] == "1" and st["cache_path"] == "0"
    # Every port the IP's bus interfaces map is a port of the exported Verilog top, and vice versa.
    verilog = (tmp_path / "skip2lora.v").read_text()
    header = re.search(r"^module skip2lora\((.*?)\);", verilog, re.M | re.S).group(1)
    verilog_ports = {p.strip() for p in header.split(",")}
    mapped = set()
    for m in re.finditer(r"s2l_bus_interface \$core \S+ \S+ \S+ \{([^}]*)\}", tcl):
        mapped |= set(m.group(1).split()[1::2])
    assert mapped == verilog_ports
    # The output stream's TKEEP is mapped and driven all ones (2 bytes per 16-bit beat).
    assert re.search(r"s2l_bus_interface \$core m_axis \S+ master \{[^}]*TKEEP m_axis_tkeep", tcl)
    assert re.search(r"^\s*output \[1:0\] m_axis_tkeep;", verilog, re.M)
    assert re.search(r"^\s*assign m_axis_tkeep = 2'h3;", verilog, re.M)
    # Text mode prints the exact command too.
    buf = io.StringIO()
    with redirect_stdout(buf):
        assert main(["hw", "bitstream", "--config", "small", "--out", str(tmp_path), "--dry-run"]) == 0
    assert "vivado -mode batch -nojournal -log vivado.log -source build.tcl" in buf.getvalue()
    assert "WARNING: the small build's m_axi_cache is 16 bits wide" in buf.getvalue()


def test_kv260_tcl_without_verilog(kv260_tcl):
    st = _settings(kv260_tcl)
    assert st["config"] == "kv260"
    assert st["stream_width"] == str(4 * KV260.lanes) and int(st["mm_width"]) >= 4 * KV260.lanes
    assert st["part"] == S.PART and st["board_part"] == S.BOARD_PART
    assert st["pl_clock_mhz"] == f"{S.PL_CLOCK_MHZ:g}" and st["jobs"] == "3"
    assert st["addr_width"] == str(REGISTER_MAP.address_width)
    assert "PSU__CRL_APB__PL0_REF_CTRL__FREQMHZ $S2L(pl_clock_mhz)" in kv260_tcl
    assert st["ps_control_width"] == str(S.PS_PORTS["control"]["width"])
    assert st["ps_data_width"] == str(S.PS_PORTS["data"]["width"])
    assert st["ps_cache_width"] == str(S.PS_PORTS["cache"]["width"]) and st["ps_cache_port"] == "S_AXI_HP1_FPD"
    assert "launch_runs $run -jobs $jobs" in kv260_tcl and "-to_step write_bitstream" in kv260_tcl
    for step in ("ipx::package_project", "create_bd_design", "apply_bd_automation -rule xilinx.com:bd_rule:zynq_ultra_ps_e",
                 "validate_bd_design", "make_wrapper", "report_timing_summary", "hw_handoff"):
        assert step in kv260_tcl, step


def test_address_map_matches_description(kv260_tcl):
    regmap_system = shipped_regmap()["system"]
    assert regmap_system == S.system_dict()  # sw/regmap.json is current
    got = _assignments(kv260_tcl)
    want = {S.ACCELERATOR["name"]: (S.ACCELERATOR["base"], S.ACCELERATOR["range"], "s_axi_control"),
            S.DMA["name"]: (S.DMA["base"], S.DMA["range"], "S_AXI_LITE")}
    assert got == want
    for key in ("accelerator", "dma"):
        seg = regmap_system[key]
        assert got[seg["name"]][:2] == (seg["base"], seg["range"])
    # The read-back checks use the same numbers.
    for name, (base, rng, _) in want.items():
        assert re.search(rf"^s2l_check_segment \S+ {name} 0x{base:08X} 0x{rng:08X}$", kv260_tcl, re.M)
    # The cells are created under the description's instance names.
    st = _settings(kv260_tcl)
    assert st["accel"] == S.ACCELERATOR["name"] and st["dma"] == S.DMA["name"]


def test_vlnv_and_ip_packaging(kv260_tcl):
    st = _settings(kv260_tcl)
    assert st["vlnv"] == S.VLNV
    assert ":".join(st[k] for k in ("vendor", "library", "name", "version")) == S.VLNV
    assert "create_bd_cell -type ip -vlnv $S2L(vlnv) $S2L(accel)" in kv260_tcl
    buses = {m.group(1): m for m in re.finditer(
        r"s2l_bus_interface \$core (\S+) (\S+) (\S+) \{([^}]*)\} \{([^}]*)\}", kv260_tcl)}
    assert set(buses) == {"s_axi_control", "s_axis", "m_axis", "m_axi_cache", "aclk", "aresetn", "interrupt"}
    assert buses["s_axi_control"].group(2, 3) == ("xilinx.com:interface:aximm:1.0", "slave")
    assert buses["m_axi_cache"].group(2, 3) == ("xilinx.com:interface:aximm:1.0", "master")
    assert buses["s_axis"].group(2, 3) == ("xilinx.com:interface:axis:1.0", "slave")
    assert buses["m_axis"].group(2, 3) == ("xilinx.com:interface:axis:1.0", "master")
    assert buses["aclk"].group(5) == "ASSOCIATED_BUSIF s_axi_control:s_axis:m_axis:m_axi_cache ASSOCIATED_RESET aresetn"
    nbytes = 4 * KV260.lanes // 8  # the streams' bus parameters, declared: TKEEP on the output only
    assert buses["m_axis"].group(5) == f"TDATA_NUM_BYTES {nbytes} HAS_TKEEP 1 HAS_TLAST 1 HAS_TREADY 1 HAS_TSTRB 0"
    assert buses["s_axis"].group(5) == f"TDATA_NUM_BYTES {nbytes} HAS_TKEEP 0 HAS_TLAST 1 HAS_TREADY 1 HAS_TSTRB 0"
    assert "TKEEP m_axis_tkeep" in buses["m_axis"].group(4) and "TKEEP" not in buses["s_axis"].group(4)
    assert buses["aresetn"].group(5) == "POLARITY ACTIVE_LOW"
    assert buses["interrupt"].group(2, 3, 5) == ("xilinx.com:signal:interrupt:1.0", "master", "SENSITIVITY LEVEL_HIGH")
    axil = dict(zip(*[iter(buses["s_axi_control"].group(4).split())] * 2))
    assert axil["AWADDR"] == "s_axi_control_awaddr" and len(axil) == 19
    # The register map is in the IP description, register by register.
    regs = re.findall(r"s2l_register \$block (\w+) (0x[0-9A-F]+) ", kv260_tcl)
    assert [(n, int(a, 16)) for n, a in regs] == [(r.name, r.address) for r in REGISTER_MAP]
    assert 'done 0 1 read-write "oneToClear"' in kv260_tcl  # IRQ.done is write-1-to-clear


def test_dma_parameters(kv260_tcl):
    st = _settings(kv260_tcl)
    c = _configs(kv260_tcl, "dma")
    assert c["c_include_sg"] == "0"
    assert c["c_sg_length_width"] == "$S2L(dma_length_width)" and st["dma_length_width"] == str(S.DMA_LENGTH_WIDTH)
    assert c["c_include_mm2s"] == "1" and c["c_include_s2mm"] == "1"
    assert c["c_m_axis_mm2s_tdata_width"] == c["c_s_axis_s2mm_tdata_width"] == "$S2L(stream_width)"
    assert c["c_m_axi_mm2s_data_width"] == c["c_m_axi_s2mm_data_width"] == "$S2L(mm_width)"
    # The S2MM widths follow the connected stream unless VALUE_SRC is USER, set before the values.
    user = kv260_tcl.index("s2l_user_values $dma {c_m_axi_s2mm_data_width c_s_axis_s2mm_tdata_width}")
    assert user < kv260_tcl.index("s2l_configure $dma [list")
    ps = _configs(kv260_tcl, "ps")
    assert ps["PSU__USE__M_AXI_GP0"] == "1" and ps["PSU__USE__S_AXI_GP2"] == "1"  # HPM0_FPD, HP0_FPD
    assert ps["PSU__MAXIGP0__DATA_WIDTH"] == "$S2L(ps_control_width)"
    assert ps["PSU__SAXIGP2__DATA_WIDTH"] == "$S2L(ps_data_width)"
    assert ps["PSU__USE__S_AXI_GP3"] == "$S2L(cache_path)"  # HP1_FPD: on with the DDR cache path
    assert ps["PSU__USE__IRQ0"] == "1"
    for src in ("$S2L(accel)/interrupt", "$S2L(dma)/mm2s_introut", "$S2L(dma)/s2mm_introut"):
        assert f"connect_bd_net [get_bd_pins {src}] [get_bd_pins irq_concat/In" in kv260_tcl
    assert "[get_bd_pins irq_concat/dout] [get_bd_pins $S2L(ps)/pl_ps_irq0]" in kv260_tcl
    assert "[get_bd_intf_pins $S2L(dma)/M_AXIS_MM2S] [get_bd_intf_pins $S2L(accel)/s_axis]" in kv260_tcl
    assert "[get_bd_intf_pins $S2L(accel)/m_axis] [get_bd_intf_pins $S2L(dma)/S_AXIS_S2MM]" in kv260_tcl


def test_ip_lookups_are_version_agnostic(kv260_tcl):
    # No Xilinx VLNV with a version anywhere; every cell goes through s2l_ipdef or is our own IP.
    assert not re.search(r"xilinx\.com:(ip|inline_hdl):\w+:\d", kv260_tcl)
    cells = re.findall(r"create_bd_cell -type ip -vlnv (\S+)", kv260_tcl)
    assert len(cells) == 7  # PS, DMA, accelerator, 3 SmartConnects (control, data, DDR cache), reset
    for vlnv in cells:
        assert vlnv == "[s2l_ipdef" or vlnv in ("$smartconnect", "$S2L(vlnv)"), vlnv
    # The interrupt concat: Vivado's inline-HDL ilconcat first, xlconcat where there is none; the
    # cell type (ip or inline_hdl) follows the VLNV found.
    assert "set irq [s2l_create_cell [s2l_ipdef {ilconcat xlconcat}] irq_concat]" in kv260_tcl
    looked_up = set(re.findall(r"\[s2l_ipdef (\{[^}]*\}|[^\]\s]+)\]", kv260_tcl))
    assert looked_up == {"zynq_ultra_ps_e", "axi_dma", "smartconnect", "proc_sys_reset", "{ilconcat xlconcat}"}
    # The board part: no version in the description, the newest installed one is used.
    assert S.BOARD_PART.count(":") == 2
    assert 'get_board_parts -quiet -latest_file_version "${base}:*"' in kv260_tcl
    assert not re.search(r"kv260_som:part0:\d", kv260_tcl)
    # Vivado's Tcl is 8.5: none of the 8.6-only commands.
    code = "\n".join(ln for ln in kv260_tcl.splitlines() if not ln.lstrip().startswith("#"))
    assert not re.search(r"(^|[\s\[{])(try|lmap|tailcall)\s|string cat ", code)


def test_tcl_follows_the_description():
    sysd = copy.deepcopy(S.system_dict())
    sysd["accelerator"].update(name="accel_x", base=0xA004_0000, range=0x4_0000)
    sysd["dma"].update(name="dma_x", base=0xA002_0000)
    sysd.update(dma_length_width=23, pl_clock_mhz=150, vlnv="example.org:test:thing:2.3",
                part="xck26-sfvc784-2LVI-i")
    tcl = V.tcl_text("kv260", system=sysd)
    assert _assignments(tcl) == {"accel_x": (0xA004_0000, 0x4_0000, "s_axi_control"),
                                 "dma_x": (0xA002_0000, 0x1_0000, "S_AXI_LITE")}
    st = _settings(tcl)
    assert (st["vlnv"], st["vendor"], st["version"]) == ("example.org:test:thing:2.3", "example.org", "2.3")
    assert (st["dma_length_width"], st["pl_clock_mhz"], st["part"]) == ("23", "150", "xck26-sfvc784-2LVI-i")
    assert (st["accel"], st["dma"]) == ("accel_x", "dma_x")
    assert S.system_dict()["accelerator"]["name"] == "skip2lora_0"  # the original is untouched
    # A smaller register map changes the AXI-Lite address width check and the registers.
    d = REGISTER_MAP.to_dict()
    with pytest.raises(ValueError, match="address width"):
        V.tcl_text("kv260", register_map={**d, "address_width": 6, "registers": d["registers"][:3]})


@pytest.mark.parametrize("change, message", [
    ({"accelerator": {"name": "skip2lora_0", "base": 0xA000_0800, "range": 0x1000}}, "aligned"),
    ({"dma": {"name": "axi_dma_0", "base": 0xA000_0000, "range": 0x1_0000}}, "overlap"),
    ({"dma": {"name": "axi_dma_0", "base": 0x8000_0000, "range": 0x1_0000}}, "outside"),
    ({"dma_length_width": 27}, "8..26"),
    ({"board_part": "xilinx.com:kv260_som:part0:1.4"}, "no version"),
    ({"vlnv": "skip2lora:1.0"}, "VLNV"),
])
def test_description_errors(change, message):
    sysd = {**S.system_dict(), **change}
    with pytest.raises(ValueError, match=message):
        V.tcl_text("small", system=sysd)


# -------------------------------------------------------------------------------------------------
# The DDR cache path: m_axi_cache -> SmartConnect -> S_AXI_HP1_FPD, the PS's DDR in its address space
# -------------------------------------------------------------------------------------------------

def _enclosing_blocks(tcl, needle):
    """The opening lines of the Tcl blocks around the first line containing ``needle`` (the
    templates' style: a block opens at a line's end and closes at the start of one)."""
    stack = []
    for line in tcl.splitlines():
        if needle in line:
            return stack
        text = line.strip()
        if text.startswith("}"):
            stack.pop()
        if text.endswith("{") and not text.startswith("#"):
            stack.append(text)
    raise AssertionError(f"{needle!r} is not in the script")


def _in_cache_block(tcl, needle):
    return "if {$S2L(cache_path)} {" in _enclosing_blocks(tcl, needle)


def test_ddr_cache_path_in_the_tcl(kv260_tcl):
    from skip2lora.driver import hwh
    from skip2lora.hw.regmap import DDR_ADDR_BITS

    st = _settings(kv260_tcl)
    beat = 4 * KV260.lanes
    assert (st["cache_master"], st["cache_path"], st["cache_intf"]) == ("1", "1", "m_axi_cache")
    assert st["cache_width"] == str(beat) == "128" and st["cache_space_range"] == str(2 ** DDR_ADDR_BITS)
    assert (st["ps_cache_port"], st["ps_cache_segments"], st["ps_cache_width"]) == ("S_AXI_HP1_FPD", "SAXIGP3", "128")
    assert st["cache_note"] == ""
    # The PS's DDR as the K26 has it: DDR_LOW 0..2 GB and the first 2 GB of DDR_HIGH (0x8_0000_0000),
    # the same windows in the flow, the hwh checker and the virtual board's handoff.
    assert V.DDR_WINDOWS == hwh.DDR_WINDOWS == (("DDR_LOW", 0, 0x8000_0000), ("DDR_HIGH", 0x8_0000_0000, 0x8000_0000))
    assert st["cache_windows"] == "{{HP1_DDR_LOW 0x0000000000 0x80000000} {HP1_DDR_HIGH 0x0800000000 0x80000000}}"
    # Packaged: a read-only AXI4 manager (read channels only) with an address space of DDR_ADDR_BITS.
    bus = re.search(r"s2l_bus_interface \$core m_axi_cache \S+ master \{([^}]*)\} \{([^}]*)\}", kv260_tcl)
    pm = dict(zip(*[iter(bus.group(1).split())] * 2))
    assert set(pm) == {"ARID", "ARADDR", "ARLEN", "ARSIZE", "ARBURST", "ARCACHE", "ARPROT", "ARVALID", "ARREADY",
                       "RID", "RDATA", "RRESP", "RLAST", "RVALID", "RREADY"}
    assert bus.group(2) == ("PROTOCOL AXI4 READ_WRITE_MODE READ_ONLY DATA_WIDTH 128 ADDR_WIDTH 40 ID_WIDTH 1 "
                            "MAX_BURST_LENGTH 256 NUM_READ_OUTSTANDING 4 SUPPORTS_NARROW_BURST 0")
    assert "set space [ipx::add_address_space $S2L(cache_intf) $core]" in kv260_tcl
    assert "set_property master_address_space_ref $S2L(cache_intf) [ipx::get_bus_interfaces $S2L(cache_intf)" in kv260_tcl
    assert "ipx::remove_address_space" in kv260_tcl  # the packager's inferred one goes first
    # HP1 enabled (PSU__USE__S_AXI_GP3: HP1 is the PS's S_AXI_GP3) at the description's width.
    assert _configs(kv260_tcl, "ps")["PSU__USE__S_AXI_GP3"] == "$S2L(cache_path)"
    width = "s2l_configure $ps [list PSU__SAXIGP3__DATA_WIDTH $S2L(ps_cache_width)]"
    assert width in kv260_tcl and _in_cache_block(kv260_tcl, width)
    # The connection: m_axi_cache -> cache_smc (1 SI, 1 MI) -> S_AXI_HP1_FPD; its reset and clock.
    for line in ("set cache [create_bd_cell -type ip -vlnv $smartconnect cache_smc]",
                 "s2l_configure $cache [list NUM_SI 1 NUM_MI 1]",
                 "connect_bd_intf_net [get_bd_intf_pins $S2L(accel)/$S2L(cache_intf)] [get_bd_intf_pins cache_smc/S00_AXI]",
                 "connect_bd_intf_net [get_bd_intf_pins cache_smc/M00_AXI] [get_bd_intf_pins $S2L(ps)/$S2L(ps_cache_port)]"):
        assert line in kv260_tcl and _in_cache_block(kv260_tcl, line), line
    assert "if {$S2L(cache_path)} { lappend smc_resets [get_bd_pins cache_smc/aresetn] }" in kv260_tcl
    # The address segments: each DDR window into m_axi_cache's space before the catch-all
    # assign_bd_address, every other HP1 aperture excluded after it, and all read back.
    assign = ("assign_bd_address -target_address_space $cache_space -offset $offset -range $range \\\n"
              "            [s2l_ps_segment $S2L(ps)/$S2L(ps_cache_segments)/$segment]")
    assert assign in kv260_tcl and _in_cache_block(kv260_tcl, "-target_address_space $cache_space")
    assert _enclosing_blocks(kv260_tcl, "-target_address_space $cache_space")[-1] == "foreach window $S2L(cache_windows) {"
    exclude = "s2l_exclude_segments_but $S2L(accel)/$S2L(cache_intf) $S2L(ps) $keep"
    check = "s2l_check_segment $S2L(accel)/$S2L(cache_intf) $S2L(ps) $offset $range $segment"
    catch_all = kv260_tcl.index("\nassign_bd_address\n")
    assert kv260_tcl.index(assign) < catch_all < kv260_tcl.index(exclude) < kv260_tcl.index(check)
    assert _in_cache_block(kv260_tcl, exclude) and _in_cache_block(kv260_tcl, check)
    # After validation: HP1 still on at its width, and the manager as IP integrator sees it.
    after = kv260_tcl[kv260_tcl.index("validate_bd_design"):]
    assert 's2l_expect $ps [list PSU__USE__S_AXI_GP3 1 PSU__SAXIGP3__DATA_WIDTH $S2L(ps_cache_width)] " after validation"' in after
    assert "DATA_WIDTH $S2L(cache_width)" in after and "READ_WRITE_MODE READ_ONLY" in after


@pytest.mark.parametrize("cache, message", [
    ({"port": "S_AXI_HP2_FPD", "width": 128}, "the cache port must be S_AXI_HP1_FPD (the flow enables that one), "
                                              "not 'S_AXI_HP2_FPD'"),
    ({"port": "S_AXI_HP1_FPD", "width": 256}, "the cache port's width must be one of (32, 64, 128), not 256"),
    ({"port": "S_AXI_HP1_FPD"}, "the cache port's width must be one of (32, 64, 128), not None"),
    ("S_AXI_HP1_FPD", "the cache port must be a {'port': ..., 'width': ...} mapping, not 'S_AXI_HP1_FPD'"),
    (None, "the accelerator has m_axi_cache (the DDR cache path) but ps_ports names no 'cache' port"),
])
def test_bad_cache_port_is_refused(cache, message):
    sysd = copy.deepcopy(S.system_dict())
    if cache is None:
        del sysd["ps_ports"]["cache"]
    else:
        sysd["ps_ports"]["cache"] = cache
    for config in ("small", "kv260"):
        with pytest.raises(ValueError, match=re.escape(message)):
            V.tcl_text(config, system=sysd)


def test_unknown_ps_port_is_refused():
    sysd = copy.deepcopy(S.system_dict())
    sysd["ps_ports"]["acp"] = {"port": "S_AXI_ACP_FPD", "width": 128}
    with pytest.raises(ValueError, match=r"ps_ports must name the 'control' and 'data' ports and may name the "
                                         r"'cache' port \(nothing else\)"):
        V.design("kv260", system=sysd)


def _plain_config():
    """The small build without the DDR path (no m_axi_cache)."""
    import dataclasses

    return dataclasses.replace(config_named("small"), name="plain", ddr_samples=0, ddr_batch=0)


def test_build_without_ddr_path_is_unchanged():
    plain = _plain_config()
    d = V.design(plain)
    assert not d.has_cache and not d.cache_connected and d.cache_path is None and d.warnings == ()
    assert not any(name.startswith("m_axi_cache") for name, _, _ in d.ports)
    tcl = V.tcl_text(plain)
    st = _settings(tcl)
    assert (st["cache_master"], st["cache_path"], st["cache_note"]) == ("0", "0", "")
    assert "s2l_bus_interface $core m_axi_cache" not in tcl
    assert "ASSOCIATED_BUSIF s_axi_control:s_axis:m_axis ASSOCIATED_RESET aresetn" in tcl
    # The description's cache port means nothing to it: the same script without one (but that port's
    # width setting).
    sysd = copy.deepcopy(S.system_dict())
    del sysd["ps_ports"]["cache"]
    without = V.tcl_text(plain, system=sysd)
    drop = re.compile(r"^set S2L\(ps_cache_width\).*\n", re.M)
    assert drop.sub("", without) == drop.sub("", tcl) and "S2L(ps_cache_width)   0" in without
    # Its handoff: HP1 off, no m_axi_cache view; the virtual board's for it passes the check.
    assert V.check_hwh(_hwh(stream=16, cache=False), design_=d) == []
    assert V.check_hwh(make_hwh(16, cache_bits=0), design_=d) == []


def test_narrow_cache_manager_is_left_unconnected():
    """No SmartConnect, width converter or HP port takes a 16-bit AXI4 manager: the small build's
    m_axi_cache is packaged but not connected, and every output says so."""
    d = V.design("small")
    assert d.has_cache and d.cache_width == 16 and not d.cache_connected
    assert d.cache_path == {"interface": "m_axi_cache", "width": 16, "addr_width": 40, "connected": False,
                            "ps_port": "S_AXI_HP1_FPD", "ps_width": 128, "windows": []}
    assert len(d.warnings) == 1 and "narrower than the 32 bits" in d.warnings[0] and "CACHE_MODE.ddr" in d.warnings[0]
    assert d.to_dict()["warnings"] == list(d.warnings)
    tcl = V.tcl_text("small")
    st = _settings(tcl)
    assert st["cache_path"] == "0" and st["cache_note"] == d.warnings[0]
    assert 's2l_log "WARNING: $S2L(cache_note)"' in tcl
    assert "DATA_WIDTH 16 ADDR_WIDTH 40" in tcl  # still packaged as what it is
    # A handoff with HP1 off passes; the virtual board's small handoff has it off too.
    assert V.check_hwh(_hwh(stream=16), config="small") == []
    assert V.hwh_summary(make_hwh(16))["modules"][V.PS_NAME]["parameters"]["PSU__USE__S_AXI_GP3"] == "0"


def test_check_hwh_cache_path():
    assert V.check_hwh(_hwh(), config="kv260") == []
    assert V.check_hwh(_hwh(cache_ranges=[]), config="kv260") == [
        "skip2lora_0/m_axi_cache does not reach the PS's DDR_LOW at 0x0+0x80000000",
        "skip2lora_0/m_axi_cache does not reach the PS's DDR_HIGH at 0x800000000+0x80000000"]
    ocm = _CACHE_RANGES + [("HP1_LPS_OCM", 0xFF00_0000, 0x100_0000, "S_AXI_HP1_FPD")]
    assert V.check_hwh(_hwh(cache_ranges=ocm), config="kv260") == [
        "skip2lora_0/m_axi_cache also reaches zynq_ultra_ps_e_0 HP1_LPS_OCM at 0xff000000+0x1000000"]
    via_hp0 = [(b.replace("HP1", "HP0"), base, rng, "S_AXI_HP0_FPD") for b, base, rng, _ in _CACHE_RANGES]
    assert V.check_hwh(_hwh(cache_ranges=via_hp0), config="kv260") == [
        "skip2lora_0/m_axi_cache reaches DDR_LOW through zynq_ultra_ps_e_0/S_AXI_HP0_FPD, not S_AXI_HP1_FPD",
        "skip2lora_0/m_axi_cache reaches DDR_HIGH through zynq_ultra_ps_e_0/S_AXI_HP0_FPD, not S_AXI_HP1_FPD"]
    assert V.check_hwh(_hwh(hp1_width=64, hp1_use=0), config="kv260") == [
        "the PS's S_AXI_HP1_FPD is 64 bits wide (C_SAXIGP3_DATA_WIDTH), not 128",
        "the PS's S_AXI_HP1_FPD is 64 bits wide (PSU__SAXIGP3__DATA_WIDTH), not 128",
        "the PS's S_AXI_HP1_FPD is not enabled (PSU__USE__S_AXI_GP3 = 0)"]


def test_tcl_comes_from_the_package_templates():
    from skip2lora.hw.vivado.tcl import _TclTemplate

    here = Path(V.__file__).resolve().parent / "templates"
    for name in V.TEMPLATES:  # shipped next to the code (package data)
        assert V.template_text(name) == (here / name).read_text()
    build, helpers = V.template_text("build.tcl"), V.template_text("helpers.tcl")
    assert V.template_fields(helpers) == set()  # the helpers are plain Tcl
    assert {"HELPERS", "BUS_INTERFACES", "REGISTERS", "ACCEL_BASE", "PS_CONTROL_WIDTH", "STREAM_WIDTH"} <= \
        V.template_fields(build)
    tcl = V.tcl_text("small")
    assert "@" not in tcl and helpers.rstrip() in tcl
    # Tcl's own syntax passes through; a stray or unknown field is refused, not left in the script.
    assert _TclTemplate("set x $S2L(a) [list {@A@}]").substitute(A="1") == "set x $S2L(a) [list {1}]"
    with pytest.raises(KeyError):
        _TclTemplate("@MISSING@").substitute({})
    with pytest.raises(ValueError):
        _TclTemplate("set x @lower@").substitute({})
    with pytest.raises(ValueError, match="no Tcl template"):
        V.template_text("other.tcl")


# -------------------------------------------------------------------------------------------------
# Reports, hwh, manifest
# -------------------------------------------------------------------------------------------------

_DASH = "-" * 96
_WIDE = "-" * 200
TIMING_MET = f"""Copyright 1986-2022 Xilinx, Inc. All Rights Reserved. Copyright 2022-2022 Advanced Micro Devices, Inc. All Rights Reserved.
{_WIDE}
| Tool Version : Vivado v.2022.2 (lin64) Build 3671981 Fri Oct 14 04:59:54 MDT 2022
| Date         : Tue Mar  5 10:12:44 2024
| Host         : buildhost running 64-bit Ubuntu 22.04.3 LTS
| Command      : report_timing_summary -max_paths 10 -report_unconstrained -file /b/out/skip2lora_timing.rpt
| Design       : skip2lora_system_wrapper
| Device       : xck26-sfvc784
| Speed File   : -2LV  PRODUCTION 1.30 05-15-2022
| Design State : Routed
{_WIDE}

Timing Summary Report

{_DASH}
| Timer Settings
| --------------
{_DASH}

  Enable Multi Corner Analysis               :  Yes
  Enable Pessimism Removal                   :  Yes
  Pessimism Removal Resolution               :  Nearest Common Node

  Corner  Analyze    Analyze    
  Name    Max Paths  Min Paths  
  ------  ---------  ---------  
  Slow    Yes        Yes        
  Fast    Yes        Yes        


{_DASH}
| Report Methodology
| ------------------
{_DASH}

No report available as report_methodology has not been run prior. Run report_methodology on the current design for the summary of methodology violations.



check_timing report

Table of Contents
-----------------
1. checking no_clock (0)
2. checking constant_clock (0)


{_DASH}
| Design Timing Summary
| ---------------------
{_DASH}

    WNS(ns)      TNS(ns)  TNS Failing Endpoints  TNS Total Endpoints      WHS(ns)      THS(ns)  THS Failing Endpoints  THS Total Endpoints     WPWS(ns)     TPWS(ns)  TPWS Failing Endpoints  TPWS Total Endpoints  
    -------      -------  ---------------------  -------------------      -------      -------  ---------------------  -------------------     --------     --------  ----------------------  --------------------  
      0.214        0.000                      0               153911        0.010        0.000                      0               153911        1.458        0.000                       0                 61238  


All user specified timing constraints are met.


{_DASH}
| Clock Summary
| -------------
{_DASH}

Clock       Waveform(ns)         Period(ns)      Frequency(MHz)
-----       ------------         ----------      --------------
clk_pl_0    {{0.000 2.500}}        5.000           200.000         


{_DASH}
| Intra Clock Table
| -----------------
{_DASH}

Clock             WNS(ns)      TNS(ns)  TNS Failing Endpoints  TNS Total Endpoints      WHS(ns)      THS(ns)  THS Failing Endpoints  THS Total Endpoints     WPWS(ns)     TPWS(ns)  TPWS Failing Endpoints  TPWS Total Endpoints  
-----             -------      -------  ---------------------  -------------------      -------      -------  ---------------------  -------------------     --------     --------  ----------------------  --------------------  
clk_pl_0            0.214        0.000                      0               153667        0.010        0.000                      0               153667        1.458        0.000                       0                 61238  


{_DASH}
| Inter Clock Table
| -----------------
{_DASH}

From Clock    To Clock          WNS(ns)      TNS(ns)  TNS Failing Endpoints  TNS Total Endpoints      WHS(ns)      THS(ns)  THS Failing Endpoints  THS Total Endpoints  
----------    --------          -------      -------  ---------------------  -------------------      -------      -------  ---------------------  -------------------  


{_DASH}
| Other Path Groups Table
| -----------------------
{_DASH}

Path Group          From Clock          To Clock                WNS(ns)      TNS(ns)  TNS Failing Endpoints  TNS Total Endpoints      WHS(ns)      THS(ns)  THS Failing Endpoints  THS Total Endpoints  
----------          ----------          --------                -------      -------  ---------------------  -------------------      -------      -------  ---------------------  -------------------  
**async_default**   clk_pl_0            clk_pl_0                  3.652        0.000                      0                  244        0.129        0.000                      0                  244  
"""

TIMING_FAILED = (TIMING_MET
                 .replace("      0.214        0.000                      0               153911",
                          "     -0.387     -112.562                    734               153911")
                 .replace("clk_pl_0            0.214        0.000                      0               153667",
                          "clk_pl_0           -0.387     -112.562                    734               153667")
                 .replace("All user specified timing constraints are met.",
                          "Timing constraints are not met."))


_CACHE_RANGES = [("HP1_DDR_LOW", 0x0, 0x8000_0000, "S_AXI_HP1_FPD"),
                 ("HP1_DDR_HIGH", 0x8_0000_0000, 0x8000_0000, "S_AXI_HP1_FPD")]


def _hwh(system=None, *, stream=None, length=26, pl0="199.998001", vlnv=None, cache=None, cache_ranges=None,
         hp1_width=128, hp1_use=1):
    """A realistic Vivado handoff of a build; ``cache`` (default: a stream of 32 bits or more, as the
    build connects m_axi_cache then) adds HP1 and the accelerator's view of the DDR."""
    s = system or S.system_dict()
    a, d = s["accelerator"], s["dma"]
    stream = 4 * KV260.lanes if stream is None else stream
    cache = stream >= 32 if cache is None else cache
    hp1 = (f"""
        <PARAMETER NAME="PSU__USE__S_AXI_GP3" VALUE="{hp1_use}"/>
        <PARAMETER NAME="PSU__SAXIGP3__DATA_WIDTH" VALUE="{hp1_width}"/>
        <PARAMETER NAME="C_SAXIGP3_DATA_WIDTH" VALUE="{hp1_width}"/>""" if cache else """
        <PARAMETER NAME="PSU__USE__S_AXI_GP3" VALUE="0"/>""")
    ranges = "".join(
        f"""
        <MEMRANGE ADDRESSBLOCK="{block}" BASENAME="C_BASEADDR" BASEVALUE="0x{base:012X}" HIGHNAME="C_HIGHADDR" HIGHVALUE="0x{base + rng - 1:012X}" INSTANCE="zynq_ultra_ps_e_0" IS_DATA="TRUE" IS_INSTRUCTION="TRUE" MASTERBUSINTERFACE="m_axi_cache" MEMTYPE="MEMORY" SLAVEBUSINTERFACE="{slave}"/>"""
        for block, base, rng, slave in (_CACHE_RANGES if cache_ranges is None else cache_ranges))
    memory_map = f"""
      <MEMORYMAP>{ranges}
      </MEMORYMAP>""" if cache else ""
    return f"""<?xml version="1.0" encoding="UTF-8" standalone="no" ?>
<EDKSYSTEM EDWVERSION="1.2" TIMESTAMP="Tue Mar  5 09:02:11 2024" VIVADOVERSION="2022.2">
  <SYSTEMINFO ARCH="zynquplus" BOARD="xilinx.com:kv260_som:part0:1.4" DEVICE="xck26" NAME="skip2lora_system" PACKAGE="sfvc784" SPEEDGRADE="-2LV"/>
  <EXTERNALPORTS/>
  <MODULES>
    <MODULE COREREVISION="31" FULLNAME="/{d['name']}" HWVERSION="7.1" INSTANCE="{d['name']}" IPTYPE="PERIPHERAL" IS_ENABLE="1" MODCLASS="PERIPHERAL" MODTYPE="axi_dma" VLNV="xilinx.com:ip:axi_dma:7.1">
      <PARAMETERS>
        <PARAMETER NAME="C_BASEADDR" VALUE="0x{d['base']:08X}"/>
        <PARAMETER NAME="c_include_sg" VALUE="0"/>
        <PARAMETER NAME="c_sg_length_width" VALUE="{length}"/>
        <PARAMETER NAME="c_include_mm2s" VALUE="1"/>
        <PARAMETER NAME="c_include_s2mm" VALUE="1"/>
        <PARAMETER NAME="c_m_axi_mm2s_data_width" VALUE="{max(32, stream)}"/>
        <PARAMETER NAME="c_m_axis_mm2s_tdata_width" VALUE="{stream}"/>
        <PARAMETER NAME="c_m_axi_s2mm_data_width" VALUE="{max(32, stream)}"/>
        <PARAMETER NAME="c_s_axis_s2mm_tdata_width" VALUE="{stream}"/>
      </PARAMETERS>
    </MODULE>
    <MODULE COREREVISION="1" FULLNAME="/{a['name']}" HWVERSION="1.0" INSTANCE="{a['name']}" IPTYPE="PERIPHERAL" IS_ENABLE="1" MODCLASS="PERIPHERAL" MODTYPE="skip2lora" VLNV="{vlnv or s['vlnv']}">
      <PARAMETERS>
        <PARAMETER NAME="Component_Name" VALUE="skip2lora_system_skip2lora_0_0"/>
      </PARAMETERS>{memory_map}
    </MODULE>
    <MODULE COREREVISION="21" FULLNAME="/zynq_ultra_ps_e_0" HWVERSION="3.4" INSTANCE="zynq_ultra_ps_e_0" IPTYPE="PERIPHERAL" IS_ENABLE="1" MODCLASS="PROCESSOR" MODTYPE="zynq_ultra_ps_e" VLNV="xilinx.com:ip:zynq_ultra_ps_e:3.4">
      <PARAMETERS>
        <PARAMETER NAME="PSU__CRL_APB__PL0_REF_CTRL__FREQMHZ" VALUE="200"/>
        <PARAMETER NAME="PSU__CRL_APB__PL0_REF_CTRL__ACT_FREQMHZ" VALUE="{pl0}"/>{hp1}
      </PARAMETERS>
      <MEMORYMAP>
        <MEMRANGE ADDRESSBLOCK="Reg" BASENAME="C_BASEADDR" BASEVALUE="0x{d['base']:08X}" HIGHNAME="C_HIGHADDR" HIGHVALUE="0x{d['base'] + d['range'] - 1:08X}" INSTANCE="{d['name']}" IS_DATA="TRUE" IS_INSTRUCTION="TRUE" MASTERBUSINTERFACE="M_AXI_HPM0_FPD" MEMTYPE="REGISTER" SLAVEBUSINTERFACE="S_AXI_LITE"/>
        <MEMRANGE ADDRESSBLOCK="reg0" BASENAME="C_S_AXI_CONTROL_BASEADDR" BASEVALUE="0x{a['base']:08X}" HIGHNAME="C_S_AXI_CONTROL_HIGHADDR" HIGHVALUE="0x{a['base'] + a['range'] - 1:08X}" INSTANCE="{a['name']}" IS_DATA="TRUE" IS_INSTRUCTION="TRUE" MASTERBUSINTERFACE="M_AXI_HPM0_FPD" MEMTYPE="REGISTER" SLAVEBUSINTERFACE="s_axi_control"/>
      </MEMORYMAP>
    </MODULE>
  </MODULES>
</EDKSYSTEM>
"""


def test_parse_timing_met():
    t = V.parse_timing_summary(TIMING_MET, target_mhz=200)
    assert t["vivado_version"] == "2022.2" and t["design_state"] == "Routed"
    assert t["design"] == "skip2lora_system_wrapper"
    assert (t["wns_ns"], t["tns_ns"], t["tns_failing"], t["tns_endpoints"]) == (0.214, 0.0, 0, 153911)
    assert (t["whs_ns"], t["ths_ns"], t["wpws_ns"]) == (0.010, 0.0, 1.458)
    assert t["constraints_met"] is True and t["met"] is True
    assert t["primary_clock"] == "clk_pl_0" and t["target_mhz"] == 200.0
    assert t["clocks"]["clk_pl_0"]["period_ns"] == 5.0 and t["clocks"]["clk_pl_0"]["wns_ns"] == 0.214
    assert t["achieved_mhz"] == pytest.approx(1000 / (5.0 - 0.214), abs=1e-3)


def test_parse_timing_failed():
    t = V.parse_timing_summary(TIMING_FAILED)
    assert t["wns_ns"] == -0.387 and t["tns_ns"] == -112.562 and t["tns_failing"] == 734
    assert t["constraints_met"] is False and t["met"] is False
    assert t["achieved_mhz"] == pytest.approx(1000 / 5.387, abs=1e-3) and t["achieved_mhz"] < 200
    with pytest.raises(ValueError, match="Design Timing Summary"):
        V.parse_timing_summary("not a report")


def test_check_hwh():
    assert V.check_hwh(_hwh(), config="kv260") == []
    summary = V.hwh_summary(_hwh())
    assert summary["pl0_act_mhz"] == pytest.approx(199.998, abs=1e-3)
    moved = copy.deepcopy(S.system_dict())
    moved["dma"]["base"] = 0xA002_0000
    wrong = 2 * 4 * KV260.lanes  # a stream width the kv260 build does not have
    problems = V.check_hwh(_hwh(moved, stream=wrong, length=23, vlnv="x:y:z:9.9"), config="kv260")
    text = "\n".join(problems)
    assert "axi_dma_0 is at 0xa0020000" in text and "VLNV" in text
    assert "c_sg_length_width = 23, not 26" in text and f"c_m_axis_mm2s_tdata_width = {wrong}" in text
    assert V.check_hwh(_hwh(stream=16), config="small") == []


@pytest.mark.parametrize("config", ["small", "kv260"])
def test_virtual_hwh_matches_the_build(config):
    """The virtual KV260's handoff passes the real build's check, PS port widths included."""
    hwh = make_hwh(4 * config_named(config).lanes)
    assert V.check_hwh(hwh, config=config) == []
    ps = V.hwh_summary(hwh)["modules"][V.PS_NAME]["parameters"]
    st = _settings(V.tcl_text(config))
    assert ps["C_MAXIGP0_DATA_WIDTH"] == ps["PSU__MAXIGP0__DATA_WIDTH"] == st["ps_control_width"] == "32"
    assert ps["C_SAXIGP2_DATA_WIDTH"] == ps["PSU__SAXIGP2__DATA_WIDTH"] == st["ps_data_width"] == "128"
    dma = V.hwh_summary(hwh)["modules"][S.DMA["name"]]["parameters"]
    assert dma["c_m_axi_s2mm_data_width"] == str(max(32, 4 * config_named(config).lanes))
    # HP1 and the accelerator's view of the DDR, as the build has them (kv260: connected; small: its
    # 16-bit m_axi_cache is not, so HP1 stays off).
    d = V.design(config)
    cache_view = [(r["block"], r["base"], r["range"], r["slave"]) for r in V.hwh_summary(hwh)["ranges"]
                  if r["master_instance"] == S.ACCELERATOR["name"] and r["master"] == "m_axi_cache"]
    assert st["cache_path"] == str(int(d.cache_connected)) == ps["PSU__USE__S_AXI_GP3"]
    if d.cache_connected:
        assert ps["C_SAXIGP3_DATA_WIDTH"] == ps["PSU__SAXIGP3__DATA_WIDTH"] == st["ps_cache_width"] == "128"
        assert cache_view == [(f"HP1_{n}", b, r, "S_AXI_HP1_FPD") for n, b, r in V.DDR_WINDOWS]
    else:
        assert "C_SAXIGP3_DATA_WIDTH" not in ps and cache_view == []
    # What the virtual board used to claim (a 128-bit control port) is caught.
    wrong = hwh.replace('NAME="C_MAXIGP0_DATA_WIDTH" VALUE="32"', 'NAME="C_MAXIGP0_DATA_WIDTH" VALUE="128"')
    assert wrong != hwh
    assert V.check_hwh(wrong, config=config) == [
        "the PS's M_AXI_HPM0_FPD is 128 bits wide (C_MAXIGP0_DATA_WIDTH), not 32"]


def test_write_manifest(tmp_path):
    (tmp_path / "skip2lora.bit").write_bytes(b"\x00\x09\x0f\xf0" * 1000)
    (tmp_path / "skip2lora.hwh").write_text(_hwh())
    (tmp_path / "skip2lora_timing.rpt").write_text(TIMING_MET)
    (tmp_path / "vivado_info.json").write_text(json.dumps({"vivado_version": "2022.2", "board_part":
                                                           "xilinx.com:kv260_som:part0:1.4"}))
    m = V.write_manifest(tmp_path, config="kv260", repo_dir=REPO)
    on_disk = json.loads((tmp_path / "manifest.json").read_text())
    assert on_disk["files"] == m["files"]
    for name in ("skip2lora.bit", "skip2lora.hwh", "skip2lora_timing.rpt", "vivado_info.json"):
        assert on_disk["files"][name]["sha256"] == hashlib.sha256((tmp_path / name).read_bytes()).hexdigest()
    assert "manifest.json" not in on_disk["files"]
    assert on_disk["vivado_version"] == "2022.2" and on_disk["vivado"]["board_part"].endswith(":1.4")
    assert on_disk["wns_ns"] == 0.214 and on_disk["tns_ns"] == 0.0 and on_disk["timing_met"] is True
    assert on_disk["achieved_mhz"] == pytest.approx(208.943, abs=1e-3) and on_disk["target_mhz"] == 200
    assert on_disk["config"]["name"] == "kv260" and on_disk["design"]["stream_width"] == 4 * KV260.lanes
    assert on_disk["design"]["system"] == S.system_dict()
    assert on_disk["pl_clk0_mhz"] == pytest.approx(199.998, abs=1e-3)
    assert on_disk["board_part"] == "xilinx.com:kv260_som:part0:1.4"
    assert re.fullmatch(r"[0-9a-f]{40}", on_disk["git"]["commit"] or "0" * 40)
    # From text, without vivado_info.json: the version comes from the report.
    (tmp_path / "vivado_info.json").unlink()
    m = V.write_manifest(tmp_path, config="small", timing_text=TIMING_FAILED, files=["skip2lora.bit"])
    assert m["vivado_version"] == "2022.2" and m["timing_met"] is False and list(m["files"]) == ["skip2lora.bit"]


def test_missing_vivado_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("VIVADO", raising=False)
    with pytest.raises(V.VivadoNotFound, match=r"settings64\.sh"):
        V.build_bitstream("small", tmp_path / "b")
    assert not (tmp_path / "b").exists()  # failed before exporting anything
    buf = io.StringIO()
    with redirect_stdout(buf):
        rc = main(["hw", "bitstream", "--config", "small", "--out", str(tmp_path / "b"), "--json"])
    assert rc == 4 and "Vivado 2022.2 or newer" in json.loads(buf.getvalue())["error"]


# -------------------------------------------------------------------------------------------------
# The script, run against a mock of Vivado's Tcl commands
# -------------------------------------------------------------------------------------------------

MOCK_VIVADO = r"""
set ::CALLS {}
array set ::PROP {}
array set ::CONN {}
set ::CELLS {}
set ::SEGS {}
set ::EXCLUDED {}
set ::ADDRSPACES {}
set ::PROJECTS {}
proc mock {name params body} {
    proc $name $params "lappend ::CALLS \[concat [list $name] \[lrange \[info level 0\] 1 end\]\]\n$body"
}
proc opt {argv name {default ""}} {
    set i [lsearch -exact $argv $name]
    if {$i < 0} { return $default }
    return [lindex $argv [expr {$i + 1}]]
}
proc positional {argv {with_value {}}} {
    set out {}
    for {set i 0} {$i < [llength $argv]} {incr i} {
        set a [lindex $argv $i]
        if {[string index $a 0] eq "-"} {
            if {[lsearch -exact $with_value $a] >= 0} { incr i }
        } else { lappend out $a }
    }
    return $out
}
mock version {args} { return $::MOCK(version) }
# -- catalog --------------------------------------------------------------------------------------
# MOCK(catalog): name -> {library versions visibility}; a "hidden" IP is only listed with -all.
mock get_ipdefs {args} {
    set filter [opt $args -filter]
    if {$filter eq ""} {
        set v [lindex [positional $args] 0]
        return [expr {[info exists ::PACKAGED($v)] ? $v : ""}]
    }
    regexp {NAME == (\S+)} $filter -> name
    if {![dict exists $::MOCK(catalog) $name]} { return "" }
    lassign [dict get $::MOCK(catalog) $name] library versions visibility
    if {$visibility eq "hidden" && [lsearch -exact $args -all] < 0} { return "" }
    set out {}
    foreach v $versions { lappend out "xilinx.com:$library:$name:$v" }
    return $out
}
mock get_board_parts {args} {
    set pat [lindex [positional $args] 0]
    set out {}
    foreach p $::MOCK(board_parts) { if {[string match $pat $p]} { lappend out $p } }
    return $out
}
mock get_boards {args} {
    set pat [lindex [positional $args] 0]
    set out {}
    foreach p $::MOCK(boards) { if {[string match $pat $p]} { lappend out $p } }
    return $out
}
mock set_param {args} {}
mock get_param {args} { return {} }
namespace eval xhub {}
mock xhub::get_xstores {args} { error "no board store in the mock" }
# -- properties -------------------------------------------------------------------------------------
# Parameters IP integrator propagates from the connected stream (MOCK(propagated)): a value set
# while their VALUE_SRC is not USER is dropped, as in Vivado.
proc mock_set {obj k v} {
    set k [string tolower $k]
    if {[lsearch -exact $::MOCK(propagated) $k] >= 0 && \
            !([info exists ::PROP($obj,$k.value_src)] && [string toupper $::PROP($obj,$k.value_src)] eq "USER")} {
        return
    }
    set ::PROP($obj,$k) $v
}
mock set_property {args} {
    if {[lindex $args 0] eq "-dict"} {
        set obj [lindex $args 2]
        foreach {k v} [lindex $args 1] { mock_set $obj $k $v }
    } else {
        lassign $args k v obj
        mock_set $obj $k $v
    }
}
# The packaged accelerator's stream pin parameters follow its port maps and the Verilog's ports.
# A bus parameter the IP declares must agree with its ports (Vivado refuses the IP otherwise).
proc mock_intf_param {obj param} {
    if {![regexp {^/([^/]+)/(\w+)$} $obj -> cell intf]} { return "" }
    set pm "bi:$intf/pm:"
    switch -- $param {
        tdata_num_bytes {
            if {![info exists ::PROP(${pm}TDATA,physical_name)]} { return "" }
            set value [expr {$::PORTW($::PROP(${pm}TDATA,physical_name)) / 8}]
        }
        has_tkeep - has_tlast {
            set logical [string toupper [string range $param 4 end]]
            set value [expr {[info exists ::PROP(${pm}$logical,physical_name)] && \
                             [info exists ::PORTW($::PROP(${pm}$logical,physical_name))]}]
        }
        data_width {
            if {![info exists ::PROP(${pm}RDATA,physical_name)]} { return "" }
            set value $::PORTW($::PROP(${pm}RDATA,physical_name))
        }
        read_write_mode {
            if {![info exists ::PROP(${pm}RDATA,physical_name)]} { return "" }
            set value [expr {[info exists ::PROP(${pm}WDATA,physical_name)] ? "READ_WRITE" : "READ_ONLY"}]
        }
        default { return "" }
    }
    set declared "bi:$intf/param:[string toupper $param]"
    if {[info exists ::PROP($declared,value)] && $::PROP($declared,value) ne $value} {
        error "mock: $intf declares [string toupper $param] $::PROP($declared,value), its ports say $value"
    }
    return $value
}
mock get_property {key obj} {
    set k [string tolower $key]
    if {[info exists ::PROP($obj,$k)]} { return $::PROP($obj,$k) }
    switch -glob -- $k {
        vlnv { return $obj }
        name { return [lindex [split $obj /:] end] }
        progress { return 100% }
        status { return "$obj Complete!" }
        local_root_dir { return "" }
        config.freq_hz { return 199998001 }
        config.tdata_num_bytes - config.has_tkeep - config.has_tlast - config.data_width - config.read_write_mode {
            return [mock_intf_param $obj [string range $k 7 end]]
        }
        directory {
            if {$obj eq "impl_1"} { return $::MOCK(impl_dir) }
            return [dict get $::PROJECTS $obj]
        }
        config.* { return "" }
    }
    error "mock get_property: no $key on $obj"
}
# -- projects ---------------------------------------------------------------------------------------
mock create_project {args} {
    lassign [positional $args {-part}] name dir
    file mkdir $dir
    dict set ::PROJECTS $name $dir
    set ::CURRENT_PROJECT $name
    return $name
}
mock current_project {args} { return $::CURRENT_PROJECT }
mock close_project {args} {}
mock add_files {args} {
    foreach f [positional $args] {
        if {![file exists $f]} { error "add_files: no $f" }
        set fh [open $f]; set text [read $fh]; close $fh
        foreach {- range name} [regexp -all -inline {\n\s*(?:input|output)\s+(\[\d+:0\]\s+)?(\w+);} $text] {
            set ::PORTW($name) [expr {$range eq "" ? 1 : [lindex [split [string trim $range {[] }] :] 0] + 1}]
        }
    }
}
mock current_fileset {args} { return sources_1 }
mock update_compile_order {args} {}
mock update_ip_catalog {args} {}
mock get_files {args} { return [file join [dict get $::PROJECTS $::CURRENT_PROJECT] [lindex [positional $args] 0]] }
# -- IP packager ------------------------------------------------------------------------------------
namespace eval ipx {}
mock ipx::package_project {args} {
    set ::IPDIR [opt $args -root_dir]
    set ::IPVENDOR [opt $args -vendor]
    set ::BUSIF [list inferred_axi inferred_clk]
    set ::MEMMAPS [list inferred_map]
    set ::ADDRSPACES [list inferred_space]
}
mock ipx::current_core {args} { return core }
mock ipx::get_bus_interfaces {args} {
    set pos [positional $args {-of_objects}]
    if {[llength $pos]} { return "bi:[lindex $pos 0]" }
    set out {}
    foreach b $::BUSIF { lappend out "bi:$b" }
    return $out
}
mock ipx::remove_bus_interface {name core} { set ::BUSIF [lsearch -all -inline -not -exact $::BUSIF $name] }
mock ipx::get_memory_maps {args} { set out {}; foreach m $::MEMMAPS { lappend out "mm:$m" }; return $out }
mock ipx::remove_memory_map {name core} { set ::MEMMAPS [lsearch -all -inline -not -exact $::MEMMAPS $name] }
mock ipx::add_bus_interface {name core} {
    if {[lsearch -exact $::BUSIF $name] >= 0} { error "bus interface $name exists" }
    lappend ::BUSIF $name
    return "bi:$name"
}
mock ipx::add_port_map {logical bi} { return "$bi/pm:$logical" }
mock ipx::add_bus_parameter {name bi} { return "$bi/param:$name" }
mock ipx::add_memory_map {name core} { lappend ::MEMMAPS $name; return "mm:$name" }
mock ipx::get_address_spaces {args} { set out {}; foreach a $::ADDRSPACES { lappend out "as:$a" }; return $out }
mock ipx::remove_address_space {name core} { set ::ADDRSPACES [lsearch -all -inline -not -exact $::ADDRSPACES $name] }
mock ipx::add_address_space {name core} { lappend ::ADDRSPACES $name; return "as:$name" }
mock ipx::add_address_block {name mm} { return "$mm/ab:$name" }
mock ipx::add_register {name block} { return "$block/reg:$name" }
mock ipx::add_field {name reg} { return "$reg/field:$name" }
mock ipx::create_xgui_files {core} {}
mock ipx::update_checksums {core} {}
mock ipx::check_integrity {core} {}
mock ipx::save_core {core} {
    set v "$::PROP(core,vendor):$::PROP(core,library):$::PROP(core,name):$::PROP(core,version)"
    set ::PACKAGED($v) 1
}
# -- block design -----------------------------------------------------------------------------------
mock create_bd_design {name} { set ::DESIGN $name }
mock current_bd_design {args} { return $::DESIGN }
mock create_bd_cell {args} {
    set vlnv [opt $args -vlnv]
    set name [lindex [positional $args {-type -vlnv}] 0]
    if {[string match "*s2l_ipdef*" $vlnv] || $vlnv eq ""} { error "unresolved VLNV $vlnv" }
    set want [expr {[lindex [split $vlnv :] 1] eq "inline_hdl" ? "inline_hdl" : "ip"}]
    if {[opt $args -type] ne $want} { error "create_bd_cell: $vlnv needs -type $want, not [opt $args -type]" }
    lappend ::CELLS $name $vlnv
    return "/$name"
}
mock apply_bd_automation {args} {}
mock get_bd_cells {args} {
    set pos [positional $args]
    if {[llength $pos]} { return "/[lindex $pos 0]" }
    set out {}
    foreach {name vlnv} $::CELLS { lappend out "/$name" }
    return $out
}
mock get_bd_intf_pins {path} { return "/$path" }
mock get_bd_pins {args} {
    set of [opt $args -of_objects]
    if {$of eq ""} { return "/[lindex [positional $args] 0]" }
    set out {}
    foreach {name vlnv} $::CELLS {
        set type [lindex [split $vlnv :] 2]
        if {$vlnv eq $::MOCK(accel_vlnv)} { set type accel }
        foreach pin [dict get $::MOCK(clock_pins) $type] { lappend out "/$name/$pin" }
        if {$type eq "zynq_ultra_ps_e" && [mock_hp1 /$name]} { lappend out "/$name/saxihp1_fpd_aclk" }
    }
    return $out
}
proc mock_hp1 {ps} { return [expr {[info exists ::PROP($ps,config.psu__use__s_axi_gp3)] && $::PROP($ps,config.psu__use__s_axi_gp3)}] }
mock get_bd_nets {args} {
    set pin [opt $args -of_objects]
    return [expr {[info exists ::CONN($pin)] ? "net:$::CONN($pin)" : ""}]
}
mock connect_bd_net {args} {
    set pins [positional $args {-net}]
    foreach p $pins { if {[info exists ::CONN($p)]} { set ::CONN($p) "$::CONN($p)+[lindex $pins 0]" } else { set ::CONN($p) [lindex $pins 0] } }
}
mock connect_bd_intf_net {args} {
    foreach p [positional $args {-intf_net -boundary_type}] { set ::INTF($p) 1 }
}
# The accelerator's master address space exists only if the IP packaged one for the interface.
mock get_bd_addr_spaces {path} {
    lassign [split $path /] cell space
    if {$cell eq "skip2lora_0" && ([lsearch -exact $::ADDRSPACES $space] < 0 || \
            ![info exists ::PROP(bi:$space,master_address_space_ref)])} { return "" }
    return "/$path"
}
mock get_bd_addr_segs {args} {
    set of [opt $args -of_objects]
    if {$of ne ""} { set out {}; foreach {path slave} $::SEGS { if {[string match "$of/*" $path]} { lappend out $path } }; return $out }
    set path [lindex [positional $args] 0]
    if {![string match */* $path]} { return "/$path" }
    lassign [split $path /] cell intf block
    if {$block ne "" && $block ne "*"} {  # a PS slave segment: HP1's once the port is enabled
        if {$intf eq "SAXIGP3" && ![mock_hp1 /$cell]} { return "" }
        return "/$path"
    }
    return "/$cell/$intf/[expr {$intf eq "s_axi_control" ? "reg0" : "Reg"}]"
}
proc mock_segment {space seg offset range} {
    lassign [split [string trimleft $seg /] /] cell intf block
    set path "$space/SEG_${cell}_${block}"
    lappend ::SEGS $path $seg
    set ::PROP($path,offset) [format 0x%010X $offset]
    set ::PROP($path,range) [expr {$range % 1024 == 0 ? "[expr {$range / 1024}]K" : $range}]
}
mock assign_bd_address {args} {
    if {![llength $args]} {
        # Every aperture a master reaches and nothing assigned yet: behind S_AXI_HP1_FPD the OCM and
        # QSPI too (the DMA's view of HP0 is not modelled).
        if {[info exists ::INTF(/zynq_ultra_ps_e_0/S_AXI_HP1_FPD)]} {
            foreach {block offset range} {HP1_LPS_OCM 0xFF000000 0x01000000 HP1_QSPI 0xC0000000 0x20000000} {
                mock_segment /skip2lora_0/m_axi_cache /zynq_ultra_ps_e_0/SAXIGP3/$block $offset $range
            }
        }
        return
    }
    set space [opt $args -target_address_space]
    if {$space eq ""} { error "assign_bd_address: no target address space" }
    set seg [lindex [positional $args {-target_address_space -offset -range}] 0]
    if {$seg eq ""} { error "assign_bd_address: no segment" }
    mock_segment $space $seg [opt $args -offset] [opt $args -range]
}
mock exclude_bd_addr_seg {args} {
    set seg [lindex [positional $args {-target_address_space -offset -range}] 0]
    set i [lsearch -exact $::SEGS $seg]
    if {$i < 0 || $i % 2} { error "exclude_bd_addr_seg: no segment $seg" }
    set ::SEGS [lreplace $::SEGS $i [expr {$i + 1}]]
    lappend ::EXCLUDED $seg
}
mock validate_bd_design {args} {}
mock save_bd_design {args} {}
mock write_bd_tcl {args} { set f [open [lindex $args end] w]; puts $f "# bd"; close $f }
mock make_wrapper {args} {}
# -- runs and outputs -------------------------------------------------------------------------------
mock launch_runs {args} {
    if {[lindex $args 0] eq "impl_1"} {
        file mkdir $::MOCK(impl_dir)
        set f [open [file join $::MOCK(impl_dir) skip2lora_system_wrapper.bit] w]; puts -nonewline $f BITSTREAM; close $f
        set dir [file join [dict get $::PROJECTS skip2lora] skip2lora.gen sources_1 bd skip2lora_system hw_handoff]
        file mkdir $dir
        set f [open [file join $dir skip2lora_system.hwh] w]; puts -nonewline $f $::MOCK(hwh); close $f
    }
}
mock wait_on_run {run} {}
mock get_runs {run} { return $run }
mock open_run {run} {}
mock report_timing_summary {args} { set f [open [opt $args -file] w]; puts -nonewline $f $::MOCK(timing); close $f }
mock report_utilization {args} { set f [open [opt $args -file] w]; puts $f "utilization"; close $f }
mock write_hw_platform {args} { error "no xsa in the mock" }
"""


def _tcl_list(items):
    return "{" + " ".join("{%s}" % i for i in items) + "}"


# Two IP catalogs: a Vivado with the inline-HDL ilconcat, where xlconcat is still listed but hidden
# (the old lookup picked the hidden xlconcat), and one from before ilconcat (xlconcat only).
_CATALOG = {"zynq_ultra_ps_e": ("ip", ["3.4", "3.5"], "ipi"), "axi_dma": ("ip", ["7.1"], "ipi"),
            "smartconnect": ("ip", ["1.0"], "ipi"), "proc_sys_reset": ("ip", ["5.0"], "ipi")}
CATALOGS = {
    "inline_hdl": {**_CATALOG, "xlconcat": ("ip", ["2.1"], "hidden"), "ilconcat": ("inline_hdl", ["1.0"], "ipi")},
    "xlconcat_only": {**_CATALOG, "xlconcat": ("ip", ["2.1"], "ipi")},
}


def _tcl():
    try:
        import tkinter
    except ImportError:  # Python built without Tk: the Tcl interpreter comes with it
        if IN_CI:
            pytest.fail("tkinter (Tcl) is missing", pytrace=False)
        pytest.skip("tkinter (Tcl) is missing")
    return tkinter


def _run_mock(tcl_path, impl_dir, *, argv=(), version="2023.2", hwh="", timing="", board=True,
              catalog="inline_hdl"):
    tcl = _tcl().Tcl()
    tcl.eval(MOCK_VIVADO)
    cat = " ".join(f"{k} {{{lib} {{{' '.join(v)}}} {vis}}}" for k, (lib, v, vis) in CATALOGS[catalog].items())
    tcl.setvar("MOCK(catalog)", cat)
    tcl.setvar("MOCK(propagated)", "config.c_m_axi_s2mm_data_width config.c_s_axis_s2mm_tdata_width")
    tcl.eval("set MOCK(board_parts) " + _tcl_list(
        ["xilinx.com:kv260_som:part0:1.2", "xilinx.com:kv260_som:part0:1.4", "xilinx.com:kr260_som:part0:1.1"]
        if board else []))
    tcl.eval("set MOCK(boards) " + _tcl_list(["xilinx.com:kv260_carrier:1.3"]))
    tcl.setvar("MOCK(version)", version)
    tcl.setvar("MOCK(impl_dir)", str(impl_dir))
    tcl.setvar("MOCK(hwh)", hwh)
    tcl.setvar("MOCK(timing)", timing)
    tcl.setvar("MOCK(accel_vlnv)", S.VLNV)
    tcl.eval("set MOCK(clock_pins) {zynq_ultra_ps_e {maxihpm0_fpd_aclk saxihp0_fpd_aclk} "
             "axi_dma {s_axi_lite_aclk m_axi_mm2s_aclk m_axi_s2mm_aclk} smartconnect aclk "
             "proc_sys_reset slowest_sync_clk ilconcat {} xlconcat {} accel aclk}")
    tcl.eval("set argv " + _tcl_list(argv))
    tcl.eval(f"source {{{tcl_path}}}")
    calls = [list(tcl.splitlist(c)) for c in tcl.splitlist(tcl.getvar("CALLS"))]
    return tcl, calls


@pytest.fixture(scope="module")
def small_build(tmp_path_factory):
    d = tmp_path_factory.mktemp("bitstream-small")
    return V.write_build(d, "small", jobs=2)


@pytest.mark.parametrize("catalog, concat", [("inline_hdl", "xilinx.com:inline_hdl:ilconcat:1.0"),
                                             ("xlconcat_only", "xilinx.com:ip:xlconcat:2.1")])
def test_mock_vivado_run(small_build, tmp_path, catalog, concat):
    build = Path(small_build["build_dir"])
    out_dir = tmp_path / "outputs"
    tcl, calls = _run_mock(build / "build.tcl", build / "vivado" / "skip2lora.runs" / "impl_1",
                           argv=["jobs=5", f"out_dir={out_dir}"], hwh=_hwh(stream=16), timing=TIMING_MET,
                           catalog=catalog)
    names = [c[0] for c in calls]
    # The order of the major steps.
    order = ["version", "get_board_parts", "ipx::package_project", "ipx::save_core", "create_bd_design",
             "assign_bd_address", "validate_bd_design", "make_wrapper", "launch_runs", "report_timing_summary"]
    idx = [names.index(n) for n in order]
    assert idx == sorted(idx), list(zip(order, idx))
    # Newest board part and IP versions; the visible concat block (never a hidden one).
    assert ["set_property", "board_part", "xilinx.com:kv260_som:part0:1.4", "skip2lora"] in calls
    assert ["set_property", "board_connections",
            "som240_1_connector xilinx.com:kv260_carrier:som240_1_connector:1.3", "skip2lora"] in calls
    cells = dict(zip(*[iter(tcl.splitlist(tcl.getvar("CELLS")))] * 2))
    assert cells == {"zynq_ultra_ps_e_0": "xilinx.com:ip:zynq_ultra_ps_e:3.5", "axi_dma_0": "xilinx.com:ip:axi_dma:7.1",
                     "skip2lora_0": S.VLNV, "ctrl_smc": "xilinx.com:ip:smartconnect:1.0",
                     "data_smc": "xilinx.com:ip:smartconnect:1.0", "rst_pl0": "xilinx.com:ip:proc_sys_reset:5.0",
                     "irq_concat": concat}
    # The inferred interfaces were replaced by the explicit ones.
    assert set(tcl.splitlist(tcl.getvar("BUSIF"))) == {"s_axi_control", "s_axis", "m_axis", "m_axi_cache", "aclk",
                                                       "aresetn", "interrupt"}
    assert tcl.eval("set MEMMAPS") == "s_axi_control" and tcl.eval("set ADDRSPACES") == "m_axi_cache"
    # ... but the small build's 16-bit m_axi_cache is left unconnected: no HP1, no cache SmartConnect.
    assert tcl.eval("set PROP(/zynq_ultra_ps_e_0,config.psu__use__s_axi_gp3)") == "0"
    assert not any(c[0] == "connect_bd_intf_net" and any("m_axi_cache" in a for a in c) for c in calls)
    # DMA configuration as set (read back through s2l_configure).
    assert tcl.eval("set PROP(/axi_dma_0,config.c_m_axis_mm2s_tdata_width)") == "16"
    assert tcl.eval("set PROP(/axi_dma_0,config.c_m_axi_mm2s_data_width)") == "32"
    assert tcl.eval("set PROP(/axi_dma_0,config.c_sg_length_width)") == str(S.DMA_LENGTH_WIDTH)
    assert tcl.eval("set PROP(/axi_dma_0,config.c_s_axis_s2mm_tdata_width.value_src)") == "USER"
    assert tcl.eval("set PROP(/axi_dma_0,config.c_s_axis_s2mm_tdata_width)") == "16"
    assert tcl.eval("set PROP(/axi_dma_0,config.c_m_axi_s2mm_data_width)") == "32"
    assert tcl.eval("set PROP(/zynq_ultra_ps_e_0,config.psu__maxigp0__data_width)") == "32"
    # The accelerator's m_axis as IP integrator sees it: 2-byte beats with TKEEP and TLAST.
    assert [tcl.eval(f"mock_intf_param /skip2lora_0/m_axis {k}") for k in ("tdata_num_bytes", "has_tkeep",
                                                                          "has_tlast")] == ["2", "1", "1"]
    assert tcl.eval("mock_intf_param /skip2lora_0/s_axis has_tkeep") == "0"  # whole beats only
    assert tcl.eval("set PROP(/zynq_ultra_ps_e_0,config.psu__crl_apb__pl0_ref_ctrl__freqmhz)") == str(S.PL_CLOCK_MHZ)
    # Every clock input is driven by pl_clk0; the address map is as described.
    for pin in ("/skip2lora_0/aclk", "/axi_dma_0/m_axi_s2mm_aclk", "/zynq_ultra_ps_e_0/saxihp0_fpd_aclk",
                "/ctrl_smc/aclk", "/rst_pl0/slowest_sync_clk"):
        assert tcl.eval(f"set CONN({pin})") == "/zynq_ultra_ps_e_0/pl_clk0"
    assert tcl.eval("set CONN(/skip2lora_0/aresetn)") == "/rst_pl0/peripheral_aresetn"
    assigned = [c for c in calls if c[0] == "assign_bd_address" and len(c) > 1]
    assert [(c[4], c[6], c[-1]) for c in assigned] == [
        (f"0x{S.ACCELERATOR['base']:08X}", f"0x{S.ACCELERATOR['range']:08X}", "/skip2lora_0/s_axi_control/reg0"),
        (f"0x{S.DMA['base']:08X}", f"0x{S.DMA['range']:08X}", "/axi_dma_0/S_AXI_LITE/Reg")]
    assert ["launch_runs", "synth_1", "-jobs", "5"] in calls
    assert ["launch_runs", "impl_1", "-jobs", "5", "-to_step", "write_bitstream"] in calls
    # The outputs, then the Python post-step on them.
    assert (out_dir / "skip2lora.bit").read_text() == "BITSTREAM"
    info = json.loads((out_dir / "vivado_info.json").read_text())
    assert info["vivado_version"] == "2023.2" and info["board_part"] == "xilinx.com:kv260_som:part0:1.4"
    assert info["ip_zynq_ultra_ps_e"] == "xilinx.com:ip:zynq_ultra_ps_e:3.5"
    assert V.check_hwh(out_dir / "skip2lora.hwh", config="small") == []
    m = V.write_manifest(out_dir, config="small")
    assert m["timing_met"] is True and m["vivado_version"] == "2023.2"
    assert {"skip2lora.bit", "skip2lora.hwh", "skip2lora_timing.rpt"} <= set(m["files"])
    dest = V.install(out_dir, tmp_path / "installed")
    assert sorted(Path(p).name for p in dest) == ["manifest.json", "skip2lora.bit", "skip2lora.hwh"]


def test_mock_vivado_refusals(small_build, tmp_path):
    tkinter = _tcl()
    build = Path(small_build["build_dir"])
    impl = tmp_path / "impl"
    with pytest.raises(tkinter.TclError, match="too old; this flow needs 2022.2"):
        _run_mock(build / "build.tcl", impl, version="2021.1")
    with pytest.raises(tkinter.TclError, match="no board part xilinx.com:kv260_som:part0"):
        _run_mock(build / "build.tcl", impl, board=False)
    with pytest.raises(tkinter.TclError, match="unknown argument 'jobs'"):
        _run_mock(build / "build.tcl", impl, argv=["jobs"])


def _mock_fails_edited(build: Path, tmp_path, edit, message, hwh) -> None:
    """Run the mock Vivado on ``build``'s script after ``edit``: it must fail with ``message``."""
    tkinter = _tcl()
    text = (build / "build.tcl").read_text()
    edited = edit(text)
    assert edited != text
    (tmp_path / "skip2lora.v").write_bytes((build / "skip2lora.v").read_bytes())
    (tmp_path / "build.tcl").write_text(edited)
    with pytest.raises(tkinter.TclError, match=re.escape(message)):
        _run_mock(tmp_path / "build.tcl", tmp_path / "impl", hwh=hwh, timing=TIMING_MET)


@pytest.mark.parametrize("edit, message", [
    # Without VALUE_SRC=USER the S2MM widths follow the (not yet connected) stream: the read-back fails.
    (lambda tcl: tcl.replace("s2l_user_values $dma {c_m_axi_s2mm_data_width c_s_axis_s2mm_tdata_width}\n", ""),
     "CONFIG.c_m_axi_s2mm_data_width is '' after setting it, not '32'"),
    # An ilconcat created as -type ip (what the script did before) is refused.
    (lambda tcl: tcl.replace("set irq [s2l_create_cell [s2l_ipdef {ilconcat xlconcat}] irq_concat]",
                             "set irq [create_bd_cell -type ip -vlnv [s2l_ipdef {ilconcat xlconcat}] irq_concat]"),
     "needs -type inline_hdl, not ip"),
    # An output stream packaged without TKEEP is caught after validation.
    (lambda tcl: tcl.replace("TKEEP m_axis_tkeep ", "").replace("TDATA_NUM_BYTES 2 HAS_TKEEP 1",
                                                                 "TDATA_NUM_BYTES 2 HAS_TKEEP 0"),
     "m_axis CONFIG.HAS_TKEEP is '0' after validation, not '1'"),
    # Declared bus parameters that disagree with the ports are refused.
    (lambda tcl: tcl.replace("TDATA_NUM_BYTES 2 HAS_TKEEP 1", "TDATA_NUM_BYTES 4 HAS_TKEEP 1"),
     "m_axis declares TDATA_NUM_BYTES 4, its ports say 2"),
])
def test_mock_vivado_catches(small_build, tmp_path, edit, message):
    """The mock fails the script's known pitfalls, so the passing run above means something."""
    _mock_fails_edited(Path(small_build["build_dir"]), tmp_path, edit, message, _hwh(stream=16))


def _stub_verilog(d):
    """A Verilog top with the design's ports only (the mock reads port widths, not logic): the
    kv260 script runs against the mock without the minutes-long kv260 export."""
    decls = "".join(f"  {'input' if flow == 'in' else 'output'} {f'[{w - 1}:0] ' if w > 1 else ''}{name};\n"
                    for name, flow, w in d.ports)
    return f"module {d.top}({', '.join(name for name, _, _ in d.ports)});\n{decls}endmodule\n"


@pytest.fixture(scope="module")
def stub_builds(tmp_path_factory):
    """build.tcl + a stub skip2lora.v of the kv260 build (the DDR path connected) and of a build
    without the DDR path."""
    builds = {}
    for config in ("kv260", _plain_config()):
        d = V.design(config)
        out = tmp_path_factory.mktemp(f"bitstream-{d.config['name']}")
        V.write_build(out, config, jobs=2, export=False)
        (out / "skip2lora.v").write_text(_stub_verilog(d))
        builds[d.config["name"]] = (out, d)
    return builds


def test_mock_vivado_ddr_cache_path(stub_builds, tmp_path):
    build, d = stub_builds["kv260"]
    out_dir = tmp_path / "outputs"
    tcl, calls = _run_mock(build / "build.tcl", tmp_path / "impl", argv=[f"out_dir={out_dir}"], hwh=_hwh(),
                           timing=TIMING_MET)
    cells = dict(zip(*[iter(tcl.splitlist(tcl.getvar("CELLS")))] * 2))
    assert cells["cache_smc"] == "xilinx.com:ip:smartconnect:1.0" and len(cells) == 8
    # Packaged: the read manager with its address space (the inferred one removed).
    assert "m_axi_cache" in tcl.splitlist(tcl.getvar("BUSIF")) and tcl.eval("set ADDRSPACES") == "m_axi_cache"
    assert tcl.eval("set PROP(as:m_axi_cache,range)") == str(2 ** 40)
    assert tcl.eval("set PROP(as:m_axi_cache,width)") == "128"
    # HP1 on at 128 bits; the path m_axi_cache -> cache_smc -> S_AXI_HP1_FPD, clocked and reset.
    assert tcl.eval("set PROP(/zynq_ultra_ps_e_0,config.psu__use__s_axi_gp3)") == "1"
    assert tcl.eval("set PROP(/zynq_ultra_ps_e_0,config.psu__saxigp3__data_width)") == "128"
    assert ["connect_bd_intf_net", "/skip2lora_0/m_axi_cache", "/cache_smc/S00_AXI"] in calls
    assert ["connect_bd_intf_net", "/cache_smc/M00_AXI", "/zynq_ultra_ps_e_0/S_AXI_HP1_FPD"] in calls
    assert tcl.eval("set PROP(/cache_smc,config.num_si)") == "1" and tcl.eval("set PROP(/cache_smc,config.num_mi)") == "1"
    for pin in ("/cache_smc/aclk", "/zynq_ultra_ps_e_0/saxihp1_fpd_aclk"):
        assert tcl.eval(f"set CONN({pin})") == "/zynq_ultra_ps_e_0/pl_clk0", pin
    assert tcl.eval("set CONN(/cache_smc/aresetn)") == "/rst_pl0/interconnect_aresetn"
    # The manager as IP integrator sees it after validation (from the packaged ports).
    assert tcl.eval("mock_intf_param /skip2lora_0/m_axi_cache data_width") == "128"
    assert tcl.eval("mock_intf_param /skip2lora_0/m_axi_cache read_write_mode") == "READ_ONLY"
    # The address map: the two DDR windows assigned into m_axi_cache's space; what the catch-all
    # assign_bd_address added behind HP1 (OCM, QSPI) excluded; only DDR left.
    assigned = [(c[2], c[4], c[6], c[-1]) for c in calls if c[0] == "assign_bd_address" and len(c) > 1]
    assert assigned[2:] == [
        ("/skip2lora_0/m_axi_cache", "0x0000000000", "0x80000000", "/zynq_ultra_ps_e_0/SAXIGP3/HP1_DDR_LOW"),
        ("/skip2lora_0/m_axi_cache", "0x0800000000", "0x80000000", "/zynq_ultra_ps_e_0/SAXIGP3/HP1_DDR_HIGH")]
    segs = dict(zip(*[iter(tcl.splitlist(tcl.getvar("SEGS")))] * 2))
    cache_segs = {p: v for p, v in segs.items() if p.startswith("/skip2lora_0/m_axi_cache/")}
    assert cache_segs == {"/skip2lora_0/m_axi_cache/SEG_zynq_ultra_ps_e_0_HP1_DDR_LOW": "/zynq_ultra_ps_e_0/SAXIGP3/HP1_DDR_LOW",
                          "/skip2lora_0/m_axi_cache/SEG_zynq_ultra_ps_e_0_HP1_DDR_HIGH": "/zynq_ultra_ps_e_0/SAXIGP3/HP1_DDR_HIGH"}
    assert sorted(map(str, tcl.splitlist(tcl.getvar("EXCLUDED")))) == [
        "/skip2lora_0/m_axi_cache/SEG_zynq_ultra_ps_e_0_HP1_LPS_OCM", "/skip2lora_0/m_axi_cache/SEG_zynq_ultra_ps_e_0_HP1_QSPI"]
    # The outputs pass the Python check (the cache path included).
    assert V.check_hwh(out_dir / "skip2lora.hwh", d) == []


def test_mock_vivado_without_ddr_path(stub_builds, tmp_path):
    build, d = stub_builds["plain"]
    out_dir = tmp_path / "outputs"
    tcl, calls = _run_mock(build / "build.tcl", tmp_path / "impl", argv=[f"out_dir={out_dir}"],
                           hwh=_hwh(stream=16, cache=False), timing=TIMING_MET)
    cells = dict(zip(*[iter(tcl.splitlist(tcl.getvar("CELLS")))] * 2))
    assert "cache_smc" not in cells and len(cells) == 7
    assert set(tcl.splitlist(tcl.getvar("BUSIF"))) == {"s_axi_control", "s_axis", "m_axis", "aclk", "aresetn", "interrupt"}
    assert tcl.eval("set ADDRSPACES") == ""
    assert tcl.eval("set PROP(/zynq_ultra_ps_e_0,config.psu__use__s_axi_gp3)") == "0"
    assert tcl.eval("info exists CONN(/zynq_ultra_ps_e_0/saxihp1_fpd_aclk)") == "0"
    assert len([c for c in calls if c[0] == "assign_bd_address" and len(c) > 1]) == 2
    assert tcl.eval("set EXCLUDED") == ""
    assert V.check_hwh(out_dir / "skip2lora.hwh", d) == []


@pytest.mark.parametrize("edit, message", [
    # HP1 left off: its DDR segments do not exist.
    (lambda tcl: tcl.replace("    PSU__USE__S_AXI_GP3 $S2L(cache_path) \\\n", ""),
     "no address segment zynq_ultra_ps_e_0/SAXIGP3/HP1_DDR_LOW (is its PS port enabled?)"),
    # The manager packaged without its address space: nothing to map the DDR into.
    (lambda tcl: tcl.replace("    set_property master_address_space_ref", "    # "),
     "assign_bd_address: no target address space"),
    # A declared width that disagrees with the ports is refused.
    (lambda tcl: tcl.replace("READ_ONLY DATA_WIDTH 128", "READ_ONLY DATA_WIDTH 64"),
     "m_axi_cache declares DATA_WIDTH 64, its ports say 128"),
])
def test_mock_vivado_catches_cache_path(stub_builds, tmp_path, edit, message):
    _mock_fails_edited(stub_builds["kv260"][0], tmp_path, edit, message, _hwh())


# -------------------------------------------------------------------------------------------------
# The Verilog export: UltraRAM without an initial block, progress, build paths
# -------------------------------------------------------------------------------------------------

_ULTRA = re.compile(r'\(\* ram_style = "ultra" \*\)\n\s*reg \[\d+:0\] (\w+) \[\d+:0\];\n(\s*initial begin)?')


def test_uram_cache_exports_without_initial_block(monkeypatch):
    """The small build's UltraRAM-style memories (the cache and, with the DDR path, the batch
    buffer's banks), pushed onto the KV260's UltraRAM path, export with no initial block."""
    import importlib
    import pkgutil

    from skip2lora import hw
    from skip2lora.hw import export

    raw = []
    strip = export.strip_ultraram_init
    monkeypatch.setattr(export, "strip_ultraram_init", lambda text: (raw.append(text), strip(text))[1])
    # Wherever the cache memory's UltraRAM threshold lives: lowered to 0 (verilog_text, not the cache).
    modules = [importlib.import_module(f"skip2lora.hw.{m.name}") for m in pkgutil.iter_modules(hw.__path__)]
    patched = [m for m in modules if hasattr(m, "URAM_THRESHOLD_BITS")]
    assert patched, "no URAM_THRESHOLD_BITS in skip2lora.hw"
    for m in patched:
        monkeypatch.setattr(m, "URAM_THRESHOLD_BITS", 0)
    text = export.verilog_text("small")
    before, after = _ULTRA.findall(raw[0]), _ULTRA.findall(text)
    from skip2lora.hw.params import HwParams

    cfg = config_named("small")
    n = 1 + (HwParams(cfg).pair if cfg.ddr else 0)  # the cache + hw/memories.BatchBufferBank's banks
    assert len(before) == n, [name for name, _ in before]
    assert all(init == "  initial begin" for _, init in before)  # Amaranth's init=[] is written out ...
    assert [name for name, _ in after] == [name for name, _ in before]
    assert all(init == "" for _, init in after)                  # ... and removed from every one
    assert text.count("initial begin") == raw[0].count("initial begin") - n  # other memories keep theirs


def test_strip_ultraram_init_refuses_what_it_cannot_remove():
    from skip2lora.hw.export import strip_ultraram_init

    zero = '  (* ram_style = "ultra" *)\n  reg [7:0] mem [1:0];\n  initial begin\n    mem[0] = 8\'h00;\n' \
           '    mem[1] = 8\'h00;\n  end\n  always @(posedge clk) x <= mem[a];\n'
    assert strip_ultraram_init(zero) == '  (* ram_style = "ultra" *)\n  reg [7:0] mem [1:0];\n' \
                                        '  always @(posedge clk) x <= mem[a];\n'
    with pytest.raises(RuntimeError, match=r"UltraRAM memories \['mem'\] still have an initial block"):
        strip_ultraram_init(zero.replace("mem[1] = 8'h00", "mem[1] = 8'h05"))


def test_export_progress_and_cache(tmp_path, monkeypatch, capsys):
    from skip2lora.hw import build_paths, export

    monkeypatch.setenv("SKIP2LORA_BUILD_DIR", str(tmp_path / "root"))
    monkeypatch.delenv("SKIP2LORA_SIM_BUILD", raising=False)
    lines = []
    r = export.export_verilog(tmp_path / "out", "small", log=lines.append)
    assert all(ln.startswith("[export small] ") for ln in lines)
    stages = [ln.split("] ", 1)[1] for ln in lines]
    assert stages[0].startswith("exporting the Verilog once, into ")
    assert [s.split(" (")[0] for s in stages[1:] if s.endswith(" ...")] == [
        "elaborate", "convert", f"write small-{export.source_hash('small')}.v"]
    assert re.fullmatch(r"elaborate \(Amaranth -> RTLIL\): \d+\.\d s", stages[2])
    cached = build_paths.verilog_cache_dir() / f"small-{export.source_hash('small')}.v"
    assert cached.parent == tmp_path / "root" / "sim_build" / "verilog" and cached.is_file()
    assert Path(r["verilog"]).read_text() == cached.read_text()
    # The second export reuses the cache; with log=None (the CLI's --json) nothing is printed.
    lines.clear()
    export.export_verilog(tmp_path / "out2", "small", log=lines.append)
    assert lines == [f"[export small] reusing {cached}"]
    export.export_verilog(tmp_path / "out3", "small", log=None)
    assert capsys.readouterr().err == ""
    assert (tmp_path / "out3" / "skip2lora.v").read_text() == cached.read_text()


def test_build_paths(tmp_path, monkeypatch):
    from skip2lora.hw import build_paths as B

    monkeypatch.delenv("SKIP2LORA_BUILD_DIR", raising=False)
    monkeypatch.delenv("SKIP2LORA_SIM_BUILD", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    # A writable checkout (this one): its sim_build/ and build/, as before.
    assert B.source_checkout() == REPO
    assert B.sim_build_dir() == REPO / "sim_build" and B.bitstream_build_dir("kv260") == REPO / "build" / "bitstream-kv260"
    # An installed package (no checkout beside it) never writes next to itself: the user cache.
    monkeypatch.setattr(B, "source_checkout", lambda: None)
    assert B.sim_build_dir() == tmp_path / "xdg" / "skip2lora" / "sim_build"
    assert B.verilog_cache_dir() == tmp_path / "xdg" / "skip2lora" / "sim_build" / "verilog"
    # The setting wins over both; SKIP2LORA_SIM_BUILD still moves only the simulator builds.
    monkeypatch.setenv("SKIP2LORA_BUILD_DIR", str(tmp_path / "b"))
    assert B.bitstream_build_dir("small") == tmp_path / "b" / "build" / "bitstream-small"
    monkeypatch.setenv("SKIP2LORA_SIM_BUILD", str(tmp_path / "s"))
    assert B.sim_build_dir() == tmp_path / "s" and B.build_root() == tmp_path / "b"
    from skip2lora.sim import runner

    assert runner.cache_dir() == tmp_path / "s"


def test_installed_package_is_recognised(tmp_path):
    """A copy of the package without its pyproject.toml (as in site-packages) is not a checkout."""
    import shutil
    import subprocess
    import sys

    pkg = tmp_path / "site" / "skip2lora" / "hw"
    pkg.mkdir(parents=True)
    shutil.copy(Path(__file__).resolve().parents[1] / "hw" / "build_paths.py", pkg / "build_paths.py")
    code = ("import importlib.util, sys; s = importlib.util.spec_from_file_location('bp', sys.argv[1]); "
            "m = importlib.util.module_from_spec(s); s.loader.exec_module(m); print(m.source_checkout())")
    out = subprocess.run([sys.executable, "-c", code, str(pkg / "build_paths.py")], capture_output=True,
                         text=True, check=True).stdout.strip()
    assert out == "None"


# -------------------------------------------------------------------------------------------------
# A board without the overlay: the error and the notebooks say how to build or obtain it
# -------------------------------------------------------------------------------------------------

def test_missing_bitstream_says_how_to_build_it(tmp_path):
    from skip2lora.bitstreams import BitstreamMissing, kv260_bitfile, require_kv260_bitstream

    assert kv260_bitfile() == REPO / "bitstreams" / "kv260" / "skip2lora.bit"
    bit = tmp_path / "skip2lora.bit"
    with pytest.raises(BitstreamMissing) as e:
        require_kv260_bitstream(bit)
    msg = str(e.value)
    assert msg.startswith(f"no KV260 overlay: {bit} and {tmp_path / 'skip2lora.hwh'} are missing.")
    assert f"Vivado {V.MIN_VIVADO} or newer" in msg and "`skip2lora hw bitstream`" in msg
    assert isinstance(e.value, FileNotFoundError)  # what callers (and the CLI) already handle
    bit.write_bytes(b"\x00")
    with pytest.raises(BitstreamMissing, match=rf"^no KV260 overlay: {re.escape(str(bit.with_suffix('.hwh')))} is missing"):
        require_kv260_bitstream(bit)
    bit.with_suffix(".hwh").write_text("<EDKSYSTEM/>")
    assert require_kv260_bitstream(bit) == bit


NOTEBOOKS = sorted(p.name for p in (REPO / "notebooks").glob("*.ipynb"))  # every notebook runs on a board


def _cells(notebook):
    nb = json.loads((REPO / "notebooks" / notebook).read_text())
    return ["".join(c["source"]) for c in nb["cells"]], [c["cell_type"] for c in nb["cells"]]


@pytest.mark.parametrize("notebook", NOTEBOOKS)
def test_notebooks_say_how_to_get_the_bitstream(notebook):
    cells, kinds = _cells(notebook)
    assert kinds[:2] == ["markdown", "code"]
    assert "skip2lora hw bitstream" in cells[0] and f"Vivado {V.MIN_VIVADO} or newer" in cells[0]
    assert "bitstreams/kv260/README.md" in cells[0]
    code = cells[1]
    assert "require_kv260_bitstream(BITFILE)" in code
    # PYNQ's cached metadata is dropped before the overlay is loaded (downloaded).
    assert code.index("PL.reset()") < code.index("pynq_backend.load(bitfile")


@pytest.mark.parametrize("notebook", NOTEBOOKS)
def test_notebook_stops_on_a_board_without_the_overlay(notebook, tmp_path):
    """The first code cell, run as on a KV260 whose bitstreams/kv260/ is empty, stops with the message."""
    import subprocess
    import sys

    pynq_python = REPO / ".venv-pynq" / "bin" / "python"
    if not pynq_python.exists():
        if IN_CI:
            pytest.fail("no .venv-pynq (scripts/setup.sh --with-pynq)", pytrace=False)
        pytest.skip("no .venv-pynq (create it with scripts/setup.sh --with-pynq)")
    cells, _ = _cells(notebook)
    code = (
        "import os, sys, skip2lora.bitstreams as b\n"
        "b.KV260_DIR = b.Path(sys.argv[1])\n"
        "real = os.path.exists\n"
        "os.path.exists = lambda p: p == '/proc/device-tree/chosen/pynq_board' or real(p)\n"
        "try:\n"
        "    exec(sys.stdin.read(), {})\n"
        "except b.BitstreamMissing as exc:\n"
        "    print('STOPPED:', exc)\n")
    proc = subprocess.run([str(pynq_python), "-c", code, str(tmp_path)], input=cells[1], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith(f"STOPPED: no KV260 overlay: {tmp_path / 'skip2lora.bit'} and ")
    assert "`skip2lora hw bitstream`" in proc.stdout
