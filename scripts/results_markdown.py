#!/usr/bin/env python3
"""Format the JSON of `skip2lora compare` / `skip2lora bench` runs as the README's result tables.

    skip2lora compare --dataset fmnist-rot75 --seeds 10 --json > fmnist.json   (and har, fan-damage1, fan-damage2)
    skip2lora bench --seeds 3 --json --plot docs/results.png > bench.json
    python scripts/results_markdown.py fmnist.json har.json fan-damage1.json fan-damage2.json bench.json
"""

import json
import sys

PAPER = {  # the Skip2-LoRA papers' published accuracy (%) for the same set-ups, where they give one
    "fmnist-rot75": {"ft-last": 60.94, "lora-last": 53.81, "lora-all": 75.59, "skip-lora": 73.54,
                     "skip2-lora": 73.54, "quant-skip2-lora": 74.02},
    "har": {"ft-all": 90.99, "ft-last": 89.31, "ft-bias": 82.21, "ft-all-lora": 90.40, "lora-all": 91.09,
            "lora-last": 89.79, "skip-lora": 92.10, "skip2-lora": 91.99},
    "fan-damage1": {"skip2-lora": 96.19},
    "fan-damage2": {"skip2-lora": 93.46},
}


def pct(v):
    return "—" if v is None else f"{100 * v:.2f}"


def ms(v):
    if v is None:
        return "—"
    if v < 1e-3:
        return f"{1e6 * v:.0f} µs"
    return f"{1e3 * v:.1f} ms" if v < 1 else f"{v:.2f} s"


def compare_table(r):
    paper = PAPER.get(r["dataset"], {})
    orders = {"shuffle": "a new sample order every epoch", "fixed": "one sample order every epoch"}
    order = orders[r.get("order", "shuffle")]
    schedule = {"warmup-linear": "learning rate warmed up over the first epoch, then decayed linearly",
                "constant": "one learning rate"}[r.get("schedule", "warmup-linear")]
    out = [f"**{r['dataset']}** — mean ± std over {r['seeds']} seeds, {order}, {schedule}; {r['machine']}, "
           f"{r['date']}", "",
           "| method | before % | after % | paper % | FT time | epoch (after the 1st) | "
           "fwd / bwd / upd per batch |", "|---|---|---|---|---|---|---|"]
    for row in r["results"]:
        t = row["time_per_batch"]
        after = "diverged" if row["accuracy"] is None else f"{pct(row['accuracy'])} ± {100 * row['accuracy_std']:.2f}"
        out.append(f"| {row['method']} | {pct(row['accuracy_before'])} | {after} | {paper.get(row['method'], '—')} | "
                   f"{ms(row['ft_seconds'])} | {ms(row['epoch_seconds'])} | "
                   f"{ms(t['forward'])} / {ms(t['backward'])} / {ms(t['update'])} |")
    for m, s in r.get("speedup_vs_lora_all", {}).items():
        out.append("")
        out.append(f"{m} vs LoRA-All (same run): whole job **{s['job']:.1f}x** faster, each epoch after the "
                   f"first **{s['epoch']:.1f}x**.")
    return "\n".join(out)


def bench_table(b):
    res = b.get("resources") or {}
    rtl = b.get("rtl") or {}
    rows = [
        ("accelerator cycles (RTL cycle counter = cycle model)", f"{b.get('rtl_cycles') or b['cycles']:,}",
         "≤ 2,000,000"),
        ("projected KV260 time (cycles / 200 MHz, assumed clock)", f"{b['projected_ms']:.2f} ms", "~10 ms"),
        ("MAC-lane utilization", f"{100 * b['utilization']:.1f} %", "≥ 80 %"),
        ("accuracy (RTL simulation, seed 0)", pct(rtl.get("accuracy")) + " %", ""),
        ("InstantFT on the KV260", f"{b['anchors_ms']['instantft_kv260_ms']:.0f} ms "
         f"({b['speedup_vs_instantft']:.0f}x slower)", ""),
        ("Quant Skip2-LoRA, RPi Zero 2W", f"{b['anchors_ms']['rpi_zero2w_quant_skip2lora_ms']:.0f} ms", ""),
        ("physical limit", f"~{b['anchors_ms']['design_physical_limit_ms']:.1f} ms (DESIGN.md); "
         f"{b['anchors_ms']['physical_limit_ms']:.2f} ms for this datapath's MACs", ""),
        ("CPU: Skip2-LoRA vs LoRA-All, whole job", f"{b['cpu_speedup_vs_lora_all']:.1f}x", "≥ 15x"),
        ("CPU: Skip2-LoRA vs LoRA-All, each epoch after the fill", f"{b['cpu_epoch_speedup_vs_lora_all']:.1f}x",
         "≥ 40x"),
    ]
    if b.get("torch"):
        t = b["torch"]
        rows.append((f"CPU: Skip2-LoRA vs PyTorch {t['torch']} LoRA-All ({pct(t['accuracy'])} %)",
                     f"{b['cpu_speedup_vs_torch']:.1f}x", "≥ 20x"))
    if b.get("sim_wall_seconds"):
        rows.append(("RTL simulation of the job (Verilator, wall)", f"{b['sim_wall_seconds']:.1f} s", "≤ 60 s"))
    if res:
        for k in ("lut", "ff", "dsp", "bram36", "uram"):
            rows.append((f"{k.upper()} (yosys synth_xilinx estimate)", f"{res[k]:,} / {res['budget'][k]:,} "
                         f"({res['percent'][k]:.1f} %)", "LUT ≤ 50 %" if k == "lut" else ""))
    out = [f"**KV260 job** — `skip2lora bench --seeds 3 --json --plot docs/results.png`; {b['machine']}, "
           f"{b['date']}", "", "| figure | measured | target |", "|---|---|---|"]
    out += [f"| {a} | {v} | {t} |" for a, v, t in rows]
    return "\n".join(out)


def main(paths):
    for path in paths:
        with open(path) as f:
            r = json.load(f)
        print(bench_table(r) if "rtl_cycles" in r or "anchors_ms" in r else compare_table(r))
        print()


if __name__ == "__main__":
    main(sys.argv[1:])
