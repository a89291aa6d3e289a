"""Default run settings per data set and method (documented in the README with how they were chosen).

Fashion-MNIST learning rates were chosen on the held-out rotated *train* images (the data set's
`validation` split), never on the test set: `python scripts/tune_lr.py` reproduces the sweep.
HAR and Fan follow the seeds' settings (batch 20; 600 / 300 fine-tuning epochs).
"""

from __future__ import annotations

__all__ = ["defaults", "family"]

_RUN = {
    "fmnist": {"samples": 1024, "epochs": 10, "batch": 16},
    "har": {"samples": None, "epochs": 600, "batch": 20},
    "fan": {"samples": None, "epochs": 300, "batch": 20},
}

# Plain-SGD learning rates per method (None samples = the whole fine-tuning split).
_LR = {
    # python scripts/tune_lr.py --dataset fmnist-rot75 (validation split; docs/tuning/fmnist-rot75.json)
    "fmnist": {"ft-all": 0.1, "ft-last": 0.05, "ft-bias": 0.2, "ft-all-lora": 0.05,
               "lora-all": 0.15, "lora-last": 0.05, "skip-lora": 0.1, "skip2-lora": 0.1,
               "quant-skip2-lora": 0.1},
    # python scripts/tune_lr.py --dataset har (block hold-out of the fine-tuning split; docs/tuning/har.json).
    # The three Skip-adapter methods share one rate: they are the same algorithm (cache / 4-bit cache).
    "har": {"ft-all": 0.1, "ft-last": 0.01, "ft-bias": 0.1, "ft-all-lora": 0.03, "lora-all": 0.1,
            "lora-last": 0.01, "skip-lora": 0.03, "skip2-lora": 0.03, "quant-skip2-lora": 0.03},
    # docs/tuning/fan-damage1.json: the hold-out saturates at 100 % for most rates; 0.01 is the
    # smallest rate that reaches it for every method but FT-Bias.
    "fan": {"ft-all": 0.01, "ft-last": 0.01, "ft-bias": 0.03, "ft-all-lora": 0.01, "lora-all": 0.01,
            "lora-last": 0.01, "skip-lora": 0.01, "skip2-lora": 0.01, "quant-skip2-lora": 0.01},
}


def family(dataset: str) -> str:
    if dataset.startswith("fmnist-rot"):
        return "fmnist"
    if dataset == "har":
        return "har"
    if dataset.startswith("fan-"):
        return "fan"
    raise ValueError(f"unknown data set {dataset!r}")


def defaults(dataset: str, method: str) -> dict:
    fam = family(dataset)
    out = dict(_RUN[fam])
    out["lr"] = _LR[fam][method]
    return out
