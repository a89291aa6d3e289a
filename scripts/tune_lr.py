#!/usr/bin/env python3
"""Learning-rate sweep behind the defaults in sw/hparams.py (never looks at the test split).

Fashion-MNIST is scored on its validation split (held-out rotated *train* images); HAR and Fan,
which have no validation split, on a block hold-out of their fine-tuning data. Runs use the float
backend's defaults (a new sample order every epoch, one epoch of learning-rate warm-up, then a linear decay) unless
``--order fixed`` / ``--schedule constant`` (the accelerator's).
Prints a table and writes the raw results as JSON.

    python scripts/tune_lr.py --dataset fmnist-rot75 --seeds 3 --out docs/tuning/fmnist.json
"""

import argparse
import json
import os
import sys

from skip2lora.blas_env import apply_defaults  # noqa: E402

apply_defaults()  # before NumPy loads

import numpy as np  # noqa: E402

from skip2lora.finetune import ORDERS, SCHEDULES, finetune  # noqa: E402
from skip2lora.methods import METHODS  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", required=True)
    p.add_argument("--methods", nargs="+", default=list(METHODS))
    p.add_argument("--lrs", type=float, nargs="+", default=[0.01, 0.03, 0.1, 0.3])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--order", choices=ORDERS, default="shuffle")
    p.add_argument("--schedule", choices=SCHEDULES, default="warmup-linear")
    p.add_argument("--out")
    args = p.parse_args()
    split = "validation" if args.dataset.startswith("fmnist") else "holdout"
    rows = []
    for m in args.methods:
        best = None
        for lr in args.lrs:
            accs = []
            for seed in range(args.seeds):
                r = finetune(m, args.dataset, lr=lr, seed=seed, eval_split=split, order=args.order,
                             schedule=args.schedule, progress=False)
                accs.append(np.nan if r.diverged else r.accuracy)
            mean = float(np.mean(accs))
            rows.append({"method": m, "lr": lr, "accuracies": accs, "mean": mean})
            print(f"{m:18s} lr {lr:<7g} {split} accuracy {100 * mean:6.2f}% ({args.order} order, "
                  f"{args.schedule} lr)", flush=True)
            if not np.isnan(mean) and (best is None or mean > best[1]):
                best = (lr, mean)
        print(f"{m:18s} best lr {best[0] if best else None}", flush=True)
    if args.out:
        os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
        with open(args.out, "w") as f:
            json.dump({"dataset": args.dataset, "split": split, "seeds": args.seeds, "order": args.order,
                       "schedule": args.schedule, "results": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
