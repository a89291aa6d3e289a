#!/usr/bin/env python3
"""Learning-rate (and optimizer) sweep behind the defaults in sw/hparams.py (never looks at the test split).

Fashion-MNIST is scored on its validation split (held-out rotated *train* images); HAR and Fan,
which have no validation split, on a block hold-out of their fine-tuning data. Runs use the float
backend's recipe (a new sample order every epoch, one epoch of learning-rate warm-up, then a
linear decay) unless ``--order fixed`` / ``--schedule constant`` (the accelerator's).
For each method and optimizer the chosen rate is the one with the best mean accuracy over the
seeds among the rates that diverge for no seed. Prints a table and writes the raw results as JSON.

    python scripts/tune_lr.py --dataset fmnist-rot75 --seeds 3 --out docs/tuning/fmnist.json
    python scripts/tune_lr.py --dataset fmnist-rot75 --methods skip2-lora --optimizers sgd adam lion \\
        --seeds 10 --out docs/tuning/optimizers.json

Each optimizer sweeps its own grid (``GRIDS``; ``--lrs`` replaces every grid).
"""

import argparse
import json
import os
import sys
import time

from skip2lora.blas_env import apply_defaults  # noqa: E402

apply_defaults()  # before NumPy loads

import numpy as np  # noqa: E402

from skip2lora.finetune import ORDERS, SCHEDULES, finetune  # noqa: E402
from skip2lora.methods import METHODS  # noqa: E402
from skip2lora.optim import make  # noqa: E402

#: Rates per optimizer name: around the best of a coarse 3-seed sweep of Skip2-LoRA on
#: fmnist-rot75 for the new optimizers (momentum in PyTorch's convention takes about SGD's rate
#: times 1 - beta, Lion's sign update about a tenth of Adam's rate); SGD's is the HAR / Fan grid.
GRIDS = {
    "sgd": [0.01, 0.03, 0.1, 0.3],
    "momentum": [0.01, 0.02, 0.03, 0.04],
    "nesterov": [0.01, 0.02, 0.03, 0.04],
    "adam": [0.01, 0.02, 0.03, 0.05, 0.08],
    "adam-pow2": [0.01, 0.02, 0.03, 0.05, 0.08],
    "adam-pow2h": [0.01, 0.02, 0.03, 0.05, 0.08],
    "adam-factored": [0.01, 0.02, 0.03, 0.05, 0.08],
    "lion": [0.002, 0.003, 0.005, 0.01],
}


def summarize(accs) -> dict:
    """Mean, sample std and worst seed of the non-diverged runs, and how many diverged (NaN)."""
    a = np.asarray(accs, float)
    ok = a[~np.isnan(a)]
    return {"mean": float(ok.mean()) if len(ok) else None, "std": float(ok.std(ddof=1)) if len(ok) > 1 else None,
            "worst": float(ok.min()) if len(ok) else None, "diverged": int(np.isnan(a).sum())}


def choose(rows) -> dict | None:
    """The row with the best mean among those where no seed diverged (None if every rate diverged)."""
    ok = [r for r in rows if r["diverged"] == 0]
    return max(ok, key=lambda r: r["mean"]) if ok else None


def paired_summary(chosen, rows) -> None:
    """Per method: each optimizer at its chosen rate against the best one, seed by seed (the seeds
    share samples and orders, so the paired difference is the sharper comparison); adds
    ``diff_vs_best`` and its standard error to the chosen rows and prints the table."""
    by_key = {(r["method"], r["optimizer"], r["lr"]): r for r in rows}
    for m in dict.fromkeys(c["method"] for c in chosen):
        mine = [c for c in chosen if c["method"] == m and c["lr"] is not None]
        if not mine:
            continue
        best = max(mine, key=lambda c: c["mean"])
        ref = np.array(by_key[(m, best["optimizer"], best["lr"])]["accuracies"], float)
        print(f"\n{m}: validation accuracy at each optimizer's chosen rate (mean ± std over seeds, worst seed, "
              f"paired difference to {best['optimizer']} ± its standard error)")
        for c in sorted(mine, key=lambda c: -c["mean"]):
            acc = np.array(by_key[(m, c["optimizer"], c["lr"])]["accuracies"], float)
            d = acc - ref
            c["diff_vs_best"] = float(d.mean())
            c["diff_se"] = float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else None
            print(f"  {c['optimizer']:36s} lr {c['lr']:<7g} {100 * c['mean']:6.2f} ± {100 * (c['std'] or 0):.2f}"
                  f"  worst {100 * c['worst']:6.2f}  {100 * c['diff_vs_best']:+.2f} ± {100 * (c['diff_se'] or 0):.2f}")


def summarize_files(paths) -> int:
    rows = []
    for path in paths:
        try:
            with open(path) as f:
                rows += json.load(f)["results"]
        except (OSError, ValueError, KeyError) as exc:
            print(f"error: cannot read sweep {path}: {exc}", file=sys.stderr)
            return 2
    groups = {}
    for r in rows:
        r["optimizer"] = make(r.get("optimizer", "sgd")).spec  # as `make` writes it today
        if "diverged" not in r:  # sweeps written before the optimizers: NaN marks a diverged seed
            r.update(summarize([np.nan if a is None else a for a in r["accuracies"]]))
        groups.setdefault((r["method"], r["optimizer"]), []).append(r)
    chosen = []
    for (m, spec), group in groups.items():
        best = choose(group)
        if best:
            chosen.append({"method": m, "optimizer": spec, **{k: best[k] for k in ("lr", "mean", "std", "worst")}})
    paired_summary(chosen, rows)
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset")
    p.add_argument("--summarize", nargs="+", metavar="JSON",
                   help="no runs: print the paired comparison of sweeps written by --out")
    p.add_argument("--methods", nargs="+", default=list(METHODS))
    p.add_argument("--optimizers", nargs="+", default=["sgd"], metavar="SPEC",
                   help="skip2lora.optim specs, e.g. sgd adam adam:b2=0.99 lion (default: sgd)")
    p.add_argument("--lrs", type=float, nargs="+", help="rates for every optimizer (default: its grid, GRIDS)")
    p.add_argument("--grid", nargs="+", default=[], metavar="SPEC=LR,LR,...",
                   help="rates for one optimizer spec, e.g. adam=0.01,0.03 lion=0.003 (overrides --lrs)")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--samples", type=int)
    p.add_argument("--epochs", type=int)
    p.add_argument("--order", choices=ORDERS, default="shuffle")
    p.add_argument("--schedule", choices=SCHEDULES, default="warmup-linear")
    p.add_argument("--out")
    args = p.parse_args()
    if args.summarize:
        return summarize_files(args.summarize)
    if not args.dataset:
        p.error("--dataset is required (or --summarize)")
    try:
        specs = [make(s).spec for s in args.optimizers]
        grids = {}
        for item in args.grid:
            spec, eq, rates = item.rpartition("=")
            if not eq or not spec:
                raise ValueError(f"--grid takes SPEC=LR,LR,..., not {item!r}")
            try:
                grids[make(spec).spec] = [float(r) for r in rates.split(",")]
            except ValueError:
                raise ValueError(f"--grid {item!r}: the rates must be numbers separated by commas") from None
    except ValueError as exc:
        p.error(str(exc))
    for rate in [r for g in grids.values() for r in g] + (args.lrs or []):
        if not (np.isfinite(rate) and rate > 0):
            p.error(f"learning rates must be positive finite numbers, not {rate}")
    if args.seeds < 1:
        p.error(f"--seeds must be at least 1, not {args.seeds}")
    for spec in grids:
        if spec not in specs:
            p.error(f"--grid names {spec}, which is not among --optimizers")
    for m in args.methods:
        if m not in METHODS:
            p.error(f"unknown method {m!r}; choose from {', '.join(METHODS)}")
    if args.out:  # fail before hours of work, not after
        os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
        with open(args.out, "a"):
            pass
    split = "validation" if args.dataset.startswith("fmnist") else "holdout"
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    cache, rows, chosen = {}, [], []
    t0 = time.time()
    for m in args.methods:
        for spec in specs:
            group = []
            for lr in grids.get(spec) or args.lrs or GRIDS[spec.partition(":")[0]]:
                accs, spikes, max_abs = [], [], {}
                for seed in seeds:
                    r = finetune(m, args.dataset, lr=lr, seed=seed, eval_split=split, order=args.order,
                                 schedule=args.schedule, optimizer=spec, samples=args.samples, epochs=args.epochs,
                                 progress=False, cache=cache)
                    accs.append(np.nan if r.diverged else r.accuracy)
                    if not r.diverged:  # stability: how far the loss rose above the first epoch's, largest weights
                        spikes.append(max(r.losses) / r.losses[0])
                        for k, v in r.max_abs_params.items():
                            max_abs[k] = max(max_abs.get(k, 0.0), v)
                row = {"method": m, "optimizer": spec, "lr": lr,
                       "accuracies": [None if np.isnan(a) else a for a in accs],
                       **summarize(accs), "loss_rise": max(spikes, default=None), "max_abs_params": max_abs}
                group.append(row)
                mean = "diverged" if row["mean"] is None else f"{100 * row['mean']:6.2f}%"
                print(f"{m:17s} {spec:24s} lr {lr:<8g} {split} {mean} ± {100 * (row['std'] or 0):.2f} "
                      f"worst {100 * (row['worst'] or 0):6.2f}%  diverged {row['diverged']}/{len(seeds)}"
                      f"  loss rise x{row['loss_rise'] or 0:.2f} max|.| "
                      + " ".join(f"{k} {v:.2f}" for k, v in sorted(max_abs.items())) + f"  [{time.time() - t0:.0f} s]",
                      flush=True)
            best = choose(group)
            rows += group
            chosen.append({"method": m, "optimizer": spec, **({k: best[k] for k in ("lr", "mean", "std", "worst")}
                                                               if best else {"lr": None})})
            print(f"{m:17s} {spec:24s} best lr {best['lr'] if best else None}", flush=True)
    paired_summary(chosen, rows)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"dataset": args.dataset, "split": split, "seeds": len(seeds), "first_seed": args.first_seed,
                       "samples": args.samples, "epochs": args.epochs, "order": args.order, "schedule": args.schedule,
                       "rule": "best mean among rates that diverge for no seed", "command": " ".join(sys.argv),
                       "chosen": chosen, "results": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
