"""Pretrained base models: cached on disk (weights + metadata) so pretraining runs once.

Look-up order: the weights shipped inside the package (``skip2lora/pretrained/<key>.npz``,
produced by ``skip2lora pretrain`` and committed), then the user cache directory; when neither
exists the model is pretrained now and saved to the cache. The metadata JSON records the
command, seed, data and accuracy, the sha256 of the weights file (checked on load), and the range
of the pretraining inputs (``input_range``: min and max over every sample and feature), which a
loaded network carries as ``net.input_range`` so that a `Session` can refuse inputs scaled
otherwise (raw 0..255 pixels for a model trained on 0..1).

Only the built-in bases are pretrained here. A user's own architecture is brought as a trained
model (ONNX, TorchScript, or a saved project .npz: ``skip2lora finetune --model FILE.onnx --data
FILE.npz``, `skip2lora.workload`); it carries no input range, so nothing checks its inputs' scale.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from .network import Network, build, lenet5, mlp
from .train import pretrain

__all__ = ["BASES", "base_key", "load_base", "pretrain_base", "save_base", "package_dir", "cache_dir",
           "input_range"]

# How each base model is pretrained (source-domain data only). Settings follow the Skip2-LoRA papers and
# DESIGN.md section 7 (LeNet-5: Adam 1e-3, batch 128, 10 epochs; MLPs: Adam 1e-3, batch 20).
BASES = {
    "lenet5-fmnist": {"dataset": "fmnist-rot0", "epochs": 10, "batch": 128, "lr": 1e-3},
    "mlp-har": {"dataset": "har", "epochs": 300, "batch": 20, "lr": 1e-3},
    "mlp-fan-damage1": {"dataset": "fan-damage1", "epochs": 100, "batch": 20, "lr": 1e-3},
    "mlp-fan-damage2": {"dataset": "fan-damage2", "epochs": 100, "batch": 20, "lr": 1e-3},
}


def base_key(dataset: str) -> str:
    """The base model a data set is fine-tuned from (all Fashion-MNIST rotations share one)."""
    if dataset.startswith("fmnist-rot"):
        return "lenet5-fmnist"
    key = f"mlp-{dataset}"
    if key not in BASES:
        raise ValueError(f"no base model for data set {dataset!r}")
    return key


def package_dir() -> Path:
    return Path(__file__).resolve().parent.parent / "pretrained"


def cache_dir() -> Path:
    if os.name == "nt":
        root = Path(os.environ.get("LOCALAPPDATA", Path.home()))
    else:
        root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return root / "skip2lora" / "pretrained"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def input_range(x, split: str) -> dict:
    """The metadata's ``input_range``: min and max of the pretraining inputs, and where they come from."""
    x = np.asarray(x)
    return {"min": float(x.min()), "max": float(x.max()),
            "source": f"min and max over every feature of the {len(x)} {split} samples"}


def _attach_range(net: Network, meta: dict) -> Network:
    r = meta.get("input_range")
    net.input_range = (r["min"], r["max"]) if r else None
    return net


def _network_for(dataset) -> Network:
    if dataset.name.startswith("fmnist-rot"):
        return lenet5(dataset.classes, dataset.input_shape)
    return mlp(dataset.input_shape[0], dataset.classes)


def save_base(net: Network, meta: dict, directory: Path, key: str) -> Path:
    """Write ``<key>.npz`` and ``<key>.json`` atomically (a crash never leaves a half-written pair)."""
    directory.mkdir(parents=True, exist_ok=True)
    npz = directory / f"{key}.npz"
    fd, tmp = tempfile.mkstemp(dir=directory, suffix=".npz.tmp")
    with os.fdopen(fd, "wb") as f:
        np.savez_compressed(f, **net.params)
    meta = dict(meta, key=key, config=net.config, sha256=_sha256(Path(tmp)))
    os.replace(tmp, npz)
    fd, tmp = tempfile.mkstemp(dir=directory, suffix=".json.tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(meta, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, directory / f"{key}.json")
    return npz


def _load(directory: Path, key: str):
    npz, js = directory / f"{key}.npz", directory / f"{key}.json"
    if not (npz.exists() and js.exists()):
        return None
    meta = json.loads(js.read_text())
    actual = _sha256(npz)
    if actual != meta.get("sha256"):
        raise RuntimeError(f"pretrained weights {npz} do not match their metadata (sha256 {actual}, "
                           f"expected {meta.get('sha256')}): delete both files to pretrain again")
    net = build(meta["config"])
    with np.load(npz) as f:
        net.params = {k: f[k].astype(np.float32) for k in f.files}
    missing = set(net.base_param_names) - set(net.params)
    if missing:
        raise RuntimeError(f"pretrained weights {npz} lack parameters {sorted(missing)}")
    return _attach_range(net, meta), meta


def pretrain_base(key: str, data_dir=None, *, seed: int = 0, epochs: int | None = None,
                  progress: bool | None = None) -> tuple[Network, dict]:
    """Pretrain one base model on its source-domain data; returns the network and its metadata."""
    from ..data import load_dataset

    if key not in BASES:
        raise ValueError(f"unknown base model {key!r}; known: {', '.join(BASES)}")
    spec = dict(BASES[key])
    if epochs is not None:
        spec["epochs"] = int(epochs)
    ds = load_dataset(spec["dataset"], data_dir)
    net = _network_for(ds).init(seed)
    t0 = time.perf_counter()
    losses = pretrain(net, ds.pretrain.x, ds.pretrain.y, epochs=spec["epochs"], batch=spec["batch"],
                      lr=spec["lr"], seed=seed, progress=progress)
    seconds = time.perf_counter() - t0
    meta = {
        "command": f"skip2lora pretrain --base {key} --seed {seed}"
                   + (f" --epochs {epochs}" if epochs is not None else ""),
        "dataset": spec["dataset"], "seed": seed, "epochs": spec["epochs"], "batch": spec["batch"],
        "optimizer": f"adam lr={spec['lr']}", "train_samples": len(ds.pretrain),
        "input_range": input_range(ds.pretrain.x, f"{spec['dataset']} pretraining"),
        "final_loss": losses[-1],
        "source_test_accuracy": net.accuracy(ds.pretrain_test.x, ds.pretrain_test.y),
        "target_test_accuracy": net.accuracy(ds.test.x, ds.test.y),
        "seconds": round(seconds, 1), "numpy": np.__version__,
        "python": sys.version.split()[0],
    }
    return _attach_range(net, meta), meta


def load_base(dataset: str, data_dir=None, *, pretrain_if_missing: bool = True,
              progress: bool | None = None) -> tuple[Network, dict]:
    """The pretrained base model for a data set (shipped, cached, or pretrained now)."""
    key = base_key(dataset)
    for directory in (package_dir(), cache_dir()):
        found = _load(directory, key)
        if found is not None:
            return found
    if not pretrain_if_missing:
        raise FileNotFoundError(f"no pretrained weights for {key} in {package_dir()} or {cache_dir()}; "
                                f"run `skip2lora pretrain --base {key}`")
    print(f"pretraining {key} once (cached in {cache_dir()}) ...", file=sys.stderr)
    net, meta = pretrain_base(key, data_dir, progress=progress)
    save_base(net, meta, cache_dir(), key)
    return net, meta
