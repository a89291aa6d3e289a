"""What a fine-tuning run works on: a data set and its base model, built in or brought by the user.

    w = resolve_workload("fmnist-rot75")                          # built-in data, its pretrained base
    w = resolve_workload("mydata.npz", model="mymodel.onnx")      # the user's data and trained model

``dataset`` is a built-in name, an .npz file, an image folder or a `Dataset` (`skip2lora.data.
open_dataset`). Without ``model`` a built-in data set is fine-tuned from its pretrained base
(`skip2lora.nn.pretrained.load_base`); with it, from that model: a ``.onnx`` file, a TorchScript
``.pt``/``.pth`` (its input shape is taken from the data), a project ``.npz`` (`skip2lora.nn.
model_io`), or a `Network`. A data set that is not built in has no base here, so it needs a model.
A user's own architecture is brought this way, trained elsewhere: `skip2lora pretrain` makes only
the built-in bases.

The model must take the data's samples and have a logit for every label; a mismatch is one
ValueError that names both sides. Both `skip2lora.finetune` (float) and `skip2lora.accel_job`
(the accelerator backends) start here, so the two see the same data and base model.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from . import data
from .data import Dataset
from .nn.network import Network

__all__ = ["Workload", "resolve_workload", "open_data", "base_for", "load_user_model", "check_fits", "hparams_key"]


@dataclass(frozen=True, eq=False)
class Workload:
    """A data set, the base model fine-tuned on it, and where that model came from (for reports)."""

    dataset: Dataset
    base: Network
    model: str  # "pretrained <key>" for a built-in base, else the file name or "Network"

    @property
    def hparams_key(self) -> str | None:
        return hparams_key(self.dataset)


def hparams_key(ds: Dataset) -> str | None:
    """The data set's name for `skip2lora.hparams.defaults` (None: not built in, no tuned settings)."""
    return ds.name if ds.builtin else None


def check_fits(base: Network, ds: Dataset, model: str = "the model") -> None:
    """A one-line ValueError unless ``base`` takes the samples of ``ds`` and has a logit per label."""
    if tuple(base.input_shape) != tuple(ds.input_shape):
        raise ValueError(f"{model} takes samples of shape {tuple(base.input_shape)}, but the data set {ds.name} "
                         f"has samples of shape {tuple(ds.input_shape)}")
    if ds.classes > base.classes:
        raise ValueError(f"{model} has {base.classes} outputs, but the data set {ds.name} has labels up to "
                         f"{ds.classes - 1} ({ds.classes} classes)")


def load_user_model(model, ds: Dataset) -> tuple[Network, str]:
    """The base model ``model`` (a path or a `Network`) for data set ``ds``, and its label for reports."""
    if isinstance(model, Network):
        return model, "Network"
    if not isinstance(model, (str, os.PathLike)):
        raise TypeError(f"model must be a file name or a Network, not {type(model).__name__}")
    from .nn.lowering import ModelImportError
    from .nn.model_io import load_model

    path = Path(model).expanduser()
    suffix = path.suffix.lower()
    if suffix in (".pt", ".pth"):  # TorchScript records no input shape: the data's
        return load_model(path, input_shape=ds.input_shape), path.name
    try:
        return load_model(path), path.name
    except ModelImportError as exc:
        if suffix != ".onnx" or "no fixed per-sample shape" not in str(exc):
            raise
    return load_model(path, input_shape=ds.input_shape), path.name  # symbolic input dims: the data's


def base_for(ds: Dataset, model=None, data_dir=None, *, progress: bool | None = None) -> tuple[Network, str]:
    """The base model of a run on ``ds`` (see the module docstring), checked against it, and its label."""
    if model is None:
        if not ds.builtin:
            raise ValueError(f"the data set {ds.name} is not built in, so there is no pretrained base model for "
                             "it: give its trained model (--model FILE.onnx, or model=...)")
        from .nn.pretrained import base_key, load_base

        base, _ = load_base(ds.name, data_dir, progress=progress)
        label = f"pretrained {base_key(ds.name)}"
    else:
        base, label = load_user_model(model, ds)
    check_fits(base, ds, f"the model {label}")
    return base, label


def open_data(dataset, data_dir=None) -> Dataset:
    """The data set of a run: `load_dataset` for a built-in name (looked up when called, so a test may
    replace it), else `open_dataset` (a user's file, folder or `Dataset`)."""
    if isinstance(dataset, str) and data.is_builtin_name(dataset):
        return data.load_dataset(dataset, data_dir)
    return data.open_dataset(dataset, data_dir)


def resolve_workload(dataset, model=None, data_dir=None, *, progress: bool | None = None) -> Workload:
    """The data set and base model of a run (see the module docstring)."""
    ds = open_data(dataset, data_dir)
    return Workload(ds, *base_for(ds, model, data_dir, progress=progress))
