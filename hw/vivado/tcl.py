"""``build.tcl``: the Tcl templates (``templates/*.tcl``) filled in from the description.

The templates are plain Vivado Tcl with ``@NAME@`` fields (Tcl's own ``$``, ``[]`` and ``{}``
pass through untouched); `string.Template` fills them and refuses an unknown or missing field.
Only two blocks are generated here rather than written in the template: the IP's bus interfaces
(from the top's ports) and its register map. The DDR cache path is in the template, under
``if {$S2L(cache_path)}``: the ``S2L(cache_*)`` settings say whether the build has it.
"""

from __future__ import annotations

import json
import shlex
import string
from importlib import resources
from pathlib import Path

from ...fixed.config import config_named
from .design import (AXI_CACHE, AXI_LITE, AXIS_IN, AXIS_OUT, BASENAME, CLOCK, DDR_WINDOWS, DESIGN_NAME,
                     DMA_ADDR_WIDTH, DMA_BURST, IRQ, MIN_VIVADO, PS_CACHE, PS_CACHE_SEGMENTS, PS_NAME, RESET,
                     Design, design)
from .run import default_jobs, vivado_command

__all__ = ["TEMPLATES", "template_text", "template_fields", "tcl_text", "write_build"]

TEMPLATES = ("build.tcl", "helpers.tcl")

# Bus types of the packaged IP's interfaces (the abstraction is the same VLNV with an _rtl suffix).
_BUS_TYPES = {
    "aximm": "xilinx.com:interface:aximm:1.0",
    "axis": "xilinx.com:interface:axis:1.0",
    "clock": "xilinx.com:signal:clock:1.0",
    "reset": "xilinx.com:signal:reset:1.0",
    "interrupt": "xilinx.com:signal:interrupt:1.0",
}

_ACCESS = {  # registers.Access -> IP-XACT field access, modified write value
    "RO": ("read-only", ""),
    "RW": ("read-write", ""),
    "W1P": ("write-only", ""),
    "W1C": ("read-write", "oneToClear"),
}


class _TclTemplate(string.Template):
    """``@NAME@`` fields (upper case); any other ``@`` is an error, ``@@`` a literal ``@``."""

    delimiter = "@"
    flags = 0  # case-sensitive: Tcl words like @foo stay errors, not fields
    pattern = r"""
    @(?:
      (?P<escaped>@) |
      (?P<named>[A-Z][A-Z0-9_]*)@ |
      (?P<braced>(?!)) |
      (?P<invalid>)
    )
    """


def template_text(name: str) -> str:
    """A template file shipped with the package (``skip2lora/hw/vivado/templates/<name>``)."""
    if name not in TEMPLATES:
        raise ValueError(f"no Tcl template {name!r} (have {', '.join(TEMPLATES)})")
    return resources.files(__package__).joinpath("templates", name).read_text(encoding="utf-8")


def template_fields(text: str) -> set:
    """The ``@NAME@`` fields of a template text."""
    return {m.group("named") for m in _TclTemplate.pattern.finditer(text) if m.group("named")}


def _q(text) -> str:
    """A Tcl double-quoted word with every special character escaped."""
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

    widths = {name: width for name, _, width in d.ports}

    def stream_params(prefix, pm):
        """The AXI4-Stream bus parameters, declared (as HLS-generated IP does) rather than left to
        inference: IP integrator and the DMA then see exactly these, checked after validation."""
        logical = {lg for lg, _ in pm}
        return [("TDATA_NUM_BYTES", widths[f"{prefix}_tdata"] // 8)] + [
            (f"HAS_{sig}", int(sig in logical)) for sig in ("TKEEP", "TLAST", "TREADY", "TSTRB")]

    def cache_params():
        """The read manager's bus parameters, declared (IP integrator reads them back after
        validation): a read-only AXI4 manager, INCR bursts of up to 256 beats, one ID."""
        from ..axi4 import MAX_BURST_BEATS  # (Amaranth: not imported where the package only reads)

        return [("PROTOCOL", "AXI4"), ("READ_WRITE_MODE", "READ_ONLY"), ("DATA_WIDTH", d.cache_width),
                ("ADDR_WIDTH", d.cache_addr_width), ("ID_WIDTH", d.cache_id_width),
                ("MAX_BURST_LENGTH", MAX_BURST_BEATS), ("NUM_READ_OUTSTANDING", d.cache_outstanding),
                ("SUPPORTS_NARROW_BURST", 0)]

    axis_in, axis_out = portmap(AXIS_IN), portmap(AXIS_OUT)
    clocked = [AXI_LITE, AXIS_IN, AXIS_OUT] + ([AXI_CACHE] if d.has_cache else [])
    buses = [
        (AXI_LITE, "aximm", "slave", portmap(AXI_LITE), [("PROTOCOL", "AXI4LITE")]),
        (AXIS_IN, "axis", "slave", axis_in, stream_params(AXIS_IN, axis_in)),
        (AXIS_OUT, "axis", "master", axis_out, stream_params(AXIS_OUT, axis_out)),
        *([(AXI_CACHE, "aximm", "master", portmap(AXI_CACHE), cache_params())] if d.has_cache else []),
        (CLOCK, "clock", "slave", single(CLOCK, "CLK"),
         [("ASSOCIATED_BUSIF", ":".join(clocked)), ("ASSOCIATED_RESET", RESET)]),
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


def _fields(d: Design, jobs) -> dict:
    s = d.system
    vendor, library, name, version = d.vlnv
    board_vendor, board, _component = s["board_part"].split(":")
    carrier = board[:-4] + "_carrier" if board.endswith("_som") else ""
    acc, dma = s["accelerator"], s["dma"]
    cache_port = s["ps_ports"].get("cache", {})
    windows = " ".join(f"{{HP1_{name} 0x{base:010X} 0x{rng:08X}}}" for name, base, rng in DDR_WINDOWS)
    return {
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
        "PS_CONTROL_WIDTH": str(s["ps_ports"]["control"]["width"]),
        "PS_DATA_WIDTH": str(s["ps_ports"]["data"]["width"]),
        "CACHE_MASTER": str(int(d.has_cache)),
        "CACHE_PATH": str(int(d.cache_connected)),
        "CACHE_INTF": AXI_CACHE,
        "CACHE_WIDTH": str(d.cache_width),
        "CACHE_SPACE_RANGE": str(2 ** d.cache_addr_width if d.has_cache else 0),
        "PS_CACHE_PORT": cache_port.get("port", PS_CACHE),
        "PS_CACHE_SEGMENTS": PS_CACHE_SEGMENTS,
        "PS_CACHE_WIDTH": str(cache_port.get("width", 0)),
        "CACHE_WINDOWS": "{" + windows + "}",
        "CACHE_NOTE": _q(" ".join(d.warnings)),
        "STREAM_WIDTH": str(d.stream_width),
        "MM_WIDTH": str(d.mm_width),
        "DMA_LENGTH_WIDTH": str(int(s["dma_length_width"])),
        "DMA_ADDR_WIDTH": str(DMA_ADDR_WIDTH),
        "DMA_BURST": str(DMA_BURST),
        "ADDR_WIDTH": str(d.address_width),
        "BLOCK_RANGE": str(max(4096, 2 ** d.address_width)),
        "JOBS": str(jobs or default_jobs()),
        "MIN_VIVADO": MIN_VIVADO,
        "HELPERS": template_text("helpers.tcl").rstrip("\n"),
        "BUS_INTERFACES": _bus_blocks(d),
        "REGISTERS": _register_blocks(d),
        "DESCRIPTION": _q(f"Skip2-LoRA fine-tuning accelerator ({d.config['name']} build: "
                          f"{d.config['lanes']} lanes, {d.stream_width}-bit streams)"),
    }


def tcl_text(config="kv260", *, system=None, register_map=None, jobs=None, design_=None) -> str:
    """The complete ``build.tcl`` for one configuration (needs no Verilog on disk to generate)."""
    d = design_ or design(config, system=system, register_map=register_map)
    template = template_text("build.tcl")
    fields = _fields(d, jobs)
    unused = set(fields) - template_fields(template)
    if unused:  # a template/generator mismatch
        raise AssertionError(f"template fields never used: {sorted(unused)}")
    return _TclTemplate(template).substitute(fields)  # KeyError: a field the generator lacks


def write_build(build_dir, config="kv260", *, system=None, register_map=None, jobs=None,
                export=True, log=None) -> dict:
    """Export the Verilog (unless ``export=False``) and write ``build.tcl`` + ``design.json``.

    ``log`` receives the export's progress lines (None: quiet).
    """
    d = design(config, system=system, register_map=register_map)
    out = Path(build_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    jobs = jobs or default_jobs()
    info = {}
    if export:
        from ..export import export_verilog

        info = export_verilog(out, config_named(config), log=log)
    tcl = out / "build.tcl"
    tcl.write_text(tcl_text(config, jobs=jobs, design_=d))
    (out / "design.json").write_text(json.dumps(d.to_dict(), indent=1) + "\n")
    cmd = vivado_command(out, jobs=jobs)
    if log is not None:
        for warning in d.warnings:
            log(f"[bitstream {d.config['name']}] WARNING: {warning}")
    return {
        "config": d.config["name"], "build_dir": str(out), "tcl": str(tcl),
        "cache_path": d.cache_path, "warnings": list(d.warnings),
        "verilog": str(out / "skip2lora.v") if export else None,
        "design": str(out / "design.json"), "jobs": jobs, "command": cmd,
        "command_line": f"cd {shlex.quote(str(out))} && {shlex.join(cmd)}",
        "out_dir": str(out / "out"),
        "outputs": {k: str(out / "out" / k) for k in (f"{BASENAME}.bit", f"{BASENAME}.hwh",
                                                       f"{BASENAME}_timing.rpt")},
        "export_seconds": info.get("seconds"),
    }

