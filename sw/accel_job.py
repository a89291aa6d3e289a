"""``skip2lora finetune --backend fixed|sim|pynq``: one Quant Skip2-LoRA job on an accelerator backend.

An experiment runner on top of the driver (it lives beside the CLI, not in the driver): same data
and sample selection as the float backend (`skip2lora.finetune`), and the same recipe, run on chip:
a new sample order every epoch (the accelerator's own, `--order feistel` on the float backend),
warm-up and linear decay, the tuned optimizer (`hparams.defaults(..., accelerator=True)`). The
JSON adds the accelerator's cycle count, the projected time (cycles / an assumed clock) of the
configuration it ran on, this machine's wall time, the training accuracy and loss of every epoch
counted by the accelerator, and whether the job diverged (judged from those statistics,
`skip2lora.driver.health`: a diverged job reports no accuracy).

The data set and base model may be the user's (``args.data``, ``args.model``; `skip2lora.workload`):
the KV260 build runs any model within its maxima (up to 8 taps, 16 classes, rank 4 and 96 cache
lines of taps: LeNet-5, the HAR and Fan MLPs, most small models), its geometry set by registers at
each job's start; a model beyond them is refused naming the limit, and ``--config custom`` sizes a
build for it (named ``custom-...``, never given a KV260 time). A job of more samples than the
KV260's on-chip cache runs from its DDR cache (``--cache``); the cycle figures then include the DDR
reads under the memory timing the backend assumes (labelled). The JSON names the job's geometry
(``"geometry"``: tap dims, rank, classes) and the configuration it ran on (``"config"``).
"""

from __future__ import annotations

import sys
import time

import numpy as np

from . import hparams
from .data import is_builtin_name
from .driver import CACHE_PLACEMENTS, FILL_CHOICES, AdapterFileError, Session, geometry_of, make_backend
from .driver.backend import largest_ddr_latency
from .fixed.config import KV260, AcceleratorConfig
from .fixed.cycles import CLOCK_MHZ, FETCH_REQUEST, report as cycle_report
from .fixed.packing import Layout
from .finetune import select_samples, used_hparams, validate_run
from .recipe import DEFAULT_ORDER, DEFAULT_SCHEDULE

__all__ = ["run_job", "accelerator_job", "accelerator_config_for", "cycle_mismatch", "ConfigurationError"]

METHOD = "quant-skip2-lora"


class ConfigurationError(ValueError):
    """The job does not fit the accelerator configuration it would run on."""


def accelerator_config_for(geometry, samples: int, *, batch: int | None = None, cache: str = "auto",
                           allow_custom: bool = False) -> AcceleratorConfig:
    """The KV260 build for the jobs it can run: a model within its maxima (`AcceleratorConfig.
    check_geometry`: LeNet-5, the HAR and Fan MLPs, ...), up to its on-chip cache's 1024 samples on
    chip, more (up to 65535, mini-batches up to 64) from its DDR cache (``cache``: "auto" picks,
    "chip" and "ddr" insist); any other job is refused with the limit it breaks, unless
    ``allow_custom`` names a build of the same datapath sized for this job (it is then called
    ``custom-...``, never the KV260, and has no DDR path)."""
    if cache not in CACHE_PLACEMENTS:
        raise ValueError(f"cache must be auto, chip or ddr, not {cache!r}")
    k = KV260
    try:
        k.check_geometry(geometry)
        beyond = None
    except ValueError as exc:
        beyond = str(exc)
    if beyond is None:
        ddr = cache == "ddr" or (cache == "auto" and samples > k.cache_depth)
        if cache == "chip" and samples > k.cache_depth and not allow_custom:
            raise ConfigurationError(
                f"{samples} samples exceed the KV260 build's on-chip cache of {k.cache_depth} entries; "
                f"--cache ddr (or auto) runs up to {k.ddr_samples} samples from its DDR cache")
        if ddr and samples > k.ddr_samples and not allow_custom:
            raise ConfigurationError(
                f"{samples} samples exceed the KV260 build's largest job ({k.ddr_samples} samples from its DDR "
                f"cache, the SAMPLES register's range); use --samples <= {k.ddr_samples}, or --config custom "
                "to simulate a build sized for this job (no bitstream exists for it)")
        if ddr and batch is not None and batch > k.ddr_batch and samples <= k.ddr_samples:
            raise ConfigurationError(
                f"mini-batches of {batch} exceed the KV260 build's DDR cache limit of {k.ddr_batch} (a job of "
                f"more than {k.cache_depth} samples, or --cache ddr, runs from DDR); use --batch <= "
                f"{k.ddr_batch}" + (f", or --samples <= {k.cache_depth} for the on-chip cache" if cache != "ddr"
                                    else ", or --cache auto for the on-chip cache"))
        layout = Layout(geometry, k.lanes)
        if ddr and largest_ddr_latency(layout) is None:  # the cycle model times no DDR job of entries this short
            if cache == "ddr" or not allow_custom:
                raise ConfigurationError(
                    f"a job from the KV260 build's DDR cache needs cache entries of at least {FETCH_REQUEST} lines "
                    f"(the cycle model's DDR timing); this model's take {layout.sample_lines}: use --samples <= "
                    f"{k.cache_depth} for the on-chip cache" + (", or --config custom" if cache != "ddr" else
                                                                 " with --cache auto"))
        elif samples <= (k.ddr_samples if ddr else k.cache_depth):
            return k
    elif not allow_custom:
        raise ConfigurationError(f"{beyond}; --config custom simulates a build sized for this job (no bitstream "
                                 "exists for it)")
    if cache == "ddr":
        raise ConfigurationError("--cache ddr needs the KV260 build's DDR path: a --config custom build keeps "
                                 "the job's entries on chip (use --cache auto or chip)")
    return AcceleratorConfig(f"custom-{'x'.join(map(str, geometry.dims))}-r{geometry.rank}-n{samples}", geometry,
                             k.lanes, max(samples, 1))


#: the sim backend: test images predicted on the simulated PL and checked against the host's
PL_CHECK = 64


def _predict_on_pl(session, x) -> dict:
    """Predict ``x`` on the PL and on the host: the same logits bit for bit, or an error."""
    pl = session.logits(x, on="pl")
    report = dict(session.last_prediction)
    if not np.array_equal(pl, session.logits(x, on="host")):
        raise RuntimeError(f"the PL's predictions of {len(x)} test images differ from the host's")
    return dict(report, checked_against_host=len(x))


def _predict_figures(report: dict, config) -> dict:
    """A PL prediction's report with its rate: images / (PREDICT_CYCLES / an assumed clock)."""
    out = dict(report)
    if report.get("predict_cycles"):
        out["images_per_s"] = report["images"] * CLOCK_MHZ * 1e6 / report["predict_cycles"]
        out["label"] = (f"PREDICT_CYCLES of the {config.name} build / {CLOCK_MHZ:g} MHz (an assumed clock), "
                        f"{report['images']} images")
    return out


def run_job(args) -> dict:
    """Run the job ``args`` describes (the ``finetune`` command's options) and return its figures.

    With ``args.save_adapters`` the trained adapters are written there; a failed write does not
    lose the result: it is reported under ``adapters_error``. The accelerator's cycle count is
    returned beside the cycle model's (`cycle_mismatch` says when they differ)."""
    from .workload import base_for, hparams_key, open_data

    wall0 = time.perf_counter()
    quiet = bool(getattr(args, "json", False))
    ds = open_data(getattr(args, "data", None) or args.dataset, args.data_dir)
    d = hparams.defaults(hparams_key(ds), METHOD, accelerator=True, optimizer=getattr(args, "optimizer", None),
                         pool=len(ds.finetune))
    given = [k for k in ("samples", "epochs", "batch", "lr", "optimizer") if getattr(args, k, None) is not None]
    samples = args.samples or d["samples"] or len(ds.finetune)
    epochs = args.epochs or d["epochs"]
    batch = args.batch or d["batch"]
    lr = args.lr or d["lr"]
    order = getattr(args, "order", None) or DEFAULT_ORDER
    schedule = getattr(args, "schedule", None) or DEFAULT_SCHEDULE
    if lr is None:
        raise ValueError(f"no learning rate was tuned for {d['optimizer']} on {ds.name}: give --lr")
    validate_run(samples=samples, epochs=epochs, batch=batch, lr=lr, rank=args.rank, pool=len(ds.finetune),
                 order=order, schedule=schedule, optimizer=d["optimizer"])
    base, label = base_for(ds, getattr(args, "model", None), args.data_dir, progress=None if not quiet else False)
    geometry = geometry_of(base, args.rank)
    cache = getattr(args, "cache", None) or "auto"
    config = accelerator_config_for(geometry, samples, batch=batch, cache=cache,
                                    allow_custom=getattr(args, "config", "kv260") == "custom")
    idx = select_samples(len(ds.finetune), samples, args.seed)
    x, y = np.asarray(ds.finetune.x[idx]), np.asarray(ds.finetune.y[idx])

    backend_kwargs = {}
    if args.backend == "sim":
        backend_kwargs["progress"] = None if not quiet else False
        if not quiet:  # the first run of a build exports and compiles the RTL: say so
            backend_kwargs["log"] = lambda msg: print(msg, file=sys.stderr, flush=True)
    if args.backend == "pynq" and getattr(args, "bitfile", None):
        backend_kwargs["bitfile"] = args.bitfile
    if cache != "auto":
        backend_kwargs["cache"] = cache
    with make_backend(args.backend, config, **backend_kwargs) as backend:
        session = Session(base, backend, seed=args.seed, rank=args.rank, fill=getattr(args, "fill", None) or "auto")
        t0 = time.perf_counter()
        session.add_samples(x, y)
        fill = time.perf_counter() - t0
        # the sim backend predicts the test set on the host (the RTL would take minutes), after a
        # check that the simulated PL gives the same numbers (`_predict_on_pl`)
        on = "host" if args.backend == "sim" else "auto"
        before = session.accuracy(ds.test.x, ds.test.y, on=on)
        if not quiet:
            where = "the DDR cache" if backend.cache_mode == "ddr" else "the on-chip cache"
            model = f"taps {'-'.join(map(str, geometry.dims))}, rank {geometry.rank}, {geometry.classes} classes"
            how = "filled on the PL (FILL)" if session.fill == "pl" else "cached"
            print(f"{args.backend} backend ({config.name} build; the model's {model}): {samples} samples {how} in "
                  f"{fill:.2f} s, in {where}; fine-tuning {epochs} epochs ...", file=sys.stderr)
        out = session.finetune(epochs=epochs, batch=batch, lr=lr, order=order, schedule=schedule,
                               optimizer=d["optimizer"])
        # a diverged job reports no accuracy (as the float backend): its weights mean nothing
        accuracy = None if out["diverged"] else session.accuracy(ds.test.x, ds.test.y, on=on)
        predict = None
        if session.predicts_on_pl():
            predict = (session.last_prediction if on == "auto" and not out["diverged"]
                       else _predict_on_pl(session, ds.test.x[:PL_CHECK]))
        saved = {} if out["diverged"] else _save_adapters(session, getattr(args, "save_adapters", None))
        where = out["cache"]
        ddr = backend.ddr_timing if where == "ddr" else None
    # the cycle model of the placement the job ran from (DDR: under the memory the backend assumes)
    projected = cycle_report(config, samples, batch, epochs, shuffle=order != "fixed", ddr=ddr, geometry=geometry)
    # the PL fill's cycles (FILL_CYCLES) and the job end to end: images in, entries filled, trained
    fill_cycles = out.get("fill_cycles") if session.fill == "pl" else None
    end_to_end = ({"end_to_end_cycles": fill_cycles + out["cycles"],
                   "end_to_end_ms": (fill_cycles + out["cycles"]) / (CLOCK_MHZ * 1e3)}
                  if fill_cycles is not None and out["cycles"] is not None else {})
    return {
        "method": METHOD, "backend": args.backend, "dataset": ds.name, "model": label, "config": config.name,
        "kv260_build": config == KV260, "geometry": geometry.to_dict(), "cache": where,
        **({"ddr_latency": projected["ddr_latency"], "ddr_model": projected["ddr_model"]} if ddr is not None else {}),
        "samples": samples, "epochs": epochs, "batch": batch, "lr": float(lr), "lr_register": out["lr_register"],
        "seed": args.seed, "rank": args.rank, "order": order, "schedule": schedule, "optimizer": d["optimizer"],
        "accuracy_before": before, "accuracy": accuracy, "diverged": out["diverged"], "error": out["divergence"],
        "fill": session.fill, "fill_cycles": fill_cycles, **end_to_end,
        "predict": predict and _predict_figures(predict, config),
        "ft_seconds": fill + out["wall_seconds"], "fill_seconds": fill, "job_seconds": out["wall_seconds"],
        "cycles": out["cycles"], "cycles_model": projected["cycles"],  # must be equal: see cycle_mismatch
        "clock_mhz": CLOCK_MHZ, "projected_ms": projected["projected_ms"],
        "projection": projected["projection"], "utilization": projected["utilization"],
        "train_correct_last_epoch": out["correct"],
        "train_accuracy_per_epoch": out["train_accuracy_per_epoch"], "losses": out["train_loss_per_epoch"],
        "saturated_per_epoch": out["saturated_per_epoch"],
        "wall_seconds": time.perf_counter() - wall0,
        "tap_exponents": session.quantizer.exponents, "tap_signed": session.quantizer.signed,
        "hparams": used_hparams(d, samples=samples, epochs=epochs, batch=batch, lr=float(lr), order=order,
                                schedule=schedule, optimizer=d["optimizer"], given=given),
        **saved,
    }


def accelerator_job(dataset="fmnist-rot75", model=None, *, backend: str = "fixed", config: str = "kv260",
                    samples: int | None = None, epochs: int | None = None, batch: int | None = None,
                    lr: float | None = None, seed: int = 0, rank: int = 4, order: str | None = None,
                    schedule: str | None = None, optimizer: str | None = None, data_dir=None,
                    save_adapters=None, bitfile=None, cache: str = "auto", fill: str = "auto") -> dict:
    """`run_job` from Python: the ``finetune`` command's job on an accelerator backend, quietly.

    ``dataset``: a built-in name, an .npz file, an image folder or a `Dataset`; ``model``: a model
    file or a `Network` (None: the built-in data set's pretrained base). ``config`` "kv260" runs the
    job on the KV260 build (any model within its maxima) or refuses it (`ConfigurationError` names
    the limit); "custom" sizes a build for a job the KV260 build cannot run. ``cache``: where the cache entries go ("auto": on chip when they fit, else the DDR
    cache; "chip"; "ddr"). ``fill``: where the entries are computed (`Session`'s ``fill``: "auto",
    "pl", "host"). Unset options take `skip2lora.hparams`' defaults (the result's "hparams" says which)."""
    from types import SimpleNamespace

    if cache not in CACHE_PLACEMENTS:
        raise ValueError(f"cache must be auto, chip or ddr, not {cache!r}")
    if config not in ("kv260", "custom"):
        raise ValueError(f"config must be kv260 or custom, not {config!r}")
    if fill not in FILL_CHOICES:
        raise ValueError(f"fill must be auto, pl or host, not {fill!r}")
    if backend not in ("fixed", "sim", "pynq"):
        raise ValueError(f"backend must be fixed, sim or pynq (float: skip2lora.finetune.finetune), not {backend!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2 ** 32:
        raise ValueError(f"seed must be an integer in 0..{2 ** 32 - 1}, not {seed!r}")
    builtin = isinstance(dataset, str) and is_builtin_name(dataset)
    args = SimpleNamespace(dataset=dataset if builtin else None, data=None if builtin else dataset, model=model,
                           backend=backend, config=config, samples=samples, epochs=epochs, batch=batch, lr=lr,
                           seed=seed, rank=rank, order=order, schedule=schedule, optimizer=optimizer,
                           data_dir=data_dir, save_adapters=save_adapters, bitfile=bitfile, cache=cache,
                           fill=fill, json=True)
    return run_job(args)


def cycle_mismatch(result: dict) -> str | None:
    """Why the accelerator's cycle counter disagrees with the cycle model (None: it agrees)."""
    if result["cycles"] == result["cycles_model"]:
        return None
    return (f"the accelerator counted {result['cycles']:,} cycles, the cycle model predicts "
            f"{result['cycles_model']:,}")


def _save_adapters(session: Session, path) -> dict:
    if not path:
        return {}
    try:
        session.save_adapters(path)
    except (OSError, AdapterFileError) as exc:
        return {"adapters_file": None, "adapters_error": f"could not save the adapters to {path}: {exc}"}
    return {"adapters_file": str(path)}
