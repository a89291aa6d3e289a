#!/usr/bin/env python3
"""Do the accelerator's default settings ever diverge? The grid of issue 13 on the fixed backend.

`skip2lora finetune --backend fixed` with every setting at its default (the on-chip recipe: a new
sample order every epoch, warm-up + linear decay, adam-pow2 at its tuned rate) over Fashion-MNIST
angles x sample counts x seeds. The fixed backend is the accelerator's bit-exact model (the RTL and
the KV260 give the same adapters bit for bit); every job runs on the KV260 build, those above its
1024 on-chip cache entries from its DDR cache (the same arithmetic, bit for bit). A job
diverged when the accelerator's own statistics say so (`skip2lora.driver.health`).

    python scripts/accelerator_robustness.py [--angles 30 45 75 90 180] [--samples 256 1024 4096]
        [--seeds 3] [--eval-split validation|test] [--out docs/tuning/accelerator-robustness.json]

Exit status 3 when any run diverged.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from argparse import Namespace

from skip2lora.blas_env import apply_defaults

apply_defaults()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--angles", type=int, nargs="+", default=[30, 45, 75, 90, 180])
    p.add_argument("--samples", type=int, nargs="+", default=[256, 1024, 4096])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--out")
    args = p.parse_args()
    if args.out:  # fail before the work, not after
        os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
        with open(args.out, "a"):
            pass
    from skip2lora.accel_job import run_job

    runs, t0 = [], time.time()
    for angle in args.angles:
        for n in args.samples:
            for seed in range(args.seeds):
                ns = Namespace(backend="fixed", dataset=f"fmnist-rot{angle}", samples=n, epochs=None, batch=None,
                               lr=None, seed=seed, rank=4, data_dir=None, json=True, bitfile=None, order=None,
                               schedule=None, optimizer=None, config="kv260",
                               save_adapters=None)
                r = run_job(ns)
                runs.append({k: r[k] for k in ("dataset", "samples", "seed", "config", "cache", "optimizer", "lr", "accuracy",
                                               "diverged", "error", "cycles")})
                print(f"{r['dataset']:>14} {n:5d} seed {seed}: "
                      + (f"DIVERGED ({r['error']})" if r["diverged"] else f"{100 * r['accuracy']:.2f} %")
                      + f"  [{r['config']}]", flush=True)
    diverged = sum(r["diverged"] for r in runs)
    out = {"command": " ".join(sys.argv), "backend": "fixed", "eval_split": "test", "runs": runs,
           "diverged": diverged, "seconds": round(time.time() - t0, 1)}
    print(f"{diverged} of {len(runs)} runs diverged ({out['seconds']} s)")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(out, f, indent=1)
    return 3 if diverged else 0


if __name__ == "__main__":
    sys.exit(main())
