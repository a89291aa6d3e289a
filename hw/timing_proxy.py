"""A timing proxy for the yosys ``synth_xilinx -family xcup`` netlist: logic depth, not nanoseconds.

No open-source timing model exists for UltraScale+, so this measures what decides timing closure
at the RTL level and what a designer can change: for every register-to-register path, how many
LUT levels and carry chains lie between two clocked elements, which signals they run between, and
whether every block RAM, UltraRAM and DSP boundary is registered.

Counting rules (the budget of issue 14 is "every path <= 6 LUT levels plus one carry chain"):

* Startpoints: flip-flop Q, block RAM / UltraRAM / registered DSP outputs, LUTRAM and SRL outputs
  (counted as one LUT level: the read is a LUT), and the top module's input ports.
* Endpoints: flip-flop D/CE/R/S pins, every input of a block RAM, UltraRAM, LUTRAM or SRL, DSP
  inputs whose stage is registered, and the top module's output ports. Clock pins are not data.
* A LUT level is one LUT1..LUT6 / LUT6_2 / INV (an inverter becomes a LUT in the slice), or a LUTRAM
  / SRL read through its address. MUXF7/F8/F9 complete the wide LUT they follow (abc9 maps 7- and
  8-input functions to LUT6 + MUXF7/F8): reached through I0/I1 they add no level, through their
  select S they add one.
* A carry chain is CARRY4/CARRY8 cells joined CO -> CI (yosys emits CARRY4; Vivado retargets them to
  CARRY8). A path entering a chain from fabric counts one chain; ``carry_bits`` counts the carry
  positions it travels (entry bit to exit bit, across cells).
* A DSP48E2 whose stage on a pin's route carries no pipeline register (AREG/BREG/CREG/DREG/ADREG,
  MREG, PREG) passes that pin combinationally to its outputs: the path continues and counts a
  ``dsp`` hop. yosys maps no pipeline register into DSP48E2 for UltraScale+ (its ``xilinx_dsp``
  register packing runs for xc7 only), so registers around a multiplier stay fabric flip-flops.
* Registered boundaries: a memory output port is registered when its output register is used
  (DOA_REG/DOB_REG, OREG_A/OREG_B) or when every load of every used output bit is a clocked input
  (flip-flop D, a registered DSP input, a memory input) with no logic in between; a DSP input port
  (A, B, C, D) when its register parameter is set or every non-constant bit comes straight from a
  flip-flop Q; a DSP output P when PREG=1 or every used bit drives only flip-flop D pins. Vivado packs
  such adjacent fabric registers into the primitive, and even unpacked they leave only routing.
* Multiply-accumulate shape (``macc``, ``dsp_macc_shape``): a DSP whose product register feeds only
  a register of at most 48 bits with feedback, ``acc <= f(acc, M, <= 2 control bits)``. Vivado maps
  that into the DSP (post-adder, P feedback, PREG); yosys leaves it in fabric, and its LUT, carry and
  FF cells are counted (what the DSPs would absorb), never subtracted from the estimate.

The netlist may be hierarchical (``synth_xilinx`` does not flatten unless asked); it is flattened
here, so names carry the instance path (``core.head.t__0__1``).
"""

from __future__ import annotations

import json
import re
import sys
from collections import Counter, defaultdict, deque
from dataclasses import dataclass
from pathlib import Path

__all__ = ["timing_report", "timing_text", "load_netlist", "flatten", "clock_projections", "budget_violations",
           "DEFAULT_BUDGET"]

#: Issue 14's budget: LUT levels per path, carry chains per path.
DEFAULT_BUDGET = {"max_lut_levels": 6, "max_carry_chains": 1}

_CONST = {"0": -1, "1": -2, "x": -3, "z": -4}
_CLOCK_PINS = {"C", "CLK", "WCLK", "CLKARDCLK", "CLKBWRCLK", "CLKA", "CLKB", "G", "CLKAWRCLK"}
_FF = re.compile(r"^(FD[CPRS]E(_1)?|FD[CPRS]?|LD[CP]E)$")
_LUT = re.compile(r"^(LUT[1-6](_2)?|INV)$")
_MUXF = re.compile(r"^MUXF[789]$")
_CARRY = {"CARRY4": 4, "CARRY8": 8}
_SRL = re.compile(r"^SRLC?(16|32)E$")
_LUTRAM = re.compile(r"^RAM(16|32|64|128|256|512)X\d+[SD]$|^RAM(32|64)M(8|16)?$")
_BRAM = re.compile(r"^RAMB(18|36)E[12]$")
_URAM = re.compile(r"^URAM288(_BASE)?$")
_DSP = re.compile(r"^DSP48E[12]$")
_PASS = re.compile(r"^(IBUF|OBUF|BUF|IOBUF)$")
_SKIP = re.compile(r"^(BUFG\w*|BUFGCE\w*|BUFH\w*|GND|VCC|\$scopeinfo)$")

# Fields of a path key, packed into one integer so that the longest-path search compares and adds
# plain ints: LUT levels, carry chains, carry bits, DSP hops.
_SHIFT = {"L": 40, "C": 32, "B": 16, "D": 0}
_SHIFT_CHAINS_FIRST = {"C": 40, "L": 32, "B": 16, "D": 0}


def _pack(w, shift):
    return (w[0] << shift["L"]) | (w[1] << shift["C"]) | (w[2] << shift["B"]) | (w[3] << shift["D"])


def _param(value):
    """A yosys JSON parameter: bit strings become ints, other strings are stripped text."""
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value and set(value) <= set("01xz"):
        return int(value.replace("x", "0").replace("z", "0"), 2)
    return value.strip() if isinstance(value, str) else value


# -- netlist loading and flattening ---------------------------------------------------------------

def load_netlist(path) -> dict:
    """Read a yosys ``write_json`` file."""
    with open(path) as f:
        return json.load(f)


@dataclass
class Cell:
    name: str           # hierarchical cell name
    scope: str          # instance path with a trailing dot ("" for the top module)
    type: str
    params: dict
    conns: dict         # port -> list of bit ids (negative: constants)
    dirs: dict          # port -> "input" / "output"
    src: str


@dataclass
class FlatNetlist:
    top: str
    cells: list
    names: dict         # bit -> [(name, index, width, scope)]
    inputs: dict        # top input port -> bits
    outputs: dict       # top output port -> bits


class _UnionFind:
    def __init__(self):
        self.parent = {}

    def find(self, x):
        p = self.parent
        root = x
        while p.get(root, root) != root:
            root = p[root]
        while p.get(x, x) != root:
            p[x], x = root, p[x]
        return root

    def union(self, a, b):
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        if rb < 0:                      # a constant wins: the net is that constant
            ra, rb = rb, ra
        self.parent[rb] = ra


def _top_name(modules, top):
    if top:
        if top not in modules:
            raise ValueError(f"top module {top!r} is not in the netlist (modules: {', '.join(sorted(modules))})")
        return top
    tops = [n for n, m in modules.items() if _param(m.get("attributes", {}).get("top", 0)) == 1]
    if len(tops) == 1:
        return tops[0]
    used = {c["type"] for m in modules.values() for c in m.get("cells", {}).values()}
    roots = [n for n, m in modules.items() if n not in used and not _is_blackbox(m)]
    if len(roots) != 1:
        raise ValueError(f"cannot tell the top module of the netlist (candidates: {', '.join(sorted(roots))}); "
                         "pass top=")
    return roots[0]


def _is_blackbox(module):
    attrs = module.get("attributes", {})
    return any(_param(attrs.get(a, 0)) == 1 for a in ("blackbox", "whitebox", "lib_whitebox"))


def flatten(netlist: dict, top: str | None = None) -> FlatNetlist:
    """Flatten the hierarchy below ``top`` into primitive cells on one bit namespace."""
    modules = netlist.get("modules")
    if not isinstance(modules, dict) or not modules:
        raise ValueError("not a yosys JSON netlist: no 'modules'")
    top = _top_name(modules, top)
    uf = _UnionFind()
    counter = [1 + max([0] + [b for m in modules.values()
                              for group in (m.get("netnames", {}).values(), m.get("ports", {}).values(),
                                            (c.get("connections", {}) for c in m.get("cells", {}).values()))
                              for item in group
                              for bits in ([item["bits"]] if "bits" in item else item.values())
                              for b in bits if isinstance(b, int)])]   # fresh bits for submodule nets
    cells, raw_names = [], []

    def instantiate(modname, scope, bitmap, depth):
        if depth > 64:
            raise ValueError(f"netlist hierarchy deeper than 64 levels at {scope!r} (recursive module?)")
        mod = modules[modname]

        def mapbit(b):
            if isinstance(b, str):
                return _CONST.get(b, -3)
            r = bitmap.get(b)
            if r is None:
                r = bitmap[b] = counter[0]
                counter[0] += 1
            return r

        for name, info in mod.get("netnames", {}).items():
            if info.get("hide_name"):
                continue
            bits = info["bits"]
            for i, b in enumerate(bits):
                if isinstance(b, int):
                    raw_names.append((mapbit(b), scope + name, i, len(bits), scope))
        for cname, c in mod.get("cells", {}).items():
            ctype = c["type"]
            sub = modules.get(ctype)
            if sub is not None and not _is_blackbox(sub) and sub.get("cells") is not None \
                    and ctype != "$scopeinfo" and not sub.get("attributes", {}).get("abc9_box"):
                subbits = {}
                for port, pinfo in sub.get("ports", {}).items():
                    conn = c["connections"].get(port, [])
                    for sb, pb in zip(pinfo["bits"], conn):
                        outer = mapbit(pb)
                        if isinstance(sb, str):      # the submodule ties this port bit to a constant
                            uf.union(_CONST.get(sb, -3), outer)
                        elif sb in subbits:          # a pass-through: both outer bits are one net
                            uf.union(subbits[sb], outer)
                        else:
                            subbits[sb] = outer
                instantiate(ctype, f"{scope}{cname}.", subbits, depth + 1)
            else:
                conns = {p: [mapbit(b) for b in bits] for p, bits in c.get("connections", {}).items()}
                src = str(c.get("attributes", {}).get("src", ""))
                cells.append(Cell(scope + cname, scope, ctype,
                                  {k: _param(v) for k, v in c.get("parameters", {}).items()},
                                  conns, dict(c.get("port_directions", {})), src))

    top_mod = modules[top]
    top_bits = {b for group in (top_mod.get("netnames", {}).values(), top_mod.get("ports", {}).values())
                for info in group for b in info["bits"] if isinstance(b, int)}
    top_bits.update(b for c in top_mod.get("cells", {}).values() for bits in c.get("connections", {}).values()
                    for b in bits if isinstance(b, int))
    instantiate(top, "", {b: b for b in top_bits}, 0)   # the top keeps its own bit numbers
    find = uf.find
    if uf.parent:
        for cell in cells:
            for p, bits in cell.conns.items():
                cell.conns[p] = [find(b) for b in bits]
    names = defaultdict(list)
    for bit, name, i, width, scope in raw_names:
        bit = find(bit)
        if bit >= 0:
            names[bit].append((name, i, width, scope))
    inputs, outputs = {}, {}
    for pname, pinfo in top_mod.get("ports", {}).items():
        bits = [find(b) if isinstance(b, int) else _CONST.get(b, -3) for b in pinfo["bits"]]
        (inputs if pinfo["direction"] == "input" else outputs)[pname] = bits
        if pinfo["direction"] == "inout":
            inputs[pname] = bits
    return FlatNetlist(top, cells, dict(names), inputs, outputs)


# -- the cell models ------------------------------------------------------------------------------

class _Graph:
    """Timing arcs between net bits, startpoints and endpoints."""

    def __init__(self):
        self.succ = defaultdict(list)   # bit -> [(out_bit, (L, C, B, D), cell index)]
        self.sources = {}               # bit -> ((L, C, B, D), cell index or -1, label)
        self.sinks = []                 # (bit, cell index or -1 for a top-level output, pin label)
        self.driver = {}                # bit -> cell index
        self.unmodelled = Counter()

    def arc(self, a, b, w, ci):
        if a >= 0 and b >= 0:
            self.succ[a].append((b, w, ci))

    def source(self, b, w, ci, label):
        if b >= 0:
            self.sources[b] = (w, ci, label)

    def sink(self, b, ci, label):
        if b >= 0:
            self.sinks.append((b, ci, label))


_LEVEL = (1, 0, 0, 0)
_ZERO = (0, 0, 0, 0)
_DSP_HOP = (0, 0, 0, 1)


def _pins(cell, direction):
    for p, bits in cell.conns.items():
        d = cell.dirs.get(p)
        if d == direction or (d is None and direction == "input" and p not in _CLOCK_PINS):
            yield p, bits


def _label(p, bits, i):
    return p if len(bits) == 1 else f"{p}[{i}]"


def _model_sequential_inputs(g, ci, cell):
    for p, bits in _pins(cell, "input"):
        if p in _CLOCK_PINS:
            continue
        for i, b in enumerate(bits):
            g.sink(b, ci, _label(p, bits, i))


def _model_lutram(g, ci, cell):
    """All inputs are clocked (the write); read addresses also reach their outputs as a LUT read."""
    _model_sequential_inputs(g, ci, cell)
    outs = dict(_pins(cell, "output"))
    for p, bits in outs.items():
        for b in bits:
            g.source(b, _LEVEL, ci, p)
    for p, bits in _pins(cell, "input"):
        m = re.match(r"^ADDR([A-H])$", p)
        if m:
            targets = [q for q in outs if q == f"DO{m.group(1)}"]
        elif re.match(r"^A\d*$", p):
            targets = [q for q in outs if q in ("SPO", "O", "Q", "Q15", "Q31")]
        elif p.startswith("DPRA"):
            targets = [q for q in outs if q == "DPO"]
        else:
            continue
        for q in targets:
            for a in bits:
                for b in outs[q]:
                    g.arc(a, b, _LEVEL, ci)


def _model_carry(g, ci, cell, width):
    outs_o = cell.conns.get("O", [])
    outs_co = cell.conns.get("CO", [])
    dual = cell.type == "CARRY8" and cell.params.get("CARRY_TYPE") == "DUAL_CY4"
    for p in ("S", "DI"):
        for k, a in enumerate(cell.conns.get(p, [])):
            for outs in (outs_o, outs_co):
                for m_, b in enumerate(outs):
                    if m_ >= k and not (dual and k < 4 <= m_):
                        g.arc(a, b, (0, 1, m_ - k + 1, 0), ci)
    for p, lo in (("CI", 0), ("CYINIT", 0), ("CI_TOP", 4)):
        bits = cell.conns.get(p, [])
        if not bits or (p == "CI_TOP" and not dual):
            continue
        a = bits[0]
        hi = 4 if (dual and p == "CI") else width
        for outs in (outs_o, outs_co):
            for m_, b in enumerate(outs):
                if lo <= m_ < hi:
                    g.arc(a, b, ("CI", m_ - lo + 1), ci)   # resolved once drivers are known


def _dsp_routes(cell):
    """Which DSP48E2 input pins pass combinationally to the ALU outputs, and whether P is a source."""
    prm = cell.params

    def reg(name):
        v = prm.get(name, 0)
        return isinstance(v, int) and v > 0

    mult = str(prm.get("USE_MULT", "MULTIPLY")).upper() != "NONE"
    p = reg("PREG")
    m = mult and reg("MREG")
    ad = reg("ADREG")
    a_via_ad = str(prm.get("AMULTSEL", "A")).upper() == "AD"
    b_via_ad = str(prm.get("BMULTSEL", "B")).upper() == "AD"
    comb = {
        "A": not (reg("AREG") or m or (mult and a_via_ad and ad) or p),
        "ACIN": not (reg("AREG") or m or (mult and a_via_ad and ad) or p),
        "B": not (reg("BREG") or m or (mult and b_via_ad and ad) or p),
        "BCIN": not (reg("BREG") or m or (mult and b_via_ad and ad) or p),
        "D": not (reg("DREG") or ad or m or p),
        "C": not (reg("CREG") or p),
        "PCIN": not p, "CARRYCASCIN": not p, "MULTSIGNIN": not p,
        "CARRYIN": not (reg("CARRYINREG") or p),
        "CARRYINSEL": not (reg("CARRYINSELREG") or p),
        "OPMODE": not (reg("OPMODEREG") or p),
        "ALUMODE": not (reg("ALUMODEREG") or p),
        "INMODE": not (reg("INMODEREG") or m or p),
    }
    any_reg = p or m or ad or any(reg(r) for r in ("AREG", "BREG", "CREG", "DREG"))
    return comb, p, any_reg


_DSP_ALU_OUT = ("P", "PCOUT", "CARRYOUT", "CARRYCASCOUT", "MULTSIGNOUT", "PATTERNDETECT",
                "PATTERNBDETECT", "OVERFLOW", "UNDERFLOW", "XOROUT")


def _model_dsp(g, ci, cell):
    comb, preg, any_reg = _dsp_routes(cell)
    outs = {p: bits for p, bits in _pins(cell, "output")}
    alu_out = [b for p in _DSP_ALU_OUT for b in outs.get(p, [])]
    if any_reg:
        for p in _DSP_ALU_OUT:
            for b in outs.get(p, []):
                g.source(b, _ZERO if preg else _DSP_HOP, ci, p)
    for p, bits in _pins(cell, "input"):
        if p in _CLOCK_PINS:
            continue
        through = comb.get(p, False)            # CE*/RST* and unknown pins are clocked
        for i, a in enumerate(bits):
            if not through:
                g.sink(a, ci, _label(p, bits, i))
                continue
            for b in alu_out:
                g.arc(a, b, _DSP_HOP, ci)
    for src_pin, dst_pin, regp in (("A", "ACOUT", "AREG"), ("B", "BCOUT", "BREG")):   # cascades
        v = cell.params.get(regp, 0)
        registered = isinstance(v, int) and v > 0
        for b in outs.get(dst_pin, []):
            if registered:
                g.source(b, _ZERO, ci, dst_pin)
            else:
                for a in cell.conns.get(src_pin, []):
                    g.arc(a, b, _ZERO, ci)


def _model_cell(g, ci, cell):
    t = cell.type
    outs = list(_pins(cell, "output"))
    for p, bits in outs:
        for b in bits:
            if b >= 0:
                g.driver[b] = ci
    if _SKIP.match(t):
        return
    if _LUT.match(t):
        for _, ins in _pins(cell, "input"):
            for a in ins:
                for _, ob in outs:
                    for b in ob:
                        g.arc(a, b, _LEVEL, ci)
    elif _MUXF.match(t):
        o = cell.conns.get("O", [])
        for p in ("I0", "I1", "S"):
            for a in cell.conns.get(p, []):
                for b in o:
                    g.arc(a, b, _LEVEL if p == "S" else _ZERO, ci)
    elif t in _CARRY:
        _model_carry(g, ci, cell, _CARRY[t])
    elif _FF.match(t):
        for p, bits in _pins(cell, "input"):
            if p not in _CLOCK_PINS:
                for b in bits:
                    g.sink(b, ci, p)
        for p, bits in outs:
            for b in bits:
                g.source(b, _ZERO, ci, p)
    elif _SRL.match(t) or _LUTRAM.match(t):
        _model_lutram(g, ci, cell)
    elif _BRAM.match(t) or _URAM.match(t):
        _model_sequential_inputs(g, ci, cell)
        for p, bits in outs:
            for b in bits:
                g.source(b, _ZERO, ci, p)
    elif _DSP.match(t):
        _model_dsp(g, ci, cell)
    elif _PASS.match(t):
        for _, ins in _pins(cell, "input"):
            for a in ins:
                for _, ob in outs:
                    for b in ob:
                        g.arc(a, b, _ZERO, ci)
    else:                                     # unknown: clocked inputs, registered outputs
        g.unmodelled[t] += 1
        _model_sequential_inputs(g, ci, cell)
        for p, bits in outs:
            for b in bits:
                g.source(b, _ZERO, ci, p)


def _build_graph(flat: FlatNetlist) -> _Graph:
    g = _Graph()
    for ci, cell in enumerate(flat.cells):
        _model_cell(g, ci, cell)
    # Carry-in arcs: a CI driven by another carry cell continues that chain; otherwise it enters one.
    for a, arcs in g.succ.items():
        if any(w[0] == "CI" for _, w, _ in arcs):
            d = g.driver.get(a)
            chained = d is not None and flat.cells[d].type in _CARRY
            arcs[:] = [(b, (0, 0 if chained else 1, w[1], 0) if w[0] == "CI" else w, ci) for b, w, ci in arcs]
    for pname, bits in flat.inputs.items():
        for i, b in enumerate(bits):
            g.source(b, _ZERO, -1, _label(pname, bits, i))
    for pname, bits in flat.outputs.items():
        for i, b in enumerate(bits):
            g.sink(b, -1, _label(pname, bits, i))
    return g


# -- longest paths --------------------------------------------------------------------------------

def _topo_order(g):
    indeg = Counter()
    for arcs in g.succ.values():
        for b, _, _ in arcs:
            indeg[b] += 1
    queue = deque(a for a in g.succ if indeg[a] == 0)
    order = []
    while queue:
        a = queue.popleft()
        order.append(a)
        for b, _, _ in g.succ.get(a, ()):
            indeg[b] -= 1
            if indeg[b] == 0:
                queue.append(b)
    loop_bits = sum(1 for v in indeg.values() if v > 0)
    return order, loop_bits


def _longest(g, order, shift, sources=None):
    """Worst arrival (packed key) and the arc it came through, for every reachable bit."""
    sources = g.sources if sources is None else sources
    arr = {b: _pack(w, shift) for b, (w, _, _) in sources.items()}
    pred = {}
    packed = {}
    succ = g.succ
    for a in order:
        ka = arr.get(a)
        if ka is None:
            continue
        for b, w, ci in succ[a]:
            pw = packed.get(w)
            if pw is None:
                pw = packed[w] = _pack(w, shift)
            k = ka + pw
            if k > arr.get(b, -1):
                arr[b] = k
                pred[b] = (a, ci)
    return arr, pred


def _fields(key, shift):
    """(LUT levels, carry chains, carry bits, DSP hops) of a packed key; the top field is unbounded."""
    order = sorted(shift, key=shift.get)
    out = {}
    for f, nxt in zip(order, order[1:] + [None]):
        v = key >> shift[f]
        out[f] = v if nxt is None else v & ((1 << (shift[nxt] - shift[f])) - 1)
    return out["L"], out["C"], out["B"], out["D"]


# -- names ----------------------------------------------------------------------------------------

_DIGITS = re.compile(r"\d+")


class _Namer:
    def __init__(self, flat, g):
        self.flat, self.g = flat, g
        self.cache = {}

    @staticmethod
    def _noise(name, scope):
        local = name[len(scope):].lstrip("\\")
        if local.startswith("$") or "$auto$" in local or "$abc$" in local:
            return 2
        return 1 if "$" in local else 0

    def bit(self, b):
        """The nearest RTL name of a net bit (preferring the driving cell's module), or None."""
        if b in self.cache:
            return self.cache[b]
        cands = self.flat.names.get(b, [])
        d = self.g.driver.get(b)
        dscope = self.flat.cells[d].scope if d is not None else ""
        best = None
        for name, i, width, scope in cands:
            noise = self._noise(name, scope)
            if noise == 2:
                continue
            key = (noise, scope != dscope, -len(scope) if dscope.startswith(scope) else 0, len(name), name)
            if best is None or key < best[0]:
                best = (key, name if width == 1 else f"{name}[{i}]")
        r = best[1] if best else None
        self.cache[b] = r
        return r

    def aliases(self, b):
        return [n for n, _, _, _ in self.flat.names.get(b, [])]

    def other_names(self, b, chosen, limit=4):
        """``{"aliases": [...]}``: the net's other RTL names (ports it crosses), if it has any."""
        chosen = _base(chosen or "")
        out = []
        for name, _, _, scope in self.flat.names.get(b, []):
            if name != chosen and name not in out and self._noise(name, scope) < 2:
                out.append(name)
        out.sort(key=len)
        return {"aliases": out[:limit]} if out else {}

    def _port_base(self, cell, port):
        for b in cell.conns.get(port, []):
            n = self.bit(b) if b >= 0 else None
            if n:
                return _base(n)
        return None

    def cell(self, ci):
        """A readable instance name: the cell's own name unless yosys made it up."""
        cell = self.flat.cells[ci]
        if not self._noise(cell.name, cell.scope):
            return cell.name
        if _DSP.match(cell.type):
            a, b, p = (self._port_base(cell, x) for x in ("A", "B", "P"))
            inputs = " x ".join(x for x in (a, b) if x)
            return f"{cell.scope}<{cell.type} {inputs or '?'}{' -> ' + p if p else ''}>"
        for port in ("Q", "O", "O6", "DOUT_A", "DOUTADOUT", "DOUT_B", "DOUTBDOUT", "DO", "DOA", "SPO"):
            n = self._port_base(cell, port)
            if n:
                return f"{cell.scope}<{cell.type} -> {n}>"
        return f"{cell.scope}<{cell.type}>"


def _base(name):
    """A signal name without its bit index."""
    return re.sub(r"\[\d+\]$", "", name)


def _src(cell):
    """``hw/head.py:143``: the first design location of a cell's ``src`` attribute.

    yosys' own techmap files and library code (Amaranth, the standard library) are skipped: they
    say where a signal was made, not which design line made it.
    """
    for loc in (cell.src or "").split("|"):
        m = re.match(r"^(.*?):(\d+)", loc)
        if m and not re.search(r"^/share/|site-packages|/lib/python\d", m.group(1)):
            return f"{'/'.join(Path(m.group(1)).parts[-2:])}:{m.group(2)}"
    return None


# -- the report -----------------------------------------------------------------------------------

class _Analysis:
    def __init__(self, flat: FlatNetlist):
        self.flat = flat
        self.g = _build_graph(flat)
        self.order, self.loop_bits = _topo_order(self.g)
        self.names = _Namer(flat, self.g)
        # loads that end paths: clocked inputs, and top-level outputs as cell -1 (logic loads: g.succ)
        self.end_loads = defaultdict(list)
        comb = {(a, ci) for a, arcs in self.g.succ.items() for _, _, ci in arcs}
        for b, ci, label in self.g.sinks:
            if (b, ci) not in comb:
                self.end_loads[b].append((ci, label))

    def used(self, b):
        return b >= 0 and (b in self.g.succ or b in self.end_loads)

    def logic_load(self, b):
        """The first load of ``b`` that is not a clocked input (logic or a top-level output), or None."""
        arcs = self.g.succ.get(b)
        if arcs:
            ci = arcs[0][2]
            return ci, next(p for p, bits in self.flat.cells[ci].conns.items() if b in bits)
        return next(((ci, pin) for ci, pin in self.end_loads.get(b, ()) if ci < 0), None)

    # one endpoint -> its worst path, described with RTL names
    def describe(self, end, arr, pred, shift):
        b, ci, label = end
        key = arr.get(b)
        L, C, B, D = _fields(key, shift) if key is not None else (0, 0, 0, 0)
        chain, cells = [b], []
        while b in pred:
            b, cj = pred[b]
            chain.append(b)
            cells.append(cj)
        chain.reverse()
        cells.reverse()
        start_bit = chain[0]
        src = self.g.sources.get(start_bit)
        flat, names = self.flat, self.names
        start = {"signal": names.bit(start_bit) or (names.cell(src[1]) if src and src[1] >= 0 else None)}
        start.update(names.other_names(start_bit, start["signal"]))
        if src is None:
            start.update(cell="constant or undriven")
        elif src[1] < 0:
            start.update(cell="top-level input")
        else:
            sc = flat.cells[src[1]]
            start.update(cell=sc.type, pin=src[2])
            if _src(sc):
                start["src"] = _src(sc)
            if not _FF.match(sc.type):
                start["instance"] = names.cell(src[1])
        endd = {"pin": label}
        if ci < 0:
            endd.update(signal=label, cell="top-level output")
        else:
            ec = flat.cells[ci]
            q = next((x for x in ec.conns.get("Q", []) if x >= 0), None)
            endd.update(signal=(names.bit(q) if q is not None else None) or names.cell(ci), cell=ec.type)
            if _src(ec):
                endd["src"] = _src(ec)
            if not _FF.match(ec.type):
                endd["instance"] = names.cell(ci)
            elif q is not None:
                endd.update(names.other_names(q, endd["signal"]))
        through = []
        for x in chain[1:]:
            n = names.bit(x)
            if n and (not through or through[-1] != _base(n)):
                through.append(_base(n))
        if through and through[-1] == _base(endd["signal"] or ""):
            through.pop()
        return {"levels": L, "carry_chains": C, "carry_bits": B, "dsp": D, "start": start, "end": endd,
                "through": through[:16], "cells": _cell_string([flat.cells[c].type for c in cells]),
                "_start_bit": start_bit}

    def worst(self, arr, pred, shift, n, keep=None):
        """The ``n`` worst endpoints, one per signal family (bit and array indices collapsed).

        ``similar_endpoints`` counts the other endpoints of the family at the same primary depth.
        """
        ranked = sorted(self.g.sinks, key=lambda e: arr.get(e[0], 0), reverse=True)
        groups, out = {}, []
        for e in ranked:
            if keep is not None and not keep(e):
                continue
            primary = arr.get(e[0], 0) >> 40
            pattern = _DIGITS.sub("*", self._end_name(e))
            if pattern in groups:
                rep = groups[pattern]
                rep[1]["similar_endpoints"] += rep[0] == primary
                continue
            if len(out) >= n:
                if primary == 0:
                    break
                continue
            d = self.describe(e, arr, pred, shift)
            del d["_start_bit"]
            d["similar_endpoints"] = 0
            groups[pattern] = (primary, d)
            out.append(d)
        return out

    def _end_name(self, e):
        b, ci, label = e
        if ci < 0:
            return label
        q = next((x for x in self.flat.cells[ci].conns.get("Q", []) if x >= 0), None)
        n = self.names.bit(q) if q is not None else None
        return f"{n or self.names.cell(ci)}:{label}"


def _cell_string(types):
    out = []
    for t in types:
        if out and out[-1][0] == t and t in _CARRY:
            out[-1][1] += 1
        else:
            out.append([t, 1])
    return " ".join(t if k == 1 else f"{t}x{k}" for t, k in out)


def _carry_chains(flat, g):
    """Structural carry chains (cells joined CO -> CI): the longest in bits and cells."""
    nxt = {}
    has_prev = set()
    for ci, cell in enumerate(flat.cells):
        if cell.type in _CARRY:
            cin = cell.conns.get("CI", [-1])[0]
            d = g.driver.get(cin) if cin >= 0 else None
            if d is not None and flat.cells[d].type in _CARRY:
                nxt[d] = ci
                has_prev.add(ci)
    best = (0, 0, None)
    count = 0
    for ci, cell in enumerate(flat.cells):
        if cell.type in _CARRY and ci not in has_prev:
            count += 1
            bits, cells, c = 0, 0, ci
            seen = set()
            while c is not None and c not in seen:
                seen.add(c)
                bits += _CARRY[flat.cells[c].type]
                cells += 1
                c = nxt.get(c)
            if bits > best[0]:
                best = (bits, cells, ci)
    return {"bits": best[0], "cells": best[1], "chains": count}, best[2]


# -- registered boundaries ------------------------------------------------------------------------

_MEM_PORTS = {  # output pin -> (read port, register parameter)
    "DOUTADOUT": ("A", "DOA_REG"), "DOUTPADOUTP": ("A", "DOA_REG"),
    "DOUTBDOUT": ("B", "DOB_REG"), "DOUTPBDOUTP": ("B", "DOB_REG"),
    "DOADO": ("A", "DOA_REG"), "DOPADOP": ("A", "DOA_REG"), "DOBDO": ("B", "DOB_REG"), "DOPBDOP": ("B", "DOB_REG"),
    "DOUT_A": ("A", "OREG_A"), "DOUT_B": ("B", "OREG_B"),
}
_DSP_IN_REGS = {"A": ("AREG",), "B": ("BREG",), "C": ("CREG",), "D": ("DREG", "ADREG")}


def _truthy(v):
    return (isinstance(v, int) and v > 0) or (isinstance(v, str) and v.upper() == "TRUE")


def _memory_ports(cell):
    """Output bits per read port. In simple-dual-port mode (read width 72 / 36) port A reads them all."""
    sdp = _BRAM.match(cell.type) and cell.params.get("READ_WIDTH_A") == (36 if "18" in cell.type else 72)
    ports = defaultdict(list)
    for pin, (letter, regp) in _MEM_PORTS.items():
        if pin in cell.conns:
            ports[("A", "DOA_REG") if sdp else (letter, regp)].extend(cell.conns[pin])
    return ports


def _boundaries(an: _Analysis, list_limit):
    flat, g, names = an.flat, an.g, an.names
    entries = []

    def where(load):
        ci, pin = load
        return f"top-level output {pin}" if ci < 0 else f"{names.cell(ci)} ({flat.cells[ci].type}.{pin})"

    for ci, cell in enumerate(flat.cells):
        t = cell.type
        if _BRAM.match(t) or _URAM.match(t):
            for (letter, regp), bits in sorted(_memory_ports(cell).items()):
                used = [b for b in bits if an.used(b)]
                if not used:
                    continue
                if _truthy(cell.params.get(regp, 0)):
                    entries.append(_entry(names, ci, cell, f"DOUT_{letter}", regp))
                    continue
                bad = next((ld for b in used for ld in [an.logic_load(b)] if ld), None)
                entries.append(_entry(names, ci, cell, f"DOUT_{letter}", None if bad else "fabric register",
                                      bad and where(bad)))
        elif _DSP.match(t):
            for port, regps in _DSP_IN_REGS.items():
                bits = [b for b in cell.conns.get(port, []) if b >= 0]
                if not bits:                   # unconnected or constant: nothing to register
                    continue
                regp = next((r for r in regps if _truthy(cell.params.get(r, 0))), None)
                if regp:
                    entries.append(_entry(names, ci, cell, port, regp))
                    continue
                bad = next((b for b in bits if not (b in g.driver and _FF.match(flat.cells[g.driver[b]].type))),
                           None)
                culprit = None
                if bad is not None:
                    d = g.driver.get(bad)
                    what = flat.cells[d].type if d is not None else "top-level input"
                    culprit = f"{names.bit(bad)} ({what})" if names.bit(bad) else f"a {what} output"
                entries.append(_entry(names, ci, cell, port, None if culprit else "fabric register", culprit))
            used = [b for b in cell.conns.get("P", []) if an.used(b)]
            if not used:
                continue
            if _truthy(cell.params.get("PREG", 0)):
                entries.append(_entry(names, ci, cell, "P", "PREG"))
                continue
            bad = None
            for b in used:
                bad = an.logic_load(b) or next(((c, p) for c, p in an.end_loads.get(b, ())
                                                if c < 0 or not (_FF.match(flat.cells[c].type) and p == "D")), None)
                if bad:
                    break
            entries.append(_entry(names, ci, cell, "P", None if bad else "fabric register", bad and where(bad)))
    summary = Counter()
    for e in entries:
        summary[e["kind"]] += 1
        summary[e["kind"] + "_registered"] += e["registered"]
    dsps = [c for c in flat.cells if _DSP.match(c.type)]
    summary["dsp_cells"] = len(dsps)
    summary["dsp_with_mreg"] = sum(_truthy(c.params.get("MREG", 0)) for c in dsps)
    unregistered = [e for e in entries if not e["registered"]]
    listed, per_kind = [], Counter()
    for e in unregistered:                 # up to list_limit of each kind, so every kind shows
        per_kind[e["kind"]] += 1
        if per_kind[e["kind"]] <= list_limit:
            listed.append(e)
    return len(unregistered), dict(summary), listed


def _entry(names, ci, cell, port, how, culprit=None):
    """One boundary: ``how`` names the register (a parameter or "fabric register"), None if there is none."""
    t = cell.type
    kind = ("bram" if _BRAM.match(t) else "uram" if _URAM.match(t) else "dsp") + \
        ("_output" if port.startswith("DOUT") or port == "P" else "_input")
    e = {"kind": kind, "cell": names.cell(ci), "type": t, "port": port, "registered": how is not None,
         "how": how}
    if culprit:
        e["first_unregistered"] = culprit
    if _src(cell):
        e["src"] = _src(cell)
    return e


# -- configuration-register paths -------------------------------------------------------------------

# -- multiply-accumulate shapes --------------------------------------------------------------------

_MACC_CONTROL_BITS = 2      # the accumulator's clear (the Z mux's P-or-0 select) and one more select
_DSP_P_BITS = 48            # the DSP48E2 post-adder and P register
_COMB = re.compile(r"^(LUT[1-6](_2)?|INV|MUXF[789]|CARRY[48])$")


def _comb_cone(flat, g, bits, limit=4096):
    """The combinational cells behind ``bits`` and the startpoint bits they reach (None if over ``limit``)."""
    cells, leaves, seen, todo = set(), set(), set(), list(bits)
    while todo:
        b = todo.pop()
        if b < 0 or b in seen:
            continue
        seen.add(b)
        d = g.driver.get(b)
        if d is None or not _COMB.match(flat.cells[d].type):
            leaves.add(b)
            continue
        if d not in cells:
            if len(cells) >= limit:
                return None, None
            cells.add(d)
            todo += [a for _, ins in _pins(flat.cells[d], "input") for a in ins]
    return cells, leaves


def _macc_shapes(an: _Analysis):
    """DSPs in the multiply-accumulate shape, their accumulation left in fabric.

    A DSP48E2 counts when its product P drives only flip-flops (the M stage), those drive only, through
    logic, a register of at most 48 bits, and that register's inputs come from nothing but the
    product, the register itself (the feedback) and at most ``_MACC_CONTROL_BITS`` other bits:
    ``acc <= f(acc, M, clear)``, the shape Vivado maps into one DSP (post-adder, P feedback, PREG;
    UG901, multiply-accumulate). yosys packs no post-adder or register into DSP48E2 (``xilinx_dsp``
    runs its packer for xc7 only), so the fabric cells listed here are what such a DSP would absorb.
    """
    flat, g = an.flat, an.g
    dsps, m_ff, p_ff, luts, carries = 0, 0, 0, set(), set()
    for ci, cell in enumerate(flat.cells):
        if not _DSP.match(cell.type) or _truthy(cell.params.get("PREG", 0)):
            continue
        used = [b for b in cell.conns.get("P", []) if an.used(b)]
        if not used or any(an.logic_load(b) for b in used):
            continue
        loads = [ld for b in used for ld in an.end_loads.get(b, ())]
        if any(c < 0 or not _FF.match(flat.cells[c].type) or p != "D" for c, p in loads):
            continue
        mff = {c for c, _ in loads}
        mq = {b for c in mff for b in flat.cells[c].conns.get("Q", [])}
        # forward: every load of the product register, through logic, is one register's D
        seen, todo, acc = set(), list(mq), set()
        ok = True
        while todo and ok:
            b = todo.pop()
            if b in seen:
                continue
            seen.add(b)
            for c, p in an.end_loads.get(b, ()):
                ok &= c >= 0 and _FF.match(flat.cells[c].type) is not None and p == "D"
                acc.add(c)
            for nb, _, c in g.succ.get(b, ()):
                ok &= _COMB.match(flat.cells[c].type) is not None
                todo.append(nb)
            ok &= len(seen) <= 4096
        if not ok or not acc or len(acc) > _DSP_P_BITS or acc & mff:
            continue
        accq = {b for c in acc for b in flat.cells[c].conns.get("Q", [])}
        cells, leaves = _comb_cone(flat, g, [b for c in acc for b in flat.cells[c].conns.get("D", [])])
        if cells is None or not leaves & accq:
            continue
        others = leaves - mq - accq
        if len(others) > _MACC_CONTROL_BITS:
            continue
        dsps += 1
        m_ff += len(mff)
        p_ff += len(acc)
        luts |= {c for c in cells if not flat.cells[c].type.startswith("CARRY")}
        carries |= {c for c in cells if flat.cells[c].type.startswith("CARRY")}
    return {"dsps": dsps, "fabric": {"m_ff": m_ff, "p_ff": p_ff, "lut": len(luts), "carry": len(carries)}}


def _config_sources(an: _Analysis, rx):
    """Flip-flops whose names match ``rx``, grouped by field (the last component of the match)."""
    fields = defaultdict(dict)         # field -> {bit: source entry}
    for b, (w, ci, label) in an.g.sources.items():
        if ci < 0 or not _FF.match(an.flat.cells[ci].type):
            continue
        for name in an.names.aliases(b):
            m = rx.search(name)
            if m:
                fields[m.group(0).split(".")[-1]][b] = (w, ci, label)
                break
    return fields


def _config_paths(an: _Analysis, patterns, max_levels, worst):
    if not patterns:
        return {"patterns": [], "max_levels_allowed": max_levels, "fields": {}, "endpoints_over": 0,
                "paths": []}, {}
    rx = re.compile("|".join(f"(?:{p})" for p in patterns))
    g, flat = an.g, an.flat
    fields = _config_sources(an, rx)
    position = {b: i for i, b in enumerate(an.order)}
    over = set()
    per_field, paths = {}, []
    for field_name, srcs in sorted(fields.items()):
        scopes = {flat.cells[ci].scope for _, ci, _ in srcs.values()}
        # the cone of these flip-flops, in topological order
        seen, stack = set(srcs), list(srcs)
        while stack:
            a = stack.pop()
            for b, _, _ in g.succ.get(a, ()):
                if b not in seen:
                    seen.add(b)
                    stack.append(b)
        cone = sorted((b for b in seen if b in position), key=position.__getitem__)
        arr = {b: _pack(w, _SHIFT) for b, (w, _, _) in srcs.items()}
        pred = {}
        for a in cone:
            ka = arr.get(a)
            if ka is None:
                continue
            for b, w, ci in g.succ[a]:
                k = ka + _pack(w, _SHIFT)
                if k > arr.get(b, -1):
                    arr[b] = k
                    pred[b] = (a, ci)
        ends = [e for e in g.sinks if e[0] in arr and not (e[1] >= 0 and flat.cells[e[1]].scope in scopes)]
        if not ends:
            per_field[field_name] = 0
            continue
        top = max(ends, key=lambda e: arr[e[0]])
        lv = _fields(arr[top[0]], _SHIFT)[0]
        per_field[field_name] = lv
        bad = [e for e in ends if _fields(arr[e[0]], _SHIFT)[0] > max_levels]
        over.update(bad)
        if bad:
            d = an.describe(top, arr, pred, _SHIFT)
            start_bit = d.pop("_start_bit")
            for name, i, width, _ in flat.names.get(start_bit, []):
                if rx.search(name):
                    d["start"]["signal"] = name if width == 1 else f"{name}[{i}]"
                    break
            d["field"] = field_name
            d["endpoints_over"] = len(bad)
            paths.append(d)
    paths.sort(key=lambda d: (d["levels"], d["carry_chains"], d["carry_bits"]), reverse=True)
    return {"patterns": list(patterns), "max_levels_allowed": max_levels, "fields": per_field,
            "endpoints_over": len(over), "paths": paths[:worst]}, fields


def _census(flat):
    """What the flattened netlist holds (to check it against yosys' own ``stat``)."""
    kinds = Counter()
    for c in flat.cells:
        t = c.type
        kind = ("ff" if _FF.match(t) else "lut" if re.match(r"^LUT[1-6](_2)?$", t) else "carry" if t in _CARRY
                else "dsp" if _DSP.match(t) else "bram" if _BRAM.match(t) else "uram" if _URAM.match(t)
                else "lutram" if _LUTRAM.match(t) or _SRL.match(t) else "other")
        kinds[kind] += 1
    return {"top": flat.top, "cells": len(flat.cells), **{k: kinds[k] for k in
                                                          ("ff", "lut", "carry", "dsp", "bram", "uram", "lutram")}}


# -- the public entry points -----------------------------------------------------------------------

def timing_report(netlist, *, top: str | None = None, worst: int = 10, config_patterns=(),
                  config_max_levels: int = 2, budget: dict | None = None, list_limit: int = 20) -> dict:
    """Logic depth of every register-to-register path and the registered boundaries of a netlist.

    ``netlist`` is a yosys ``write_json`` netlist (a dict or a path). ``config_patterns`` are regular
    expressions naming configuration-register flip-flops (e.g. ``r"regs\\.LR_value"``): paths from
    them through more than ``config_max_levels`` LUT levels to anything outside their own block are
    reported as ``config_paths``. ``budget`` overrides :data:`DEFAULT_BUDGET`; ``worst`` paths are
    listed (one per signal family) and up to ``list_limit`` unregistered boundaries of each kind.
    """
    if not isinstance(netlist, dict):
        netlist = load_netlist(netlist)
    budget = {**DEFAULT_BUDGET, **(budget or {})}
    flat = flatten(netlist, top)
    an = _Analysis(flat)
    g = an.g
    arr, pred = _longest(g, an.order, _SHIFT)
    arr_c, pred_c = _longest(g, an.order, _SHIFT_CHAINS_FIRST)

    hist = Counter()
    max_lv = max_ch = max_bits = max_dsp = 0
    over_levels = over_chains = 0
    for b, ci, label in g.sinks:
        k = arr.get(b)
        L, C, B, D = _fields(k, _SHIFT) if k is not None else (0, 0, 0, 0)
        kc = arr_c.get(b)
        C2 = _fields(kc, _SHIFT_CHAINS_FIRST)[1] if kc is not None else 0
        hist[L] += 1
        max_lv, max_ch, max_bits, max_dsp = max(max_lv, L), max(max_ch, C2), max(max_bits, B), max(max_dsp, D)
        over_levels += L > budget["max_lut_levels"]
        over_chains += C2 > budget["max_carry_chains"]
    chain, _ = _carry_chains(flat, g)
    worst_paths = an.worst(arr, pred, _SHIFT, worst)
    chain_paths = an.worst(arr_c, pred_c, _SHIFT_CHAINS_FIRST, worst,
                           keep=lambda e: _fields(arr_c.get(e[0], 0), _SHIFT_CHAINS_FIRST)[1]
                           > budget["max_carry_chains"])
    n_unreg, bound_summary, unreg_list = _boundaries(an, list_limit)
    macc = _macc_shapes(an)
    bound_summary["dsp_macc_shape"] = macc["dsps"]
    config, config_ffs = _config_paths(an, list(config_patterns), config_max_levels, worst)
    if config_ffs:   # the datapath's own worst paths, hidden today behind the configuration's
        excluded = {b for srcs in config_ffs.values() for b in srcs}
        arr_d, pred_d = _longest(g, an.order, _SHIFT, {b: v for b, v in g.sources.items() if b not in excluded})
        config["worst_paths_from_other_startpoints"] = an.worst(arr_d, pred_d, _SHIFT, worst)
    report = {
        "max_logic_levels": max_lv,
        "max_carry_chains_per_path": max_ch,
        "max_carry_chain": chain,
        "max_carry_bits_per_path": max_bits,
        "max_dsp_hops_per_path": max_dsp,
        "unregistered_boundaries": n_unreg,
        "worst_paths": worst_paths,
        "carry_chain_paths": chain_paths,
        "histogram": {str(k): hist[k] for k in sorted(hist)},
        "endpoints": len(g.sinks),
        "boundaries": {"summary": bound_summary, "unregistered": unreg_list},
        "macc": macc,
        "config_paths": config,
        "budget": budget,
        "violations": {"paths_over_lut_levels": over_levels, "paths_over_carry_chains": over_chains,
                       "unregistered_boundaries": n_unreg,
                       "config_endpoints_over": config["endpoints_over"]},
        "netlist": _census(flat),
        "combinational_loop_bits": an.loop_bits,
        "unmodelled_cells": dict(g.unmodelled),
        "rules": ("LUT levels: LUT1-6/INV, LUTRAM/SRL reads, MUXF7-9 select (MUXF data inputs complete "
                  "the wide LUT); a carry chain counts once per entry from fabric; combinational DSPs "
                  "are traversed (dsp hops). See skip2lora.hw.timing_proxy."),
    }
    report["meets_budget"] = not any(report["violations"].values())
    return report


def budget_violations(report: dict) -> list:
    """One line per broken rule of the budget in a :func:`timing_report` (empty: within budget)."""
    b, v = report["budget"], report["violations"]
    out = []
    if v["paths_over_lut_levels"]:
        out.append(f"{v['paths_over_lut_levels']} endpoints behind more than {b['max_lut_levels']} LUT levels "
                   f"(worst {report['max_logic_levels']})")
    if v["paths_over_carry_chains"]:
        out.append(f"{v['paths_over_carry_chains']} endpoints behind more than {b['max_carry_chains']} carry "
                   f"chain(s) (worst {report['max_carry_chains_per_path']})")
    if v["unregistered_boundaries"]:
        out.append(f"{v['unregistered_boundaries']} unregistered memory outputs / DSP ports")
    if v["config_endpoints_over"]:
        out.append(f"{v['config_endpoints_over']} endpoints derived from configuration registers through more "
                   f"than {report['config_paths']['max_levels_allowed']} LUT levels")
    return out


def clock_projections(cycles: int, max_logic_levels: int | None = None, clocks_mhz=(200, 300)) -> list:
    """``cycles`` at each assumed clock, labelled as an assumption beside the logic-depth evidence."""
    evidence = (f"logic depth max {max_logic_levels} LUT levels" if max_logic_levels is not None
                else "logic depth not measured")
    return [{"assumed_clock_mhz": mhz, "ms": cycles / (mhz * 1e3),
             "label": f"cycles / {mhz:g} MHz (assumed clock; {evidence})"} for mhz in clocks_mhz]


def timing_text(report: dict, worst: int = 10) -> str:
    """The proxy's findings as the lines ``skip2lora hw report`` prints."""
    b, s = report["budget"], report["boundaries"]["summary"]
    chain = report["max_carry_chain"]
    lines = [
        "timing proxy (logic depth of the yosys netlist; no UltraScale+ timing model):",
        f"  worst path {report['max_logic_levels']} LUT levels (budget {b['max_lut_levels']}), "
        f"{report['max_carry_chains_per_path']} carry chains on one path (budget {b['max_carry_chains']}), "
        f"longest carry chain {chain['bits']} bits ({chain['cells']} cells)",
        f"  endpoints by LUT levels: " + ", ".join(f"{k}: {v}" for k, v in report["histogram"].items()),
    ]
    parts = []
    for kind, label in (("bram_output", "BRAM outputs"), ("uram_output", "URAM outputs"),
                        ("dsp_input", "DSP inputs"), ("dsp_output", "DSP outputs")):
        if s.get(kind):
            parts.append(f"{s[kind + '_registered']}/{s[kind]} {label}")
    lines.append(f"  registered: {', '.join(parts) or 'no memories or DSPs'}; "
                 f"{report['unregistered_boundaries']} unregistered boundaries (budget 0)")
    mac = report.get("macc")
    if mac and mac["dsps"]:
        fab = mac["fabric"]
        lines.append(f"  multiply-accumulate shape: {mac['dsps']} DSPs, their accumulation in fabric here "
                     f"({fab['lut']} LUT, {fab['carry']} carry, {fab['p_ff']} + {fab['m_ff']} FF; Vivado "
                     f"maps it into the DSP)")
    c = report["config_paths"]
    if c["patterns"]:
        lines.append(f"  configuration registers: {c['endpoints_over']} endpoints behind more than "
                     f"{c['max_levels_allowed']} LUT levels (budget 0)")
    def path_lines(title, paths):
        lines.append(title)
        for p in paths:
            carry = f" + {p['carry_chains']} carry ({p['carry_bits']} bits)" if p["carry_chains"] else ""
            dsp = f" + {p['dsp']} DSP" if p["dsp"] else ""
            more = f"  [+{p['similar_endpoints']} similar]" if p["similar_endpoints"] else ""
            lines.append(f"    {p['levels']:2d} LUT{carry}{dsp}: {p['start']['signal']} -> "
                         f"{p['end']['signal']} ({p['end']['pin']}){more}")

    path_lines("  worst paths:", report["worst_paths"][:worst])
    others = c.get("worst_paths_from_other_startpoints")
    if others and c["endpoints_over"]:
        path_lines("  worst paths not starting at a configuration register:", others[:max(3, worst // 2)])
    verdict = budget_violations(report)
    lines.append("  budget: " + ("met" if not verdict else "NOT met: " + "; ".join(verdict)))
    return "\n".join(lines)


def main(argv=None) -> int:
    """``python -m skip2lora.hw.timing_proxy NETLIST.json``: the proxy on a kept netlist, no synthesis."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m skip2lora.hw.timing_proxy", description=main.__doc__)
    parser.add_argument("netlist", help="yosys write_json netlist (skip2lora hw report keeps one with --netlist)")
    parser.add_argument("--top", help="top module (default: the netlist's top)")
    parser.add_argument("--worst", type=int, default=10, help="worst paths to list (default 10)")
    parser.add_argument("--json", action="store_true", help="print the whole report as one JSON object")
    parser.add_argument("--no-config", action="store_true",
                        help="do not treat the accelerator's read-write registers as configuration")
    args = parser.parse_args(argv)
    try:
        netlist = load_netlist(args.netlist)
    except (OSError, ValueError) as e:
        print(f"error: cannot read the netlist {args.netlist}: {e}", file=sys.stderr)
        return 2
    patterns = ()
    if not args.no_config:
        from .regmap import config_register_patterns

        patterns = config_register_patterns()
    try:
        report = timing_report(netlist, top=args.top, worst=args.worst, config_patterns=patterns)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=1) if args.json else timing_text(report, args.worst))
    return 0 if report["meets_budget"] else 1


if __name__ == "__main__":
    sys.exit(main())
