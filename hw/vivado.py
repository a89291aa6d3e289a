"""The Vivado bitstream flow for the KV260: a batch TCL script generated from the system description.

    skip2lora hw bitstream [--config kv260] [--out DIR] [--jobs N] [--dry-run] [--json]

``build.tcl`` is generated (never hand-written) from

* ``hw/system.py`` (:func:`~skip2lora.hw.system.system_dict`): the IP's VLNV, instance names, base
  addresses and ranges, DMA buffer length width, PL clock, part and board part;
* the accelerator's top-level signature (:class:`~skip2lora.hw.top.Skip2LoRATop` for an
  ``AcceleratorConfig``): the port names and widths, hence the AXI4-Stream width;
* the register map (``REGISTER_MAP``): the packaged IP's address block and registers.

The script packages the exported Verilog as an IP (``ipx::``), builds a Zynq UltraScale+ block design
(PS + AXI DMA in simple mode + the accelerator + SmartConnects + reset + interrupts), assigns the
address map, runs synthesis and implementation and writes ``skip2lora.bit`` / ``skip2lora.hwh`` (PYNQ
wants the same basename) and a timing summary into ``<build>/out``. Every Xilinx IP is looked up in
the catalog by name, never by version, and the board part is the newest installed ``kv260_som``.

Vivado is not needed to generate or test any of this; only :func:`build_bitstream` without
``dry_run`` runs it. Afterwards :func:`write_manifest` records hashes, the git commit, the Vivado
version and the timing (parsed with :func:`parse_timing_summary`), :func:`check_hwh` checks the
hardware handoff against the description, and the results are copied into ``bitstreams/kv260/``.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from ..fixed.config import AcceleratorConfig, config_named
from .system import system_dict

__all__ = [
    "MIN_VIVADO", "BASENAME", "DESIGN_NAME", "PS_NAME", "PS_MASTER", "HPM0_FPD_WINDOW",
    "DMA_ADDR_WIDTH", "DMA_BURST", "VivadoNotFound", "Design", "design", "tcl_text",
    "write_build", "vivado_command", "find_vivado", "parse_timing_summary", "parse_vivado_version",
    "hwh_summary", "check_hwh", "write_manifest", "install", "build_bitstream", "summary_text",
    "PYNQ_DIR", "OUTPUT_FILES", "default_jobs",
]

MIN_VIVADO = "2022.2"
BASENAME = "skip2lora"            # skip2lora.bit + skip2lora.hwh (PYNQ: same basename)
DESIGN_NAME = "skip2lora_system"  # the block design; must differ from the IP's module name
PS_NAME = "zynq_ultra_ps_e_0"
PS_MASTER = "M_AXI_HPM0_FPD"
HPM0_FPD_WINDOW = (0xA000_0000, 0x1000_0000)  # M_AXI_HPM0_FPD: 0xA000_0000..0xAFFF_FFFF
DMA_ADDR_WIDTH = 64               # the DMA reaches all of DDR (PYNQ writes the MSB registers)
DMA_BURST = 16                    # max burst beats of both DMA channels
OUTPUT_FILES = (f"{BASENAME}.bit", f"{BASENAME}.hwh", "manifest.json")
# <package>/bitstreams/kv260: the repository's bitstreams/kv260 (editable) or the installed package's.
PYNQ_DIR = Path(__file__).resolve().parent.parent / "bitstreams" / "kv260"

# Bus types of the packaged IP's interfaces (the abstraction is the same VLNV with an _rtl suffix).
_BUS_TYPES = {
    "aximm": "xilinx.com:interface:aximm:1.0",
    "axis": "xilinx.com:interface:axis:1.0",
    "clock": "xilinx.com:signal:clock:1.0",
    "reset": "xilinx.com:signal:reset:1.0",
    "interrupt": "xilinx.com:signal:interrupt:1.0",
}
AXI_LITE, AXIS_IN, AXIS_OUT, CLOCK, RESET, IRQ = "s_axi_control", "s_axis", "m_axis", "aclk", "aresetn", "interrupt"

_ACCESS = {  # registers.Access -> IP-XACT field access, modified write value
    "RO": ("read-only", ""),
    "RW": ("read-write", ""),
    "W1P": ("write-only", ""),
    "W1C": ("read-write", "oneToClear"),
}


class VivadoNotFound(FileNotFoundError):
    """``vivado`` is not on PATH (nor named by $VIVADO)."""


# -------------------------------------------------------------------------------------------------
# The description the script is generated from
# -------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Design:
    """Everything ``build.tcl`` depends on, checked for consistency."""

    system: dict         # hw/system.py system_dict() form
    config: dict         # AcceleratorConfig.to_dict()
    ports: tuple         # ((name, "in"|"out", width), ...) of the Verilog top
    top: str             # Verilog top module
    stream_width: int    # AXI4-Stream TDATA bits
    address_width: int   # AXI4-Lite address bits
    registers: tuple     # REGISTER_MAP.to_dict()["registers"]

    @property
    def mm_width(self) -> int:
        """DMA memory-map data width: at least the stream width and at least 32 bits."""
        return max(32, self.stream_width)

    @property
    def vlnv(self) -> tuple:
        return tuple(self.system["vlnv"].split(":"))

    def to_dict(self) -> dict:
        return {"system": self.system, "config": self.config, "top": self.top,
                "stream_width": self.stream_width, "mm_width": self.mm_width,
                "address_width": self.address_width, "dma_addr_width": DMA_ADDR_WIDTH,
                "design_name": DESIGN_NAME, "basename": BASENAME, "min_vivado": MIN_VIVADO}


def _top_ports(cfg: AcceleratorConfig):
    from amaranth.hdl import Shape
    from amaranth.lib.wiring import Flow

    from .top import TOP_NAME, Skip2LoRATop

    top = Skip2LoRATop(cfg)
    top._MustUse__silence = True  # only the signature is read: never elaborated here
    sig = top.signature
    ports = tuple((name, "in" if m.flow == Flow.In else "out", Shape.cast(m.shape).width)
                  for name, m in sig.members.items())
    return TOP_NAME, ports


def _register_dicts(register_map):
    if register_map is None:
        from .regmap import REGISTER_MAP

        register_map = REGISTER_MAP
    d = register_map if isinstance(register_map, dict) else register_map.to_dict()
    return d["address_width"], tuple(d["registers"])


def _check_system(s: dict) -> dict:
    s = json.loads(json.dumps(s))  # a private deep copy
    for key in ("vlnv", "accelerator", "dma", "dma_length_width", "pl_clock_mhz", "part", "board_part"):
        if key not in s:
            raise ValueError(f"system description lacks {key!r}")
    if len(s["vlnv"].split(":")) != 4 or not all(s["vlnv"].split(":")):
        raise ValueError(f"VLNV must be vendor:library:name:version, not {s['vlnv']!r}")
    if len(s["board_part"].split(":")) != 3:
        raise ValueError(f"board_part must be vendor:board:component (no version: the newest installed "
                         f"one is used), not {s['board_part']!r}")
    lo, size = HPM0_FPD_WINDOW
    spans = []
    for key in ("accelerator", "dma"):
        seg = s[key]
        base, rng, name = seg["base"], seg["range"], seg["name"]
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", name):
            raise ValueError(f"{key} instance name {name!r} is not a block-design cell name")
        if rng < 0x1000 or rng & (rng - 1):
            raise ValueError(f"{key} range {rng:#x} must be a power of two of at least 4 KiB")
        if base % rng:
            raise ValueError(f"{key} base {base:#x} must be aligned to its range {rng:#x}")
        if not (lo <= base and base + rng <= lo + size):
            raise ValueError(f"{key} window {base:#x}+{rng:#x} is outside {PS_MASTER} "
                             f"({lo:#x}..{lo + size - 1:#x})")
        spans.append((base, base + rng, key))
    spans.sort()
    if spans[0][1] > spans[1][0]:
        raise ValueError(f"the {spans[0][2]} and {spans[1][2]} address windows overlap")
    if s["accelerator"]["name"] == s["dma"]["name"]:
        raise ValueError("the accelerator and the DMA need different instance names")
    if not 8 <= int(s["dma_length_width"]) <= 26:
        raise ValueError(f"dma_length_width must be 8..26 (AXI DMA), not {s['dma_length_width']!r}")
    if not 0 < float(s["pl_clock_mhz"]) <= 500:
        raise ValueError(f"pl_clock_mhz must be in (0, 500], not {s['pl_clock_mhz']!r}")
    return s


def design(config="kv260", *, system=None, register_map=None) -> Design:
    """Collect and check the description of one build (no Verilog is generated)."""
    cfg = config_named(config)
    sysd = _check_system(system_dict() if system is None else system)
    top, ports = _top_ports(cfg)
    aw, regs = _register_dicts(register_map)
    widths = {name: width for name, _, width in ports}
    for name in (f"{AXI_LITE}_awaddr", f"{AXIS_IN}_tdata", f"{AXIS_OUT}_tdata", CLOCK, RESET, IRQ):
        if name not in widths:
            raise ValueError(f"the top {top!r} has no port {name!r}")
    if widths[f"{AXIS_IN}_tdata"] != widths[f"{AXIS_OUT}_tdata"]:
        raise ValueError("s_axis and m_axis must have the same TDATA width")
    stream = widths[f"{AXIS_IN}_tdata"]
    if stream < 8 or stream > 1024 or stream & (stream - 1):
        raise ValueError(f"the AXI DMA needs a power-of-two stream width of 8..1024 bits, not {stream}")
    if widths[f"{AXI_LITE}_awaddr"] != aw:
        raise ValueError(f"s_axi_control address width {widths[f'{AXI_LITE}_awaddr']} differs from the "
                         f"register map's {aw}")
    if sysd["accelerator"]["range"] < 2 ** aw:
        raise ValueError(f"the accelerator window {sysd['accelerator']['range']:#x} is smaller than its "
                         f"register space {2 ** aw:#x}")
    return Design(sysd, cfg.to_dict(), ports, top, stream, aw, regs)


# -------------------------------------------------------------------------------------------------
# TCL generation
# -------------------------------------------------------------------------------------------------

def _q(text) -> str:
    """A TCL double-quoted word with every special character escaped."""
    s = " ".join(str(text).split())
    for ch in "\\\"$[]{}":
        s = s.replace(ch, "\\" + ch)
    return f'"{s}"'


def _hex(v: int) -> str:
    return f"0x{v:08X}"


def _bus_blocks(d: Design) -> str:
    names = [p[0] for p in d.ports]
    claimed = set()

    def portmap(prefix):
        pairs = []
        for name in names:
            if name.startswith(prefix + "_"):
                pairs.append((name[len(prefix) + 1:].upper(), name))
                claimed.add(name)
        if not pairs:
            raise ValueError(f"no ports with prefix {prefix!r}")
        return pairs

    def single(port, logical):
        claimed.add(port)
        return [(logical, port)]

    buses = [
        (AXI_LITE, "aximm", "slave", portmap(AXI_LITE), [("PROTOCOL", "AXI4LITE")]),
        (AXIS_IN, "axis", "slave", portmap(AXIS_IN), []),
        (AXIS_OUT, "axis", "master", portmap(AXIS_OUT), []),
        (CLOCK, "clock", "slave", single(CLOCK, "CLK"),
         [("ASSOCIATED_BUSIF", f"{AXI_LITE}:{AXIS_IN}:{AXIS_OUT}"), ("ASSOCIATED_RESET", RESET)]),
        (RESET, "reset", "slave", single(RESET, "RST"), [("POLARITY", "ACTIVE_LOW")]),
        (IRQ, "interrupt", "master", single(IRQ, "INTERRUPT"), [("SENSITIVITY", "LEVEL_HIGH")]),
    ]
    left = set(names) - claimed
    if left:
        raise ValueError(f"top-level ports outside every bus interface: {sorted(left)}")
    lines = []
    for name, kind, mode, pm, params in buses:
        pm_text = " ".join(f"{lg} {ph}" for lg, ph in pm)
        par_text = " ".join(f"{k} {v}" for k, v in params)
        lines.append(f"    s2l_bus_interface $core {name} {_BUS_TYPES[kind]} {mode} {{{pm_text}}} {{{par_text}}}")
    return "\n".join(lines)


def _register_blocks(d: Design) -> str:
    lines = []
    for reg in d.registers:
        accs = {_ACCESS[f["access"]][0] for f in reg["fields"]}
        racc = accs.pop() if len(accs) == 1 else "read-write"
        desc = reg.get("doc") or "; ".join(f"{f['name']}: {f['doc']}" for f in reg["fields"])[:200]
        lines.append(f"    set reg [s2l_register $block {reg['name']} 0x{reg['address']:02X} {racc} {_q(desc)}]")
        for f in reg["fields"]:
            acc, mwv = _ACCESS[f["access"]]
            lines.append(f"    s2l_field $reg {f['name']} {f['offset']} {f['width']} {acc} "
                         f"{_q(mwv)} {_q(f.get('doc', ''))}")
    return "\n".join(lines)


def tcl_text(config="kv260", *, system=None, register_map=None, jobs=None, design_=None) -> str:
    """The complete ``build.tcl`` for one configuration (needs no Verilog on disk to generate)."""
    d = design_ or design(config, system=system, register_map=register_map)
    s = d.system
    vendor, library, name, version = d.vlnv
    board_vendor, board, component = s["board_part"].split(":")
    carrier = board[:-4] + "_carrier" if board.endswith("_som") else ""
    acc, dma = s["accelerator"], s["dma"]
    subst = {
        "CONFIG": d.config["name"],
        "PART": s["part"],
        "BOARD_PART": s["board_part"],
        "CARRIER": f"{board_vendor}:{carrier}" if carrier else "",
        "VLNV": s["vlnv"],
        "VENDOR": vendor, "LIBRARY": library, "NAME": name, "VERSION": version,
        "TOP": d.top,
        "DESIGN": DESIGN_NAME,
        "BASENAME": BASENAME,
        "PS": PS_NAME,
        "ACCEL": acc["name"], "DMA": dma["name"],
        "ACCEL_BASE": _hex(acc["base"]), "ACCEL_RANGE": _hex(acc["range"]),
        "DMA_BASE": _hex(dma["base"]), "DMA_RANGE": _hex(dma["range"]),
        "PL_CLOCK_MHZ": f"{s['pl_clock_mhz']:g}",
        "STREAM_WIDTH": str(d.stream_width),
        "MM_WIDTH": str(d.mm_width),
        "DMA_LENGTH_WIDTH": str(int(s["dma_length_width"])),
        "DMA_ADDR_WIDTH": str(DMA_ADDR_WIDTH),
        "DMA_BURST": str(DMA_BURST),
        "ADDR_WIDTH": str(d.address_width),
        "BLOCK_RANGE": str(max(4096, 2 ** d.address_width)),
        "JOBS": str(jobs or default_jobs()),
        "MIN_VIVADO": MIN_VIVADO,
        "BUS_INTERFACES": _bus_blocks(d),
        "REGISTERS": _register_blocks(d),
        "DESCRIPTION": _q(f"Skip2-LoRA fine-tuning accelerator ({d.config['name']} build: "
                          f"{d.config['lanes']} lanes, {d.stream_width}-bit streams)"),
    }
    text = _TEMPLATE
    for key, value in subst.items():
        text = text.replace(f"@{key}@", value)
    leftover = re.findall(r"@[A-Z_]+@", text)
    if leftover:  # pragma: no cover - a template/generator mismatch
        raise AssertionError(f"unfilled template fields {leftover}")
    return text


def default_jobs() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def vivado_command(build_dir=".", *, jobs=None, vivado="vivado") -> list:
    """The batch command, run in ``build_dir`` (``-tclargs`` override the script's defaults)."""
    del build_dir  # the script finds its own directory; the command is run with cwd=build_dir
    cmd = [vivado, "-mode", "batch", "-nojournal", "-log", "vivado.log", "-source", "build.tcl"]
    if jobs:
        cmd += ["-tclargs", f"jobs={jobs}"]
    return cmd


def write_build(build_dir, config="kv260", *, system=None, register_map=None, jobs=None,
                export=True) -> dict:
    """Export the Verilog (unless ``export=False``) and write ``build.tcl`` + ``design.json``."""
    d = design(config, system=system, register_map=register_map)
    out = Path(build_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    jobs = jobs or default_jobs()
    info = {}
    if export:
        from .export import export_verilog

        info = export_verilog(out, config_named(config))
    tcl = out / "build.tcl"
    tcl.write_text(tcl_text(config, jobs=jobs, design_=d))
    (out / "design.json").write_text(json.dumps(d.to_dict(), indent=1) + "\n")
    cmd = vivado_command(out, jobs=jobs)
    return {
        "config": d.config["name"], "build_dir": str(out), "tcl": str(tcl),
        "verilog": str(out / "skip2lora.v") if export else None,
        "design": str(out / "design.json"), "jobs": jobs, "command": cmd,
        "command_line": f"cd {shlex.quote(str(out))} && {shlex.join(cmd)}",
        "out_dir": str(out / "out"),
        "outputs": {k: str(out / "out" / k) for k in (f"{BASENAME}.bit", f"{BASENAME}.hwh",
                                                       f"{BASENAME}_timing.rpt")},
        "export_seconds": info.get("seconds"),
    }


# -------------------------------------------------------------------------------------------------
# Running Vivado
# -------------------------------------------------------------------------------------------------

_INSTALL_HINT = (
    "Vivado {min} or newer is needed to build the bitstream: install the AMD Vivado ML Edition "
    "(the free Standard edition covers the KV260's XCK26; select 'Zynq UltraScale+ MPSoC' devices), "
    "then `source <install>/Vivado/<version>/settings64.sh` so that `vivado` is on PATH (or set "
    "$VIVADO to the executable). The Kria KV260 board files come from the Vivado board store "
    "(the flow tries to install them; or Tools > Vivado Store > Boards)."
)


def find_vivado(vivado=None) -> str:
    """The ``vivado`` executable: the argument, then $VIVADO, then PATH."""
    cand = vivado or os.environ.get("VIVADO") or "vivado"
    path = shutil.which(cand)
    if path is None:
        where = f"{cand!r} is not an executable" if (vivado or os.environ.get("VIVADO")) else \
            "`vivado` is not on PATH"
        raise VivadoNotFound(f"{where}. " + _INSTALL_HINT.format(min=MIN_VIVADO))
    return path


def _log(msg):
    print(f"skip2lora hw bitstream: {msg}", file=sys.stderr, flush=True)


def _run_vivado(cmd, cwd):
    _log(f"running {shlex.join(cmd)} in {cwd} (hours for the kv260 build; log: {cwd}/vivado.log)")
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            errors="replace")
    tail = []
    for line in proc.stdout:
        sys.stderr.write(line)
        tail = (tail + [line])[-40:]
    rc = proc.wait()
    if rc:
        raise RuntimeError(f"vivado failed with status {rc}; see {cwd}/vivado.log. Last lines:\n"
                           + "".join(tail))


# -------------------------------------------------------------------------------------------------
# Reports, hardware handoff, manifest
# -------------------------------------------------------------------------------------------------

def _num(tok):
    t = tok.strip()
    if t in ("", "NA", "N/A", "-"):
        return None
    if t.lower() in ("inf", "+inf"):
        return math.inf
    if t.lower() == "-inf":
        return -math.inf
    return float(t)


_SUMMARY_COLS = ("wns_ns", "tns_ns", "tns_failing", "tns_endpoints", "whs_ns", "ths_ns", "ths_failing",
                 "ths_endpoints", "wpws_ns", "tpws_ns", "tpws_failing", "tpws_endpoints")


def _section(text, title):
    """The body of a ``| Title`` section of a Vivado report (up to the next boxed header)."""
    m = re.search(r"^\|\s*" + re.escape(title) + r"\s*\n\|\s*-+\s*\n-+\s*\n", text, re.M)
    if not m:
        return None
    rest = text[m.end():]
    nxt = re.search(r"^-{20,}\s*\n\|", rest, re.M)
    return rest[:nxt.start()] if nxt else rest


def _table_rows(body):
    """Data rows after the dashed underline of a report table."""
    lines = body.splitlines()
    for i, line in enumerate(lines):
        if re.fullmatch(r"\s*-+(\s+-+)+\s*", line):
            return [ln for ln in lines[i + 1:] if ln.strip()]
    return []


def _as_int(v):
    return None if v is None or math.isinf(v) else int(v)


def parse_vivado_version(text) -> str | None:
    """``2022.2`` from a report's ``Tool Version : Vivado v.2022.2 (lin64) ...`` (or a log's banner)."""
    m = re.search(r"Vivado v\.?(\d{4}\.\d+(?:\.\d+)?)", text)
    return m.group(1) if m else None


def parse_timing_summary(text: str, target_mhz=None) -> dict:
    """WNS/TNS/WHS/THS, the clocks and the achieved frequency from ``report_timing_summary`` text.

    ``achieved_mhz`` is the estimate ``1000 / (period - WNS)`` of the clock whose requested frequency
    is closest to ``target_mhz`` (default: the fastest clock).
    """
    out = {"vivado_version": parse_vivado_version(text)}
    m = re.search(r"^\|\s*Design State\s*:\s*(.+?)\s*$", text, re.M)
    out["design_state"] = m.group(1) if m else None
    m = re.search(r"^\|\s*Design\s*:\s*(\S+)", text, re.M)
    out["design"] = m.group(1) if m else None
    body = _section(text, "Design Timing Summary")
    if body is None:
        raise ValueError("not a Vivado timing summary report (no 'Design Timing Summary' section)")
    rows = _table_rows(body)
    if not rows:
        raise ValueError("the Design Timing Summary table is empty")
    vals = rows[0].split()
    if len(vals) != len(_SUMMARY_COLS):
        raise ValueError(f"unexpected Design Timing Summary row: {rows[0]!r}")
    for key, tok in zip(_SUMMARY_COLS, vals):
        v = _num(tok)
        out[key] = _as_int(v) if key.endswith(("failing", "endpoints")) else v
    if "All user specified timing constraints are met." in body:
        out["constraints_met"] = True
    elif re.search(r"Timing constraints are not met", body):
        out["constraints_met"] = False
    else:
        out["constraints_met"] = None
    clocks = {}
    cbody = _section(text, "Clock Summary") or ""
    for line in cbody.splitlines():
        m = re.match(r"^(\s*)(\S+)\s+\{([^}]*)\}\s+([-\d.]+)\s+([-\d.]+)", line)
        if m:
            clocks[m.group(2)] = {"period_ns": float(m.group(4)), "target_mhz": float(m.group(5)),
                                  "generated": bool(m.group(1))}
    ibody = _section(text, "Intra Clock Table") or ""
    for line in _table_rows(ibody):
        toks = line.split()
        if len(toks) == 13:
            c = clocks.setdefault(toks[0], {})
            c.update({"wns_ns": _num(toks[1]), "tns_ns": _num(toks[2]), "whs_ns": _num(toks[5]),
                      "ths_ns": _num(toks[6]), "wpws_ns": _num(toks[9])})
        elif len(toks) == 5:  # only pulse-width columns (a clock without setup/hold paths)
            clocks.setdefault(toks[0], {}).update({"wpws_ns": _num(toks[1])})
    for c in clocks.values():
        p, w = c.get("period_ns"), c.get("wns_ns")
        if p is not None and w is not None and not math.isinf(w) and p - w > 0:
            c["fmax_mhz"] = round(1000.0 / (p - w), 3)
    out["clocks"] = clocks
    primary = None
    cands = [(n, c) for n, c in clocks.items() if "target_mhz" in c]
    if cands:
        if target_mhz is not None:
            primary = min(cands, key=lambda nc: abs(nc[1]["target_mhz"] - float(target_mhz)))[0]
        else:
            primary = max(cands, key=lambda nc: nc[1]["target_mhz"])[0]
    out["primary_clock"] = primary
    out["target_mhz"] = clocks[primary]["target_mhz"] if primary else None
    out["achieved_mhz"] = clocks[primary].get("fmax_mhz") if primary else None
    negatives = [out[k] for k in ("wns_ns", "whs_ns", "wpws_ns") if out[k] is not None]
    out["met"] = bool(negatives) and all(v >= 0 for v in negatives) and out["constraints_met"] is not False
    return out


def _int(v):
    if v is None:
        return None
    v = str(v).strip()
    try:
        return int(v, 0)
    except ValueError:
        return int(float(v))


def hwh_summary(hwh) -> dict:
    """Instances, VLNVs, address map (as seen from the PS master), DMA parameters and the PL clock
    of a Vivado hardware handoff (``.hwh``) file or text."""
    text = Path(hwh).read_text() if not str(hwh).lstrip().startswith("<") else str(hwh)
    root = ET.fromstring(text)
    modules, ranges = {}, []
    for mod in root.iter("MODULE"):
        inst = mod.get("INSTANCE")
        params = {p.get("NAME"): p.get("VALUE") for p in mod.iter("PARAMETER")}
        modules[inst] = {"vlnv": mod.get("VLNV"), "modtype": mod.get("MODTYPE"), "parameters": params}
        for mr in mod.iter("MEMRANGE"):
            base, high = _int(mr.get("BASEVALUE")), _int(mr.get("HIGHVALUE"))
            ranges.append({"master_instance": inst, "master": mr.get("MASTERBUSINTERFACE"),
                           "instance": mr.get("INSTANCE"), "slave": mr.get("SLAVEBUSINTERFACE"),
                           "base": base, "range": (high - base + 1) if base is not None and high is not None else None})
    sysinfo = root.find("SYSTEMINFO")
    pl0 = None
    for mod in modules.values():
        v = mod["parameters"].get("PSU__CRL_APB__PL0_REF_CTRL__ACT_FREQMHZ")
        if v:
            pl0 = float(v)
    return {"vivado_version": root.get("VIVADOVERSION"),
            "board": sysinfo.get("BOARD") if sysinfo is not None else None,
            "modules": modules, "ranges": ranges, "pl0_act_mhz": pl0}


def check_hwh(hwh, design_=None, *, system=None, config="kv260") -> list:
    """Differences between a hardware handoff and the description (empty list: all good)."""
    d = design_ or design(config, system=system)
    s = d.system
    h = hwh_summary(hwh)
    problems = []
    acc = h["modules"].get(s["accelerator"]["name"])
    if acc is None:
        problems.append(f"no instance {s['accelerator']['name']!r} in the hwh")
    elif acc["vlnv"] != s["vlnv"]:
        problems.append(f"{s['accelerator']['name']} has VLNV {acc['vlnv']!r}, not {s['vlnv']!r}")
    for key in ("accelerator", "dma"):
        seg = s[key]
        hits = [r for r in h["ranges"] if r["instance"] == seg["name"] and r["master"] == PS_MASTER]
        if not hits:
            problems.append(f"{seg['name']} is not mapped on {PS_MASTER}")
        elif (hits[0]["base"], hits[0]["range"]) != (seg["base"], seg["range"]):
            problems.append(f"{seg['name']} is at {hits[0]['base']:#x}+{hits[0]['range']:#x}, "
                            f"not {seg['base']:#x}+{seg['range']:#x}")
    dma = h["modules"].get(s["dma"]["name"])
    if dma is None:
        problems.append(f"no instance {s['dma']['name']!r} in the hwh")
    else:
        p = {k.lower(): v for k, v in dma["parameters"].items()}
        want = {"c_include_sg": 0, "c_sg_length_width": int(s["dma_length_width"]), "c_include_mm2s": 1,
                "c_include_s2mm": 1, "c_m_axis_mm2s_tdata_width": d.stream_width,
                "c_s_axis_s2mm_tdata_width": d.stream_width}
        for k, v in want.items():
            if k in p and _int(p[k]) != v:
                problems.append(f"{s['dma']['name']} {k} = {p[k]}, not {v}")
        for k in ("c_m_axi_mm2s_data_width", "c_m_axi_s2mm_data_width"):
            if k in p and _int(p[k]) < d.stream_width:
                problems.append(f"{s['dma']['name']} {k} = {p[k]} is narrower than the stream")
    target = float(s["pl_clock_mhz"])
    if h["pl0_act_mhz"] is not None and abs(h["pl0_act_mhz"] - target) > 0.01 * target:
        problems.append(f"pl_clk0 runs at {h['pl0_act_mhz']} MHz, not {s['pl_clock_mhz']} MHz")
    return problems


def _sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _git(repo_dir=None) -> dict:
    repo = Path(repo_dir) if repo_dir else Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=30)
        if commit.returncode:
            return {"commit": None, "dirty": None}
        status = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=30)
        return {"commit": commit.stdout.strip(), "dirty": bool(status.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def write_manifest(out_dir, *, config=None, design_=None, timing_report=None, timing_text=None,
                   vivado_version=None, files=None, repo_dir=None, extra=None) -> dict:
    """Write ``out_dir/manifest.json``: file hashes, git commit, Vivado version, timing, config.

    The timing comes from ``timing_text`` or the ``report_timing_summary`` file ``timing_report``
    (default ``out_dir/skip2lora_timing.rpt``). ``files`` defaults to every file in ``out_dir``
    except the manifest. ``vivado_info.json`` (written by ``build.tcl``) is merged when present.
    """
    out = Path(out_dir)
    if design_ is None and config is not None:
        design_ = design(config)
    target = design_.system["pl_clock_mhz"] if design_ else None
    if timing_text is None:
        rpt = Path(timing_report) if timing_report else out / f"{BASENAME}_timing.rpt"
        timing_text = rpt.read_text(errors="replace") if rpt.is_file() else None
    timing = parse_timing_summary(timing_text, target) if timing_text is not None else None
    info = {}
    if (out / "vivado_info.json").is_file():
        info = json.loads((out / "vivado_info.json").read_text())
    version = vivado_version or info.get("vivado_version") or (timing or {}).get("vivado_version")
    if files is None:
        files = sorted(p.name for p in out.iterdir() if p.is_file() and p.name != "manifest.json")
    manifest = {
        "name": BASENAME,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "git": _git(repo_dir),
        "vivado_version": version,
        "vivado": info,
        "config": design_.config if design_ else None,
        "design": design_.to_dict() if design_ else None,
        "timing": timing,
        "wns_ns": (timing or {}).get("wns_ns"),
        "tns_ns": (timing or {}).get("tns_ns"),
        "whs_ns": (timing or {}).get("whs_ns"),
        "timing_met": (timing or {}).get("met"),
        "target_mhz": (timing or {}).get("target_mhz"),
        "achieved_mhz": (timing or {}).get("achieved_mhz"),
        "files": {name: {"sha256": _sha256(out / name), "bytes": (out / name).stat().st_size}
                  for name in files},
    }
    hwh = out / f"{BASENAME}.hwh"
    if hwh.is_file():
        try:
            h = hwh_summary(hwh)
            manifest["pl_clk0_mhz"] = h["pl0_act_mhz"]
            manifest["board_part"] = h["board"]
        except ET.ParseError as exc:
            manifest["hwh_error"] = str(exc)
    if extra:
        manifest.update(extra)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1, default=_json_default) + "\n")
    return manifest


def _json_default(o):
    if isinstance(o, float) and math.isinf(o):
        return None
    raise TypeError(type(o).__name__)


def _pynq_dir() -> Path:
    return PYNQ_DIR


def install(out_dir, dest=None) -> list:
    """Copy ``skip2lora.bit``/``.hwh``/``manifest.json`` into ``bitstreams/kv260`` (PYNQ's default)."""
    dest = Path(dest) if dest else _pynq_dir()
    dest.mkdir(parents=True, exist_ok=True)
    copied = []
    for name in OUTPUT_FILES:
        src = Path(out_dir) / name
        if not src.is_file():
            raise FileNotFoundError(f"missing build output {src}")
        shutil.copy2(src, dest / name)
        copied.append(str(dest / name))
    return copied


# -------------------------------------------------------------------------------------------------
# The one command
# -------------------------------------------------------------------------------------------------

def build_bitstream(config="kv260", out=None, *, jobs=None, dry_run=False, install_outputs=True,
                    vivado=None, system=None) -> dict:
    """Export, generate, run Vivado, check, write the manifest and install (see module doc).

    With ``dry_run`` only the Verilog and ``build.tcl`` are written and the command is returned.
    """
    cfg = config_named(config)
    build_dir = Path(out or Path("build") / f"bitstream-{cfg.name}").resolve()
    exe = None
    if not dry_run:
        exe = find_vivado(vivado)  # fail before the (minutes-long) Verilog export
    jobs = jobs or default_jobs()
    res = write_build(build_dir, cfg, system=system, jobs=jobs)
    res.update({"dry_run": bool(dry_run), "ok": True, "installed": [], "vivado": exe})
    if dry_run:
        return res
    cmd = vivado_command(build_dir, jobs=jobs, vivado=exe)
    res["command"] = cmd
    res["command_line"] = f"cd {shlex.quote(str(build_dir))} && {shlex.join(cmd)}"
    _run_vivado(cmd, build_dir)
    out_dir = build_dir / "out"
    for name in (f"{BASENAME}.bit", f"{BASENAME}.hwh"):
        if not (out_dir / name).is_file():
            raise RuntimeError(f"vivado finished but {out_dir / name} is missing; see {build_dir}/vivado.log")
    d = design(cfg, system=system)
    problems = check_hwh(out_dir / f"{BASENAME}.hwh", d)
    manifest = write_manifest(out_dir, design_=d, extra={"hwh_check": problems or "ok"})
    res["manifest"] = str(out_dir / "manifest.json")
    res["timing"] = {k: manifest[k] for k in ("wns_ns", "tns_ns", "whs_ns", "timing_met", "target_mhz",
                                              "achieved_mhz")}
    res["hwh_problems"] = problems
    if problems:
        res["ok"] = False
        _log("the hardware handoff does not match the description: " + "; ".join(problems))
    if manifest["timing_met"] is not True:
        res["ok"] = False
        _log(f"timing is not met (WNS {manifest['wns_ns']} ns); outputs left in {out_dir}")
    if res["ok"] and install_outputs:
        if cfg.name == "kv260":
            res["installed"] = install(out_dir)
        else:
            _log(f"the {cfg.name} build is not installed into {_pynq_dir()} (kv260 only); see {out_dir}")
    return res


def summary_text(r: dict) -> str:
    if r.get("dry_run"):
        return "\n".join([
            f"wrote {r['verilog']} and {r['tcl']} ({r['config']})",
            "build the bitstream with:",
            f"  {r['command_line']}",
            f"outputs: {r['out_dir']}/{{{BASENAME}.bit,{BASENAME}.hwh,{BASENAME}_timing.rpt}}",
        ])
    t = r.get("timing", {})
    lines = [f"{r['config']} bitstream in {r['out_dir']}: WNS {t.get('wns_ns')} ns, "
             f"timing {'met' if t.get('timing_met') else 'NOT met'}, "
             f"~{t.get('achieved_mhz')} MHz achievable at {t.get('target_mhz')} MHz requested"]
    if r.get("hwh_problems"):
        lines.append("hwh check: " + "; ".join(r["hwh_problems"]))
    if r.get("installed"):
        lines.append("installed: " + ", ".join(r["installed"]))
    lines.append(f"manifest: {r.get('manifest')}")
    return "\n".join(lines)


# -------------------------------------------------------------------------------------------------
# The script. @FIELDS@ are filled in by tcl_text(); nothing in here names an IP version.
# Tcl 8.5 only (Vivado's interpreter): no try/lmap/string cat.
# -------------------------------------------------------------------------------------------------

_TEMPLATE = r"""# build.tcl -- Vivado batch flow for the Skip2-LoRA accelerator on the Kria KV260 (@CONFIG@ build).
#
# GENERATED by skip2lora.hw.vivado from hw/system.py, the accelerator's top-level ports and the
# register map. Do not edit; regenerate with:  skip2lora hw bitstream --config @CONFIG@ --dry-run
#
# Run from this directory (next to skip2lora.v):
#     vivado -mode batch -nojournal -log vivado.log -source build.tcl [-tclargs jobs=N out_dir=DIR]
# Needs Vivado @MIN_VIVADO@ or newer with Zynq UltraScale+ MPSoC support and the kv260_som board files.
# Writes out/@BASENAME@.bit, out/@BASENAME@.hwh (PYNQ overlay), out/@BASENAME@_timing.rpt,
# out/@BASENAME@_utilization.rpt, out/@BASENAME@_bd.tcl, out/vivado_info.json.

# ---- the description (generated) ---------------------------------------------------------------
set S2L(config)           @CONFIG@
set S2L(part)             @PART@
set S2L(board_part)       @BOARD_PART@
set S2L(carrier)          "@CARRIER@"
set S2L(vlnv)             @VLNV@
set S2L(vendor)           @VENDOR@
set S2L(library)          @LIBRARY@
set S2L(name)             @NAME@
set S2L(version)          @VERSION@
set S2L(top)              @TOP@
set S2L(design)           @DESIGN@
set S2L(basename)         @BASENAME@
set S2L(ps)               @PS@
set S2L(accel)            @ACCEL@
set S2L(dma)              @DMA@
set S2L(pl_clock_mhz)     @PL_CLOCK_MHZ@
set S2L(stream_width)     @STREAM_WIDTH@
set S2L(mm_width)         @MM_WIDTH@
set S2L(dma_length_width) @DMA_LENGTH_WIDTH@
set S2L(dma_addr_width)   @DMA_ADDR_WIDTH@
set S2L(dma_burst)        @DMA_BURST@
set S2L(addr_width)       @ADDR_WIDTH@
set S2L(block_range)      @BLOCK_RANGE@
set S2L(jobs)             @JOBS@
set S2L(min_vivado)       @MIN_VIVADO@

# ---- options: -tclargs key=value (jobs, out_dir) -------------------------------------------------
set S2L(here) [file dirname [file normalize [info script]]]
set S2L(out_dir) [file join $S2L(here) out]
if {[info exists ::argv]} {
    foreach arg $::argv {
        if {[regexp {^([a-z_]+)=(.*)$} $arg -> key value] && [lsearch -exact {jobs out_dir} $key] >= 0} {
            set S2L($key) $value
        } else {
            error "skip2lora: unknown argument '$arg' (expected jobs=N or out_dir=DIR)"
        }
    }
}
set S2L(out_dir)  [file normalize $S2L(out_dir)]
set S2L(proj_dir) [file join $S2L(here) vivado]
set S2L(pkg_dir)  [file join $S2L(here) ip_pkg]
set S2L(ip_dir)   [file join $S2L(here) ip]

# ---- helpers -----------------------------------------------------------------------------------
proc s2l_log {msg} { puts "skip2lora: $msg" }

proc s2l_step {msg} { puts "\n========== skip2lora: $msg ==========" }

# Vivado's version as a plain dotted number ("2023.2.1"), and the minimum check.
proc s2l_check_vivado {minimum} {
    set full [version -short]
    if {![regexp {^[0-9]+(\.[0-9]+)*} $full v]} { set v 0 }
    if {[package vcompare $v $minimum] < 0} {
        error "skip2lora: Vivado $full is too old; this flow needs $minimum or newer"
    }
    return $full
}

# The newest IP definition with one of these names (vendor xilinx.com), whatever its version.
proc s2l_ipdef {names} {
    foreach name $names {
        foreach scope {ipi any all} {
            set filter "NAME == $name && VENDOR == xilinx.com"
            if {$scope eq "ipi"} {
                set defs [get_ipdefs -quiet -filter "$filter && DESIGN_TOOL_CONTEXTS =~ *IPI*"]
            } elseif {$scope eq "any"} {
                set defs [get_ipdefs -quiet -filter $filter]
            } else {
                set defs [get_ipdefs -quiet -all -filter $filter]
            }
            set vlnvs {}
            foreach def $defs { lappend vlnvs [get_property VLNV $def] }
            if {[llength $vlnvs]} {
                set vlnv [lindex [lsort -dictionary $vlnvs] end]
                set ::S2L(ip,$name) $vlnv
                return $vlnv
            }
        }
    }
    error "skip2lora: no IP named [join $names { or }] in the Vivado IP catalog"
}

# The newest installed board part "vendor:board:component:<version>" for "vendor:board:component".
proc s2l_find_board_part {base} {
    set parts [get_board_parts -quiet -latest_file_version "${base}:*"]
    if {[llength $parts]} { return [lindex [lsort -dictionary $parts] end] }
    return ""
}

proc s2l_board_part {base} {
    set part [s2l_find_board_part $base]
    if {$part ne ""} { return $part }
    # Board files installed through the Vivado store (XilinxBoardStore) or named by the user.
    set paths {}
    if {[info exists ::env(SKIP2LORA_BOARD_REPO)]} { lappend paths $::env(SKIP2LORA_BOARD_REPO) }
    if {![catch {get_property LOCAL_ROOT_DIR [xhub::get_xstores xilinx_board_store]} store]} {
        lappend paths $store
    }
    if {[llength $paths]} {
        set_param board.repoPaths [concat [get_param board.repoPaths] $paths]
        set part [s2l_find_board_part $base]
        if {$part ne ""} { return $part }
    }
    # Last resort: install them from the board store (needs the network).
    s2l_log "board files for $base not found; trying to install them from the Vivado board store"
    set board [lindex [split $base :] 1]
    if {[catch {
        set store [xhub::get_xstores xilinx_board_store]
        xhub::refresh_catalog $store
        xhub::install [xhub::get_xitems -of_objects $store "*:${board}:*"]
        set_param board.repoPaths [concat [get_param board.repoPaths] [get_property LOCAL_ROOT_DIR $store]]
    } err]} {
        s2l_log "board store install failed: $err"
    }
    set part [s2l_find_board_part $base]
    if {$part ne ""} { return $part }
    error "skip2lora: no board part $base:* installed. Install the Kria KV260 board files \
(Vivado: Tools > Vivado Store > Boards > Kria KV260 Vision AI Starter Kit, or in Tcl: \
xhub::refresh_catalog \[xhub::get_xstores xilinx_board_store\]; \
xhub::install \[xhub::get_xitems *${board}*\]), or point SKIP2LORA_BOARD_REPO at a board file folder."
}

# The SOM240 connection to the KV260 carrier card. Optional: the design uses no carrier pins, but
# the connection makes the PS preset include the carrier's peripherals (UART, SD, USB, Ethernet).
proc s2l_carrier_connection {carrier} {
    if {$carrier eq ""} { return "" }
    set found {}
    catch {set found [get_board_parts -quiet -latest_file_version "${carrier}:*"]}
    if {![llength $found]} { catch {set found [get_boards -quiet "${carrier}:*"]} }
    if {![llength $found]} { return "" }
    set fields [split [lindex [lsort -dictionary $found] end] :]
    set vendor [lindex $fields 0]
    set board [lindex $fields 1]
    set version [lindex $fields end]
    return "som240_1_connector ${vendor}:${board}:som240_1_connector:${version}"
}

# Set CONFIG.<key> values on a block-design cell and read every one of them back.
proc s2l_configure {cell pairs} {
    set dict {}
    foreach {key value} $pairs { lappend dict CONFIG.$key $value }
    set_property -dict $dict $cell
    foreach {key value} $pairs {
        set got [get_property CONFIG.$key $cell]
        if {$got ne $value && !([string is double -strict $got] && [string is double -strict $value] && $got == $value)} {
            error "skip2lora: $cell CONFIG.$key is '$got' after setting '$value'"
        }
    }
}

# A bus interface with explicit port maps and parameters (replaces whatever was inferred).
proc s2l_bus_interface {core name bus mode portmap params} {
    set abstraction [regsub {:([^:]+):([^:]+)$} $bus {:\1_rtl:\2}]
    set bi [ipx::add_bus_interface $name $core]
    set_property abstraction_type_vlnv $abstraction $bi
    set_property bus_type_vlnv $bus $bi
    set_property interface_mode $mode $bi
    foreach {logical physical} $portmap {
        set pm [ipx::add_port_map $logical $bi]
        set_property physical_name $physical $pm
    }
    foreach {key value} $params {
        set p [ipx::add_bus_parameter $key $bi]
        set_property value $value $p
    }
    return $bi
}

proc s2l_register {block name offset access description} {
    set reg [ipx::add_register $name $block]
    set_property address_offset $offset $reg
    set_property size 32 $reg
    set_property description $description $reg
    if {[catch {set_property access $access $reg} err]} { s2l_log "register $name: $err" }
    return $reg
}

proc s2l_field {reg name offset width access modified_write description} {
    set field [ipx::add_field $name $reg]
    set_property bit_offset $offset $field
    set_property bit_width $width $field
    set_property access $access $field
    set_property description $description $field
    if {$modified_write ne ""} {
        if {[catch {set_property modified_write_value $modified_write $field} err]} { s2l_log "field $name: $err" }
    }
    return $field
}

# The address segment of a slave interface pin (e.g. skip2lora_0/s_axi_control -> .../reg0).
proc s2l_slave_segments {cell intf} {
    set segs [get_bd_addr_segs -quiet "$cell/$intf/*"]
    if {![llength $segs]} { set segs [get_bd_addr_segs -quiet -of_objects [get_bd_intf_pins $cell/$intf]] }
    if {![llength $segs]} { error "skip2lora: $cell/$intf has no address segment" }
    return $segs
}

proc s2l_bytes {value} {
    if {[regexp {^([0-9]+)([KMG])$} $value -> n unit]} {
        return [expr {$n * [dict get {K 1024 M 1048576 G 1073741824} $unit]}]
    }
    return [expr {$value + 0}]
}

# Read the assignment back from the PS's address space (the hwh is checked again in Python).
proc s2l_check_segment {space cell offset range} {
    foreach seg [get_bd_addr_segs -quiet -of_objects [get_bd_addr_spaces $space]] {
        if {[string match "*/SEG_${cell}_*" $seg]} {
            set got_offset [get_property OFFSET $seg]
            set got_range [s2l_bytes [get_property RANGE $seg]]
            if {$got_offset != $offset || $got_range != $range} {
                error "skip2lora: $cell is mapped at $got_offset+$got_range, not $offset+$range"
            }
            s2l_log "address: $cell at $got_offset (range $got_range)"
            return
        }
    }
    s2l_log "WARNING: could not read back the address segment of $cell (checked in the hwh later)"
}

proc s2l_json_escape {s} { return [string map [list \\ \\\\ \" \\\" \n \\n \r \\r \t \\t] $s] }

proc s2l_write_json {path pairs} {
    set fh [open $path w]
    puts $fh "\{"
    set items {}
    foreach {key value} $pairs { lappend items "  \"[s2l_json_escape $key]\": \"[s2l_json_escape $value]\"" }
    puts $fh [join $items ",\n"]
    puts $fh "\}"
    close $fh
}

proc s2l_run {run jobs args} {
    launch_runs $run -jobs $jobs {*}$args
    wait_on_run $run
    set progress [get_property PROGRESS [get_runs $run]]
    set status [get_property STATUS [get_runs $run]]
    s2l_log "$run: $status ($progress)"
    if {$progress ne "100%" || [string match -nocase "*error*" $status] || [string match -nocase "*failed*" $status]} {
        error "skip2lora: $run failed ($status); see [get_property DIRECTORY [get_runs $run]]/runme.log"
    }
}

# ---- 1. Vivado and board files -------------------------------------------------------------------
s2l_step "checking Vivado and the board files"
set S2L(vivado_version) [s2l_check_vivado $S2L(min_vivado)]
s2l_log "Vivado $S2L(vivado_version), $S2L(jobs) jobs, outputs in $S2L(out_dir)"
set S2L(board_part_version) [s2l_board_part $S2L(board_part)]
s2l_log "board part $S2L(board_part_version)"

# ---- 2. package the accelerator Verilog as an IP ----------------------------------------------------
s2l_step "packaging $S2L(vlnv)"
file delete -force $S2L(pkg_dir) $S2L(ip_dir)
create_project -force skip2lora_ip_pkg $S2L(pkg_dir) -part $S2L(part)
add_files -norecurse [file join $S2L(here) skip2lora.v]
set_property top $S2L(top) [current_fileset]
update_compile_order -fileset sources_1
ipx::package_project -root_dir $S2L(ip_dir) -vendor $S2L(vendor) -library $S2L(library) \
    -taxonomy /UserIP -import_files -set_current true
set core [ipx::current_core]
set_property vendor $S2L(vendor) $core
set_property library $S2L(library) $core
set_property name $S2L(name) $core
set_property version $S2L(version) $core
set_property display_name "Skip2-LoRA accelerator" $core
set_property description @DESCRIPTION@ $core
set_property vendor_display_name "Skip2-LoRA" $core
# Replace the inferred interfaces by explicit ones (same names, deterministic port maps/parameters).
foreach bi [ipx::get_bus_interfaces -quiet -of_objects $core] { ipx::remove_bus_interface [get_property NAME $bi] $core }
foreach mm [ipx::get_memory_maps -quiet -of_objects $core] { ipx::remove_memory_map [get_property NAME $mm] $core }
proc s2l_add_bus_interfaces {core} {
@BUS_INTERFACES@
}
s2l_add_bus_interfaces $core
set mm [ipx::add_memory_map s_axi_control $core]
set_property slave_memory_map_ref s_axi_control [ipx::get_bus_interfaces s_axi_control -of_objects $core]
set block [ipx::add_address_block reg0 $mm]
set_property range $S2L(block_range) $block
set_property width 32 $block
set_property usage register $block
# The register map (PYNQ shows it as the IP's register_map).
proc s2l_add_registers {block} {
@REGISTERS@
}
if {[catch {s2l_add_registers $block} err]} {
    s2l_log "WARNING: registers not added to the IP description ($err); the driver does not need them"
}
ipx::create_xgui_files $core
ipx::update_checksums $core
ipx::check_integrity $core
ipx::save_core $core
close_project

# ---- 3. the project ----------------------------------------------------------------------------
s2l_step "creating the project"
create_project -force skip2lora $S2L(proj_dir) -part $S2L(part)
set_property board_part $S2L(board_part_version) [current_project]
set S2L(board_connections) [s2l_carrier_connection $S2L(carrier)]
if {$S2L(board_connections) ne ""} {
    if {[catch {set_property board_connections $S2L(board_connections) [current_project]} err]} {
        s2l_log "carrier connection skipped ($err)"
        set S2L(board_connections) ""
    } else {
        s2l_log "carrier connection $S2L(board_connections)"
    }
} else {
    s2l_log "no KV260 carrier board files: building with the SOM preset only (no carrier pins are used)"
}
set_property target_language Verilog [current_project]
set_property ip_repo_paths [list $S2L(ip_dir)] [current_project]
update_ip_catalog -rebuild
if {![llength [get_ipdefs -quiet $S2L(vlnv)]]} { error "skip2lora: $S2L(vlnv) is not in the IP catalog after packaging" }

# ---- 4. the block design ------------------------------------------------------------------------
s2l_step "block design $S2L(design)"
create_bd_design $S2L(design)
current_bd_design $S2L(design)

# Zynq UltraScale+ PS with the board preset; HPM0_FPD (control), HP0_FPD (DMA data), pl_clk0, IRQ0.
set ps [create_bd_cell -type ip -vlnv [s2l_ipdef zynq_ultra_ps_e] $S2L(ps)]
apply_bd_automation -rule xilinx.com:bd_rule:zynq_ultra_ps_e -config {apply_board_preset "1"} $ps
s2l_configure $ps [list \
    PSU__USE__M_AXI_GP0 1 \
    PSU__MAXIGP0__DATA_WIDTH 32 \
    PSU__USE__M_AXI_GP1 0 \
    PSU__USE__M_AXI_GP2 0 \
    PSU__USE__S_AXI_GP2 1 \
    PSU__SAXIGP2__DATA_WIDTH 128 \
    PSU__USE__IRQ0 1 \
    PSU__FPGA_PL0_ENABLE 1 \
    PSU__CRL_APB__PL0_REF_CTRL__FREQMHZ $S2L(pl_clock_mhz) \
]

# AXI DMA in simple (register) mode: MM2S -> accelerator s_axis, accelerator m_axis -> S2MM.
set dma [create_bd_cell -type ip -vlnv [s2l_ipdef axi_dma] $S2L(dma)]
s2l_configure $dma [list \
    c_include_sg 0 \
    c_sg_length_width $S2L(dma_length_width) \
    c_include_mm2s 1 \
    c_include_s2mm 1 \
    c_addr_width $S2L(dma_addr_width) \
    c_m_axi_mm2s_data_width $S2L(mm_width) \
    c_m_axis_mm2s_tdata_width $S2L(stream_width) \
    c_m_axi_s2mm_data_width $S2L(mm_width) \
    c_s_axis_s2mm_tdata_width $S2L(stream_width) \
    c_mm2s_burst_size $S2L(dma_burst) \
    c_s2mm_burst_size $S2L(dma_burst) \
    c_include_mm2s_dre 0 \
    c_include_s2mm_dre 0 \
]

# The accelerator (our packaged IP: the one VLNV with a version, from hw/system.py).
set accel [create_bd_cell -type ip -vlnv $S2L(vlnv) $S2L(accel)]

# Control: PS M_AXI_HPM0_FPD -> SmartConnect -> accelerator s_axi_control + DMA S_AXI_LITE.
set smartconnect [s2l_ipdef smartconnect]
set ctrl [create_bd_cell -type ip -vlnv $smartconnect ctrl_smc]
s2l_configure $ctrl [list NUM_SI 1 NUM_MI 2]
# Data: DMA M_AXI_MM2S + M_AXI_S2MM -> SmartConnect -> PS S_AXI_HP0_FPD.
set data [create_bd_cell -type ip -vlnv $smartconnect data_smc]
s2l_configure $data [list NUM_SI 2 NUM_MI 1]
set rst [create_bd_cell -type ip -vlnv [s2l_ipdef proc_sys_reset] rst_pl0]
set irq [create_bd_cell -type ip -vlnv [s2l_ipdef {xlconcat ilconcat}] irq_concat]
s2l_configure $irq [list NUM_PORTS 3]

connect_bd_intf_net [get_bd_intf_pins $S2L(ps)/M_AXI_HPM0_FPD] [get_bd_intf_pins ctrl_smc/S00_AXI]
connect_bd_intf_net [get_bd_intf_pins ctrl_smc/M00_AXI] [get_bd_intf_pins $S2L(accel)/s_axi_control]
connect_bd_intf_net [get_bd_intf_pins ctrl_smc/M01_AXI] [get_bd_intf_pins $S2L(dma)/S_AXI_LITE]
connect_bd_intf_net [get_bd_intf_pins $S2L(dma)/M_AXI_MM2S] [get_bd_intf_pins data_smc/S00_AXI]
connect_bd_intf_net [get_bd_intf_pins $S2L(dma)/M_AXI_S2MM] [get_bd_intf_pins data_smc/S01_AXI]
connect_bd_intf_net [get_bd_intf_pins data_smc/M00_AXI] [get_bd_intf_pins $S2L(ps)/S_AXI_HP0_FPD]
connect_bd_intf_net [get_bd_intf_pins $S2L(dma)/M_AXIS_MM2S] [get_bd_intf_pins $S2L(accel)/s_axis]
connect_bd_intf_net [get_bd_intf_pins $S2L(accel)/m_axis] [get_bd_intf_pins $S2L(dma)/S_AXIS_S2MM]

# One clock: pl_clk0 drives every clock input (PS port clocks, DMA, SmartConnects, reset, accelerator).
set pl_clk [get_bd_pins $S2L(ps)/pl_clk0]
foreach pin [get_bd_pins -quiet -of_objects [get_bd_cells] -filter {TYPE == clk && DIR == I}] {
    if {![llength [get_bd_nets -quiet -of_objects $pin]]} { connect_bd_net $pl_clk $pin }
}
# Resets: pl_resetn0 -> proc_sys_reset -> interconnect / peripheral resets (active low).
connect_bd_net [get_bd_pins $S2L(ps)/pl_resetn0] [get_bd_pins rst_pl0/ext_reset_in]
connect_bd_net [get_bd_pins rst_pl0/interconnect_aresetn] [get_bd_pins ctrl_smc/aresetn] [get_bd_pins data_smc/aresetn]
connect_bd_net [get_bd_pins rst_pl0/peripheral_aresetn] [get_bd_pins $S2L(accel)/aresetn] [get_bd_pins $S2L(dma)/axi_resetn]
# Interrupts (level high) -> pl_ps_irq0: In0 accelerator, In1 DMA MM2S, In2 DMA S2MM.
connect_bd_net [get_bd_pins $S2L(accel)/interrupt] [get_bd_pins irq_concat/In0]
connect_bd_net [get_bd_pins $S2L(dma)/mm2s_introut] [get_bd_pins irq_concat/In1]
connect_bd_net [get_bd_pins $S2L(dma)/s2mm_introut] [get_bd_pins irq_concat/In2]
connect_bd_net [get_bd_pins irq_concat/dout] [get_bd_pins $S2L(ps)/pl_ps_irq0]

# ---- 5. the address map (hw/system.py) ------------------------------------------------------------
s2l_step "address map"
set ps_data [get_bd_addr_spaces $S2L(ps)/Data]
assign_bd_address -target_address_space $ps_data -offset @ACCEL_BASE@ -range @ACCEL_RANGE@ [s2l_slave_segments @ACCEL@ s_axi_control]
assign_bd_address -target_address_space $ps_data -offset @DMA_BASE@ -range @DMA_RANGE@ [s2l_slave_segments @DMA@ S_AXI_LITE]
# Everything else: the DMA masters' view of the DDR through S_AXI_HP0_FPD.
assign_bd_address
s2l_check_segment $S2L(ps)/Data @ACCEL@ @ACCEL_BASE@ @ACCEL_RANGE@
s2l_check_segment $S2L(ps)/Data @DMA@ @DMA_BASE@ @DMA_RANGE@

# ---- 6. validate, wrapper ---------------------------------------------------------------------
s2l_step "validating"
validate_bd_design
save_bd_design
set S2L(pl0_hz) [get_property CONFIG.FREQ_HZ $pl_clk]
s2l_log "pl_clk0 = $S2L(pl0_hz) Hz (requested $S2L(pl_clock_mhz) MHz)"
file mkdir $S2L(out_dir)
write_bd_tcl -force [file join $S2L(out_dir) $S2L(basename)_bd.tcl]
set bd_file [get_files $S2L(design).bd]
make_wrapper -files $bd_file -top -import
set_property top $S2L(design)_wrapper [current_fileset]
update_compile_order -fileset sources_1

# ---- 7. synthesis, implementation, bitstream ---------------------------------------------------------
s2l_step "synthesis ($S2L(jobs) jobs)"
s2l_run synth_1 $S2L(jobs)
s2l_step "implementation and bitstream"
s2l_run impl_1 $S2L(jobs) -to_step write_bitstream

# ---- 8. outputs: <basename>.bit + .hwh (PYNQ), reports -----------------------------------------------
s2l_step "outputs"
set impl_dir [get_property DIRECTORY [get_runs impl_1]]
set bits [glob -nocomplain -directory $impl_dir *.bit]
if {[llength $bits] != 1} { error "skip2lora: expected one bitstream in $impl_dir, found: $bits" }
file copy -force [lindex $bits 0] [file join $S2L(out_dir) $S2L(basename).bit]
set proj [get_property DIRECTORY [current_project]]
set hwhs {}
foreach gen {gen srcs} {
    set hwhs [concat $hwhs [glob -nocomplain [file join $proj "*.$gen" sources_1 bd $S2L(design) hw_handoff $S2L(design).hwh]]]
}
if {![llength $hwhs]} { error "skip2lora: no $S2L(design).hwh under $proj" }
file copy -force [lindex $hwhs 0] [file join $S2L(out_dir) $S2L(basename).hwh]
open_run impl_1
report_timing_summary -max_paths 10 -report_unconstrained -file [file join $S2L(out_dir) $S2L(basename)_timing.rpt]
report_utilization -file [file join $S2L(out_dir) $S2L(basename)_utilization.rpt]
if {[catch {write_hw_platform -fixed -include_bit -force -file [file join $S2L(out_dir) $S2L(basename).xsa]} err]} {
    s2l_log "no .xsa written ($err)"
}
set info [list \
    vivado_version $S2L(vivado_version) \
    config $S2L(config) \
    part $S2L(part) \
    board_part $S2L(board_part_version) \
    board_connections $S2L(board_connections) \
    accelerator_vlnv $S2L(vlnv) \
    pl_clk0_hz $S2L(pl0_hz) \
    jobs $S2L(jobs) \
    synth_status [get_property STATUS [get_runs synth_1]] \
    impl_status [get_property STATUS [get_runs impl_1]] \
]
foreach key [lsort [array names S2L ip,*]] { lappend info "ip_[string range $key 3 end]" $S2L($key) }
s2l_write_json [file join $S2L(out_dir) vivado_info.json] $info
s2l_log "wrote [file join $S2L(out_dir) $S2L(basename).bit] and $S2L(basename).hwh"
"""
