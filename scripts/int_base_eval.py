#!/usr/bin/env python3
"""Evaluate the integer base model (sw/fixed/base_int.py) against the float base, and the whole chain.

1. Test accuracy of the integer base against the float base: on the source domain's test split
   (upright Fashion-MNIST, HAR group 1, Fan in the silent room) and on the target test split
   (rotated 75 degrees, HAR group 2, Fan near the ventilation fan), with the share of test samples
   whose prediction changes and the activations saturated on the target fine-tune pool.
2. The chain on the bit-exact accelerator model (FixedBackend): integer base -> cache -> one
   fine-tuning job -> test accuracy from integer-encoded test samples, against today's host-fill
   chain (`Session.add_samples`: float base forward, `TapQuantizer`), same samples, adapters'
   initialization and job per seed. ``int`` fits the cache's tap exponents on the job's samples
   (as `Session` does); ``int-calib`` takes them from the calibration samples instead (no pass
   over the job's samples needed before the cache can be written).
3. The integer LeNet-5's cost figures for the hardware (MACs, weight bytes, buffers, accumulators).

Calibration uses the first `base_formats.CALIB_SAMPLES` source-domain training samples only;
nothing here is tuned on test data.

    python scripts/int_base_eval.py                        # everything, 10 seeds of the KV260 job
    python scripts/int_base_eval.py --json --out int.json  # the same as JSON
    python scripts/int_base_eval.py --datasets har --chain har --seeds 3
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

from skip2lora.blas_env import apply_defaults  # noqa: E402

apply_defaults()  # before NumPy loads

import numpy as np  # noqa: E402

from skip2lora import hparams  # noqa: E402
from skip2lora.data import load_dataset  # noqa: E402
from skip2lora.data.registry import canonical_name  # noqa: E402
from skip2lora.driver import FixedBackend, Session  # noqa: E402
from skip2lora.accel_job import accelerator_config_for  # noqa: E402
from skip2lora.driver.session import geometry_of  # noqa: E402
from skip2lora.finetune import select_samples  # noqa: E402
from skip2lora.fixed import base_formats as BF  # noqa: E402
from skip2lora.fixed import formats as F  # noqa: E402
from skip2lora.fixed.base_int import from_pretrained  # noqa: E402
from skip2lora.fixed.model import Adapters, CacheEntries, JobConfig, predict  # noqa: E402
from skip2lora.nn.pretrained import load_base  # noqa: E402
from skip2lora.driver.session import DEFAULT_OPTIMIZER  # noqa: E402
from skip2lora.recipe import DEFAULT_ORDER, DEFAULT_SCHEDULE, accelerator_recipe  # noqa: E402

METHOD = "quant-skip2-lora"


def log(msg):
    print(msg, file=sys.stderr, flush=True)


ROLES = {"pretrain_test": "source test", "finetune": "target pool", "test": "target test"}
# Calibration variants the defaults were chosen against (on the source test and the target
# fine-tune pool, which is training data): one weight exponent per layer, no activation headroom.
ABLATIONS = {"per-tensor weights": {"per_channel": False}, "no headroom": {"headroom": 0}}


def base_accuracy(name, data_dir, calib_samples, **options):
    """Float vs integer base on the source test split, the target fine-tune pool and the target
    test split (+ how often activations saturate on the target pool)."""
    t0 = time.perf_counter()
    ib = from_pretrained(name, data_dir, samples=calib_samples, **options)
    calib_s = time.perf_counter() - t0
    net, _ = load_base(name, data_dir)
    ds = load_dataset(name, data_dir)
    out = {"dataset": name, "calibration_samples": ib.calibration["samples"], "calibration_seconds": calib_s,
           "tap_fracs": ib.tap_fracs, "tap_signed": ib.tap_signed,
           "layer_out_fracs": [layer.out_frac for layer in ib.layers]}
    saturated = np.zeros(len(ib.layers) - 1)
    for role in ROLES:
        split = getattr(ds, role)
        zf = net.predict_logits(split.x)
        zi = np.zeros(zf.shape, np.int16)
        for s in range(0, len(split), 5000):  # bounded memory for the 50,000-image pool
            zi[s:s + 5000], taps = ib.forward(ib.quantize_input(split.x[s:s + 5000]), taps=True)
            if role == "finetune":  # how often each hidden activation sits at its top code
                saturated += [(t == layer.out_hi).sum() for layer, t in zip(ib.layers[:-1], taps[1:])]
        pf, pi = zf.argmax(axis=1), zi.argmax(axis=1)
        out[role] = {"samples": len(split), "float": float((pf == split.y).mean()), "int": float((pi == split.y).mean()),
                     "changed_predictions": float((pf != pi).mean()),
                     "logit_abs_err_mean": float(np.abs(zi / 2.0 ** F.Z_FRAC - zf).mean())}
        out[role]["delta_points"] = 100 * (out[role]["int"] - out[role]["float"])
    out["target_pool_saturation"] = {layer.name: float(n / (len(ds.finetune) * d))
                                     for layer, n, d in zip(ib.layers[:-1], saturated, ib.tap_dims[1:])}
    return ib, out


class IntTest:
    """The integer taps and logits of the test split, computed once (the exponents differ per seed)."""

    def __init__(self, ib, x):
        self.logits, self.taps = ib.forward(ib.quantize_input(x), taps=True)
        self.ib = ib

    def accuracy(self, geometry, adapters, exponents, y):
        codes = self.ib.codes(self.taps, exponents)
        return float((predict(geometry, codes, self.logits, adapters, exponents) == y).mean())


def int_job(ib, config, geometry, x_int, y, seed, job_args, exponents=None):
    """One job of the model's ``geometry`` on the bit-exact model of ``config`` (one build runs many
    models) with cache entries from the integer base."""
    codes, logits, exps, signed = ib.encode(x_int, exponents)
    backend = FixedBackend(config)
    backend.set_geometry(geometry)
    backend.load_cache(CacheEntries(codes, logits, y.astype(np.int64)).validate(geometry, signed))
    backend.load_adapters(Adapters.lora_init(geometry, seed))
    # the recipe Session.finetune runs (the host chain's): its order, schedule and optimizer
    recipe = accelerator_recipe(samples=len(y), batch=job_args["batch"], order=DEFAULT_ORDER,
                                schedule=DEFAULT_SCHEDULE, optimizer=DEFAULT_OPTIMIZER)
    job = JobConfig(len(y), job_args["batch"], job_args["epochs"], F.lr_register(job_args["lr"]), exps, signed,
                    seed=seed & 0xFFFF_FFFF, **recipe).validate(geometry, backend.n_loaded)
    report = backend.run(job)
    return backend.read_adapters(), exps, report


def chain(name, ib, data_dir, seeds, calib_samples):
    ds = load_dataset(name, data_dir)
    net, _ = load_base(name, data_dir)
    d = hparams.defaults(name, METHOD, accelerator=True)
    samples = d["samples"] or len(ds.finetune)
    job_args = {"epochs": d["epochs"], "batch": d["batch"], "lr": d["lr"]}
    geometry = geometry_of(net)
    config = accelerator_config_for(geometry, samples)
    test = IntTest(ib, ds.test.x)
    yt = ds.test.y
    _, calib_taps = ib.forward(ib.quantize_input(ds.pretrain.x[:calib_samples]), taps=True)
    calib_exps = ib.fit_exponents(calib_taps)
    rows = []
    for seed in seeds:
        idx = select_samples(len(ds.finetune), samples, seed)
        x, y = np.asarray(ds.finetune.x[idx]), np.asarray(ds.finetune.y[idx])
        row = {"seed": seed}
        # Today's chain: the host's float forward fills the cache (Session.add_samples).
        session = Session(net, FixedBackend(config), seed=seed)
        session.add_samples(x, y)
        row["host_before"] = session.accuracy(ds.test.x, yt)
        session.finetune(**job_args)
        row["host"] = session.accuracy(ds.test.x, yt)
        row["host_exponents"] = list(session.quantizer.exponents)
        # The integer chain.
        xq = ib.quantize_input(x)
        for label, exps in (("int", None), ("int-calib", calib_exps)):
            adapters, used, rep = int_job(ib, config, geometry, xq, y, seed, job_args, exps)
            row[label] = test.accuracy(geometry, adapters, used, yt)
            row[f"{label}_exponents"] = list(used)
        row["int_before"] = float((test.logits.argmax(axis=1) == yt).mean())
        rows.append(row)
        log(f"  {name} seed {seed}: host-fill {100 * row['host']:.2f} %, integer {100 * row['int']:.2f} %, "
            f"integer with calibration scales {100 * row['int-calib']:.2f} %")
    summary = {}
    for key in ("host", "int", "int-calib", "host_before", "int_before"):
        v = np.array([r[key] for r in rows])
        summary[key] = {"mean": float(v.mean()), "std": float(v.std()), "min": float(v.min())}
    for key in ("int", "int-calib"):
        summary[f"{key}_minus_host_points"] = 100 * (summary[key]["mean"] - summary["host"]["mean"])
    return {"dataset": name, "config": config.name, "samples": samples, **job_args, "method": METHOD,
            "seeds": list(seeds), "calibration_exponents": list(calib_exps), "runs": rows, "summary": summary}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", nargs="+", default=["fmnist-rot75", "har", "fan-damage1"],
                   help="data sets whose base accuracy to compare (default: %(default)s)")
    p.add_argument("--chain", nargs="*", default=["fmnist-rot75"],
                   help="data sets whose whole chain to run (default: the KV260 job, fmnist-rot75)")
    p.add_argument("--seeds", type=int, default=10, help="seeds 0..N-1 of the chain (default 10)")
    p.add_argument("--calibration-samples", type=int, default=BF.CALIB_SAMPLES,
                   help="first N source-domain training samples to calibrate on (default %(default)s)")
    p.add_argument("--ablation", action="store_true",
                   help="also compare the calibration variants the defaults were chosen against")
    p.add_argument("--data-dir")
    p.add_argument("--json", action="store_true", help="print the results as JSON on stdout")
    p.add_argument("--out", help="also write the JSON to this file")
    p.add_argument("--save-model", metavar="DIR", help="write each integer base to DIR/<base>-int8.npz")
    args = p.parse_args(argv)
    try:
        names = [canonical_name(n) for n in args.datasets + list(args.chain)]
    except ValueError as e:
        p.error(str(e))
    if args.seeds < 1:
        p.error(f"--seeds must be at least 1, not {args.seeds}")
    if args.calibration_samples < 1:
        p.error(f"--calibration-samples must be at least 1, not {args.calibration_samples}")
    for path in [args.out] if args.out else []:
        parent = Path(path).resolve().parent
        if not parent.is_dir() or not os.access(parent, os.W_OK):
            p.error(f"cannot write --out {path}: {parent} is not a writable folder")
    if args.save_model and not Path(args.save_model).is_dir():
        p.error(f"--save-model {args.save_model}: not a folder")

    result = {"command": " ".join(["python scripts/int_base_eval.py"] + (argv if argv is not None else sys.argv[1:])),
              "numpy": np.__version__, "formats": {k: getattr(BF, k) for k in (
                  "W_BITS", "ACT_BITS", "BIAS_BITS", "SHIFT_BITS", "ACC_BITS", "HEADROOM", "CALIB_SAMPLES")},
              "accuracy": [], "ablation": [], "chain": [], "cost": None}
    bases = {}
    for name in dict.fromkeys(names):
        log(f"{name}: calibrating the integer base and comparing it with the float base ...")
        ib, acc = base_accuracy(name, args.data_dir, args.calibration_samples)
        bases[name] = ib
        if name in args.datasets:
            result["accuracy"].append(acc)
            if not args.json:
                for role, label in ROLES.items():
                    r = acc[role]
                    print(f"{name:14s} {label:12s} float {100 * r['float']:6.2f} %  integer {100 * r['int']:6.2f} %  "
                          f"({r['delta_points']:+.2f} points, {100 * r['changed_predictions']:.2f} % of "
                          f"predictions changed)", flush=True)
                print(f"{name:14s} hidden activations at their top code on the target pool: " + ", ".join(
                    f"{k} {100 * v:.3f} %" for k, v in acc["target_pool_saturation"].items()), flush=True)
        if args.ablation and name in args.datasets:
            for variant, options in ABLATIONS.items():
                log(f"{name}: calibration variant '{variant}' ...")
                _, acc = base_accuracy(name, args.data_dir, args.calibration_samples, **options)
                acc["variant"] = variant
                result["ablation"].append(acc)
                if not args.json:
                    print(f"{name:14s} [{variant}] " + ", ".join(
                        f"{label} {100 * acc[role]['int']:.2f} % ({acc[role]['delta_points']:+.2f})"
                        for role, label in ROLES.items()) + ", target-pool saturation " + ", ".join(
                        f"{100 * v:.3f} %" for v in acc["target_pool_saturation"].values()), flush=True)
        if args.save_model:
            ib.save(Path(args.save_model) / f"{ib.name}.npz")
        if ib.name.startswith("lenet5") and result["cost"] is None:
            result["cost"] = {"model": ib.name, "layers": ib.cost(),
                              "total_macs": sum(r["macs"] for r in ib.cost()),
                              "total_weight_bytes": sum(r["weight_bytes"] for r in ib.cost())}
    for name in dict.fromkeys(args.chain):
        log(f"{name}: the chain over {args.seeds} seeds (host-fill vs integer base) ...")
        c = chain(name, bases[name], args.data_dir, range(args.seeds), args.calibration_samples)
        result["chain"].append(c)
        if not args.json:
            s = c["summary"]
            print(f"{name} chain ({c['samples']} samples, {c['epochs']} epochs, batch {c['batch']}, lr {c['lr']}, "
                  f"{len(c['seeds'])} seeds, bit-exact model): host-fill {100 * s['host']['mean']:.2f} ± "
                  f"{100 * s['host']['std']:.2f} %, integer {100 * s['int']['mean']:.2f} ± {100 * s['int']['std']:.2f} % "
                  f"({s['int_minus_host_points']:+.2f} points), integer with calibration scales "
                  f"{100 * s['int-calib']['mean']:.2f} % ({s['int-calib_minus_host_points']:+.2f} points)", flush=True)
    if result["cost"] and not args.json:
        print("integer LeNet-5 per sample: layer, MACs, weight bytes, in/out buffer bytes (before pooling), "
              "accumulator bits (layer bound / format bound), shifts")
        for r in result["cost"]["layers"]:
            print(f"  {r['layer']:6s} {r['macs']:8d} {r['weight_bytes']:7d} {r['in_buffer_bytes']:6d} "
                  f"{r['out_buffer_bytes']:6d} {r['acc_bits_layer']:3d} / {r['acc_bits_format']:3d}  {r['shift_range']}")
        print(f"  total  {result['cost']['total_macs']:8d} {result['cost']['total_weight_bytes']:7d}")
    text = json.dumps(result, indent=1)
    if args.json:
        print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
