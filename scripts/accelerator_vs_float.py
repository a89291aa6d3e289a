#!/usr/bin/env python3
"""The accelerator's job against its float model, seed by seed (issue 13's "within 0.3 points").

For each seed: the fixed backend (`skip2lora finetune --backend fixed`, the bit-exact model of the
accelerator, identical to the RTL) and the float reference of the same recipe - Quant Skip2-LoRA
(the same 4-bit cache), the accelerator's own sample order (`--order feistel`), the same schedule,
optimizer, rate, samples and adapter initialization. Prints a table (or --json) of the test
accuracies and their differences.

    python scripts/accelerator_vs_float.py --seeds 10 [--dataset fmnist-rot75] [--samples N] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys

from skip2lora.blas_env import apply_defaults

apply_defaults()

import numpy as np  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="fmnist-rot75")
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--samples", type=int)
    ap.add_argument("--epochs", type=int)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    from skip2lora import hparams
    from skip2lora.data import load_dataset
    from skip2lora.driver import FixedBackend, Session
    from skip2lora.driver.session import geometry_of
    from skip2lora.finetune import finetune, select_samples
    from skip2lora.fixed.config import AcceleratorConfig, KV260
    from skip2lora.nn.pretrained import load_base

    d = hparams.defaults(args.dataset, "quant-skip2-lora", accelerator=True)
    samples = args.samples or d["samples"]
    epochs = args.epochs or d["epochs"]
    ds = load_dataset(args.dataset)
    base, _ = load_base(args.dataset)
    samples = samples or len(ds.finetune)
    geometry = geometry_of(base)
    config = KV260 if geometry == KV260.geometry and samples <= KV260.cache_depth else \
        AcceleratorConfig(f"{args.dataset}-{samples}", geometry, KV260.lanes, samples)
    rows = []
    cache: dict = {}
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        f = finetune("quant-skip2-lora", args.dataset, samples=samples, epochs=epochs, batch=d["batch"],
                     lr=d["lr"], seed=seed, order="feistel", optimizer=d["optimizer"], progress=False,
                     cache=cache)
        idx = select_samples(len(ds.finetune), samples, seed)
        s = Session(base, FixedBackend(config), seed=seed)
        s.add_samples(ds.finetune.x[idx], ds.finetune.y[idx])
        out = s.finetune(epochs=epochs, batch=d["batch"], lr=d["lr"], optimizer=d["optimizer"])
        fixed = None if out["diverged"] else s.accuracy(ds.test.x, ds.test.y)
        rows.append({"seed": seed, "float": f.accuracy, "fixed": fixed, "float_diverged": f.diverged,
                     "fixed_diverged": out["diverged"],
                     "difference": None if fixed is None or f.accuracy is None else fixed - f.accuracy})
        if not args.json:
            print(f"seed {seed}: float {100 * (f.accuracy or 0):.2f} %  fixed {100 * (fixed or 0):.2f} %",
                  file=sys.stderr, flush=True)
    diffs = [r["difference"] for r in rows if r["difference"] is not None]
    fixed_acc = [r["fixed"] for r in rows if r["fixed"] is not None]
    summary = {"dataset": args.dataset, "config": config.name, "samples": samples, "epochs": epochs,
               "batch": d["batch"], "lr": d["lr"], "optimizer": d["optimizer"], "order": "feistel (on chip)",
               "schedule": "warmup-linear", "rows": rows,
               "fixed_mean": float(np.mean(fixed_acc)) if fixed_acc else None,
               "fixed_std": float(np.std(fixed_acc)) if fixed_acc else None,
               "fixed_worst": float(np.min(fixed_acc)) if fixed_acc else None,
               "max_abs_difference": float(np.max(np.abs(diffs))) if diffs else None}
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"{args.dataset} on {config.name}: fixed {100 * summary['fixed_mean']:.2f} ± "
              f"{100 * summary['fixed_std']:.2f} % (worst {100 * summary['fixed_worst']:.2f} %); "
              f"largest |fixed - float| {100 * summary['max_abs_difference']:.2f} points")
    return 0


if __name__ == "__main__":
    sys.exit(main())
