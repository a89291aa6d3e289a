"""The data-set containers and ``load_dataset``, the one entry point the rest of the
project uses.  Every data set has the same five roles (pretrain, pretrain_test,
finetune, validation, test) so the experiments never special-case a data set."""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .store import resolve_data_dir

__all__ = ["DATASET_NAMES", "Split", "Dataset", "load_dataset", "canonical_name", "clear_cache"]

DATASET_NAMES: tuple[str, ...] = ("fmnist-rot75", "har", "fan-damage1", "fan-damage2")
"""The four data sets of the paper; ``fmnist-rotNN`` also accepts any angle 0..359."""

_FMNIST_RE = re.compile(r"fmnist-rot(0|[1-9][0-9]{0,2})")


@dataclass(frozen=True, eq=False)
class Split:
    """Inputs ``x`` (float32, one row per sample) and labels ``y`` (int64)."""

    x: np.ndarray
    y: np.ndarray

    def __post_init__(self) -> None:
        x = np.asarray(self.x, dtype=np.float32)
        y = np.asarray(self.y)
        if y.ndim != 1:
            raise ValueError(f"y must be 1-D, got shape {y.shape}")
        if y.size and not np.issubdtype(y.dtype, np.integer):
            raise ValueError(f"y must hold integer labels, got dtype {y.dtype}")
        y = y.astype(np.int64, copy=False)
        if x.ndim < 1 or x.shape[0] != y.shape[0]:
            raise ValueError(f"x has {x.shape[0] if x.ndim else 0} rows but y has {y.shape[0]}")
        object.__setattr__(self, "x", x)
        object.__setattr__(self, "y", y)

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def subset(self, idx) -> "Split":
        """The rows ``idx`` (an index array, boolean mask or slice) as a new Split."""
        return Split(self.x[idx], self.y[idx])


@dataclass(frozen=True, eq=False)
class Dataset:
    """A source domain (pretrain, pretrain_test) and a target domain (finetune,
    validation, test); ``validation`` is None where the target data has no room for it."""

    name: str
    classes: int
    input_shape: tuple
    pretrain: Split
    pretrain_test: Split
    finetune: Split
    validation: Split | None
    test: Split
    notes: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "input_shape", tuple(int(d) for d in self.input_shape))
        for role, split in self.splits().items():
            if split.x.shape[1:] != self.input_shape:
                raise ValueError(f"{self.name}.{role}: samples of shape {split.x.shape[1:]}, "
                                 f"expected {self.input_shape}")
            if len(split) and (split.y.min() < 0 or split.y.max() >= self.classes):
                raise ValueError(f"{self.name}.{role}: labels outside 0..{self.classes - 1}")

    def splits(self) -> dict[str, Split]:
        """The splits that exist, by role name."""
        roles = ("pretrain", "pretrain_test", "finetune", "validation", "test")
        return {r: getattr(self, r) for r in roles if getattr(self, r) is not None}


def canonical_name(name: str) -> str:
    """``name`` checked against the known data sets; ValueError lists the valid ones."""
    if name in DATASET_NAMES or (isinstance(name, str) and _FMNIST_RE.fullmatch(name)
                                 and int(name[len("fmnist-rot"):]) < 360):
        return name
    raise ValueError(f"unknown data set {name!r}; valid names: {', '.join(DATASET_NAMES)}, "
                     f"or fmnist-rotNN for an integer angle NN in 0..359 (e.g. fmnist-rot30)")


def _freeze(ds: Dataset) -> Dataset:
    for split in ds.splits().values():
        split.x.flags.writeable = False
        split.y.flags.writeable = False
    return ds


@functools.lru_cache(maxsize=4)
def _load(name: str, root: Path, download: bool) -> Dataset:
    if name.startswith("fmnist-rot"):
        from .fmnist import load_fmnist_rotated
        return _freeze(load_fmnist_rotated(int(name[len("fmnist-rot"):]), root, download=download))
    if name == "har":
        from .har import load_har
        return _freeze(load_har(root, download=download))
    from .fan import load_fan
    return _freeze(load_fan(name, root, download=download))


def load_dataset(name: str, data_dir: str | os.PathLike | None = None, *,
                 download: bool = True) -> Dataset:
    """Load a data set by name (see ``DATASET_NAMES``), from ``data_dir`` or the root that
    :func:`resolve_data_dir` picks.  Missing files are downloaded unless ``download`` is
    False.  Results are cached per process; their arrays are read-only."""
    return _load(canonical_name(name), resolve_data_dir(data_dir), bool(download))


def clear_cache() -> None:
    """Forget the in-process cache of loaded data sets (e.g. after replacing files)."""
    _load.cache_clear()
    from .fmnist import _upright
    _upright.cache_clear()
