"""Default run settings per data set and method (documented in the README with how they were chosen).

Optimizers and learning rates were chosen on held-out data, never on the test set, with the float
backend's recipe (a new sample order every epoch, one epoch of learning-rate warm-up, then a linear
decay): Fashion-MNIST on the held-out rotated *train* images (its `validation` split), HAR and Fan
on a block hold-out of their fine-tuning split. `python scripts/tune_lr.py` reproduces the sweeps
(docs/tuning/*.json). The rule for a rate: the highest mean hold-out accuracy over the seeds, and a
rate that diverges for any seed is out. The rule for an optimizer: where several are tied (their
paired seed-by-seed difference to the best within two standard errors), the one cheapest in the
accelerator's fixed point.
HAR and Fan follow the Skip2-LoRA papers' settings (batch 20; 600 / 300 fine-tuning epochs).

A data set that is not built in (``dataset=None``: a user's arrays, .npz file or image folder) gets
no tuning: it takes the Fashion-MNIST recipe, the one tuned most thoroughly (10 seeds, every
optimizer) -- for the Skip methods Adam with power-of-two steps at 0.03, for the others their
Fashion-MNIST optimizer and rate; batch 16, a new order every epoch, warm-up + linear decay -- on
at most 1024 samples (the KV260's on-chip cache), for
10 epochs or, on a small pool, enough epochs for the 640 steps of the Fashion-MNIST job (at most
600 epochs). The result says so (``source``).
"""

from __future__ import annotations

__all__ = ["defaults", "family", "new_data_run", "NEW_DATA_SOURCE"]

_RUN = {
    "fmnist": {"samples": 1024, "epochs": 10, "batch": 16},
    "har": {"samples": None, "epochs": 600, "batch": 20},
    "fan": {"samples": None, "epochs": 300, "batch": 20},
}

# Plain-SGD learning rates per method (None samples = the whole fine-tuning split).
_SGD_LR = {
    # python scripts/tune_lr.py --dataset fmnist-rot75 --lrs 0.03 0.05 0.07 0.1 0.12 0.15 --seeds 10
    # (docs/tuning/fmnist-rot75.json). Every Skip-adapter rate of 0.15 diverges for some seed;
    # FT-Last, FT-Bias, LoRA-All and LoRA-Last take the grid's top rate.
    "fmnist": {"ft-all": 0.1, "ft-last": 0.15, "ft-bias": 0.15, "ft-all-lora": 0.12,
               "lora-all": 0.15, "lora-last": 0.15, "skip-lora": 0.12, "skip2-lora": 0.12,
               "quant-skip2-lora": 0.12},
    # python scripts/tune_lr.py --dataset har --seeds 2 (docs/tuning/har.json)
    "har": {"ft-all": 0.1, "ft-last": 0.03, "ft-bias": 0.3, "ft-all-lora": 0.1, "lora-all": 0.1,
            "lora-last": 0.3, "skip-lora": 0.3, "skip2-lora": 0.3, "quant-skip2-lora": 0.3},
    # python scripts/tune_lr.py --dataset fan-damage1 --seeds 2 (docs/tuning/fan-damage1.json): the
    # hold-out saturates at 100 % for most rates; 0.01 is the smallest rate that reaches it for
    # every method but FT-Bias (0.3).
    "fan": {"ft-all": 0.01, "ft-last": 0.01, "ft-bias": 0.3, "ft-all-lora": 0.01, "lora-all": 0.01,
            "lora-last": 0.01, "skip-lora": 0.01, "skip2-lora": 0.01, "quant-skip2-lora": 0.01},
}


# A data set that is not built in: see the module docstring.
NEW_DATA_SOURCE = "defaults for a new data set"
_NEW = {"family": "fmnist", "max_samples": 1024, "batch": 16, "min_epochs": 10, "min_steps": 640, "max_epochs": 600}


def new_data_run(pool: int) -> dict:
    """Samples, epochs and batch for a data set that is not built in, with ``pool`` training rows."""
    if isinstance(pool, bool) or not isinstance(pool, int):
        raise TypeError(f"pool must be an integer (training rows), not {pool!r}")
    if pool < 1:
        raise ValueError(f"pool must be at least 1 training row, not {pool}")
    samples = min(pool, _NEW["max_samples"])
    steps = -(-samples // min(_NEW["batch"], samples))
    epochs = min(_NEW["max_epochs"], max(_NEW["min_epochs"], -(-_NEW["min_steps"] // steps)))
    return {"samples": samples, "epochs": epochs, "batch": min(_NEW["batch"], samples)}


def family(dataset: str) -> str:
    if dataset.startswith("fmnist-rot"):
        return "fmnist"
    if dataset == "har":
        return "har"
    if dataset.startswith("fan-"):
        return "fan"
    raise ValueError(f"unknown data set {dataset!r}")


# The float backend's optimizer per family and method (a method not named takes "sgd").
# Skip-adapter methods on Fashion-MNIST: Adam with 1/sqrt(v) rounded to a power of two and
# beta1 = 1 - 2^-3, beta2 = 1 - 2^-10 (the moment updates are shifts), bias correction folded into
# the per-step rate: the cheapest Adam in fixed point, and tied with every Adam variant, Adam
# itself included (paired seed-by-seed differences within +-0.3 points, two standard errors):
#   python scripts/tune_lr.py --dataset fmnist-rot75 --methods skip2-lora --optimizers sgd momentum \
#     nesterov adam "adam:b1=1-2^-3,b2=1-2^-10" adam-pow2 "adam-pow2:b1=1-2^-3,b2=1-2^-10" adam-pow2h \
#     adam-pow2:fold=0 adam:bias_correction=0 adam-factored lion --grid sgd=0.07,0.1,0.12,0.15 --seeds 10 \
#     --out docs/tuning/optimizers-skip2-lora.json   (and quant-skip2-lora; *-extra.json: the
#   grids' edges). 10 seeds, validation: Skip2-LoRA 81.83 +- 0.39 % (worst 80.94), Quant
#   81.66 +- 0.41 % (worst 80.93); plain SGD 77.46 / 77.31 %. `python scripts/tune_lr.py --summarize
#   docs/tuning/optimizers-skip2-lora*.json` prints the comparison. Skip-LoRA trains the same adapters.
# LoRA-All on Fashion-MNIST: Adam, 80.22 +- 0.47 % against SGD's 76.49 % (5 seeds):
#   python scripts/tune_lr.py --dataset fmnist-rot75 --methods lora-all --optimizers sgd momentum adam \
#     --grid sgd=0.12,0.15,0.2 momentum=0.02,0.03,0.05 adam=0.01,0.015,0.02,0.025 --seeds 5 \
#     --out docs/tuning/optimizers-lora-all.json
# HAR and Fan keep SGD: their 2-seed Adam sweeps (docs/tuning/optimizers-{har,fan-damage1}-*.json)
# put Adam 0.7-1.3 points above SGD on HAR's 224 held-out samples (2-3 samples), with LoRA-All's
# Adam rising in loss at 0.02 and collapsing at 0.03, and tie at 100 % on Fan; the rates below let a
# user choose them.
SKIP_OPTIMIZER = "adam-pow2:b1=1-2^-3,b2=1-2^-10"
_OPTIMIZER: dict = {"fmnist": {"skip-lora": SKIP_OPTIMIZER, "skip2-lora": SKIP_OPTIMIZER,
                               "quant-skip2-lora": SKIP_OPTIMIZER, "lora-all": "adam"}}

# Learning rates per optimizer spec (`skip2lora.optim`), per family and method, where tuned: each
# optimizer's best rate by the rule above in the sweeps named there (Skip-LoRA takes Skip2-LoRA's).
_LR = {fam: {"sgd": rates} for fam, rates in _SGD_LR.items()}
_SKIP_LR = {  # (Skip2-LoRA's, Quant Skip2-LoRA's) rate per optimizer on Fashion-MNIST
    "momentum": (0.03, 0.03), "nesterov": (0.04, 0.04), "adam": (0.05, 0.03),
    "adam:b1=1-2^-3,b2=1-2^-10": (0.03, 0.05), "adam-pow2": (0.03, 0.03), SKIP_OPTIMIZER: (0.03, 0.03),
    "adam-pow2h": (0.05, 0.03), "adam-pow2:fold=0": (0.03, 0.03), "adam:bias_correction=0": (0.01, 0.01),
    "adam-pow2:b1=1-2^-3,b2=1-2^-10,bias_correction=0": (0.01, 0.01), "adam-factored": (0.05, 0.05),
    "lion": (0.003, 0.003)}
for _spec, (_skip2, _quant) in _SKIP_LR.items():
    _LR["fmnist"][_spec] = {"skip-lora": _skip2, "skip2-lora": _skip2, "quant-skip2-lora": _quant}
_LR["fmnist"]["adam"]["lora-all"] = 0.02
_LR["fmnist"]["momentum"]["lora-all"] = 0.02
# HAR (python scripts/tune_lr.py --dataset har ... --seeds 2; docs/tuning/optimizers-har-*.json): the
# skip methods' best rate 0.001; LoRA-All's Adam 0.01 (0.02 scored 0.9 points more but its training
# loss rose x1.9 and 0.03 collapsed to 15 %). Fan: every rate reaches 100 %; the smallest, 0.001.
for _fam, _skip, _lora in (("har", 0.001, 0.01), ("fan", 0.001, 0.001)):
    _LR[_fam][SKIP_OPTIMIZER] = {"skip-lora": _skip, "skip2-lora": _skip, "quant-skip2-lora": _skip}
    _LR[_fam]["adam"] = {"lora-all": _lora}


def defaults(dataset: str | None, method: str, *, accelerator: bool = False, optimizer: str | None = None,
             pool: int | None = None) -> dict:
    """Run settings of ``method`` on ``dataset``: the float backend's, or one accelerator job's.

    ``dataset`` None is a data set that is not built in, with ``pool`` training rows (see the module
    docstring); ``source`` in the result says where the settings come from.

    ``optimizer`` (a `skip2lora.optim` spec) picks the rate tuned for it; ``lr`` is None where no
    rate was tuned for that optimizer. The accelerator runs the float recipe of Quant Skip2-LoRA
    (its cache is 4-bit) with the optimizers it implements (`skip2lora.recipe`)."""
    from .optim import make

    if dataset is None:
        if pool is None:
            raise ValueError("a data set that is not built in needs pool= (its number of training rows)")
        fam = _NEW["family"]
        out = dict(new_data_run(pool), source=NEW_DATA_SOURCE)
    else:
        fam = family(dataset)
        out = dict(_RUN[fam], source=f"tuned for the {fam} data sets on held-out data (skip2lora.hparams)")
    if accelerator:
        from .recipe import accelerator_optimizer

        method = "quant-skip2-lora"
        if optimizer == "adam-pow2":  # the accelerator's Adam: its betas are 1 - 2**-3, 1 - 2**-10
            optimizer = SKIP_OPTIMIZER
        if optimizer is not None:
            accelerator_optimizer(optimizer)  # one it runs, or a clear error
    spec = make(optimizer if optimizer is not None else _OPTIMIZER.get(fam, {}).get(method, "sgd")).spec
    out.update(optimizer=spec, lr=_LR[fam].get(spec, {}).get(method))
    return out
