"""Bring your own data: one ``.npz`` file as a `Dataset`.

    np.savez("mydata.npz", x_train=..., y_train=..., x_test=..., y_test=...)   # x_val, y_val optional
    ds = load_npz("mydata.npz")

The keys are the arguments of `from_arrays` (which checks them and, without ``x_val``/``y_val``,
holds out every 10th training row for validation); an optional ``class_names`` array of strings
names the classes. Other keys are ignored. The file is read without pickle (an object array is
refused): loading data must not run code.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np

from .arrays import from_arrays
from .dataset import Dataset
from .errors import DataCorruptError, DataFormatError, DataNotFoundError

__all__ = ["load_npz", "REQUIRED_KEYS", "OPTIONAL_KEYS"]

REQUIRED_KEYS = ("x_train", "y_train", "x_test", "y_test")
OPTIONAL_KEYS = ("x_val", "y_val", "class_names")


def load_npz(path: str | os.PathLike, *, classes: int | None = None) -> Dataset:
    """The data set in ``path`` (named after the file); one-line `DataError`s for every problem."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a file name, not {type(path).__name__}")
    p = Path(path).expanduser()
    if not p.exists():
        raise DataNotFoundError(f"no data file {p}")
    if p.is_dir():
        raise DataFormatError(f"{p} is a folder, not an .npz file")
    try:
        f = np.load(p, allow_pickle=False)
    except ValueError as exc:  # a pickled file is refused: unpickling could run code
        if "pickle" in str(exc).lower():
            raise DataFormatError(f"{p} is not an .npz file (reading it would need unpickling, which is refused); "
                                  f"save plain numeric arrays with np.savez") from None
        raise DataCorruptError(f"cannot read {p} as an .npz file: {exc}") from None
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise DataCorruptError(f"cannot read {p} as an .npz file: {exc}") from None
    if not isinstance(f, np.lib.npyio.NpzFile):
        raise DataFormatError(f"{p} holds one array, not the arrays of a data set: save "
                              f"{', '.join(REQUIRED_KEYS)} with np.savez")
    with f:
        keys = set(f.files)
        missing = [k for k in REQUIRED_KEYS if k not in keys]
        if missing:
            found = ", ".join(sorted(keys)) or "nothing"
            raise DataFormatError(f"{p} lacks {', '.join(missing)} (a data set needs {', '.join(REQUIRED_KEYS)}; "
                                  f"optionally x_val, y_val; found: {found})")
        arrays = {}
        for k in REQUIRED_KEYS + OPTIONAL_KEYS:
            if k not in keys:
                continue
            try:
                arrays[k] = f[k]
            except ValueError as exc:  # an object array needs pickle
                if "pickle" in str(exc).lower():
                    raise DataFormatError(f"{p}: {k} is an object array (pickled Python objects); save plain "
                                          f"numeric arrays") from None
                raise DataCorruptError(f"{p}: cannot read {k}: {exc}") from None
            except (OSError, EOFError, zipfile.BadZipFile) as exc:
                raise DataCorruptError(f"{p}: cannot read {k}: {exc}") from None
    names = arrays.pop("class_names", None)
    if names is not None and (names.ndim != 1 or not np.issubdtype(names.dtype, np.str_)):
        raise DataFormatError(f"{p}: class_names must be a 1-D array of strings, not {names.dtype} {names.shape}")
    try:
        return from_arrays(**arrays, classes=classes, class_names=() if names is None else names.tolist(),
                           name=p.name, origin=str(p), notes=f"From {p}.")
    except DataFormatError as exc:
        raise DataFormatError(f"{p}: {exc}") from None
