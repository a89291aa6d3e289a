"""The comparison tables of the Skip2-LoRA papers (ASP-DAC'25; the CNN / 4-bit cache follow-up),
for our runs: every method on one data set, over several random seeds.

The data set may be the user's, with the user's base model (``model``; `skip2lora.workload`): both
are then read and checked once, and every method fine-tunes the same loaded model."""

from __future__ import annotations

import platform
import time

import numpy as np

from .blas_env import blas_note
from .data import is_builtin_name
from .finetune import DEFAULT_ORDER, DEFAULT_SCHEDULE, finetune
from .methods import METHODS
from .workload import base_for, open_data

__all__ = ["compare"]


def _mean(values):
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def _std(values):
    values = [v for v in values if v is not None]
    return float(np.std(values, ddof=1)) if len(values) > 1 else (0.0 if values else None)


def compare(dataset, *, model=None, methods=None, seeds: int = 1, epochs=None, samples=None, order=DEFAULT_ORDER,
            schedule=DEFAULT_SCHEDULE, data_dir=None, curves: bool = False, progress=None) -> dict:
    """Run every method for seeds 0..seeds-1 and aggregate (mean and sample std over seeds).

    The runs interleave the methods (seed 0 of every method, then seed 1, ...), so a slow drift of
    a shared machine's load touches every method alike and the speed-ups stay comparable."""
    methods = list(methods or METHODS)
    by_method = {m: [] for m in methods}
    label = None
    if model is not None or not (isinstance(dataset, str) and is_builtin_name(dataset)):
        ds = open_data(dataset, data_dir)  # once for all runs: a file is read and a model imported once
        base, label = base_for(ds, model, data_dir, progress=progress)
        dataset, model = ds, base
    for s in range(seeds):
        for method in methods:
            by_method[method].append(finetune(method, dataset, model=model, samples=samples, epochs=epochs, seed=s,
                                              order=order, schedule=schedule, data_dir=data_dir,
                                              curves=curves, progress=progress))
    rows = []
    for method, runs in by_method.items():
        ok = [r for r in runs if not r.diverged]
        first = runs[0]
        row = {
            "method": method, "samples": first.samples, "epochs": first.epochs, "batch": first.batch,
            "lr": first.lr, "rank": first.rank, "seeds": seeds, "diverged": len(runs) - len(ok),
            "accuracy_before": _mean([r.accuracy_before for r in runs]),
            "accuracy": _mean([r.accuracy for r in ok]), "accuracy_std": _std([r.accuracy for r in ok]),
            "ft_seconds": _mean([r.ft_seconds for r in ok]),
            "epoch_seconds": _mean([r.epoch_seconds for r in ok]),
            "time_per_batch": {k: _mean([r.time_per_batch.get(k) for r in ok])
                               for k in ("forward", "backward", "update")},
            "cache_bytes": first.cache_bytes,
            "errors": sorted({r.error for r in runs if r.error}),
            "curves": [r.curve for r in ok],
        }
        rows.append(row)
    first = next((runs[0] for runs in by_method.values() if runs), None)
    out = {"dataset": first.dataset if first else str(dataset), "model": label or (first.model if first else None),
           "hparams_source": first.hparams.get("source") if first else None,
           "seeds": seeds, "order": order, "schedule": schedule, "results": rows,
           "machine": f"{platform.machine()}, {platform.processor() or platform.system()}, "
                      f"python {platform.python_version()}, numpy {np.__version__}, {blas_note()}",
           "date": time.strftime("%Y-%m-%d")}
    by = {r["method"]: r for r in rows}
    ref = by.get("lora-all")
    speedups = {}
    for m in ("skip2-lora", "quant-skip2-lora"):
        if ref and m in by and by[m]["ft_seconds"] and ref["ft_seconds"]:
            speedups[m] = {
                "job": ref["ft_seconds"] / by[m]["ft_seconds"],
                "epoch": (ref["epoch_seconds"] / by[m]["epoch_seconds"]
                          if ref["epoch_seconds"] and by[m]["epoch_seconds"] else None),
            }
    out["speedup_vs_lora_all"] = speedups
    return out
