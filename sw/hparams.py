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
    "har": dict.fromkeys(["ft-all", "ft-last", "ft-bias", "ft-all-lora", "lora-all", "lora-last",
                          "skip-lora", "skip2-lora", "quant-skip2-lora"], 0.01),
    "fan": dict.fromkeys(["ft-all", "ft-last", "ft-bias", "ft-all-lora", "lora-all", "lora-last",
                          "skip-lora", "skip2-lora", "quant-skip2-lora"], 0.01),
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
