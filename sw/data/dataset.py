"""The containers every loader returns: a ``Split`` (inputs and labels) and a ``Dataset``
(a source domain and a target domain in the same five roles for every data set, so the
experiments never special-case one)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Split", "Dataset"]


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
    validation, test); ``validation`` is None where the target data has no room for it.

    ``origin`` is "built-in" for the data sets of the paper, else where the data came from (a
    file, a folder, "arrays"): a data set that is not built in has no tuned settings
    (`skip2lora.hparams`) and no source domain (its pretrain splits are empty).
    ``class_names``: one per class where known (an image folder's sub-folders), else empty."""

    name: str
    classes: int
    input_shape: tuple
    pretrain: Split
    pretrain_test: Split
    finetune: Split
    validation: Split | None
    test: Split
    notes: str
    origin: str = "built-in"
    class_names: tuple = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "input_shape", tuple(int(d) for d in self.input_shape))
        object.__setattr__(self, "class_names", tuple(str(c) for c in self.class_names))
        if self.class_names and len(self.class_names) != self.classes:
            raise ValueError(f"{self.name}: {len(self.class_names)} class names for {self.classes} classes")
        for role, split in self.splits().items():
            if split.x.shape[1:] != self.input_shape:
                raise ValueError(f"{self.name}.{role}: samples of shape {split.x.shape[1:]}, "
                                 f"expected {self.input_shape}")
            if len(split) and (split.y.min() < 0 or split.y.max() >= self.classes):
                raise ValueError(f"{self.name}.{role}: labels outside 0..{self.classes - 1}")

    @property
    def builtin(self) -> bool:
        """One of the paper's data sets (with its pretrained base and tuned settings)."""
        return self.origin == "built-in"

    def splits(self) -> dict[str, Split]:
        """The splits that exist, by role name."""
        roles = ("pretrain", "pretrain_test", "finetune", "validation", "test")
        return {r: getattr(self, r) for r in roles if getattr(self, r) is not None}
