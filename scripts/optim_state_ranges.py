#!/usr/bin/env python3
"""Value ranges of a Skip-adapter optimizer's state during training, for choosing fixed-point widths.

Trains Skip2-LoRA (or Quant Skip2-LoRA) with the float backend's defaults (or the given optimizer
and rate) for several seeds and records, separately for the A and the B adapters, the
distribution of the nonzero magnitudes of: the batch-mean gradient g, the optimizer's state
(Adam: m and v as stored, i.e. without bias correction; momentum: b; Lion: m), the update
actually applied to the weights, and the weights themselves; all in the units the weights are
stored in (float values; the accelerator stores A and B in Q14, so 1 LSB = 2**-14). Exact minimum
and maximum over every step; percentiles over every ``--every``-th step.

    python scripts/optim_state_ranges.py --method skip2-lora --seeds 10 --out docs/tuning/optimizer-state-ranges.json
"""

import argparse
import json
import os
import sys

from skip2lora.blas_env import apply_defaults  # noqa: E402

apply_defaults()  # before NumPy loads

import numpy as np  # noqa: E402

from skip2lora import optim  # noqa: E402
from skip2lora.finetune import finetune  # noqa: E402
from skip2lora.nn.pretrained import load_base  # noqa: E402

PERCENTILES = [0.1, 1, 10, 50, 90, 99, 99.9]


class Recorder:
    """Wraps `Optimizer.step` and keeps the statistics of each recorded array, split into A and B."""

    def __init__(self, a_size: int, every: int, weight_format=None):
        self.a_size, self.every = a_size, every
        self.weight_format = weight_format  # (fraction bits, total bits): stored weights, saturating
        self.samples, self.lo, self.hi, self.zeros, self.counts = {}, {}, {}, {}, {}
        self.rates = []
        self.below_half_lsb = [0, 0]  # nonzero A updates smaller than half a Q14 LSB, all nonzero A updates

    def add(self, name: str, values: np.ndarray, sample: bool):
        for part, v in (("A", values[:self.a_size]), ("B", values[self.a_size:])):
            key = (name, part)
            mag = np.abs(v.astype(np.float64))
            nz = mag[mag > 0]
            self.zeros[key] = self.zeros.get(key, 0) + int(mag.size - nz.size)
            self.counts[key] = self.counts.get(key, 0) + int(mag.size)
            if nz.size:
                self.lo[key] = min(self.lo.get(key, np.inf), float(nz.min()))
                self.hi[key] = max(self.hi.get(key, 0.0), float(nz.max()))
                if sample:
                    self.samples.setdefault(key, []).append(nz.astype(np.float32))

    def wrap(self):
        step = optim.Optimizer.step
        rec = self

        def recording_step(opt, params, grads):
            if len(params) != 1:
                raise SystemExit("this script records elementwise optimizers (one flat adapter array)")
            before = params[0].copy()
            step(opt, params, grads)
            if rec.weight_format:  # the accelerator's storage: round to the LSB, saturate to the range
                frac, bits = rec.weight_format
                lsb, top = 2.0 ** -frac, 2.0 ** (bits - 1 - frac)
                np.clip(np.round(params[0] / lsb) * lsb, -top, top - lsb, out=params[0])
            sample = opt.t % rec.every == 0
            rec.add("g", grads[0], sample)
            for name, arr in opt.state[0].items():
                if name != "tmp" and arr is not None:
                    rec.add(name, arr, sample)
            update = before - params[0]
            rec.add("update", update, sample)
            small = np.abs(update[:rec.a_size]) < 2.0 ** -15
            rec.below_half_lsb[0] += int(np.count_nonzero(small & (update[:rec.a_size] != 0)))
            rec.below_half_lsb[1] += int(np.count_nonzero(update[:rec.a_size]))
            rec.add("weights", params[0], sample)
            c = opt._coefficients()
            rec.rates.append(c.get("rate", c.get("lr")))

        optim.Optimizer.step = recording_step

    def table(self) -> dict:
        out = {}
        for key in sorted(self.counts):
            name, part = key
            row = {"zero_fraction": self.zeros[key] / self.counts[key], "min_nonzero": self.lo.get(key),
                   "max": self.hi.get(key)}
            if key in self.samples:
                values = np.concatenate(self.samples[key])
                row["percentiles_nonzero"] = dict(zip(map(str, PERCENTILES),
                                                      np.percentile(values, PERCENTILES).tolist()))
            if row["max"]:
                row["log2_range"] = [float(np.log2(row["min_nonzero"])), float(np.log2(row["max"]))]
            out.setdefault(part, {})[name] = row
        return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--method", default="skip2-lora", choices=["skip2-lora", "quant-skip2-lora"])
    p.add_argument("--dataset", default="fmnist-rot75")
    p.add_argument("--optimizer", help="a skip2lora.optim spec (default: the method's)")
    p.add_argument("--lr", type=float)
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--every", type=int, default=4, help="steps between percentile samples")
    p.add_argument("--weights", metavar="FRAC,BITS", help="store A and B as BITS-bit integers with FRAC fraction "
                   "bits after every step (round to nearest, saturate), as the accelerator would; e.g. 14,16")
    p.add_argument("--out")
    args = p.parse_args()
    if args.out:
        os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
        with open(args.out, "a"):
            pass
    base, _ = load_base(args.dataset, progress=False)
    weight_format = None
    if args.weights:
        try:
            weight_format = tuple(int(v) for v in args.weights.split(","))
            assert len(weight_format) == 2 and 0 <= weight_format[0] < weight_format[1]
        except (ValueError, AssertionError):
            p.error(f"--weights takes FRAC,BITS (e.g. 14,16), not {args.weights!r}")
    rec = Recorder(4 * sum(base.tap_dims), args.every, weight_format)  # rank 4: A's share of the flat array
    rec.wrap()
    runs = []
    for seed in range(args.seeds):
        r = finetune(args.method, args.dataset, seed=seed, optimizer=args.optimizer, lr=args.lr,
                     eval_split="validation", progress=False)
        runs.append({"seed": seed, "accuracy": r.accuracy, "diverged": r.diverged})
        print(f"seed {seed}: {r.optimizer} lr {r.lr:g} validation "
              f"{'DIVERGED' if r.diverged else f'{100 * r.accuracy:.2f}%'}", flush=True)
    table = rec.table()
    for part, rows in table.items():
        print(f"\n{part} (nonzero magnitudes; Q14 LSB = 2**-14 = {2 ** -14:.3g})")
        print(f"{'':8s} {'zero %':>7s} {'min':>10s} " + " ".join(f"{'p' + str(q):>10s}" for q in PERCENTILES)
              + f" {'max':>10s}  log2 range")
        for name, row in rows.items():
            pct = row.get("percentiles_nonzero", {})
            print(f"{name:8s} {100 * row['zero_fraction']:7.2f} {row['min_nonzero'] or 0:10.3g} "
                  + " ".join(f"{pct.get(str(q), 0):10.3g}" for q in PERCENTILES)
                  + f" {row['max'] or 0:10.3g}  {row.get('log2_range')}")
    print(f"\nper-step rate (schedule x bias correction): {min(rec.rates):.3g} .. {max(rec.rates):.3g}")
    small, total = rec.below_half_lsb
    print(f"nonzero A updates below half a Q14 LSB (2**-15): {100 * small / max(total, 1):.2f} %")
    accs = [r["accuracy"] for r in runs if not r["diverged"]]
    if accs:
        std = np.std(accs, ddof=1) if len(accs) > 1 else 0.0
        print(f"validation accuracy: {100 * np.mean(accs):.2f} ± {100 * std:.2f} %, "
              f"worst {100 * min(accs):.2f} %, {len(runs) - len(accs)} diverged"
              + (f" (weights stored as {weight_format[1]}-bit Q{weight_format[0]})" if weight_format else ""))
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"command": " ".join(sys.argv), "method": args.method, "dataset": args.dataset,
                       "optimizer": args.optimizer, "lr": args.lr, "runs": runs, "every": args.every,
                       "weights": args.weights, "a_updates_below_half_q14_lsb": small / max(total, 1),
                       "rate_range": [min(rec.rates), max(rec.rates)], "ranges": table}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
