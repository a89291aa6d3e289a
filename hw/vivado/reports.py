"""Parsing Vivado's text reports: the timing summary and the tool version."""

from __future__ import annotations

import math
import re

__all__ = ["parse_timing_summary", "parse_vivado_version"]

_SUMMARY_COLS = ("wns_ns", "tns_ns", "tns_failing", "tns_endpoints", "whs_ns", "ths_ns", "ths_failing",
                 "ths_endpoints", "wpws_ns", "tpws_ns", "tpws_failing", "tpws_endpoints")


def _num(tok):
    t = tok.strip()
    if t in ("", "NA", "N/A", "-"):
        return None
    if t.lower() in ("inf", "+inf"):
        return math.inf
    if t.lower() == "-inf":
        return -math.inf
    return float(t)


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
