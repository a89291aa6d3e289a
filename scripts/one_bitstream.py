"""One bitstream, many models: the KV260 build's RTL runs four models' jobs, each the bit-exact model's.

    python scripts/one_bitstream.py --out build/one-bitstream --json docs/tuning/one-bitstream.json

Runs `skip2lora finetune --backend fixed` and `--backend sim` (the KV260 build's Verilog in
Verilator) on each job, as a user would, with the data set's defaults and seed 0, and compares the
two: the configuration each reports, accuracy, cycles, and the saved adapters array by array.

* LeNet-5 on Fashion-MNIST rotated by 75 degrees (the KV260 job: its cache filled on the PL),
* the HAR MLP (561-96-96-6) and the Fan-Damage1 MLP (256-96-96-3): built-in, other geometries,
* a user's model through ONNX import: ``deep16.onnx`` + ``shifted16.npz`` from
  ``scripts/byo_examples.py`` (six taps, 16 classes), written to ``--out`` first.

The HAR job (896 samples x 600 epochs, 29.4 M cycles) takes about 5 minutes of simulation.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

JOBS = {
    "lenet5-fmnist-rot75": ["--dataset", "fmnist-rot75"],
    "har": ["--dataset", "har"],
    "fan-damage1": ["--dataset", "fan-damage1"],
    "deep16-onnx": None,  # filled with the example's files
}


def run(args: list, adapters: Path) -> dict:
    cmd = [sys.executable, "-m", "skip2lora.cli", "finetune", *args, "--json", "--save-adapters", str(adapters)]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed: {out.stderr.strip().splitlines()[-1:]}")
    result = json.loads(out.stdout)
    result["wall_seconds_cli"] = round(time.perf_counter() - t0, 1)
    return result


def same_adapters(a: Path, b: Path) -> bool:
    with np.load(a) as x, np.load(b) as y:
        keys = sorted(k for k in x.files if k.startswith(("a", "b")) and k[1:].isdigit())
        return keys == sorted(k for k in y.files if k.startswith(("a", "b")) and k[1:].isdigit()) and bool(keys) \
            and all(np.array_equal(x[k], y[k]) for k in keys)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="folder for the example model, data and adapters (created)")
    p.add_argument("--json", help="write the comparison here")
    p.add_argument("--only", choices=list(JOBS), action="append", help="run these jobs only")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.json and not Path(args.json).parent.is_dir():
        raise SystemExit(f"--json: folder {Path(args.json).parent} does not exist")
    jobs = dict(JOBS)
    if not args.only or "deep16-onnx" in args.only:
        sys.path.insert(0, str(Path(__file__).parent))
        from byo_examples import deep16_example

        deep16_example(out)
        jobs["deep16-onnx"] = ["--model", str(out / "deep16.onnx"), "--data", str(out / "shifted16.npz")]
    rows = []
    for name, job in jobs.items():
        if args.only and name not in args.only:
            continue
        row = {"job": name}
        for backend in ("fixed", "sim"):
            r = run([*job, "--backend", backend, "--seed", "0"], out / f"{name}-{backend}.npz")
            row[backend] = {k: r.get(k) for k in ("config", "kv260_build", "geometry", "accuracy_before",
                                                  "accuracy", "cycles", "projected_ms", "cache", "fill",
                                                  "fill_cycles", "wall_seconds_cli")}
        row["same_adapters"] = same_adapters(out / f"{name}-fixed.npz", out / f"{name}-sim.npz")
        row["same_results"] = all(row["fixed"][k] == row["sim"][k] for k in ("config", "geometry", "accuracy",
                                                                             "cycles"))
        rows.append(row)
        f, s = row["fixed"], row["sim"]
        print(f"{name}: config {s['config']}, geometry {s['geometry']}: accuracy {f['accuracy']} (fixed) / "
              f"{s['accuracy']} (sim), cycles {f['cycles']} / {s['cycles']}, adapters "
              f"{'identical' if row['same_adapters'] else 'DIFFER'}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "jobs": rows}, indent=1) + "\n")
    return 0 if all(r["same_adapters"] and r["same_results"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
