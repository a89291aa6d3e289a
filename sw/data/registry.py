"""The data sets by name: ``load_dataset``, the one entry point the rest of the project
uses, and the look-up of which of a data set's files are present.  Every data set has the
same five roles (pretrain, pretrain_test, finetune, validation, test; see
:mod:`.dataset`), so the experiments never special-case one.

``open_dataset`` also takes a user's data (an .npz file, an image folder, or a `Dataset` made
with `from_arrays`), so a run accepts a built-in name or the user's data alike."""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path

from . import fan, fmnist, har
from .dataset import Dataset
from .errors import DataFormatError, DataNotFoundError
from .image_folder import load_image_folder
from .lookup import find_any, resolve_data_dir
from .npz_file import load_npz

__all__ = ["DATASET_NAMES", "load_dataset", "canonical_name", "dataset_title", "missing_files",
           "clear_cache", "open_dataset", "is_builtin_name"]

DATASET_NAMES: tuple[str, ...] = ("fmnist-rot75", "har", "fan-damage1", "fan-damage2")
"""The four data sets of the paper; ``fmnist-rotNN`` also accepts any angle 0..359."""

_FMNIST_RE = re.compile(r"fmnist-rot(0|[1-9][0-9]{0,2})")


def canonical_name(name: str) -> str:
    """``name`` checked against the known data sets; ValueError lists the valid ones."""
    if name in DATASET_NAMES or (isinstance(name, str) and _FMNIST_RE.fullmatch(name)
                                 and int(name[len("fmnist-rot"):]) < 360):
        return name
    raise ValueError(f"unknown data set {name!r}; valid names: {', '.join(DATASET_NAMES)}, "
                     f"or fmnist-rotNN for an integer angle NN in 0..359 (e.g. fmnist-rot30)")


def _loader(name: str):
    """The module that loads data set ``name`` (a canonical name); each has ``TITLE``,
    ``required_files(name)`` and its loader."""
    if name.startswith("fmnist-rot"):
        return fmnist
    return har if name == "har" else fan


def dataset_title(name: str) -> str:
    """A human name for messages, e.g. "Fashion-MNIST (fmnist-rot75)"."""
    name = canonical_name(name)
    return f"{_loader(name).TITLE} ({name})"


def missing_files(name: str, data_dir: str | os.PathLike | None = None) -> list[str]:
    """The files of data set ``name`` that the look-up does not find (alternatives joined
    by " or "); empty when all are present.  Nothing is downloaded, verified or created."""
    name = canonical_name(name)
    return [" or ".join(alts) for alts in _loader(name).required_files(name)
            if find_any(alts, data_dir) is None]


def _freeze(ds: Dataset) -> Dataset:
    for split in ds.splits().values():
        split.x.flags.writeable = False
        split.y.flags.writeable = False
    return ds


@functools.lru_cache(maxsize=4)
def _load(name: str, root: Path, download: bool) -> Dataset:
    if name.startswith("fmnist-rot"):
        return _freeze(fmnist.load_fmnist_rotated(int(name[len("fmnist-rot"):]), root, download=download))
    if name == "har":
        return _freeze(har.load_har(root, download=download))
    return _freeze(fan.load_fan(name, root, download=download))


def load_dataset(name: str, data_dir: str | os.PathLike | None = None, *,
                 download: bool = True) -> Dataset:
    """Load a data set by name (see ``DATASET_NAMES``), from ``data_dir`` or the root that
    :func:`resolve_data_dir` picks.  Missing files are downloaded unless ``download`` is
    False.  Results are cached per process; their arrays are read-only."""
    return _load(canonical_name(name), resolve_data_dir(data_dir), bool(download))


def is_builtin_name(source) -> bool:
    """Whether ``source`` names a built-in data set (and is then not taken as a path)."""
    try:
        canonical_name(source)
    except ValueError:
        return False
    return True


def open_dataset(source, data_dir: str | os.PathLike | None = None, *, download: bool = True) -> Dataset:
    """A data set from a built-in name (`load_dataset`), an .npz file (`load_npz`), an image folder
    (`load_image_folder`), or a `Dataset` (returned as it is). A built-in name wins over a file or
    folder of that name in the working directory."""
    if isinstance(source, Dataset):
        return source
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"a data set is a name, a path or a Dataset, not {type(source).__name__}")
    if isinstance(source, str) and is_builtin_name(source):
        return load_dataset(source, data_dir, download=download)
    path = Path(source).expanduser()
    if path.is_dir():
        return load_image_folder(path)
    if path.suffix.lower() == ".npz":
        return load_npz(path)
    if path.exists():
        raise DataFormatError(f"{path}: unknown data format; give an .npz file (x_train, y_train, x_test, y_test) "
                              f"or a folder of images with one sub-folder per class")
    if isinstance(source, str) and os.sep not in source and "." not in source:
        try:  # a mistyped name: the error lists the valid ones
            canonical_name(source)
        except ValueError as exc:
            raise ValueError(f"{exc}; or an .npz file or image folder") from None
    raise DataNotFoundError(f"no data file or folder {path}")


def clear_cache() -> None:
    """Forget the in-process cache of loaded data sets (e.g. after replacing files)."""
    _load.cache_clear()
    fmnist.clear_cache()
