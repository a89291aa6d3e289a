"""The `skip2lora hw` commands that need no synthesis run here; the timing report's wiring is
checked with the synthesis replaced (the synthesis itself: tests/test_timing_proxy.py)."""

import json
from pathlib import Path

from skip2lora import cli
from skip2lora.fixed.config import KV260
from skip2lora.fixed.cycles import job_cycles
from skip2lora.fixed.packing import Layout


ROOT = Path(__file__).resolve().parents[1]


def test_hw_docs_check_reports_the_generated_docs_current(capsys):
    assert cli.main(["hw", "docs", "--check", "--root", str(ROOT), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"stale": None, "written": []}


def test_hw_docs_names_a_root_that_is_not_a_checkout(tmp_path, capsys):
    assert cli.main(["hw", "docs", "--root", str(tmp_path), "--json"]) == 2
    err = json.loads(capsys.readouterr().out)["error"]
    assert "is not a source checkout" in err and "docs/numerics.md" in err


def _fake_report(monkeypatch, levels):
    """Replace the synthesis by a report with ``levels`` LUT levels; returns what it was asked."""
    from skip2lora.hw import export

    seen = {}

    def fake_report(config, *, timing=False, netlist=None, **kw):
        seen.update(config=config, timing=timing, netlist=netlist)
        pct = dict.fromkeys(("lut", "ff", "dsp", "bram36", "uram"), 1.0)
        return {"config": config, "tool": "fake", "fits": True, "lut_half": True, "cache_mapping": "-",
                "budget": dict.fromkeys(pct, 1), "percent": pct, **dict.fromkeys(pct, 1),
                "timing": {"max_logic_levels": levels}}

    monkeypatch.setattr(export, "resource_report", fake_report)
    return seen


def test_hw_report_timing_projects_the_kv260_job_beside_the_evidence(monkeypatch, capsys):
    seen = _fake_report(monkeypatch, 9)
    assert cli.main(["hw", "report", "--timing", "--json"]) == 0
    assert seen == {"config": "kv260", "timing": True, "netlist": None}
    job = json.loads(capsys.readouterr().out)["timing"]["kv260_job"]
    cycles = job_cycles(Layout(KV260.geometry, KV260.lanes), 1024, 16, 10, shuffle=True)
    assert job["cycles"] == cycles
    assert [(p["assumed_clock_mhz"], p["ms"]) for p in job["projections"]] == [(200, cycles / 2e5), (300, cycles / 3e5)]
    assert all("assumed clock; logic depth max 9 LUT levels" in p["label"] for p in job["projections"])


def test_hw_report_keeps_the_netlist_where_asked_and_checks_the_path_first(monkeypatch, tmp_path, capsys):
    seen = _fake_report(monkeypatch, 6)
    path = tmp_path / "net.json"
    assert cli.main(["hw", "report", "--config", "small", "--netlist", str(path), "--json"]) == 0
    assert seen == {"config": "small", "timing": True, "netlist": str(path)}  # --netlist implies --timing
    capsys.readouterr()
    seen.clear()
    assert cli.main(["hw", "report", "--netlist", str(tmp_path / "no" / "net.json"), "--json"]) == 2
    assert "does not exist" in json.loads(capsys.readouterr().out)["error"] and seen == {}
