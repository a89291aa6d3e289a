"""Base models on disk in any supported format: ``load_model(path)`` / ``save_model(net, path)``.

* ``.onnx``: imported with `from_onnx` (needs onnx); saved with `to_onnx`.
* ``.pt``, ``.pth``: a TorchScript archive (``torch.jit.save``), imported with `from_torch` (needs
  torch and onnx). A pickled module or a bare state_dict is refused: unpickling runs arbitrary
  code, and a state_dict has no architecture. Load such a module yourself and call `from_torch`.
* ``.npz``: the project's own format: every parameter plus the network's config (its layer list)
  under ``__config__``, or a ``<key>.npz`` + ``<key>.json`` pair as `pretrained.save_base` writes.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from .network import Network, build

__all__ = ["load_model", "save_model", "MODEL_SUFFIXES"]

MODEL_SUFFIXES = (".onnx", ".pt", ".pth", ".npz")
_CONFIG_KEY = "__config__"


def load_model(path, *, input_shape=None, fold_batchnorm: bool = True) -> Network:
    """A base model from a file; ``input_shape`` (per sample) where the file does not fix it (TorchScript)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in MODEL_SUFFIXES:
        raise ValueError(f"unknown model format {path.name!r}: use one of {', '.join(MODEL_SUFFIXES)}")
    if not path.is_file():
        raise FileNotFoundError(f"no model file {path}")
    if suffix == ".onnx":
        from .onnx_import import from_onnx

        return from_onnx(path, input_shape=input_shape, fold_batchnorm=fold_batchnorm)
    if suffix in (".pt", ".pth"):
        return _load_torch(path, input_shape, fold_batchnorm)
    return _load_npz(path)


def save_model(net: Network, path) -> Path:
    """Write the base model as ``.npz`` (parameters + config) or ``.onnx``, atomically."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        from .onnx_export import to_onnx

        to_onnx(net, path)
        return path
    if suffix != ".npz":
        raise ValueError(f"models are saved as .npz or .onnx, not {path.name!r}")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"no folder {path.parent} for {path.name}")
    if _CONFIG_KEY in net.params:
        raise ValueError(f"a parameter may not be called {_CONFIG_KEY}")
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz.tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez_compressed(f, **net.params, **{_CONFIG_KEY: np.array(json.dumps(net.config))})
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _load_npz(path: Path) -> Network:
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read {path} as a .npz model: {exc}") from None
    if _CONFIG_KEY in arrays:
        config = json.loads(str(arrays.pop(_CONFIG_KEY)))
    else:
        meta_path = path.with_suffix(".json")
        if not meta_path.is_file():
            raise ValueError(f"{path} holds no model config ({_CONFIG_KEY}) and has no {meta_path.name} beside it")
        meta = json.loads(meta_path.read_text())
        if "config" not in meta:
            raise ValueError(f"{meta_path} has no model config")
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if meta.get("sha256") not in (None, digest):
            raise ValueError(f"{path} does not match its metadata {meta_path.name} (sha256 {digest}, expected "
                             f"{meta['sha256']})")
        config = meta["config"]
    try:
        net = build(config)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path}: its model config cannot be built: {exc}") from None
    needed = set(net.base_param_names) | {n for layer in net.layers for n in getattr(layer, "buffer_names", ())}
    missing = sorted(needed - set(arrays))
    if missing:
        raise ValueError(f"{path} lacks parameters {', '.join(missing)}")
    net.params = {k: v.astype(np.float32) for k, v in arrays.items()}
    return net


def _load_torch(path: Path, input_shape, fold_batchnorm) -> Network:
    from .torch_import import from_torch, require_torch

    torch = require_torch()
    if input_shape is None:
        raise ValueError(f"{path.name}: a PyTorch file does not record its input shape: pass input_shape=(C, H, W) "
                         f"or (F,)")
    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except Exception:
        module = None
    if module is None:
        raise ValueError(f"{path} is not a TorchScript archive (torch.jit.save): a pickled module or state_dict "
                         f"is not loaded (unpickling runs code; a state_dict has no architecture) — build the "
                         f"module, load its weights and call from_torch(module, input_shape)")
    return from_torch(module, input_shape, fold_batchnorm=fold_batchnorm, name=path.stem)
