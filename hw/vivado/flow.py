"""The one command: export, generate, run Vivado, check, record and install (``skip2lora hw bitstream``)."""

from __future__ import annotations

import shlex
from pathlib import Path

from ...fixed.config import config_named
from ..build_paths import bitstream_build_dir
from ..export import stderr_log
from .design import BASENAME, design
from .handoff import check_hwh
from .manifest import check_install_dir, install, pynq_dir, write_manifest
from .run import default_jobs, find_vivado, log, run_vivado, vivado_command
from .tcl import write_build

__all__ = ["build_bitstream", "summary_text"]


def build_bitstream(config="kv260", out=None, *, jobs=None, dry_run=False, install_outputs=True,
                    vivado=None, system=None, progress=stderr_log) -> dict:
    """Export, generate, run Vivado, check, write the manifest and install (see the package doc).

    With ``dry_run`` only the Verilog and ``build.tcl`` are written and the command is returned.
    ``out`` defaults to ``<build root>/build/bitstream-<config>`` (skip2lora.hw.build_paths).
    ``progress`` receives the Verilog export's stage lines (None: quiet, e.g. for ``--json``).
    """
    cfg = config_named(config)
    build_dir = Path(out).resolve() if out else bitstream_build_dir(cfg.name)
    exe = None
    if not dry_run:
        exe = find_vivado(vivado)  # fail before the (minutes-long) Verilog export
        if install_outputs and cfg.name == "kv260":
            check_install_dir()    # ... and before hours of Vivado
    jobs = jobs or default_jobs()
    res = write_build(build_dir, cfg, system=system, jobs=jobs, log=progress)
    res.update({"dry_run": bool(dry_run), "ok": True, "installed": [], "vivado": exe})
    if dry_run:
        return res
    cmd = vivado_command(build_dir, jobs=jobs, vivado=exe)
    res["command"] = cmd
    res["command_line"] = f"cd {shlex.quote(str(build_dir))} && {shlex.join(cmd)}"
    run_vivado(cmd, build_dir)
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
        log("the hardware handoff does not match the description: " + "; ".join(problems))
    if manifest["timing_met"] is not True:
        res["ok"] = False
        log(f"timing is not met (WNS {manifest['wns_ns']} ns); outputs left in {out_dir}")
    if res["ok"] and install_outputs:
        if cfg.name == "kv260":
            res["installed"] = install(out_dir)
        else:
            log(f"the {cfg.name} build is not installed into {pynq_dir()} (kv260 only); see {out_dir}")
    return res


def summary_text(r: dict) -> str:
    warnings = [f"WARNING: {w}" for w in r.get("warnings") or ()]
    if r.get("dry_run"):
        return "\n".join([
            f"wrote {r['verilog']} and {r['tcl']} ({r['config']})",
            *warnings,
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
    lines += warnings
    if r.get("installed"):
        lines.append("installed: " + ", ".join(r["installed"]))
    lines.append(f"manifest: {r.get('manifest')}")
    return "\n".join(lines)
