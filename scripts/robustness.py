#!/usr/bin/env python3
"""Do the float backend's default settings ever diverge? Fashion-MNIST over angles x sample counts x seeds.

Runs ``finetune`` with every setting at its default (optimizer, learning rate, schedule, order,
epochs, batch: sw/hparams.py) as a user who changes only the data set, the sample count and the
seed would, and prints one row per run (accuracy, or that it diverged) and the number of
diverged runs per method. Divergence does not depend on the evaluation split; accuracies are
taken on the held-out validation split unless ``--eval-split test``.

    python scripts/robustness.py --out docs/tuning/robustness.json

Exit status 3 when any run diverged.
"""

import argparse
import json
import os
import sys
import time

from skip2lora.blas_env import apply_defaults  # noqa: E402

apply_defaults()  # before NumPy loads

import numpy as np  # noqa: E402

from skip2lora import hparams  # noqa: E402
from skip2lora.finetune import finetune  # noqa: E402
from skip2lora.methods import METHODS  # noqa: E402
from skip2lora.optim import make  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", nargs="+", default=["skip2-lora", "lora-all"])
    p.add_argument("--angles", type=int, nargs="+", default=[30, 45, 75, 90, 180])
    p.add_argument("--samples", type=int, nargs="+", default=[256, 1024, 4096])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--optimizer", help="a skip2lora.optim spec instead of each method's default")
    p.add_argument("--lr", type=float, help="a learning rate instead of the default")
    p.add_argument("--eval-split", choices=["validation", "test"], default="validation")
    p.add_argument("--out")
    args = p.parse_args()
    for m in args.methods:
        if m not in METHODS:
            p.error(f"unknown method {m!r}; choose from {', '.join(METHODS)}")
    try:
        if args.optimizer:
            make(args.optimizer)
    except ValueError as exc:
        p.error(str(exc))
    if args.lr is not None and not (np.isfinite(args.lr) and args.lr > 0):
        p.error(f"--lr must be a positive finite number, not {args.lr}")
    if args.seeds < 1 or min(args.samples) < 1:
        p.error("--seeds and --samples must be at least 1")
    if args.out:  # fail before the work, not after
        os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
        with open(args.out, "a"):
            pass
    runs, cache, t0 = [], {}, time.time()
    for angle in args.angles:
        dataset = f"fmnist-rot{angle}"
        cache.clear()  # one data set at a time in memory
        for samples in args.samples:
            for m in args.methods:
                for seed in range(args.seeds):
                    r = finetune(m, dataset, samples=samples, seed=seed, eval_split=args.eval_split,
                                 optimizer=args.optimizer, lr=args.lr, progress=False, cache=cache)
                    runs.append({"method": m, "dataset": dataset, "samples": samples, "seed": seed,
                                 "optimizer": r.optimizer, "lr": r.lr, "accuracy": r.accuracy,
                                 "diverged": r.diverged, "error": r.error})
                    acc = "DIVERGED" if r.diverged else f"{100 * r.accuracy:6.2f}%"
                    print(f"{m:12s} {dataset:13s} samples {samples:5d} seed {seed}  {r.optimizer:10s} "
                          f"lr {r.lr:<7g} {args.eval_split} {acc}  [{time.time() - t0:.0f} s]", flush=True)
    summary = {}
    for m in args.methods:
        mine = [r for r in runs if r["method"] == m]
        accs = [r["accuracy"] for r in mine if not r["diverged"]]
        summary[m] = {"runs": len(mine), "diverged": sum(r["diverged"] for r in mine),
                      "worst": min(accs) if accs else None, "mean": float(np.mean(accs)) if accs else None,
                      "defaults": hparams.defaults("fmnist-rot75", m, optimizer=args.optimizer)}
        print(f"{m}: {summary[m]['diverged']} of {len(mine)} runs diverged", flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"command": " ".join(sys.argv), "eval_split": args.eval_split, "summary": summary,
                       "runs": runs}, f, indent=1)
    return 3 if any(s["diverged"] for s in summary.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
