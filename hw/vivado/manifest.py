"""What a finished build records (``manifest.json``) and where its outputs are installed."""

from __future__ import annotations

import datetime
import hashlib
import json
import math
import os
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

from ..build_paths import source_checkout
from .design import BASENAME, design
from .handoff import hwh_summary
from .reports import parse_timing_summary

__all__ = ["OUTPUT_FILES", "pynq_dir", "write_manifest", "install", "check_install_dir"]

OUTPUT_FILES = (f"{BASENAME}.bit", f"{BASENAME}.hwh", "manifest.json")


def pynq_dir() -> Path:
    """``bitstreams/kv260`` of the imported package: where the PYNQ driver looks by default
    (``skip2lora.driver.pynq_backend.default_bitfile``)."""
    from ... import bitstreams

    return Path(bitstreams.__file__).resolve().parent / "kv260"


def _sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _git(repo_dir=None) -> dict:
    """The commit the build was made from: ``repo_dir``'s, else the source checkout's (an
    installed package records none)."""
    repo = Path(repo_dir) if repo_dir else source_checkout()
    if repo is None:
        return {"commit": None, "dirty": None}
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


def _json_default(o):
    if isinstance(o, float) and math.isinf(o):
        return None
    raise TypeError(type(o).__name__)


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


def check_install_dir(dest=None) -> Path:
    """The install destination, refused up front (before hours of Vivado) if it cannot be written."""
    dest = Path(dest) if dest else pynq_dir()
    probe = dest
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if not (probe.is_dir() and os.access(probe, os.W_OK | os.X_OK)):
        raise PermissionError(f"cannot install the bitstream into {dest}: {probe} is not writable "
                              f"(build with --no-install and copy the outputs by hand)")
    return dest


def install(out_dir, dest=None) -> list:
    """Copy ``skip2lora.bit``/``.hwh``/``manifest.json`` into ``bitstreams/kv260`` (PYNQ's default)."""
    dest = Path(dest) if dest else pynq_dir()
    dest.mkdir(parents=True, exist_ok=True)
    copied = []
    for name in OUTPUT_FILES:
        src = Path(out_dir) / name
        if not src.is_file():
            raise FileNotFoundError(f"missing build output {src}")
        shutil.copy2(src, dest / name)
        copied.append(str(dest / name))
    return copied
