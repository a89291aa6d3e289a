"""Bring your own data: arrays as a `Dataset`, checked as every data set is.

    ds = from_arrays(x_train, y_train, x_test, y_test)           # x_val, y_val optional

The arrays fill the target domain: the training arrays are the fine-tuning split, the test arrays
the test split, ``x_val``/``y_val`` the validation split. A user's data set has no source domain
(its base model was trained elsewhere), so ``pretrain`` and ``pretrain_test`` are empty.

Samples are rows: ``(N, F)`` features, ``(N, C, H, W)`` images, or ``(N, H, W)`` one-channel
images (given a channel axis). Labels are integers 0..classes-1 (floats holding whole numbers are
accepted). Without ``x_val``/``y_val``, every 10th training row (rows 9, 19, 29, ...) is held
out as the validation split, provided at least 20 rows are given (fewer: no validation split).
A fixed stride rather than a random draw: the same arrays give the same split on every machine
and with every seed, and classes stored in blocks are all represented in it.

Every problem is one `DataFormatError` (a ValueError) that names the array and the problem.
"""

from __future__ import annotations

import numpy as np

from .dataset import Dataset, Split
from .errors import DataFormatError

__all__ = ["from_arrays", "holdout_rows", "VAL_STRIDE", "VAL_MIN_ROWS"]

VAL_STRIDE = 10     # every 10th training row is held out for validation ...
VAL_MIN_ROWS = 20   # ... when there are at least this many


def holdout_rows(n: int) -> np.ndarray:
    """The boolean mask of the training rows held out for validation (see the module docstring)."""
    if n < VAL_MIN_ROWS:
        return np.zeros(n, bool)
    return np.arange(n) % VAL_STRIDE == VAL_STRIDE - 1


def _samples(x, key: str) -> np.ndarray:
    try:
        a = np.asarray(x)
    except Exception as exc:  # ragged lists and the like
        raise DataFormatError(f"{key} is not an array: {exc}") from None
    if a.dtype == bool or not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
        raise DataFormatError(f"{key} must hold numbers, not {a.dtype}")
    if a.ndim not in (2, 3, 4):
        raise DataFormatError(f"{key} must have one row per sample, shape (N, F), (N, H, W) or (N, C, H, W), "
                              f"not {a.shape}")
    if a.shape[0] == 0:
        raise DataFormatError(f"{key} has no samples")
    if a.ndim == 3:
        a = a[:, None]
    with np.errstate(over="ignore"):
        a = a.astype(np.float32)
    finite = np.isfinite(a.reshape(len(a), -1)).all(axis=1)
    if not finite.all():
        raise DataFormatError(f"{key} row {int(np.flatnonzero(~finite)[0])} contains NaN or Inf "
                              f"({int((~finite).sum())} of {len(a)} rows; as float32)")
    return a


def _labels(y, key: str, rows: int) -> np.ndarray:
    try:
        a = np.asarray(y)
    except Exception as exc:
        raise DataFormatError(f"{key} is not an array: {exc}") from None
    if a.ndim != 1 or a.shape[0] != rows:
        raise DataFormatError(f"{key} must hold one label per sample, shape ({rows},), not {a.shape}")
    if np.issubdtype(a.dtype, np.floating):
        whole = np.isfinite(a) & (a == np.round(a))
        if not whole.all():
            i = int(np.flatnonzero(~whole)[0])
            raise DataFormatError(f"{key}[{i}] is {a[i].item()!r}: labels must be whole numbers 0..classes-1")
        a = a.astype(np.int64)
    elif a.dtype == bool or not np.issubdtype(a.dtype, np.integer):
        raise DataFormatError(f"{key} must hold integer class labels, not {a.dtype}")
    a = a.astype(np.int64)
    if a.min() < 0:
        i = int(np.flatnonzero(a < 0)[0])
        raise DataFormatError(f"{key}[{i}] is {a[i]}: labels must be 0..classes-1")
    return a


def from_arrays(x_train, y_train, x_test, y_test, x_val=None, y_val=None, *, classes: int | None = None,
                class_names=(), name: str = "arrays", origin: str = "arrays", notes: str = "") -> Dataset:
    """A `Dataset` of the arrays (see the module docstring); ``classes`` defaults to the largest
    label + 1. The arrays are copied (float32 samples, int64 labels) and made read-only."""
    if not isinstance(name, str) or not name:
        raise TypeError(f"name must be a non-empty string, not {name!r}")
    if classes is not None and (isinstance(classes, bool) or not isinstance(classes, (int, np.integer))):
        raise TypeError(f"classes must be an integer, not {classes!r}")
    if (x_val is None) != (y_val is None):
        given, missing = ("x_val", "y_val") if y_val is None else ("y_val", "x_val")
        raise DataFormatError(f"{given} is given without {missing}: give both, or neither (then every "
                              f"{VAL_STRIDE}th training row is held out for validation)")
    parts = {"train": (x_train, y_train), "test": (x_test, y_test)}
    if x_val is not None:
        parts["val"] = (x_val, y_val)
    splits = {}
    for role, (x, y) in parts.items():
        xs = _samples(x, f"x_{role}")
        splits[role] = (xs, _labels(y, f"y_{role}", len(xs)))
    shape = splits["train"][0].shape[1:]
    for role, (xs, _) in splits.items():
        if xs.shape[1:] != shape:
            raise DataFormatError(f"x_{role} samples have shape {xs.shape[1:]}, x_train's {shape}")
    top = max(int(ys.max()) for _, ys in splits.values())
    if classes is None:
        classes = max(top + 1, len(class_names))
    classes = int(classes)
    if classes < 2:
        raise DataFormatError(f"a classifier needs at least 2 classes; the labels have {classes}")
    for role, (_, ys) in splits.items():
        if ys.max() >= classes:
            i = int(np.flatnonzero(ys >= classes)[0])
            raise DataFormatError(f"y_{role}[{i}] is {ys[i]}: labels must be 0..{classes - 1} ({classes} classes)")
    if class_names and len(class_names) != classes:
        raise DataFormatError(f"{len(class_names)} class names for {classes} classes")

    x, y = splits["train"]
    if "val" in splits:
        train, val = Split(x, y), Split(*splits["val"])
        how = "validation: x_val / y_val"
    else:
        held = holdout_rows(len(y))
        train, val = Split(x[~held], y[~held]), (Split(x[held], y[held]) if held.any() else None)
        how = (f"validation: every {VAL_STRIDE}th training row (rows {VAL_STRIDE - 1}, {2 * VAL_STRIDE - 1}, ...)"
               if held.any() else f"no validation split (fewer than {VAL_MIN_ROWS} training rows)")
    empty = Split(np.zeros((0,) + shape, np.float32), np.zeros(0, np.int64))
    ds = Dataset(name=name, classes=classes, input_shape=shape, pretrain=empty, pretrain_test=empty,
                 finetune=train, validation=val, test=Split(*splits["test"]),
                 notes=(notes + " " if notes else "") + f"finetune: {len(train)} rows; {how}; test: "
                       f"{len(splits['test'][1])} rows; no source domain (the base model was trained elsewhere).",
                 origin=origin, class_names=tuple(class_names))
    for split in ds.splits().values():
        split.x.flags.writeable = False
        split.y.flags.writeable = False
    return ds
